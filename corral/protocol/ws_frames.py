"""WebSocket frames corral writes and reads itself, beside wsproto.

Theory of operation
-------------------
wsproto parses and builds every frame correctly, but at a cost per frame (three copies
of an outgoing payload; an event, a buffer and a decoder pass for an incoming one). Two
kinds of frame are simple enough to handle here, by RFC 6455 section 5.2's layout:

* Outgoing: every frame a server sends is unmasked and whole, so :func:`queue_frame`
  packs the header and, up to :data:`COALESCE_MAX`, joins it to the payload;
  :func:`queue_message` compresses a message first when permessage-deflate is on. Only
  Close goes through wsproto (``websocket.py``), to keep its closing handshake state.
* Incoming: :func:`read_simple_frames` reads the complete, unfragmented, masked text
  and binary frames at the start of a read, and stops at the first frame that is
  anything else, which goes to wsproto with everything after it. It may only be called
  when wsproto is between messages with nothing buffered
  (:func:`corral.protocol.private.between_messages`), so skipping wsproto changes none
  of its state, and without permessage-deflate.

The rule that keeps the incoming path from ever judging a frame differently: it only
reads frames wsproto would read to the same message; anything doubtful (even a frame
wsproto would refuse) stops it, so every error, close code and reason still comes from
wsproto. ``tests/protocol/test_websocket_frames.py`` checks this differentially: each
stream is fed whole and byte by byte (never a complete frame, so all through wsproto),
and the events and replies must be the same.

What this file must not know: the connection's state, wsproto, timers, the app.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from corral.protocol.ws_events import BytesMessage, Event, TextMessage

if TYPE_CHECKING:
    from corral.protocol.ws_deflate import BoundedDeflate

__all__ = [
    "COALESCE_MAX",
    "FIN_BINARY",
    "FIN_PING",
    "FIN_PONG",
    "FIN_TEXT",
    "MIN_COMPRESS_BYTES",
    "RSV1",
    "queue_frame",
    "queue_message",
    "read_simple_frames",
    "unmask",
]

# -- frames the server sends -----------------------------------------------------------

# First header byte of each frame the server sends: FIN plus opcode (section 5.2).
FIN_TEXT: Final = 0x81
FIN_BINARY: Final = 0x82
FIN_PING: Final = 0x89
FIN_PONG: Final = 0x8A
RSV1: Final = 0x40  # "this message is compressed" (RFC 7692 section 6)

# Header layouts for 7-bit, 16-bit and 64-bit payload lengths; no mask from a server.
_PACK_SHORT: Final = struct.Struct("!BB").pack
_PACK_MEDIUM: Final = struct.Struct("!BBH").pack
_PACK_LONG: Final = struct.Struct("!BBQ").pack

#: Up to this size a frame's header and payload are joined into one chunk (one write,
#: one small copy); above it they are queued apart so a big payload is never copied.
COALESCE_MAX: Final = 16 * 1024

#: Messages shorter than this go out uncompressed even when deflate is on (RFC 7692
#: lets each message choose). Below ~64 bytes deflate's block overhead eats the gain,
#: and zlib's fixed cost per call dominates a small echo.
MIN_COMPRESS_BYTES: Final = 64


def queue_frame(out: list[bytes], first: int, payload: bytes) -> None:
    """Append a whole, unmasked server frame to ``out``: header byte ``first`` (FIN,
    RSV bits, opcode), then ``payload`` (RFC 6455 section 5.2: the shortest length
    encoding; servers never mask).

    Small frames are one chunk; above :data:`COALESCE_MAX` the payload is a chunk of
    its own, uncopied.
    """
    size = len(payload)
    if size < 126:
        out.append(_PACK_SHORT(first, size) + payload)
        return
    header = _PACK_MEDIUM(first, 126, size) if size < 65536 else _PACK_LONG(first, 127, size)
    if size <= COALESCE_MAX:
        out.append(header + payload)
    else:
        out += (header, payload)


def queue_message(
    out: list[bytes], first: int, payload: bytes, deflate: BoundedDeflate | None
) -> None:
    """Append a whole text or binary message as one frame, as :func:`queue_frame` does,
    compressed with ``deflate`` (and RSV1 set, RFC 7692 section 6) from
    :data:`MIN_COMPRESS_BYTES` on when permessage-deflate was negotiated."""
    if deflate is not None and len(payload) >= MIN_COMPRESS_BYTES:
        payload = deflate.compress(payload)
        first |= RSV1
    queue_frame(out, first, payload)


# -- frames the client sends -----------------------------------------------------------

# First header byte of the only client frames read without wsproto: FIN, no RSV bit,
# text or binary (section 5.2). Anything else (fragments, control frames, extension
# bits) goes through wsproto.
_CLIENT_FIN_TEXT: Final = 0x81
_CLIENT_FIN_BINARY: Final = 0x82

#: Payloads shorter than this are unmasked with one big-integer XOR; longer ones with
#: four byte-translations (measured: the integer is faster up to about 1 KiB, then
#: the tables win by 2.5x at 64 KiB).
_UNMASK_BY_INT_MAX: Final = 1024

# XOR tables for unmasking long payloads: _XOR[k] maps each byte b to b ^ k.
_XOR: Final = [bytes(b ^ k for b in range(256)) for k in range(256)]


def read_simple_frames(data: bytes, limit: int, events: list[Event]) -> int:
    """Read the complete, unfragmented, masked text and binary frames at the start of
    ``data``, appending a message to ``events`` for each; return how many bytes they
    took.

    ``limit`` is the largest payload to read here. The first frame that is anything
    else (a control frame, a fragment, RSV bits, no mask, a 64-bit or non-minimal
    length, a size over ``limit``, invalid UTF-8, or simply incomplete) stops the loop:
    it and everything after it are for wsproto, which accepts it or fails the
    connection with its own code (RFC 6455 sections 5.2, 5.3, 5.6). Call only as the
    module docstring says.
    """
    size = len(data)
    pos = 0
    while size - pos >= 6:  # the smallest masked frame: 2 header + 4 mask bytes
        first = data[pos]
        if first != _CLIENT_FIN_TEXT and first != _CLIENT_FIN_BINARY:
            break
        second = data[pos + 1]
        if second < 0x80:  # MASK bit clear: wsproto fails it (section 5.1)
            break
        length = second & 0x7F
        if length < 126:
            start = pos + 6
        elif length == 126 and size - pos >= 8:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:  # not the minimal encoding: wsproto refuses those
                break
            start = pos + 8
        else:
            break  # 64-bit lengths (large messages) and incomplete headers
        end = start + length
        if end > size or length > limit:
            break
        payload = unmask(data[start:end], data[start - 4 : start])
        if first == _CLIENT_FIN_TEXT:
            try:
                events.append(TextMessage(payload.decode("utf-8")))
            except UnicodeDecodeError:
                break  # wsproto fails it with 1007
        else:
            events.append(BytesMessage(payload))
        pos = end
    return pos


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking key ``mask`` (RFC 6455 section 5.3)."""
    size = len(payload)
    if size < _UNMASK_BY_INT_MAX:
        key = (mask * ((size + 3) // 4))[:size]
        return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    out = bytearray(payload)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR[mask[i]])
    return bytes(out)
