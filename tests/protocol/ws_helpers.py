"""Helpers for the WebSocket core tests: a real wsproto client joined to the core.

The upgrade request is built by wsproto's client and parsed by ``h11.Connection(SERVER)``
exactly as the HTTP core does (request, then ``trailing_data``), so the core sees what
it sees in production. Malformed input is crafted by hand with :func:`frame`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import h11
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws
from wsproto.extensions import Extension, PerMessageDeflate

from corral.protocol.request import Request
from corral.protocol.websocket import CloseReceived, Event, WebSocketCore, WebSocketLimits

# A fixed mask keeps hand-made frames reproducible; the server must unmask any key.
MASK = b"\x37\xfa\x21\x3d"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# A valid client handshake's headers, in order; tests drop or replace some.
GOOD_HEADERS: list[tuple[bytes, bytes]] = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]


def parse_upgrade(raw: bytes) -> tuple[Request, bytes]:
    """Parse a request head with h11 as the HTTP core does; return it and the rest."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    while conn.next_event() not in (h11.PAUSED, h11.NEED_DATA):
        pass
    return Request.from_h11(request), conn.trailing_data[0]


def raw_request(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: bytes = b"GET",
    version: bytes = b"1.1",
    tail: bytes = b"",
) -> bytes:
    """Serialise a request head by hand, so that any header can be malformed."""
    pairs = GOOD_HEADERS if headers is None else headers
    lines = [b"%s /chat HTTP/%s" % (method, version)] + [n + b": " + v for n, v in pairs]
    return b"\r\n".join(lines) + b"\r\n\r\n" + tail


def with_headers(
    drop: tuple[bytes, ...] = (), add: tuple[tuple[bytes, bytes], ...] = ()
) -> list[tuple[bytes, bytes]]:
    """The good headers without those named in ``drop`` (any case), plus ``add``."""
    dropped = {name.lower() for name in drop}
    return [(n, v) for n, v in GOOD_HEADERS if n.lower() not in dropped] + list(add)


def core_for(raw: bytes, limits: WebSocketLimits | None = None) -> WebSocketCore:
    """A core built from raw request bytes."""
    request, trailing = parse_upgrade(raw)
    return WebSocketCore(request, trailing, limits=limits or WebSocketLimits())


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    masked: bool = True,
) -> bytes:
    """A client frame made by hand (RFC 6455 section 5.2), masked unless told not to."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return header + MASK + body


def frame_header(opcode: int, declared_size: int, *, fin: bool = True) -> bytes:
    """Only the header and mask of a frame that claims ``declared_size`` bytes."""
    return struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, declared_size) + MASK


@dataclass
class WsPair:
    """A corral server core and a wsproto client, joined by hand-carried bytes.

    ``now`` is the clock passed to the core; tests move it by hand.
    """

    limits: WebSocketLimits = field(default_factory=WebSocketLimits)
    subprotocols: list[str] = field(default_factory=list)
    deflate: bool | PerMessageDeflate = False
    early: bytes = b""
    now: float = 100.0

    def __post_init__(self) -> None:
        self.client = WSConnection(ConnectionType.CLIENT)
        offer = self.deflate if isinstance(self.deflate, PerMessageDeflate) else PerMessageDeflate()
        extensions: list[Extension] = [offer] if self.deflate else []
        raw = self.client.send(
            ws.Request(
                host="example.com",
                target="/chat",
                subprotocols=self.subprotocols,
                extensions=extensions,
            )
        )
        request, trailing = parse_upgrade(raw + self.early)
        self.server = WebSocketCore(request, trailing, limits=self.limits)

    def accept(
        self, subprotocol: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> list[ws.Event]:
        """Accept on the server and return what the client made of the response."""
        self.server.accept(subprotocol, headers or [])
        return self.to_client()

    def to_client(self) -> list[ws.Event]:
        """Carry everything the server queued to the client; return the client's events."""
        for chunk in self.server.data_to_send():
            self.client.receive_data(chunk)
        return list(self.client.events())

    def feed(self, data: bytes) -> list[Event]:
        """Carry raw bytes to the server; return the server's events."""
        self.server.receive_data(data, self.now)
        return self.server.events_received()

    def send(self, *events: ws.Event) -> list[Event]:
        """Let the client send wsproto events; return the server's events."""
        return self.feed(b"".join(self.client.send(event) for event in events))

    def echo_close(self) -> list[Event]:
        """Let the client answer the server's Close; return the server's events."""
        return self.send(ws.CloseConnection(code=1000))


def opened(
    limits: WebSocketLimits | None = None, *, deflate: bool = False, early: bytes = b""
) -> WsPair:
    """An accepted pair; with ``deflate`` the client offers permessage-deflate."""
    pair = WsPair(limits or WebSocketLimits(), deflate=deflate, early=early)
    pair.accept()
    return pair


def client_close(events: list[ws.Event]) -> ws.CloseConnection:
    """The one Close the client saw among ``events``."""
    closes = [e for e in events if isinstance(e, ws.CloseConnection)]
    assert len(closes) == 1, events
    return closes[0]


def assert_failed(pair: WsPair, events: list[Event], code: int) -> None:
    """The server failed the connection: Close ``code`` sent, reported, TCP to close."""
    last = events[-1]
    assert isinstance(last, CloseReceived), events
    assert last.code == code, last
    assert client_close(pair.to_client()).code == code
    assert pair.server.close_expected()
