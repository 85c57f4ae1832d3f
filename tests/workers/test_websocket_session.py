"""The ASGI WebSocket session on the in-memory transport, with the frozen clock.

A wsproto client (:class:`Peer`) talks to a real :class:`HTTPConnection` whose transport
is test_connection's :class:`FakeTransport`; timers run when the test moves the clock.
What needs real sockets and signals (drains by TERM/HUP, both clients) is in
tests/e2e/test_websocket*.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws
from wsproto.frame_protocol import CloseReason

from corral.config import Config
from corral.workers.server import OUTBOUND_BUFFER_FLOOR_BYTES, WorkerServer, websocket_limits
from corral.workers.types import ClientDisconnected
from corral.workers.upgraded import UpgradedConnection
from corral.workers.websocket import DRAIN_GRACE_S, MAX_QUEUED_MESSAGES, WebSocketSession
from tests.workers.test_connection import Env

# Reused as a fixture here (pytest finds it by name in this module's namespace).
from tests.workers.test_connection import env as env

UPGRADE = (
    b"GET /ws?q=1 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


class Peer:
    """A wsproto client on one in-memory connection to a WorkerServer running ``app``."""

    def __init__(self, env: Env, app: Any, server: WorkerServer | None = None, **options: Any):
        self.env = env
        self.server = server or make_server(env, app, **options)
        self.conn, self.transport = env.connect(self.server)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._read = 0
        self._pending: list[ws.Event] = []

    def upgrade(self, path: str = "/ws", subprotocols: list[str] | None = None) -> None:
        request = ws.Request(host="t", target=path, subprotocols=subprotocols or [])
        self.link.data_received(self.ws.send(request))
        self.env.settle()
        # Parse the answer now, so the client may send frames after a 101.
        self._pending = self._parse()

    def events(self) -> list[ws.Event]:
        """Events from what the server wrote since the last call."""
        events = self._pending + self._parse()
        self._pending = []
        return events

    def _parse(self) -> list[ws.Event]:
        data = bytes(self.transport.written[self._read :])
        self._read = len(self.transport.written)
        if data:
            self.ws.receive_data(data)
        return list(self.ws.events())

    def send(self, event: ws.Event) -> None:
        self.link.data_received(self.ws.send(event))
        self.env.settle()

    @property
    def link(self) -> Any:
        """The transport's protocol now: the HTTP connection, or after the upgrade the
        UpgradedConnection it handed the transport to."""
        return self.transport.protocol

    @property
    def upgraded(self) -> UpgradedConnection:
        link = self.link
        assert isinstance(link, UpgradedConnection)
        return link

    @property
    def session(self) -> WebSocketSession:
        session = self.upgraded.websocket
        assert isinstance(session, WebSocketSession)
        return session


def make_server(env: Env, app: Any, **options: Any) -> WorkerServer:
    config = dataclasses.replace(Config(app="tests:app"), **options)
    return WorkerServer(config, app, {"k": "v"}, env.loop)


def accepted(events: list[ws.Event]) -> bool:
    return bool(events) and isinstance(events[0], ws.AcceptConnection)


class Recorder:
    """An echo app that records what it receives and can be told to fail or close."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}
        self.send: Any = None
        self.errors: list[BaseException] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.send = send
        self.received.append(await receive())
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "raise":
                raise RuntimeError("boom")
            try:
                await send({**message, "type": "websocket.send"})
            except OSError as exc:
                self.errors.append(exc)
                return


# -- the handshake ------------------------------------------------------------------------------


def test_scope_is_a_websocket_scope(env: Env) -> None:
    """scope: type, scheme ws, subprotocols, extensions, a copy of the lifespan state."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade("/ws?q=1", ["a", "b"])
    scope = app.scope
    assert (scope["type"], scope["scheme"], scope["path"]) == ("websocket", "ws", "/ws")
    assert scope["query_string"] == b"q=1"
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["state"] == {"k": "v"}
    assert scope["state"] is not peer.server.lifespan_state
    assert "method" not in scope
    assert accepted(peer.events())


def test_bad_handshake_never_runs_the_app(env: Env) -> None:
    """A handshake the core refuses (no key) gets 400; the app is not called."""
    app = Recorder()
    peer = Peer(env, app)
    peer.link.data_received(UPGRADE.replace(b"Sec-WebSocket-Key", b"X-Key") + b"\r\n")
    env.settle()
    assert peer.transport.written.startswith(b"HTTP/1.1 400 ")
    assert peer.transport.closing
    assert app.received == []
    assert peer.server.active == 0


def test_over_the_limit_or_draining_gets_503(env: Env) -> None:
    """--limit-concurrency counts sessions; an upgrade during a drain is refused too."""
    app = Recorder()
    server = make_server(env, app, limit_concurrency=1)
    first = Peer(env, app, server)
    first.upgrade()
    assert accepted(first.events())
    assert server.active == 1
    second = Peer(env, app, server)
    second.upgrade()
    assert second.transport.written.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in second.transport.written.lower()
    first.send(ws.CloseConnection(code=1000))
    assert server.active == 0
    server.draining = True
    third = Peer(env, app, server)
    third.upgrade()
    assert third.transport.written.startswith(b"HTTP/1.1 503 ")


def test_app_returning_or_raising_before_accept_is_500(env: Env, caplog: Any) -> None:
    """No decision from the app: 500, and the slot is released."""

    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def raises(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("before accept")

    for app in (returns, raises):
        peer = Peer(env, app)
        peer.upgrade()
        assert peer.transport.written.startswith(b"HTTP/1.1 500 ")
        assert b"before accept" not in peer.transport.written
        assert peer.server.active == 0


def test_http_response_extension(env: Env) -> None:
    """websocket.http.response.start/body: a full custom response, then close."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"pe"})
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.http.response.body", "body": b"more"})

    peer = Peer(env, app)
    peer.upgrade()
    events = peer.events()
    assert isinstance(events[0], ws.RejectConnection)
    assert events[0].status_code == 401
    assert b"".join(e.data for e in events if isinstance(e, ws.RejectData)) == b"nope"
    assert peer.transport.closing


def test_app_returning_mid_rejection_finishes_the_body(env: Env) -> None:
    """A rejection body left open by the app is ended for it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})

    peer = Peer(env, app)
    peer.upgrade()
    events = peer.events()
    assert isinstance(events[-1], ws.RejectData)
    assert events[-1].body_finished
    assert peer.transport.closing


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "websocket.send", "text": "early"}, "unexpected ASGI message"),
        ({"type": "websocket.accept", "subprotocol": "nope"}, "was not offered"),
        (
            {"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"x")]},
            "sets the",
        ),
    ],
)
def test_invalid_messages_before_accept_raise(
    env: Env, message: dict[str, Any], error: str
) -> None:
    """Misuse raises RuntimeError in the app (and then answers 500)."""
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send(message)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    peer = Peer(env, app)
    peer.upgrade()
    assert error in str(raised[0])
    assert peer.transport.written.startswith(b"HTTP/1.1 500 ")


# -- messages ------------------------------------------------------------------------------------


def test_messages_both_ways_and_send_validation(env: Env) -> None:
    """Text and bytes echo; a send with both or neither of text/bytes raises."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    peer.send(ws.TextMessage("hi"))
    peer.send(ws.BytesMessage(b"\x00"))
    events = peer.events()
    assert [type(e) for e in events] == [ws.AcceptConnection, ws.TextMessage, ws.BytesMessage]
    for bad in ({"text": "a", "bytes": b"b"}, {}, {"text": 1}):
        with pytest.raises(RuntimeError):
            env.loop.run_until_complete(app.send({"type": "websocket.send", **bad}))
    env.loop.run_until_complete(app.send({"type": "websocket.send", "bytes": bytearray(b"ba")}))
    assert isinstance(peer.events()[0], ws.BytesMessage)


def test_reading_pauses_while_the_app_lags(env: Env) -> None:
    """MAX_QUEUED_MESSAGES unread messages pause reading; taking half of them resumes it."""
    gate = asyncio.Event()
    taken: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while len(taken) < MAX_QUEUED_MESSAGES:
            taken.append(await receive())
            await asyncio.sleep(0)

    peer = Peer(env, app)
    peer.upgrade()
    data = b"".join(peer.ws.send(ws.TextMessage(str(i))) for i in range(MAX_QUEUED_MESSAGES))
    peer.link.data_received(data)
    assert not peer.transport.reading
    gate.set()
    env.settle(lambda: peer.transport.reading)
    assert len(taken) > MAX_QUEUED_MESSAGES // 2 - 1


# -- closing ------------------------------------------------------------------------------------


def test_disconnect_codes_from_the_client(env: Env) -> None:
    """The peer's code and reason; 1005 for an empty Close; 1006 for a lost connection."""
    for close, expected in (
        (ws.CloseConnection(code=4001, reason="bye"), (4001, "bye")),
        (ws.CloseConnection(code=CloseReason.NO_STATUS_RCVD), (1005, "")),
        (None, (1006, "")),
    ):
        app = Recorder()
        peer = Peer(env, app)
        peer.upgrade()
        if close is None:
            peer.transport.abort()
        else:
            peer.send(close)
        env.settle()
        last = app.received[-1]
        assert last["type"] == "websocket.disconnect"
        assert (last["code"], last["reason"]) == expected


def test_eof_before_accept_is_1006_for_a_deciding_app(env: Env) -> None:
    """The app waiting before it decides gets disconnect 1006 when the client leaves."""
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        got.append(await receive())

    peer = Peer(env, app)
    peer.upgrade()
    peer.link.eof_received()
    peer.transport.abort()
    env.settle()
    assert got == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


def test_send_after_close_raises_client_disconnected(env: Env, caplog: Any) -> None:
    """After the peer's Close, send raises ClientDisconnected (an OSError), not logged."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    peer.send(ws.CloseConnection(code=1000))
    with caplog.at_level(logging.ERROR), pytest.raises(ClientDisconnected):
        env.loop.run_until_complete(app.send({"type": "websocket.send", "text": "late"}))
    assert isinstance(ClientDisconnected(), OSError)
    assert not caplog.records


def test_app_close_then_send_raises(env: Env) -> None:
    """The app's own Close: code and reason on the wire; a later send raises."""
    sent: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            sent.append(exc)

    peer = Peer(env, app)
    peer.upgrade()
    close = peer.events()[-1]
    assert isinstance(close, ws.CloseConnection)
    assert (close.code, close.reason) == (4000, "done")
    assert sent
    peer.send(close.response())
    assert peer.transport.closing


def test_app_exit_codes(env: Env, caplog: Any) -> None:
    """Raise after accept: 1011, logged. Return: 1000. Cancelled: 1001. Reserved: never."""

    async def returns(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def reserved(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1006})

    async def cancelled(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise asyncio.CancelledError

    with caplog.at_level(logging.ERROR, logger="corral.error"):
        for app, code in ((returns, 1000), (reserved, 1011), (cancelled, 1001)):
            peer = Peer(env, app)
            peer.upgrade()
            close = peer.events()[-1]
            assert isinstance(close, ws.CloseConnection)
            assert close.code == code
            assert peer.server.active == 0
    assert [r.getMessage() for r in caplog.records] == ["exception in ASGI WebSocket application"]


# -- limits and timers ----------------------------------------------------------------------------


def test_outbound_bound_follows_ws_max_size() -> None:
    """Four maximum messages, computed from at least 1 MiB."""
    small = websocket_limits(Config(app="x:y", ws_max_size=10))
    assert small.max_outbound_buffer == 4 * OUTBOUND_BUFFER_FLOOR_BYTES
    large = websocket_limits(Config(app="x:y", ws_max_size=8 * 1024 * 1024))
    assert large.max_outbound_buffer == 32 * 1024 * 1024
    off = websocket_limits(Config(app="x:y", ws_ping_interval=None, ws_ping_timeout=None))
    assert (off.ping_interval_s, off.ping_timeout_s) == (None, None)


def test_ping_flood_from_a_client_that_does_not_read_is_failed(env: Env) -> None:
    """Pongs bypass flow control; past the bound the session fails with 1008 and stops."""
    app = Recorder()
    peer = Peer(env, app, ws_max_size=1024)
    peer.upgrade()
    peer.events()
    peer.transport.stalled = True
    ping = peer.ws.send(ws.Ping(b"p" * 125))
    flood = ping * 1000
    limit = 4 * OUTBOUND_BUFFER_FLOOR_BYTES
    for _ in range(limit // (127 * 1000) + 2):
        peer.link.data_received(flood)
        if peer.transport.closing:
            break
    env.settle()
    assert peer.transport.closing
    assert peer.transport.buffered < limit + len(flood)
    assert app.received[-1]["code"] == 1008
    # The client never reads: the WRITE deadline cuts it.
    # Its one deadline, WRITE, is armed: --timeout-write from now.
    assert peer.upgraded.deadline == env.now + peer.server.timeout_write
    env.advance(peer.server, peer.server.timeout_write + 1)
    assert peer.transport.aborted


def test_close_to_a_client_that_never_reads_is_cut_by_the_write_deadline(env: Env) -> None:
    """A Close queued behind a little unread data still ends within --timeout-write."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    peer.transport.stalled = True
    peer.send(ws.TextMessage("x" * 1000))
    # Invalid UTF-8 (a zero mask keeps the byte as is): failed at once with 1007.
    peer.link.data_received(b"\x81\x81\x00\x00\x00\x00\xff")
    assert peer.transport.closing
    assert not peer.transport.aborted
    # Its one deadline, WRITE, is armed: --timeout-write from now.
    assert peer.upgraded.deadline == env.now + peer.server.timeout_write
    env.advance(peer.server, peer.server.timeout_write + 1)
    assert peer.transport.aborted


def test_keepalive_ping_and_timeout(env: Env) -> None:
    """A Ping after --ws-ping-interval idle; no reply within --ws-ping-timeout: 1011."""
    app = Recorder()
    peer = Peer(env, app, ws_ping_interval=5.0, ws_ping_timeout=3.0)
    peer.upgrade()
    assert accepted(peer.events())
    env.now += 4.9
    env.settle()
    assert peer.events() == []
    env.now += 0.2
    env.settle()
    ping = peer.events()
    assert len(ping) == 1
    assert isinstance(ping[0], ws.Ping)
    peer.send(ping[0].response())  # answered: the next ping comes an interval later
    env.now += 5.1
    env.settle()
    assert isinstance(peer.events()[0], ws.Ping)
    env.now += 3.1  # not answered
    env.settle()
    close = peer.events()[-1]
    assert isinstance(close, ws.CloseConnection)
    assert close.code == 1011
    assert app.received[-1]["code"] == 1011
    assert peer.transport.closing


def test_closing_handshake_times_out(env: Env) -> None:
    """Our Close unanswered for the close timeout: the connection is dropped (1006)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        assert await receive() == {"type": "websocket.disconnect", "code": 1006, "reason": ""}

    peer = Peer(env, app)
    peer.upgrade()
    assert isinstance(peer.events()[-1], ws.CloseConnection)
    assert not peer.transport.closing
    env.now += 11
    env.settle()
    assert peer.transport.closing


# -- bad input after valid messages -------------------------------------------------------------

# A masked, empty frame with the reserved opcode 3: a protocol error (1002).
BAD_FRAME = b"\x83\x80\x00\x00\x00\x00"


def test_echo_of_a_message_before_a_bad_frame_goes_out_first(env: Env) -> None:
    """A message and a bad frame in one read: the echo, then the 1002 Close."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    assert accepted(peer.events())
    peer.link.data_received(peer.ws.send(ws.TextMessage("good")) + BAD_FRAME)
    env.settle()
    events = peer.events()
    assert [type(e) for e in events] == [ws.TextMessage, ws.CloseConnection]
    assert events[0].data == "good"  # type: ignore[attr-defined]
    assert events[1].code == 1002  # type: ignore[attr-defined]
    assert app.received[-1]["type"] == "websocket.disconnect"
    assert app.received[-1]["code"] == 1002
    assert peer.transport.closing


def test_a_busy_app_answers_before_the_close(env: Env) -> None:
    """The bad frame comes while the app works on a message it took earlier."""
    gate = asyncio.Event()
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await gate.wait()
        await send({"type": "websocket.send", "bytes": message["bytes"]})
        got.append(await receive())

    peer = Peer(env, app)
    peer.upgrade()
    peer.send(ws.BytesMessage(b"slow"))
    peer.link.data_received(BAD_FRAME)
    env.settle()
    assert peer.events()[1:] == []  # the 101 only: the Close waits for the answer
    gate.set()
    env.settle()
    events = peer.events()
    assert isinstance(events[0], ws.BytesMessage)
    assert isinstance(events[1], ws.CloseConnection)
    assert events[1].code == 1002
    assert got[0]["code"] == 1002
    assert peer.transport.closing


def test_an_app_that_never_answers_is_cut_after_the_grace(env: Env) -> None:
    """The hold is bounded: after answer_grace_s the 1002 Close goes out anyway."""
    stuck = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await stuck.wait()

    peer = Peer(env, app)
    peer.upgrade()
    peer.events()
    peer.link.data_received(peer.ws.send(ws.TextMessage("x")) + BAD_FRAME)
    env.settle()
    assert peer.events() == []
    assert not peer.transport.closing
    env.now += peer.session._core._limits.answer_grace_s
    env.settle()
    (close,) = peer.events()
    assert isinstance(close, ws.CloseConnection)
    assert close.code == 1002
    assert peer.transport.closing


def test_app_returning_while_the_failure_is_held(env: Env) -> None:
    """An app that returns after its answer ends the hold with the failure's code."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": (await receive())["text"]})

    peer = Peer(env, app)
    peer.upgrade()
    peer.events()
    peer.link.data_received(peer.ws.send(ws.TextMessage("bye")) + BAD_FRAME)
    env.settle()
    events = peer.events()
    assert isinstance(events[0], ws.TextMessage)
    assert isinstance(events[1], ws.CloseConnection)
    assert events[1].code == 1002
    assert peer.transport.closing


def test_drain_while_the_failure_is_held(env: Env) -> None:
    """A drain during the hold sends the failure's code, not the drain's."""
    stuck = asyncio.Event()
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await stuck.wait()
        got.append(await receive())

    peer = Peer(env, app)
    peer.upgrade()
    peer.events()
    peer.server.begin_drain(1001)
    # The bad frame comes late in the drain's grace, so the drain's timer fires first.
    env.now += DRAIN_GRACE_S - 0.01
    env.settle()
    peer.link.data_received(peer.ws.send(ws.TextMessage("x")) + BAD_FRAME)
    env.settle()
    assert peer.events() == []
    env.now += 0.01
    env.settle()
    (close,) = peer.events()
    assert isinstance(close, ws.CloseConnection)
    assert close.code == 1002
    stuck.set()
    env.settle()
    assert got[0]["code"] == 1002


# -- drains -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1001, 1012])
def test_drain_closes_open_sessions_with_the_drain_code(env: Env, code: int) -> None:
    """begin_drain: after DRAIN_GRACE_S the client gets the code and the app a disconnect."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    peer.events()
    peer.server.begin_drain(code)
    assert peer.events() == []
    env.now += DRAIN_GRACE_S
    env.settle()
    close = peer.events()[-1]
    assert isinstance(close, ws.CloseConnection)
    assert close.code == code
    assert app.received[-1] == {"type": "websocket.disconnect", "code": code, "reason": ""}
    peer.send(close.response())
    assert peer.transport.closing


def test_drain_while_the_app_decides(env: Env) -> None:
    """A session accepted after the drain began is closed after the same grace."""
    gate = asyncio.Event()
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await gate.wait()
        await send({"type": "websocket.accept"})
        got.append(await receive())

    peer = Peer(env, app)
    peer.upgrade()
    peer.server.begin_drain(1001)
    gate.set()
    env.settle()
    assert accepted(peer.events())
    env.now += DRAIN_GRACE_S
    env.settle()
    assert got == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]
    close = peer.events()[-1]
    assert isinstance(close, ws.CloseConnection)
    assert close.code == 1001


def test_drain_after_the_app_closed_does_nothing(env: Env) -> None:
    """A session already closing is left to finish its own handshake."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    env.loop.run_until_complete(app.send({"type": "websocket.close", "code": 1000}))
    peer.events()
    peer.server.begin_drain(1001)
    env.now += DRAIN_GRACE_S
    env.settle()
    assert peer.events() == []


def test_drain_racing_the_apps_own_close(env: Env) -> None:
    """The app closes (or the peer does) inside the grace: the drain adds nothing."""
    app = Recorder()
    peer = Peer(env, app)
    peer.upgrade()
    peer.events()
    peer.server.begin_drain(1001)
    env.loop.run_until_complete(app.send({"type": "websocket.close", "code": 4000}))
    env.now += DRAIN_GRACE_S
    env.settle()
    closes = [e for e in peer.events() if isinstance(e, ws.CloseConnection)]
    assert [c.code for c in closes] == [4000]

    gate = asyncio.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()  # reads nothing more

    peer = Peer(env, stuck)
    peer.upgrade()
    peer.events()
    peer.server.begin_drain(1001)
    peer.send(ws.CloseConnection(code=1000))  # the peer's Close is echoed at once
    env.now += DRAIN_GRACE_S
    env.settle()
    assert [e.code for e in peer.events() if isinstance(e, ws.CloseConnection)] == [1000]
    gate.set()


def test_send_after_the_drain_close_raises(env: Env) -> None:
    """Once the drain's Close is out, the app's send raises ClientDisconnected."""
    gate = asyncio.Event()
    raised: list[BaseException] = []

    async def late(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            raised.append(exc)

    peer = Peer(env, late)
    peer.upgrade()
    peer.server.begin_drain(1012)
    env.now += DRAIN_GRACE_S
    env.settle()
    gate.set()
    env.settle()
    assert raised


def test_reset_connection_disconnects_and_send_raises(env: Env) -> None:
    """A reset (no EOF): disconnect 1006, and send raises instead of writing nowhere."""
    raised: list[BaseException] = []
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            raised.append(exc)

    peer = Peer(env, app)
    peer.upgrade()
    peer.transport.abort()
    env.settle()
    assert got == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert raised


def test_uncaught_client_disconnected_is_not_an_error(env: Env, caplog: Any) -> None:
    """An app that lets ClientDisconnected escape ends quietly and frees its slot."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "text": "late"})

    with caplog.at_level(logging.INFO, logger="corral.error"):
        peer = Peer(env, app)
        peer.upgrade()
        peer.send(ws.CloseConnection(code=1000))
        env.settle()
    assert peer.server.active == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_close_before_accept_is_403_and_logged(env: Env, caplog: Any) -> None:
    """websocket.close before accept: 403 with an access line; no line without the log."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    with caplog.at_level(logging.INFO, logger="corral.access"):
        peer = Peer(env, app)
        peer.upgrade("/deny")
        quiet = Peer(env, app, access_log=False)
        quiet.upgrade("/quiet")
    assert peer.transport.written.startswith(b"HTTP/1.1 403 ")
    assert quiet.transport.written.startswith(b"HTTP/1.1 403 ")
    lines = [r.getMessage() for r in caplog.records]
    assert any("WEBSOCKET /deny" in line and "403" in line for line in lines)
    assert not any("/quiet" in line for line in lines)


def test_send_waits_while_the_client_does_not_read(env: Env) -> None:
    """Flow control: send blocks while writing is paused and resumes with the client."""
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(4):
            await send({"type": "websocket.send", "bytes": b"x" * 40_000})
            sent.append(i)

    peer = Peer(env, app, ws_per_message_deflate=False)
    peer.transport.stalled = True
    peer.upgrade()
    assert sent == [0]  # 40 KB + 40 KB crossed the high-water mark: the second send waits
    for expected in ([0, 1, 2], [0, 1, 2, 3]):  # each read lets two more through
        peer.transport.client_reads(1 << 30)
        env.settle()
        assert sent == expected


def test_resume_after_the_connection_is_gone_is_skipped(env: Env) -> None:
    """Messages taken after a reset do not resume reading on a closed transport."""
    gate = asyncio.Event()
    taken: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (message := await receive())["type"] != "websocket.disconnect":
            taken.append(message)

    peer = Peer(env, app)
    peer.upgrade()
    data = b"".join(peer.ws.send(ws.TextMessage("m")) for _ in range(MAX_QUEUED_MESSAGES))
    peer.link.data_received(data)
    assert not peer.transport.reading
    peer.transport.abort()
    gate.set()
    env.settle()
    assert len(taken) == MAX_QUEUED_MESSAGES
    assert not peer.transport.reading


def test_session_end_is_logged_with_counts(env: Env, caplog: Any) -> None:
    """An accepted session logs a second line at its end: close code, messages, bytes."""
    app = Recorder()
    with caplog.at_level(logging.INFO, logger="corral.access"):
        peer = Peer(env, app)
        peer.upgrade("/ws?room=1")
        head = bytes(peer.transport.written).index(b"\r\n\r\n") + 4
        sent = peer.ws.send(ws.TextMessage("héllo")) + peer.ws.send(ws.BytesMessage(b"\x00"))
        peer.link.data_received(sent)
        env.settle()
        close = peer.ws.send(ws.CloseConnection(code=4001))
        peer.link.data_received(close)
        env.settle()
        peer.transport.client_reads(len(peer.transport.written))
        env.settle()
    lines = [r.getMessage() for r in caplog.records if "WEBSOCKET /ws?room=1" in r.getMessage()]
    assert len(lines) == 2
    assert '"WEBSOCKET /ws?room=1" 101 0 ' in lines[0]
    out = len(peer.transport.written) - head
    assert "closed 4001 " in lines[1]
    assert lines[1].endswith(
        f"in 2 messages {len(sent) + len(close)} bytes, out 2 messages {out} bytes"
    )
    record = next(r for r in caplog.records if "closed" in r.getMessage())
    assert (record.messages_in, record.messages_out, record.close_code) == (2, 2, 4001)
