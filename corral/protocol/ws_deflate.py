"""permessage-deflate (RFC 7692) for the server side, with bounded inflation.

Theory of operation
-------------------
wsproto's own ``PerMessageDeflate`` inflates each frame with an unbounded
``decompress(data)``: a 20 KB frame of zeros becomes 20 MB in memory before anything
can look at its size (the compression bomb of research/protocol.md B18; autobahn
GHSA-hxp9-w8x3-p566, websockets#1715). :class:`BoundedDeflate` replaces it and owns
all of its state rather than reaching into the parent's private attributes:

* **Negotiation** (RFC 7692 section 7.1). The first acceptable offer wins. An offer is
  declined, not half-applied, when it has an unknown or repeated parameter or a bad
  value (section 7.1: "MUST decline"). ``server_max_window_bits=8`` is declined too:
  zlib silently widens a raw 8-bit window to 9, which the client would not expect.
  The response echoes the ``*_no_context_takeover`` flags and ``server_max_window_bits``;
  it never sets ``client_max_window_bits``, so the client may use any window up to 15
  bits (section 7.1.2.2) and the inflater always uses 15.
* **Inflation** keeps a per-message count of inflated bytes and passes zlib a
  ``max_length`` of the remaining budget plus one. One byte over the budget proves the
  message is too big, so the connection fails with 1009 having inflated at most
  ``max_message_size + 1`` bytes of it, however large the rest would have been.
  If zlib stops short of ``max_length`` it has consumed all its input, so nothing
  is left unexamined. The same bound applies to the ``00 00 ff ff`` tail each message
  ends with (section 7.2.2), since a hostile stream may decode output from it.
* **Deflation** happens in :meth:`compress`, called by the core for each outgoing
  message; wsproto's outbound hook is left at the base no-op. The compressor uses a
  4 KiB window (12 bits) and ``memLevel`` 5, websockets' defaults: about 30 KiB per
  connection instead of 256 KiB at zlib's defaults, for a few percent of ratio. A
  smaller window than negotiated is always allowed (section 7.1.2.1).

Rules for RSV1 (section 6.1): set on the first frame of a compressed message only;
never on a CONTINUATION or control frame. Anything else fails with 1002.

What this file must not know: sockets, clocks, the core's states, ASGI.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Final, final

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

# RFC 7692 section 7.2.2: the sender strips this empty stored block from the end of
# each message and the receiver appends it again before inflating.
_TAIL: Final = b"\x00\x00\xff\xff"

# Claiming RSV1 tells wsproto the bit is ours to interpret, not a protocol error.
_RSV1: Final = RsvBits(True, False, False)

# Outbound window and memory level: websockets' server defaults (see module docstring).
_SERVER_WINDOW_BITS: Final = 12
_MEM_LEVEL: Final = 5

# The parameters an offer may carry (RFC 7692 section 7.1); anything else declines it.
_FLAGS: Final = frozenset({"server_no_context_takeover", "client_no_context_takeover"})
_KNOWN: Final = _FLAGS | {"server_max_window_bits", "client_max_window_bits"}


def _window_bits(value: str | None, lowest: int) -> int | None:
    """Parse a max_window_bits value: 1*DIGIT in ``lowest..15``, else None."""
    # A quoted-string value is allowed if its content is a token (RFC 7692 7.1.2.1).
    if value is None or not value.strip('"').isdigit():
        return None
    bits = int(value.strip('"'))
    return bits if lowest <= bits <= 15 else None


def _parse_offer(offer: str) -> dict[str, str | None] | None:
    """Split ``permessage-deflate; a; b=1`` into ``{a: None, b: "1"}``; None declines."""
    params: dict[str, str | None] = {}
    for item in offer.split(";")[1:]:
        name, equals, value = item.partition("=")
        name = name.strip(" \t")
        if name not in _KNOWN or name in params:
            return None
        params[name] = value.strip(" \t") if equals else None
    return params


@final
class BoundedDeflate(Extension):
    """Server-side permessage-deflate whose inflation never exceeds a byte budget.

    One instance belongs to one connection and is passed to wsproto at accept time;
    wsproto calls :meth:`accept` for each offer and then keeps the extension only if
    :meth:`enabled` says negotiation succeeded.
    """

    name = "permessage-deflate"

    def __init__(self, max_message_size: int) -> None:
        self._max_size = max_message_size
        self._negotiated = False
        # What the accepted offer asked for (RFC 7692 sections 7.1.1.1 and 7.1.1.2).
        self._server_no_context_takeover = False
        self._client_no_context_takeover = False
        self._server_window_bits = _SERVER_WINDOW_BITS
        # zlib objects are created on first use: most connections never compress in
        # one direction or the other, and each costs tens of KiB.
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        # Per message: it is compressed, and how many bytes it inflated to so far.
        self._compressed = False
        self._inflated = 0
        # Per frame: the frame being read is a data frame (not a control frame).
        self._data_frame = False
        #: Why inflation was refused, for the Close reason; None until it is.
        self.failure: str | None = None

    # -- negotiation -------------------------------------------------------------------

    def enabled(self) -> bool:
        """True once an offer has been accepted."""
        return self._negotiated

    def offer(self) -> bool:
        """Servers make no offers; required by the base class."""
        return False

    def accept(self, offer: str) -> str | None:
        """Answer one client offer: the response parameters, or None to decline it."""
        if self._negotiated:
            # One permessage-deflate per connection: later offers are fallbacks.
            return None
        params = _parse_offer(offer)
        if params is None or any(params[flag] is not None for flag in _FLAGS & params.keys()):
            return None
        response = [flag for flag in sorted(_FLAGS) if flag in params]
        window_bits = _SERVER_WINDOW_BITS
        if "server_max_window_bits" in params:
            # The value is required here, and 8 is declined (see module docstring).
            bits = _window_bits(params["server_max_window_bits"], 9)
            if bits is None:
                return None
            response.append(f"server_max_window_bits={bits}")
            window_bits = min(bits, _SERVER_WINDOW_BITS)
        client_bits = params.get("client_max_window_bits")
        if client_bits is not None and _window_bits(client_bits, 8) is None:
            # The value is optional but must be valid when present (section 7.1.2.2).
            return None
        # Only now, with the whole offer valid, does any of it take effect.
        self._server_window_bits = window_bits
        self._server_no_context_takeover = "server_no_context_takeover" in params
        self._client_no_context_takeover = "client_no_context_takeover" in params
        self._negotiated = True
        return "; ".join(response)

    # -- inbound -----------------------------------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Note whether this frame starts a compressed message; police RSV1."""
        if opcode.iscontrol():
            self._data_frame = False
            if rsv.rsv1:
                # RFC 7692 section 6.1: control frames are never compressed.
                return self._refuse(CloseReason.PROTOCOL_ERROR, "RSV1 on a control frame")
            return _RSV1
        self._data_frame = True
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                # RFC 7692 section 6.1: only the first frame of a message carries RSV1.
                return self._refuse(CloseReason.PROTOCOL_ERROR, "RSV1 on a continuation frame")
        else:
            self._compressed = rsv.rsv1
            self._inflated = 0
        return _RSV1

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate a chunk of a compressed message's payload, within the budget."""
        if self._compressed and self._data_frame:
            return self._inflate(data)
        return data

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """At the end of a compressed message, inflate the implied tail."""
        if not (fin and self._compressed and self._data_frame):
            return None
        self._compressed = False
        tail = self._inflate(_TAIL)
        inflater = self._inflater
        # zlib's flush() is not needed: with the input fully consumed there is no
        # pending output. A stream that ended with a BFINAL block (section 7.2.3.4
        # allows it) cannot take more input, so the next message needs a new inflater;
        # so does every message under client_no_context_takeover (section 7.1.1.2),
        # and dropping it frees ~40 KiB while the connection is idle.
        if inflater is not None and (inflater.eof or self._client_no_context_takeover):
            self._inflater = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        # max_length=0 would mean "unlimited", so the +1 also keeps it positive.
        budget = self._max_size - self._inflated
        try:
            out = inflater.decompress(data, budget + 1)
        except zlib.error:
            # RFC 7692 names no code; 1007 (data inconsistent with the message) is
            # wsproto's choice and what Autobahn 12.x/13.x clients see from it.
            return self._refuse(CloseReason.INVALID_FRAME_PAYLOAD_DATA, "invalid deflate data")
        self._inflated += len(out)
        if self._inflated > self._max_size:
            return self._refuse(CloseReason.MESSAGE_TOO_BIG, "message too big")
        return out

    def _refuse(self, code: CloseReason, reason: str) -> CloseReason:
        self.failure = reason
        return code

    # -- outbound ----------------------------------------------------------------------

    def compress(self, data: bytes) -> bytes:
        """Deflate one whole outgoing message and strip its tail (RFC 7692 7.2.1).

        The caller sets RSV1 on the frame. Under ``server_no_context_takeover`` each
        message gets a fresh compressor, as the client's inflater will be reset.
        """
        deflater = self._deflater
        if deflater is None:
            deflater = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._server_window_bits, _MEM_LEVEL
            )
            if not self._server_no_context_takeover:
                self._deflater = deflater
        # Z_SYNC_FLUSH ends the output on a byte boundary with exactly _TAIL.
        return (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
