"""WebSocket limits, compression, keepalive and protocol errors, end to end.

The app and both clients come from test_websocket.py. Hand-made frames (bad opcodes,
invalid UTF-8, compressed bombs, floods of fragments) are written to the socket of a
raw wsproto client, or under the ``websockets`` client through its socket.
"""

from __future__ import annotations

import logging
import socket
import struct
import zlib
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from wsproto import events as ws

from tests.e2e.test_websocket import APP, RawClient, ws_connect
from tests.harness import TIME_FACTOR, Server, wait_until

MAX = 4096

# A fixed client mask: the server must unmask whatever key it gets.
MASK = b"\x11\x22\x33\x44"


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame built by hand, so that it can be anything at all."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


def deflated(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 section 7.2.1: the tail 00 00 ff ff cut)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def close_code_of(info: pytest.ExceptionInfo[ConnectionClosed]) -> int:
    assert info.value.rcvd is not None, "the server sent no Close frame"
    return info.value.rcvd.code


@pytest.fixture(scope="module")
def small() -> Iterator[Server]:
    """--ws-max-size 4096, and keepalive pings every 0.3 s with 0.5 s to answer."""
    with Server(
        APP,
        "-w",
        "1",
        "--ws-max-size",
        str(MAX),
        "--ws-ping-interval",
        str(0.3 * TIME_FACTOR),
        "--ws-ping-timeout",
        str(0.5 * TIME_FACTOR),
        "--timeout-write",
        "5",
    ) as server:
        yield server


# -- message size -----------------------------------------------------------------------------


def test_exact_max_size_is_accepted_and_one_more_is_1009(small: Server) -> None:
    """A message of exactly --ws-max-size echoes; max+1 closes with 1009."""
    with ws_connect(small, max_size=None, compression=None) as client:
        client.send(b"a" * MAX)
        assert client.recv(5 * TIME_FACTOR) == b"a" * MAX
        client.send(b"a" * (MAX + 1))
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert close_code_of(info) == 1009
    with RawClient(small) as raw:
        raw.expect(ws.AcceptConnection)
        # Fragmented: the parts add up to max+1, each one small.
        raw.send(ws.BytesMessage(b"b" * (MAX // 2), message_finished=False))
        raw.send(ws.BytesMessage(b"b" * (MAX // 2 + 1)))
        assert raw.expect(ws.CloseConnection).code == 1009
        assert raw.wait_eof() == []


def test_compressed_bomb_is_1009(small: Server) -> None:
    """A small compressed frame that inflates far past the limit: 1009, exact max ok."""
    with ws_connect(small, max_size=None) as client:
        assert "permessage-deflate" in client.response.headers["sec-websocket-extensions"]
        client.send(b"\0" * MAX)  # compressed to a few bytes, inflated to exactly max
        assert client.recv(5 * TIME_FACTOR) == b"\0" * MAX
        client.send(b"\0" * (MAX + 1))
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert close_code_of(info) == 1009
    bomb = deflated(b"\0" * (64 * 1024 * 1024))  # 64 MiB in ~64 KB
    with RawClient(small, deflate=True) as raw:
        accepted = raw.expect(ws.AcceptConnection)
        assert accepted.extensions
        raw.sock.sendall(frame(0x2, bomb, rsv=0b100))
        assert raw.expect(ws.CloseConnection).code == 1009


def test_fragment_cap(plain: Server) -> None:
    """65,537 one-byte fragments with no FIN: closed (1009) before the flood ends."""
    with RawClient(plain) as raw:
        raw.expect(ws.AcceptConnection)
        flood = frame(0x2, b"x", fin=False) + frame(0x0, b"x", fin=False) * 65_536
        raw.sock.sendall(flood)
        close = raw.expect(ws.CloseConnection, timeout=10)
        assert close.code == 1009
    with ws_connect(plain) as client:
        client.send(["x"] * 100)  # a fragmented message well under the cap is fine
        assert client.recv(5 * TIME_FACTOR) == "x" * 100
        client.socket.sendall(flood)  # the same flood under the websockets client
        with pytest.raises(ConnectionClosed) as info:
            client.recv(10 * TIME_FACTOR)
    assert close_code_of(info) == 1009


@pytest.fixture(scope="module")
def plain() -> Iterator[Server]:
    """Default limits, compression off."""
    with Server(APP, "-w", "1", "--no-ws-per-message-deflate") as server:
        yield server


# -- a client that stops reading ----------------------------------------------------------------

#: --ws-max-size 4096 bounds unsent bytes at 4 * 1 MiB (the floor); a 16 MB message to a
#: client that does not read leaves far more than that unsent whatever the kernel takes.
BIG = 16_000_000


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes; only the last 64 bytes are kept."""
    tail = b""
    sock.settimeout(10 * TIME_FACTOR)
    while data := sock.recv(1 << 20):
        tail = (tail + data)[-64:]
    return tail


def test_client_that_stops_reading_is_failed_with_1008(small: Server) -> None:
    """Unsent bytes past the bound: Close 1008 queued, the app told, nothing more kept."""
    mark = len(small.lines)
    with RawClient(small, rcvbuf=4096) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage(f"big {BIG}"))
        small.wait_for_line(r"ws-app: disconnect /echo 1008 'outbound buffer full'", start=mark)
        # The message, then the Close: 0x88, length, 1008, the reason.
        reason = b"outbound buffer full"
        assert read_to_eof(raw.sock).endswith(
            bytes([0x88, 2 + len(reason)]) + struct.pack("!H", 1008) + reason
        )

    mark = len(small.lines)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((small.host, small.port))
    # max_queue=1: once two messages wait unread, the client stops reading the socket.
    with ws_connect(small, sock=sock, max_size=None, max_queue=1, compression=None) as client:
        client.send("one")
        client.send("two")
        client.send(f"big {BIG}")
        small.wait_for_line(r"ws-app: disconnect /echo 1008", start=mark)
        assert client.recv(5 * TIME_FACTOR) == "one"
        assert client.recv(5 * TIME_FACTOR) == "two"
        assert len(client.recv(10 * TIME_FACTOR)) == BIG
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert close_code_of(info) == 1008


# -- compression ---------------------------------------------------------------------------------


def test_deflate_is_negotiated_by_default_and_off_with_the_flag(
    small: Server, plain: Server
) -> None:
    """permessage-deflate when offered; --no-ws-per-message-deflate never agrees to it."""
    with ws_connect(small) as client:
        assert client.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        client.send("z" * 1000)
        assert client.recv(5 * TIME_FACTOR) == "z" * 1000
    with RawClient(small, deflate=True) as raw:
        assert [e.name for e in raw.expect(ws.AcceptConnection).extensions] == [
            "permessage-deflate"
        ]
        raw.send(ws.TextMessage("y" * 1000))  # compressed by the client
        assert raw.expect(ws.TextMessage).data == "y" * 1000
    with ws_connect(plain) as client:
        assert "sec-websocket-extensions" not in client.response.headers
        client.send("z" * 1000)
        assert client.recv(5 * TIME_FACTOR) == "z" * 1000
    with RawClient(plain, deflate=True) as raw:
        assert raw.expect(ws.AcceptConnection).extensions == []


# -- keepalive -----------------------------------------------------------------------------------


class FrameCounter(logging.Handler):
    """Counts the Pings the websockets client logs at DEBUG ("< PING ...")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("< PING"):
            self.pings += 1


def test_server_pings_and_closes_a_client_that_never_answers(small: Server) -> None:
    """Pings every --ws-ping-interval; no answer within --ws-ping-timeout: 1011."""
    mark = len(small.lines)
    with RawClient(small) as raw:
        raw.expect(ws.AcceptConnection)
        assert isinstance(raw.next_event(), ws.Ping)  # and never answered
        close = raw.next_event()
        assert isinstance(close, ws.CloseConnection)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
        assert raw.wait_eof() == []
    small.wait_for_line(r"ws-app: disconnect /echo 1011", start=mark)

    # The websockets client answers pings on its own, but not once it stops reading.
    mark = len(small.lines)
    with ws_connect(small, max_queue=1) as client:
        client.send("one")
        client.send("two")  # two unread messages: the client stops reading
        small.wait_for_line(r"ws-app: disconnect /echo 1011", start=mark)
        assert [client.recv(5 * TIME_FACTOR) for _ in range(2)] == ["one", "two"]
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert close_code_of(info) == 1011


def test_pings_are_answered_both_ways(small: Server) -> None:
    """The server answers a client's Ping; a client answering the server's stays connected."""
    with RawClient(small) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.Ping(b"are you there"))
        event = raw.next_event()
        while isinstance(event, ws.Ping):  # a keepalive of the server's may come first
            raw.send(event.response())
            event = raw.next_event()
        assert isinstance(event, ws.Pong)
        assert event.payload == b"are you there"
        for _ in range(3):  # three keepalive rounds, each answered
            ping = raw.next_event()
            assert isinstance(ping, ws.Ping)
            raw.send(ping.response())
        raw.send(ws.TextMessage("still here"))
        assert raw.expect(ws.TextMessage).data == "still here"

    counter = FrameCounter()
    logger = logging.getLogger("tests.websockets-client")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(counter)
    try:
        with ws_connect(small, logger=logger) as client:
            assert client.ping(b"x").wait(5 * TIME_FACTOR)
            wait_until(lambda: counter.pings >= 3, 5, "three keepalive pings from the server")
            client.send("still here")
            assert client.recv(5 * TIME_FACTOR) == "still here"
    finally:
        logger.removeHandler(counter)


# -- protocol errors -------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(frame(0x3, b"?"), 1002, id="reserved-opcode"),
    pytest.param(frame(0x1, b"hi", rsv=0b010), 1002, id="rsv2-without-extension"),
    pytest.param(b"\x81\x02hi", 1002, id="unmasked-frame"),
    pytest.param(frame(0x9, b"p" * 126), 1002, id="ping-over-125-bytes"),
    pytest.param(frame(0x1, b"caf\xc3"), 1007, id="truncated-utf8"),
    pytest.param(frame(0x1, b"\xed\xa0\x80"), 1007, id="utf8-surrogate"),
]


@pytest.mark.parametrize(("data", "code"), BAD_INPUT)
def test_protocol_errors_get_a_close_frame_before_tcp_closes(
    plain: Server, data: bytes, code: int
) -> None:
    """RFC 6455 7.1.7: a Close with 1002 or 1007 precedes the TCP close."""
    with RawClient(plain) as raw:
        raw.expect(ws.AcceptConnection)
        raw.sock.sendall(data)
        close = raw.next_event()
        assert isinstance(close, ws.CloseConnection)
        assert close.code == code
        assert raw.wait_eof() == []
    with ws_connect(plain) as client:
        client.socket.sendall(data)
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert close_code_of(info) == code
