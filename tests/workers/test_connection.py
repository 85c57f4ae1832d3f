"""The transport adapter and the ASGI cycle on an in-memory transport with a fake clock.

No sockets: :class:`FakeTransport` records what is written and what flow-control calls
are made, and can simulate a client that does not read (its write buffer grows and it
calls ``pause_writing``). The event loop's clock is frozen and moved by hand; deadlines
are enforced by calling the worker's sweep, exactly as the worker does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from corral.config import Config
from corral.workers.connection import COALESCE_BYTES, LINGER_S, Deadline, HTTPConnection
from corral.workers.cycle import BODY_HIGH_WATER_BYTES
from corral.workers.server import WorkerServer
from corral.workers.types import ClientDisconnected

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class FakeTransport(asyncio.Transport):
    """Records writes; with ``stalled`` the bytes pile up as if the client did not read."""

    def __init__(self, protocol: asyncio.Protocol, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.protocol = protocol
        self.loop = loop
        self.written = bytearray()
        self.stalled = False
        self.buffered = 0
        self.write_paused = False
        self.reading = True
        self.pauses = 0
        self.closing = False
        self.aborted = False
        self.eof = False
        self._lost = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.Protocol:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 5555), "sockname": ("10.0.0.2", 80)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "write after close"
        assert not self.eof, "write after write_eof"
        self.written += data
        if self.stalled:
            self.buffered += len(data)
            if self.buffered > HIGH_WATER and not self.write_paused:
                self.write_paused = True
                self.protocol.pause_writing()

    def client_reads(self, size: int) -> None:
        """The client takes ``size`` bytes out of the write buffer."""
        self.buffered = max(0, self.buffered - size)
        if self.write_paused and self.buffered <= LOW_WATER:
            self.write_paused = False
            self.protocol.resume_writing()
        if self.closing and not self.buffered:
            self._lose()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    @property
    def finished(self) -> bool:
        """Closed, or at least nothing more may be written."""
        return self.closing or self.eof

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        if self.reading:
            self.pauses += 1
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closing = True
        if not self.buffered:
            self._lose()

    def abort(self) -> None:
        self.closing = self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closing

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            self.loop.call_soon(self.protocol.connection_lost, None)


class Env:
    """A loop with a frozen clock, and connections to a WorkerServer on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.now = 1000.0
        self.loop.time = lambda: self.now  # type: ignore[method-assign]  # a frozen clock

    def server(self, app: Callable[..., Awaitable[None]], **options: Any) -> WorkerServer:
        config = dataclasses.replace(Config(app="tests:app"), **options)
        return WorkerServer(config, app, {"k": "v"}, self.loop)

    def connect(self, server: WorkerServer) -> tuple[HTTPConnection, FakeTransport]:
        conn = HTTPConnection(server)
        transport = FakeTransport(conn, self.loop)
        conn.connection_made(transport)
        return conn, transport

    def settle(self, until: Callable[[], bool] | None = None) -> None:
        """Let runnable tasks run: 20 loop iterations, or until ``until()`` is true."""
        for _ in range(20 if until is None else 100_000):
            self.loop.run_until_complete(asyncio.sleep(0))
            if until is not None and until():
                return
        assert until is None, "the condition never became true"

    def advance(self, server: WorkerServer, seconds: float) -> None:
        """Move the clock and run the sweep, as the worker does."""
        self.now += seconds
        server.sweep()
        self.settle()

    def close(self) -> None:
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.wait(tasks))
        self.loop.close()


@pytest.fixture
def env() -> Iterator[Env]:
    environment = Env()
    yield environment
    environment.close()


def post(length: int, target: str = "/", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (
        target.encode(),
        length,
        extra,
    )


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


async def respond(send: Any, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await respond(send)


# -- flow control ------------------------------------------------------------------------------


def test_reading_pauses_while_the_app_has_not_consumed_the_body(env: Env) -> None:
    """Backpressure: pause_reading once more than 64 KiB wait for the app; resume on receive."""
    gate = asyncio.Event()
    got: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        message = await receive()
        got.append(len(message["body"]))
        await respond(send)

    server = env.server(app)
    conn, transport = env.connect(server)
    conn.data_received(post(200_000))
    chunk = b"x" * 16384
    for _ in range(4):
        conn.data_received(chunk)
    env.settle()
    assert transport.reading  # exactly 64 KiB buffered: not over the limit yet
    conn.data_received(chunk)
    assert not transport.reading
    assert transport.pauses == 1
    gate.set()
    env.settle()
    assert got == [5 * 16384]
    assert BODY_HIGH_WATER_BYTES < 5 * 16384
    assert transport.reading


def test_send_waits_while_the_transport_paused_writing(env: Env) -> None:
    progress: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a" * 100_000, "more_body": True})
        progress.append("first send returned")
        await send({"type": "http.response.body", "body": b"end"})
        progress.append("done")

    server = env.server(app)
    conn, transport = env.connect(server)
    transport.stalled = True
    conn.data_received(GET)
    env.settle()
    assert transport.write_paused
    assert progress == []  # send() is waiting for resume_writing()
    assert conn.deadline_reason is Deadline.WRITE
    transport.client_reads(90_000)
    env.settle()
    assert progress == ["first send returned", "done"]


def test_a_client_that_stops_reading_is_aborted_and_send_raises(env: Env) -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"a" * 100_000, "more_body": True})
        except OSError as exc:
            raised.append(exc)
            raise

    server = env.server(app, timeout_write=30.0)
    conn, transport = env.connect(server)
    transport.stalled = True
    conn.data_received(GET)
    env.settle()
    env.advance(server, 29.9)
    assert not transport.aborted
    env.advance(server, 0.2)
    assert transport.aborted
    assert len(raised) == 1
    assert isinstance(raised[0], ClientDisconnected)
    assert isinstance(raised[0], OSError)
    assert server.active == 0
    assert conn not in server.connections


def test_a_slow_reader_making_progress_is_not_cut(env: Env) -> None:
    """The write deadline measures stalls: a shrinking buffer moves it on."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await respond(send, b"a" * 1_000_000)

    server = env.server(app, timeout_write=10.0)
    conn, transport = env.connect(server)
    transport.stalled = True
    conn.data_received(GET)
    env.settle()
    assert transport.write_paused
    for _ in range(5):  # 50 s in all, but never 10 s without progress
        transport.client_reads(100_000)
        env.advance(server, 10.1)
        assert not transport.aborted
    env.advance(server, 10.1)  # now no progress for a whole period
    assert transport.aborted


def test_a_close_that_cannot_flush_is_aborted(env: Env) -> None:
    """transport.close() waits for the buffer; a client that never reads must not hold it."""
    server = env.server(hello, timeout_write=5.0)
    conn, transport = env.connect(server)
    transport.stalled = True
    transport.buffered = 1000  # earlier bytes the client never read
    conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    env.settle()
    assert transport.closing
    assert not transport.aborted
    env.advance(server, 5.1)
    assert transport.aborted


def test_pipelined_bytes_are_bounded(env: Env) -> None:
    """Reading pauses once the pipelined requests pass the head limit; all are served."""
    gate = asyncio.Event()
    served: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        served.append(scope["path"])
        await respond(send)

    server = env.server(app)
    conn, transport = env.connect(server)
    requests = [b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(1000)]
    data = b"".join(requests)
    conn.data_received(data[:20_000])
    env.settle()
    assert not transport.reading
    gate.set()
    env.settle(until=lambda: transport.reading)
    assert 100 < len(served) < 200  # paused until what is left (~30 B each) fits 16 KiB
    conn.data_received(data[20_000:])
    env.settle(until=lambda: len(served) == 1000)
    assert served == [f"/{i}" for i in range(1000)]
    assert transport.written.count(b"HTTP/1.1 200 ") == 1000


# -- deadlines ---------------------------------------------------------------------------------


def test_header_deadline_is_absolute_from_the_first_byte(env: Env) -> None:
    server = env.server(hello, timeout_header=1.0)
    conn, transport = env.connect(server)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaa"
    for i in range(9):
        conn.data_received(head[i : i + 1])
        env.advance(server, 0.1)
    assert not transport.finished
    conn.data_received(head[9:10])
    env.advance(server, 0.15)
    assert transport.eof
    assert transport.written.startswith(b"HTTP/1.1 408 ")


def test_after_an_error_response_input_is_dropped_then_the_connection_closes(env: Env) -> None:
    """Lingering close: write side shut, the rest of the upload read and dropped."""
    server = env.server(hello, max_body_size=10)
    conn, transport = env.connect(server)
    conn.data_received(post(1000))
    assert transport.written.startswith(b"HTTP/1.1 413 ")
    assert transport.eof
    assert not transport.closing
    for _ in range(10):
        conn.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # never parsed
    env.settle()
    assert transport.written.count(b"HTTP/1.1") == 1
    env.advance(server, LINGER_S + 0.1)
    assert transport.closing
    # And a client that closes its side after reading the error ends it at once.
    conn, transport = env.connect(server)
    conn.data_received(post(1000))
    assert conn.eof_received() is None  # asyncio then closes the transport


def test_a_silent_new_connection_is_closed_quietly(env: Env) -> None:
    server = env.server(hello, timeout_header=2.0, timeout_keep_alive=60.0)
    _conn, transport = env.connect(server)
    env.advance(server, 1.9)
    assert not transport.closing
    env.advance(server, 0.2)
    assert transport.closing
    assert transport.written == b""


def test_keep_alive_deadline_after_a_response(env: Env) -> None:
    server = env.server(hello, timeout_keep_alive=5.0)
    conn, transport = env.connect(server)
    conn.data_received(GET)
    env.settle()
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert conn.deadline_reason is Deadline.IDLE
    env.advance(server, 4.9)
    assert not transport.closing
    env.advance(server, 0.2)
    assert transport.closing
    assert transport.written.count(b"HTTP/1.1") == 1


def test_body_deadline_runs_only_while_the_app_waits_for_body(env: Env) -> None:
    """The app's own processing time is not client silence; its waiting in receive() is."""
    gate = asyncio.Event()
    messages: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append((await receive())["type"])
        await gate.wait()  # busy with the first chunk
        messages.append((await receive())["type"])

    server = env.server(app, timeout_body=1.0)
    conn, transport = env.connect(server)
    conn.data_received(post(100) + b"x" * 10)
    env.settle()
    env.advance(server, 5.0)
    assert not transport.closing
    gate.set()
    env.settle()
    env.advance(server, 0.9)
    assert not transport.closing
    env.advance(server, 0.2)
    assert transport.written.startswith(b"HTTP/1.1 408 ")
    assert messages == ["http.request", "http.disconnect"]


# -- the ASGI cycle ----------------------------------------------------------------------------


def test_100_continue_only_when_the_app_calls_receive(env: Env) -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        message = await receive()
        await respond(send, message["body"])

    server = env.server(app)
    conn, transport = env.connect(server)
    conn.data_received(post(4, extra=b"Expect: 100-continue\r\n"))
    env.settle()
    assert transport.written == b""
    gate.set()
    env.settle()
    assert transport.written == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.data_received(b"body")
    env.settle()
    assert transport.written.endswith(b"\r\n4\r\nbody\r\n0\r\n\r\n")


def test_send_after_the_client_left_raises_an_oserror(env: Env) -> None:
    gate = asyncio.Event()
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        try:
            await respond(send)
        except OSError as exc:
            seen.append(type(exc))
        seen.append((await receive())["type"])

    server = env.server(app)
    conn, transport = env.connect(server)
    conn.data_received(GET)
    env.settle()
    transport.abort()
    env.settle()
    gate.set()
    env.settle()
    assert seen == [ClientDisconnected, "http.disconnect"]
    assert server.active == 0


def test_idle_connections_do_not_count_against_the_limit(env: Env) -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            await gate.wait()
        await respond(send)

    server = env.server(app, limit_concurrency=1)
    idle, _idle_transport = env.connect(server)
    idle.data_received(GET)
    env.settle()
    assert server.active == 0
    busy, busy_transport = env.connect(server)
    busy.data_received(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
    env.settle()
    assert server.active == 1
    refused, refused_transport = env.connect(server)
    refused.data_received(GET)
    assert refused_transport.written.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: 1\r\n" in refused_transport.written
    gate.set()
    env.settle()
    assert server.active == 0
    assert busy_transport.written.startswith(b"HTTP/1.1 200 ")


def test_state_is_a_shallow_copy(env: Env) -> None:
    states: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        states.append(dict(scope["state"]))
        scope["state"]["leak"] = True
        await respond(send)

    server = env.server(app)
    conn, _transport = env.connect(server)
    conn.data_received(GET + GET)
    env.settle()
    assert states[1] == {"k": "v"}
    assert server.lifespan_state == {"k": "v"}


def test_date_header_is_rebuilt_once_per_second(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.2]
    monkeypatch.setattr("corral.workers.server.time.time", lambda: now[0])
    server = env.server(hello)
    first = server.default_headers
    now[0] += 0.5
    server.sweep()
    assert server.default_headers is first
    now[0] += 0.5
    server.sweep()
    assert server.default_headers is not first
    assert dict(server.default_headers)[b"date"] == b"Tue, 14 Nov 2023 22:13:21 GMT"


UPGRADE_HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_upgrade_is_handed_over_without_an_http_deadline(env: Env) -> None:
    """The transport goes to the session with the bytes read after the head (here a text
    frame the app receives once it accepts); no HTTP deadline follows it."""
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        await send({"type": "websocket.accept"})
        received.append(await receive())

    server = env.server(app, timeout_header=1.0)
    conn, transport = env.connect(server)
    masked_hi = b"\x81\x82\x00\x00\x00\x00hi"  # text "hi", masked with a zero key
    conn.data_received(UPGRADE_HEAD + masked_hi)
    assert transport.protocol is not conn
    assert conn not in server.connections
    assert transport.protocol in server.connections
    assert conn.deadline_reason is Deadline.NONE
    env.settle(lambda: len(received) == 2)
    assert received[1] == {"type": "websocket.receive", "text": "hi"}
    env.advance(server, 5.0)
    assert transport.written.startswith(b"HTTP/1.1 101 ")
    assert not transport.closing


def test_upgrade_is_refused_when_websockets_are_off(env: Env) -> None:
    """A server built without WebSocket support answers an upgrade with 400."""
    server = WorkerServer(Config(app="tests:app"), hello, {}, env.loop, websockets=False)
    conn, transport = env.connect(server)
    conn.data_received(UPGRADE_HEAD)
    assert transport.written.startswith(b"HTTP/1.1 400 ")


# -- eager app tasks (Python 3.12+) --------------------------------------------------------------


def feed_in_loop(env: Env, conn: HTTPConnection, data: bytes, check: Callable[[], Any]) -> Any:
    """Call data_received from inside the running loop, as asyncio does, and return
    ``check()`` evaluated right after it (before any other task ran)."""

    async def inside() -> Any:
        conn.data_received(data)
        return check()

    return env.loop.run_until_complete(inside())


def test_an_app_that_does_not_wait_answers_inside_data_received(env: Env) -> None:
    """On 3.12+ the app task starts eagerly: the response is written before
    data_received returns. Before 3.12 it waits for the next turn of the loop."""
    server = env.server(hello)
    conn, transport = env.connect(server)
    answered = feed_in_loop(env, conn, GET, lambda: b" 200 " in bytes(transport.written))
    assert answered is (sys.version_info >= (3, 12))
    env.settle()
    assert bytes(transport.written).count(b" 200 ") == 1
    assert not server.tasks  # nothing left running either way


def test_pipelined_request_gets_its_own_body(env: Env) -> None:
    """A request pipelined behind one answered at once gets its own body and end:
    the first request's end of message is never fed to the second cycle."""

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "GET":
            await respond(send, b"[]")  # at once, without reading the (empty) body
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await respond(send, b"[" + body + b"]")

    server = env.server(echo)
    conn, transport = env.connect(server)
    # The second body is cut: its end must come from the rest, not from the first.
    feed_in_loop(env, conn, GET + post(5) + b"he", lambda: None)
    env.settle()
    conn.data_received(b"llo" + GET)
    env.settle(until=lambda: bytes(transport.written).count(b" 200 ") == 3)
    written = bytes(transport.written)
    assert written.index(b"[]") < written.index(b"[hello]") < written.rindex(b"[]")


# -- coalescing streamed chunks -----------------------------------------------------------------


def count_writes(transport: FakeTransport) -> list[int]:
    """Record the size of every write from now on."""
    sizes: list[int] = []
    write = transport.write

    def counting(data: bytes | bytearray | memoryview) -> None:
        sizes.append(len(data))
        write(data)

    transport.write = counting  # type: ignore[method-assign]
    return sizes


def test_chunks_sent_in_one_go_leave_in_one_write(env: Env) -> None:
    """Sixteen body chunks sent without waiting go out as one write, in order."""

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(16):
            await send({"type": "http.response.body", "body": b"<%d>" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = env.server(stream)
    conn, transport = env.connect(server)
    sizes = count_writes(transport)
    conn.data_received(GET)
    env.settle()
    assert len(sizes) == 1
    body = bytes(transport.written).partition(b"\r\n\r\n")[2]
    assert body.startswith(b"3\r\n<0>\r\n3\r\n<1>\r\n")
    assert body.endswith(b"4\r\n<15>\r\n0\r\n\r\n")


def test_a_chunk_then_a_wait_is_written_before_the_wait(env: Env) -> None:
    """A streamed chunk followed by a real wait (server-sent events) is on the wire
    at the end of that loop turn, not held until the next chunk."""
    gate = asyncio.Event()

    async def events(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        await gate.wait()
        await send({"type": "http.response.body", "body": b""})

    server = env.server(events)
    conn, transport = env.connect(server)
    conn.data_received(GET)
    env.settle()
    assert bytes(transport.written).endswith(b"4\r\ntick\r\n")
    gate.set()
    env.settle()
    assert bytes(transport.written).endswith(b"0\r\n\r\n")


def test_held_bytes_are_bounded(env: Env) -> None:
    """An app streaming without ever waiting has at most COALESCE_BYTES held back: the
    rest is written as it comes, so backpressure still reaches it."""
    chunk = b"x" * (COALESCE_BYTES // 2)

    async def flood(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(8):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = env.server(flood)
    conn, transport = env.connect(server)
    sizes = count_writes(transport)
    conn.data_received(GET)
    env.settle()
    assert len(sizes) >= 4
    assert max(sizes) <= COALESCE_BYTES + len(chunk) + 1024
