"""WebSocket input policy: what a peer may send, checked in front of wsproto.

Theory of operation
-------------------
Two gates, one per phase, both answering "is this input acceptable, and if not, what
does the peer get told?". Neither keeps connection state beyond what it counts.

**The opening handshake** (:func:`check_handshake`, RFC 6455 section 4.2.1). The HTTP
core parsed the request with h11; this checks it as a WebSocket handshake and returns
the offered subprotocols or a :class:`Refusal` (400, or 426 for a version other than
13). Header values with control bytes are refused (research/protocol.md B19): Python's
``splitlines``/``split`` treat ``\\x1c``-``\\x1e`` and ``\\x85`` as separators, so a second
parser downstream could read a different header than we did. A body is refused too:
after a head with a body, are the next bytes body or frames? Only space and tab are
ever stripped from tokens, for the same reason as B19.

**Messages** (:class:`MessageGuard`). wsproto parses frames but bounds nothing
(wsproto#86): a peer can declare a 2**63-byte frame, fragment a message forever, or
send a small compressed frame that inflates to gigabytes. uvicorn and hypercorn each
bolt a buffer on top of wsproto's events, which only notices a message is too big
after its bytes arrived. The guard hooks in one layer lower, through wsproto's public
extension interface: an :class:`~wsproto.extensions.Extension` that is always enabled
and never negotiated. wsproto's ``FrameDecoder`` calls ``frame_inbound_header`` with the
declared payload length *before* it reads the payload, so a frame can be refused from
its header. Per message (RFC 6455 section 5.4, fragmentation):

* A message is one TEXT or BINARY frame followed by zero or more CONTINUATION frames,
  the last with FIN set. Control frames may sit between fragments and are not counted.
* A message has at most ``max_fragments`` frames, the first one included; empty
  CONTINUATION frames are not counted, since nothing of them is kept.
* An uncompressed message's payload lengths add up to at most ``max_message_size``,
  checked on declared lengths, so no byte of a frame that would cross the limit is
  buffered. A compressed message (RSV1 on its first frame, RFC 7692 section 6) is
  measured after inflation instead, by :class:`corral.protocol.ws_deflate.BoundedDeflate`,
  because its wire size says nothing about its real size.
* A CONTINUATION without a message in progress, or a new TEXT/BINARY inside one, is a
  protocol error (section 5.4). wsproto finds these too, but only once the frame's
  payload is processed; the guard finds them at the header.

A refusal is returned as a :class:`~wsproto.frame_protocol.CloseReason`; wsproto turns
it into a ``CloseConnection`` event carrying that code, and the core answers with a
Close frame. ``failure`` keeps a readable reason, since wsproto only says "error in
extension". The guard costs wsproto two payload copies per frame (``FrameDecoder`` copies
around every extension's payload hook); that is the price of seeing headers early.

What this file must not know: sockets, clocks, the core's states, ASGI.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

    from corral.protocol.request import Request

#: 16 MiB: uvicorn's ``--ws-max-size`` default, hypercorn's ``websocket_max_message_size``
#: and the largest message the Autobahn performance cases (9.1.6, 9.2.6) send.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024

#: Frames with payload per message. The byte limit does not see per-frame cost: each
#: fragment is a Python object of ~50 bytes plus a list slot while the message is
#: reassembled. Empty frames are not counted, as nothing of them is kept (an endless run
#: of them costs CPU like a ping flood, not memory). 65,536 is the most any conformance
#: test uses (Autobahn 9.3.1 and 9.4.1 send 4 MiB as 64-byte fragments, then an empty
#: final frame), pins at most ~4 MiB of overhead next to the 16 MiB payload limit, and
#: stops 100k one-byte fragments (B17) early. Browsers never fragment what they send.
DEFAULT_MAX_FRAGMENTS: Final = 65_536

#: Bytes the adapter may hold unsent before the connection is failed. Flow control
#: (``pause_writing``) stops a well-behaved app long before this; the limit is a
#: backstop for what bypasses it (pongs to a ping flood, one huge message to a peer
#: that stopped reading). Four maximum messages leaves room to echo one at full size.
DEFAULT_MAX_OUTBOUND_BUFFER: Final = 4 * DEFAULT_MAX_MESSAGE_SIZE

#: Seconds a connection failed by bad input stays open for the app's answers to the
#: messages that arrived before it (see ``WebSocketCore.mark_caught_up``). An echo or a
#: quick reply takes microseconds to a few milliseconds even on a busy worker; a quarter
#: of a second leaves room for a GC pause or a crowded event loop, and is short enough
#: that a peer that already broke the protocol does not hold a connection noticeably
#: longer. (Every peer tested, uvicorn and hypercorn included, fails at once and drops
#: those answers; Autobahn cases 3.2-3.4, 4.1.3-4.2.5 and 5.15 mark that NON-STRICT.)
DEFAULT_ANSWER_GRACE_S: Final = 0.25

# The guard uses no reserved bits; the deflate extension claims RSV1 for itself.
_NO_RSV: Final = RsvBits(False, False, False)


# -- the opening handshake ---------------------------------------------------------------

# Bytes never allowed in a header value (B19): C0 controls except HTAB, DEL, and
# U+0085 (NEL), which a Latin-1 decode (the ASGI norm) turns into a line break. That
# also refuses UTF-8 values holding byte 0x85 (U+0445, a common Cyrillic letter, is
# D1 85); RFC 9110 section 5.5 already steers fields to ASCII, and downstream safety
# is worth that.
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f\x85]")

# Headers this core or wsproto interprets must be printable ASCII: their grammars are
# tokens and base64 (RFC 6455 section 4.1), and wsproto decodes them as ASCII.
_ASCII_ONLY: Final = re.compile(rb"[^\t\x20-\x7e]")
_HANDSHAKE_HEADERS: Final = frozenset(
    {
        b"host",
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)

# Response headers the handshake writes itself; an app header of the same name would
# duplicate or contradict them (the ASGI spec names sec-websocket-protocol).
RESPONSE_OWNED_HEADERS: Final = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    }
)

# Refusals of a bad handshake, fixed bytes: no app, no h11 state involved. The 426
# names the version we speak (RFC 6455 section 4.4) and, as RFC 9110 section 15.5.22
# requires of a 426, the protocol to upgrade to.
REFUSAL_400: Final = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
REFUSAL_426: Final = (
    b"HTTP/1.1 426 Upgrade Required\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an opening handshake is refused, and with which HTTP status."""

    status: int
    reason: str


def _valid_key(key: bytes) -> bool:
    """RFC 6455 section 4.1 item 7: base64 of 16 bytes, so 24 characters, canonical."""
    if len(key) != 24:
        return False
    try:
        nonce = base64.b64decode(key, validate=True)
    except binascii.Error:
        return False
    # Re-encoding catches non-zero padding bits, which decode to the same 16 bytes.
    return len(nonce) == 16 and base64.b64encode(nonce) == key


def check_handshake(request: Request) -> list[str] | Refusal:
    """Check an opening handshake; return the offered subprotocols or the refusal."""
    # Section 4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if request.method != b"GET" or request.http_version != b"1.1":
        return Refusal(400, "not an HTTP/1.1 GET")
    upgrades: list[bytes] = []
    keys: list[bytes] = []
    versions: list[bytes] = []
    subprotocols: list[str] = []
    connection_upgrade = False
    for name, value in request.headers:
        if _CONTROL_BYTES.search(value) is not None:
            return Refusal(400, "control byte in a header value")
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            # A body would make the bytes after the head ambiguous: body or frames?
            return Refusal(400, "body in an upgrade request")
        if name not in _HANDSHAKE_HEADERS:
            continue
        if _ASCII_ONLY.search(value) is not None:
            return Refusal(400, "non-ASCII handshake header")
        if name == b"connection":
            # Item 4: a Connection list containing the token "upgrade" (any case).
            tokens = (token.strip(b" \t").lower() for token in value.split(b","))
            connection_upgrade = connection_upgrade or b"upgrade" in tokens
        elif name == b"upgrade":
            upgrades.append(value)
        elif name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value)
        elif name == b"sec-websocket-protocol":
            # A comma list, possibly across several headers (section 11.3.4). Only
            # space and tab are stripped: str.strip() would also eat \x1c and friends.
            stripped = (token.strip(b" \t") for token in value.split(b","))
            subprotocols.extend(token.decode("ascii") for token in stripped if token)
    # Item 3; wsproto also requires exactly "websocket", so we agree with it.
    if len(upgrades) != 1 or upgrades[0].lower() != b"websocket":
        return Refusal(400, "Upgrade: websocket required")
    if not connection_upgrade:
        return Refusal(400, "Connection: upgrade required")
    # Item 6, checked before the key: a client of an older draft has no
    # Sec-WebSocket-Key, and 426 is what tells it which version to speak.
    # Sections 11.3.1 and 11.3.5: key and version appear once in a request.
    if len(versions) != 1:
        return Refusal(400, "one Sec-WebSocket-Version required")
    if versions[0] != b"13":
        return Refusal(426, "unsupported WebSocket version")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return Refusal(400, "bad Sec-WebSocket-Key")
    return subprotocols


def sendable_close_code(code: int) -> bool:
    """RFC 6455 section 7.4: codes an endpoint may put in a Close frame.

    1004 is reserved; 1005, 1006 and 1015 are for reporting only, never sent. 1012-1014
    are registered with IANA since (restart, try again later, bad gateway). 1016-2999
    are reserved for future RFCs; 3000-3999 are registered and 4000-4999 private use.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# -- message limits ----------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketLimits:
    """Limits and timers of one WebSocket connection. Immutable; build a new one to change.

    Attributes:
        max_message_size: Largest message in bytes, after reassembly and after
            decompression (RFC 7692). A bigger one closes the connection with 1009.
        max_fragments: Most frames with payload in one message; more closes with 1009.
        max_outbound_buffer: Unsent bytes the adapter may hold before the connection is
            failed with 1008 (see ``WebSocketCore.check_outbound_buffer``).
        per_message_deflate: Negotiate permessage-deflate when the client offers it.
        ping_interval_s: Idle seconds before the server sends a keepalive ping; None
            sends none.
        ping_timeout_s: Seconds of silence after a keepalive ping before the connection
            is failed with 1011; None waits forever.
        close_timeout_s: Seconds to wait for the peer's Close after ours before the TCP
            connection is dropped; None waits forever (websockets' default is 10 s).
        answer_grace_s: Seconds a connection failed by bad input waits for the app's
            answers to the messages received before it; 0 fails it at once.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_fragments: int = DEFAULT_MAX_FRAGMENTS
    max_outbound_buffer: int = DEFAULT_MAX_OUTBOUND_BUFFER
    per_message_deflate: bool = True
    # 20 s each, as uvicorn's --ws-ping-interval and --ws-ping-timeout defaults.
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float | None = 10.0
    answer_grace_s: float = DEFAULT_ANSWER_GRACE_S

    def __post_init__(self) -> None:
        """Refuse limits that would make every message or every connection fail.

        Raises:
            ValueError: a size or count below 1, a timer that is not positive, or a
                negative grace.
        """
        for name in ("max_message_size", "max_fragments", "max_outbound_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("ping_interval_s", "ping_timeout_s", "close_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None")
        if not self.answer_grace_s >= 0:  # NaN too
            raise ValueError("answer_grace_s must be zero or positive")


@final
class MessageGuard(Extension):
    """Counts frames and bytes per message from frame headers; see the module docstring.

    One instance belongs to one connection. It is handed to wsproto in the list of
    extensions at accept time; ``enabled`` is always True, so wsproto's
    ``FrameProtocol`` keeps it even though no client ever negotiates it.
    """

    # Never matches an offer: the name is split off at ";" before comparison, so a name
    # containing one cannot be offered. (Base ``accept`` would decline anyway.)
    name = "corral; message-guard"

    def __init__(self, limits: WebSocketLimits) -> None:
        self._max_size = limits.max_message_size
        self._max_fragments = limits.max_fragments
        # Per message, as of the last completed frame: is one in progress, how many
        # frames and counted bytes it has, and whether its size is counted here
        # (uncompressed) or by the inflater.
        self._in_message = False
        self._fragments = 0
        self._size = 0
        self._counted = True
        # The same three with the frame being read included; committed when it ends.
        # wsproto may call the header hook several times for one frame (it rolls back
        # when the masking key is still incomplete), so the hook must only compute.
        self._next_fragments = 0
        self._next_size = 0
        self._next_counted = True
        # Per frame: the frame being read is a data frame (not a control frame).
        self._data_frame = False
        #: Why the guard refused a frame, for the Close reason; None until it does.
        self.failure: str | None = None

    def enabled(self) -> bool:
        """Always on: limits do not depend on negotiation."""
        return True

    def offer(self) -> bool:
        """Servers make no offers (RFC 6455 section 9.1); required by the base class."""
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Account for a frame from its header, before its payload is read."""
        if opcode.iscontrol():
            # Control frames are at most 125 bytes (wsproto checks, RFC 6455 5.5) and
            # belong to no message, so they neither count nor end one.
            self._data_frame = False
            return _NO_RSV
        self._data_frame = True
        if opcode is Opcode.CONTINUATION:
            if not self._in_message:
                return self._refuse(CloseReason.PROTOCOL_ERROR, "unexpected continuation frame")
            fragments, size, counted = self._fragments, self._size, self._counted
            if payload_length:
                fragments += 1
                if fragments > self._max_fragments:
                    # 1009 rather than 1008: the limit bounds what one message costs to
                    # reassemble, which is what "too big to process" means (RFC 6455
                    # 7.4.1), and one code for both message limits keeps callers simple.
                    return self._refuse(CloseReason.MESSAGE_TOO_BIG, "too many fragments")
        else:
            if self._in_message:
                return self._refuse(CloseReason.PROTOCOL_ERROR, "expected continuation frame")
            # RSV1 marks a compressed message (RFC 7692 section 6). If deflate was not
            # negotiated, wsproto rejects the bit right after the header hooks run
            # (FrameDecoder.extension_processing), so trusting it here is safe.
            fragments, size, counted = 1, 0, not rsv.rsv1
        if counted:
            size += payload_length
            if size > self._max_size:
                return self._refuse(CloseReason.MESSAGE_TOO_BIG, "message too big")
        self._next_fragments, self._next_size, self._next_counted = fragments, size, counted
        return _NO_RSV

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """Commit a data frame to its message; FIN ends the message."""
        if self._data_frame:
            self._fragments, self._size = self._next_fragments, self._next_size
            self._counted = self._next_counted
            self._in_message = not fin
        return None

    def _refuse(self, code: CloseReason, reason: str) -> CloseReason:
        self.failure = reason
        return code
