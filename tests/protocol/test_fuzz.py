"""Fuzzing the sans-I/O cores with random and mutated byte streams (hypothesis).

Both cores promise that bad peer input never raises: it becomes a documented error
event. These tests hold them to it on random bytes and on valid streams (requests,
frames) mutated by inserting, deleting, flipping, duplicating and truncating bytes and
by breaking line endings, cut into random reads. Each run also checks that:

- only documented events come out, in a legal order (a request's body and end after
  its head, nothing after an error, at most one ``CloseReceived`` and nothing after it);
- error statuses and close codes are the documented ones;
- buffering stays bounded: the HTTP core never holds more than one head limit (plus
  the read being processed) of unparsed bytes, nor does h11 under it; the WebSocket
  core never holds more than one message limit of reassembled fragments, and wsproto
  never more than one frame header and control payload beyond the largest read.

Example counts are modest so CI spends a few seconds here. For a long run (20,000
examples per test, some minutes each, so without the per-test timeout)::

    export CORRAL_FUZZ_PROFILE=long
    .venv/bin/python -m pytest tests/protocol/test_fuzz.py --timeout 0 -o faulthandler_timeout=0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws
from wsproto.extensions import Extension, PerMessageDeflate

from corral.protocol.http import (
    ConnectionClosed,
    HTTPCore,
    HTTPLimits,
    ProtocolError,
    UpgradeRequest,
)
from corral.protocol.http import LocalProtocolError as HTTPLocalProtocolError
from corral.protocol.request import Data, EndOfMessage, Request
from corral.protocol.websocket import (
    CLOSED,
    CONNECTING,
    OPEN,
    BytesMessage,
    CloseReceived,
    PongReceived,
    TextMessage,
    WebSocketCore,
    WebSocketLimits,
)
from corral.protocol.websocket import ConnectionClosed as WSConnectionClosed
from corral.protocol.websocket import LocalProtocolError as WSLocalProtocolError
from corral.protocol.ws_limits import sendable_close_code
from tests.protocol.helpers import new_core

settings.register_profile(
    "fuzz-ci",
    max_examples=100,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
#: Applied per test (not loaded globally, so other hypothesis tests keep their settings).
FUZZ = settings.get_profile(os.environ.get("CORRAL_FUZZ_PROFILE", "fuzz-ci"))

# -- mutations -----------------------------------------------------------------------------

#: One mutation: (kind, position, length, bytes). Positions wrap around the stream.
Mutation = tuple[str, int, int, bytes]

_MUTATIONS = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "flip", "duplicate", "truncate", "crlf"]),
    st.integers(min_value=0, max_value=1 << 16),
    st.integers(min_value=1, max_value=64),
    st.binary(min_size=1, max_size=16)
    | st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b":", b" ", b"\r\n\r\n", b"0\r\n"]),
)


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply ``mutations`` in order; each keeps the stream a plausible variant."""
    buf = bytearray(data)
    for kind, position, length, blob in mutations:
        at = position % (len(buf) + 1)
        if kind == "insert":
            buf[at:at] = blob
        elif kind == "delete":
            del buf[at : at + length]
        elif kind == "replace":
            buf[at : at + len(blob)] = blob
        elif kind == "flip" and at < len(buf):
            buf[at] ^= 1 << (length % 8)
        elif kind == "duplicate":
            buf[at:at] = buf[at : at + length]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "crlf":
            # Break line endings: the classic smuggling material.
            start = buf.find(b"\r\n", at)
            if start >= 0:
                buf[start : start + 2] = blob[:2] if blob in (b"\n", b"\r") else b"\n"
    return bytes(buf)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut ``data`` into reads of the given sizes (cycled); the last one takes the rest."""
    pieces = []
    start = 0
    index = 0
    while start < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        pieces.append(data[start : start + size])
        start += size
        index += 1
    return pieces


_READS = st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8)

# -- HTTP ----------------------------------------------------------------------------------

HTTP_LIMITS = HTTPLimits(max_header_bytes=512, max_body_bytes=1024)

#: Valid requests to start from; concatenations make pipelines.
HTTP_SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?q=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nCookie: x=y\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET http://a/abs HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
]

#: Statuses a ProtocolError may carry (corral/protocol/http.py and h11's hints).
HTTP_ERROR_STATUSES = {400, 413, 431, 501, 505}


@dataclass
class HTTPDriver:
    """Plays the adapter and a simple app against one core, checking every event.

    The app answers each request once its body is in (``answer_early``: as soon as the
    head is in, leaving the body to be discarded), ``delay`` reads later unless the core
    asks for reading to pause, like an app that takes its time.
    """

    core: HTTPCore = field(default_factory=lambda: new_core(HTTP_LIMITS))
    answer_early: bool = False
    delay: int = 0
    in_request: bool = False
    method: bytes = b""
    body_bytes: int = 0
    pending: int | None = None  # reads left before the owed answer goes out
    answered: bool = False
    over: bool = False  # an upgrade, error or close ended the HTTP connection
    # Our answer said the connection closes: only the current request's body may follow.
    closing: bool = False
    paused: bool = False
    max_read: int = 0

    def feed(self, data: bytes) -> None:
        if self.paused:
            # The adapter would not read now: the app answers first.
            self.answer()
            self.drain()
        self.max_read = max(self.max_read, len(data))
        self.core.receive_data(data)
        self.check_bounds()
        self.drain()
        if self.pending is not None:
            if self.pending <= 0 or self.core.wants_read_paused():
                self.answer()
                self.drain()
            else:
                self.pending -= 1
        self.paused = self.core.wants_read_paused()

    def eof(self) -> None:
        self.core.receive_eof()
        self.drain()
        while self.pending is not None:
            self.answer()
            self.drain()

    def check_bounds(self) -> None:
        # The core's own buffer: a partial head, or pipelined bytes until reading pauses
        # (checked after each read, so the last read may be on top).
        limit = HTTP_LIMITS.max_header_bytes + self.max_read
        assert len(self.core._reader._head) <= limit
        # h11's buffer: an incomplete chunk line or trailer section, or a head plus the
        # pipelined bytes handed over with it, plus the read in progress.
        # (None when the head was read without h11: there is no such buffer then.)
        h11_conn = self.core._reader._h11
        if h11_conn is not None:
            assert len(h11_conn._receive_buffer) <= limit + self.max_read

    def drain(self) -> None:
        """Check every event; answer between batches, as the app's task would."""
        while events := self.core.events_received():
            for event in events:
                self.check(event)
            if self.pending == 0:
                self.answer()

    def check(self, event: object) -> None:
        assert not self.over, f"{event!r} after the connection ended"
        if isinstance(event, Request):
            assert not self.in_request
            assert self.pending is None
            assert not self.closing, "a new request after the connection was to close"
            self.in_request, self.method, self.body_bytes = True, event.method, 0
            self.answered = False
            if self.answer_early:
                self.owe()
        elif isinstance(event, Data):
            assert self.in_request
            self.body_bytes += len(event.data)
            assert self.body_bytes <= (HTTP_LIMITS.max_body_bytes or 0)
        elif isinstance(event, EndOfMessage):
            assert self.in_request
            self.in_request = False
            if not self.answered and self.pending is None:
                self.owe()
        elif isinstance(event, ProtocolError):
            assert event.status in HTTP_ERROR_STATUSES, event
            assert self.core.close_expected()
            self.over = True
        elif isinstance(event, UpgradeRequest):
            assert not self.in_request
            assert not self.closing
            assert event.request.method == b"GET"
            self.over = True
        else:
            assert isinstance(event, ConnectionClosed), event
            assert self.core.close_expected()
            self.over = True

    def owe(self) -> None:
        self.pending = self.delay

    def answer(self) -> None:
        if self.pending is None or self.over or self.closing or self.answered:
            self.pending = None
            return
        self.pending = None
        self.answered = True
        core = self.core
        # A 2xx to CONNECT is refused by contract (it would open a tunnel).
        status = 405 if self.method == b"CONNECT" else 200
        try:
            core.send_response(status, [(b"content-length", b"2")])
            core.send_body(b"ok")
            core.send_end()
        except HTTPLocalProtocolError:
            # Documented misuse only: the core must then expect a close.
            assert core.close_expected()
            self.closing = True
            return
        assert core.data_to_send()
        if core.close_expected():
            self.closing = True
            return
        core.start_next_cycle()
        # Whatever is left of this request's body is read and dropped by the core.
        self.in_request = False


def run_http(data: bytes, reads: list[int], *, answer_early: bool, delay: int) -> HTTPDriver:
    driver = HTTPDriver(answer_early=answer_early, delay=delay)
    for piece in cut(data, reads):
        driver.feed(piece)
    driver.eof()
    return driver


@pytest.mark.usefixtures("head_reader")
@FUZZ
@given(data=st.binary(max_size=2000), reads=_READS, early=st.booleans(), delay=st.integers(0, 3))
def test_http_random_bytes(data: bytes, reads: list[int], early: bool, delay: int) -> None:
    """Random bytes: only documented events, in order; nothing raises; buffers bounded."""
    run_http(data, reads, answer_early=early, delay=delay)


@pytest.mark.usefixtures("head_reader")
@FUZZ
@given(
    seeds=st.lists(st.sampled_from(HTTP_SEEDS), min_size=1, max_size=4),
    mutations=st.lists(_MUTATIONS, max_size=6),
    reads=_READS,
    early=st.booleans(),
    delay=st.integers(0, 3),
)
def test_http_mutated_requests(
    seeds: list[bytes], mutations: list[Mutation], reads: list[int], early: bool, delay: int
) -> None:
    """Mutated valid requests and pipelines: the same guarantees as for random bytes."""
    run_http(mutate(b"".join(seeds), mutations), reads, answer_early=early, delay=delay)


@pytest.mark.usefixtures("head_reader")
@FUZZ
@given(
    seeds=st.lists(st.sampled_from(HTTP_SEEDS[:8]), min_size=1, max_size=4),
    reads=_READS,
    early=st.booleans(),
    delay=st.integers(0, 3),
)
def test_http_valid_pipelines_are_all_served(
    seeds: list[bytes], reads: list[int], early: bool, delay: int
) -> None:
    """Unmutated requests, however cut and answered, are each served, in order."""
    driver = HTTPDriver(answer_early=early, delay=delay)
    served = []
    original = driver.check

    def check(event: object) -> None:
        if isinstance(event, Request):
            served.append(event.target)
        original(event)

    driver.check = check  # type: ignore[method-assign]
    for piece in cut(b"".join(seeds), reads):
        driver.feed(piece)
    driver.eof()
    targets = [seed.split(b" ", 2)[1] for seed in seeds]
    # Served in order; all of them unless an answer closed the connection (Connection:
    # close, HTTP/1.0, or an answer while the client still waited for 100 Continue).
    assert served == targets[: len(served)]
    if not driver.closing:
        assert served == targets
    if any(b"Connection: close" in seed or b"HTTP/1.0" in seed for seed in seeds):
        assert driver.closing


# -- WebSocket -----------------------------------------------------------------------------

WS_LIMITS = WebSocketLimits(
    max_message_size=2048,
    max_fragments=8,
    max_outbound_buffer=1 << 20,
    ping_interval_s=5.0,
    ping_timeout_s=5.0,
    close_timeout_s=5.0,
)

_MESSAGE = st.one_of(st.text(max_size=300), st.binary(max_size=300))

#: A client's frames are cut off past this size, so runs with one-byte reads stay fast.
MAX_STREAM_BYTES = 2048
_CLIENT_EVENT = st.one_of(
    st.tuples(st.just("message"), _MESSAGE, st.integers(min_value=1, max_value=200)),
    st.tuples(st.just("ping"), st.binary(max_size=125), st.just(0)),
    st.tuples(st.just("pong"), st.binary(max_size=125), st.just(0)),
    st.tuples(st.just("close"), st.sampled_from([1000, 1001, 3000, 4999]), st.just(0)),
)


def client_stream(
    deflate: bool, plan: list[tuple[str, object, int]]
) -> tuple[WebSocketCore, bytes]:
    """An accepted core, and the frames a real wsproto client sends for ``plan``."""
    client = WSConnection(ConnectionType.CLIENT)
    extensions: list[Extension] = [PerMessageDeflate()] if deflate else []
    raw = client.send(ws.Request(host="example.com", target="/chat", extensions=extensions))
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(raw)
    request = parser.next_event()
    assert isinstance(request, h11.Request)
    core = WebSocketCore(Request.from_h11(request), b"", limits=WS_LIMITS)
    core.accept()
    for chunk in core.data_to_send():
        client.receive_data(chunk)
    assert any(isinstance(e, ws.AcceptConnection) for e in client.events())
    stream = b""
    for kind, value, fragment in plan:
        if len(stream) > MAX_STREAM_BYTES:
            break  # enough to exercise the parser; keeps one-byte reads cheap
        if kind == "message":
            assert isinstance(value, (str, bytes))
            pieces = [value[i : i + fragment] for i in range(0, len(value), fragment)] or [value]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                if isinstance(piece, str):
                    stream += client.send(ws.TextMessage(data=piece, message_finished=last))
                else:
                    stream += client.send(ws.BytesMessage(data=piece, message_finished=last))
        elif kind == "ping":
            stream += client.send(ws.Ping(payload=bytes(value)))  # type: ignore[arg-type]
        elif kind == "pong":
            stream += client.send(ws.Pong(payload=bytes(value)))  # type: ignore[arg-type]
        else:
            assert isinstance(value, int)
            stream += client.send(ws.CloseConnection(code=value))
            break
    return core, stream


#: What the server app does between reads: nothing, send, ping, close, or time passes.
_SERVER_ACTION = st.sampled_from(["none", "none", "text", "bytes", "ping", "close", "tick"])


@dataclass
class WSDriver:
    core: WebSocketCore
    now: float = 1000.0
    closed: bool = False
    events: list[object] = field(default_factory=list)
    max_read: int = 0

    def feed(self, data: bytes, action: str) -> None:
        self.core.receive_data(data, self.now)
        self.max_read = max(self.max_read, len(data))
        self.check_bounds()
        self.collect()
        self.act(action)

    def act(self, action: str) -> None:
        core = self.core
        try:
            if action == "text":
                core.send_text("x" * 100)
            elif action == "bytes":
                core.send_bytes(b"y" * 100)
            elif action == "ping":
                core.send_ping(b"p")
            elif action == "close":
                core.send_close(1000)
        except WSConnectionClosed:
            # Documented: sending on a closing or closed connection.
            assert core.state is not OPEN
        except WSLocalProtocolError:
            raise AssertionError("LocalProtocolError for a valid send when open") from None
        if action == "tick":
            self.now += 6.0  # past the ping interval, then past the ping timeout
            core.tick(self.now)
        else:
            self.now += 0.01
        if core.state is not CLOSED:
            core.check_outbound_buffer(0)
        self.collect()

    def check_bounds(self) -> None:
        core = self.core
        assert core._early == bytearray()  # accepted: nothing waits for the handshake
        reader = core._reader
        parts = sum(len(p.encode()) for p in reader._text_parts) + sum(map(len, reader._byte_parts))
        assert parts <= WS_LIMITS.max_message_size
        conn = core._conn
        if conn is not None:
            buffered = conn._proto._frame_decoder.buffer
            # One frame header (14 bytes) and one control payload (125) beyond a read
            # (after a failure the last read stays unparsed, and nothing is added).
            assert len(buffered) <= self.max_read + 14 + 125

    def collect(self) -> None:
        core = self.core
        core.data_to_send()
        for event in core.events_received():
            assert not self.closed, f"{event!r} after CloseReceived"
            self.events.append(event)
            if isinstance(event, (TextMessage, BytesMessage)):
                size = (
                    len(event.data.encode()) if isinstance(event, TextMessage) else len(event.data)
                )
                assert size <= WS_LIMITS.max_message_size
            elif isinstance(event, CloseReceived):
                assert event.code in (1005, 1006) or sendable_close_code(event.code), event
                assert core.state is CLOSED
                self.closed = True
            else:
                assert isinstance(event, PongReceived), event
        if core.state is CLOSED:
            assert core.close_expected()


def run_ws(core: WebSocketCore, data: bytes, reads: list[int], actions: list[str]) -> WSDriver:
    driver = WSDriver(core)
    for index, piece in enumerate(cut(data, reads)):
        driver.feed(piece, actions[index % len(actions)] if actions else "none")
    core.receive_eof()
    driver.collect()
    # Every connection that got past the handshake ends in exactly one CloseReceived.
    assert driver.closed
    assert sum(isinstance(e, CloseReceived) for e in driver.events) == 1
    return driver


@FUZZ
@given(
    data=st.binary(max_size=2000),
    deflate=st.booleans(),
    reads=_READS,
    actions=st.lists(_SERVER_ACTION, max_size=5),
)
def test_websocket_random_bytes(
    data: bytes, deflate: bool, reads: list[int], actions: list[str]
) -> None:
    """Random bytes after the handshake: documented events only, one CloseReceived."""
    core, _ = client_stream(deflate, [])
    run_ws(core, data, reads, actions)


@FUZZ
@given(
    plan=st.lists(_CLIENT_EVENT, min_size=1, max_size=8),
    deflate=st.booleans(),
    mutations=st.lists(_MUTATIONS, max_size=5),
    reads=_READS,
    actions=st.lists(_SERVER_ACTION, max_size=5),
)
def test_websocket_mutated_frames(
    plan: list[tuple[str, object, int]],
    deflate: bool,
    mutations: list[Mutation],
    reads: list[int],
    actions: list[str],
) -> None:
    """Mutated frames of a real client (fragmented, compressed, control frames): the
    same guarantees; unmutated, every message arrives as sent."""
    core, stream = client_stream(deflate, plan)
    driver = run_ws(core, mutate(stream, mutations), reads, actions)
    if not mutations:
        sent = []
        for kind, value, _ in plan:
            if kind == "close":
                break
            if kind == "message":
                sent.append(TextMessage(value) if isinstance(value, str) else BytesMessage(value))
        got = [e for e in driver.events if isinstance(e, (TextMessage, BytesMessage))]
        # A server "close" action or keepalive timeout may end the session early.
        assert got == sent[: len(got)]


@FUZZ
@given(mutations=st.lists(_MUTATIONS, min_size=1, max_size=6), trailing=st.binary(max_size=64))
def test_websocket_mutated_handshakes(mutations: list[Mutation], trailing: bytes) -> None:
    """A mutated upgrade request that h11 still parses: the core either refuses it with
    400 or 426 (and is CLOSED) or waits for the app; construction never raises."""
    raw = mutate(HTTP_SEEDS[-1], mutations)
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(raw)
    try:
        request = parser.next_event()
    except h11.RemoteProtocolError:
        return
    if not isinstance(request, h11.Request):
        return
    core = WebSocketCore(Request.from_h11(request), trailing, limits=WS_LIMITS)
    if core.error_status_hint is not None:
        assert core.error_status_hint in (400, 426)
        assert core.state is CLOSED
        assert core.data_to_send()
        return
    assert core.state is CONNECTING
    try:
        core.accept()
    except WSLocalProtocolError as exc:
        raise AssertionError(f"accept() refused a handshake the core let through: {exc}") from None
    core.data_to_send()
    run_ws(core, b"", [1], ["none"])
