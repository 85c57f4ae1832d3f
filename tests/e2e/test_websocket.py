"""ASGI WebSocket sessions end to end: scope, handshake, messages, closes, denials.

Every behaviour is checked from two clients: a raw wsproto client on a plain socket
(:class:`RawClient`, which sees every frame and can misbehave) and the ``websockets``
sync client. The server side is :func:`app` below, served as
``tests.e2e.test_websocket:app``; it prints what it receives as ``ws-app:`` lines, which
the tests wait for. The limits, protocol errors and keepalive are in
test_websocket_limits.py; drains and --limit-concurrency in test_websocket_drain.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from tests.e2e.test_startup import LOOPS
from tests.harness import TIME_FACTOR, Server, read_response

APP = "tests.e2e.test_websocket:app"


# -- the server side ----------------------------------------------------------------------------


def say(*parts: object) -> None:
    print("ws-app:", *parts, flush=True)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One ASGI app, routed by path; see each branch."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            scope["state"]["from_startup"] = "yes"
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        body = b"plain http\n"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    first = await receive()
    say(path, first["type"])
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/deny-custom":
        headers = [(b"www-authenticate", b"Bearer"), (b"content-type", b"text/plain")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})
        return
    if path == "/crash-before-accept":
        raise RuntimeError("crash before accept")
    if path == "/hesitate":
        message = await receive()  # before deciding: only a disconnect can come
        say("hesitate got", message["type"], message.get("code"))
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            say("accept after the drop raised", type(exc).__name__)
        return
    if path == "/scope":
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[-1] if offered else None,
                "headers": [(b"x-app", b"yes")],
            }
        )
        data = {k: v for k, v in scope.items() if k != "state"}
        data["state"] = dict(scope["state"])
        data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        data["raw_path"] = scope["raw_path"].decode("latin-1")
        data["query_string"] = scope["query_string"].decode("latin-1")
        await send({"type": "websocket.send", "text": json.dumps(data)})
    else:
        if path == "/slow-accept":
            await asyncio.sleep(0.5)  # deciding, while the test stops the server
        await send({"type": "websocket.accept"})
    if path == "/after-close":
        message = await receive()
        say("after-close got", message["type"], message.get("code"))
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            say("send after close raised", type(exc).__name__)
        # Again, uncaught: the server must treat it as the client leaving, not an error.
        await send({"type": "websocket.send", "text": "too late"})
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            say("disconnect", path, message["code"], repr(message.get("reason")))
            return
        text = message.get("text")
        if text is None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
            continue
        command, _, arg = text.partition(" ")
        if command == "close":
            code, _, reason = arg.partition(" ")
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
        elif command == "raise":
            raise RuntimeError("boom after accept")
        elif command == "return":
            return
        elif command == "big":
            await send({"type": "websocket.send", "bytes": b"x" * int(arg)})
            say("sent big", arg)
        elif command == "reserved":
            try:
                await send({"type": "websocket.close", "code": 1006})
            except RuntimeError as exc:
                say("reserved close refused:", exc)
                raise
        else:
            await send({"type": "websocket.send", "text": text})


# -- clients ----------------------------------------------------------------------------------


class RawClient:
    """A wsproto client on a blocking socket: every event, and raw bytes when needed."""

    def __init__(
        self,
        srv: Server,
        path: str = "/echo",
        *,
        subprotocols: list[str] | None = None,
        deflate: bool = False,
        rcvbuf: int = 0,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so the window is small from the start: a client that
            # stops reading then really holds the server's bytes back.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5 * TIME_FACTOR)
        self.sock.connect((srv.host, srv.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[ws.Event] = []
        self.eof = False
        self.sock.sendall(
            self.ws.send(
                ws.Request(
                    host="t",
                    target=path,
                    subprotocols=subprotocols or [],
                    extensions=[PerMessageDeflate()] if deflate else [],
                )
            )
        )

    def next_event(self, timeout: float = 5) -> ws.Event | None:
        """The next event, or None once the server closed TCP."""
        deadline = time.monotonic() + timeout * TIME_FACTOR
        while not self.events:
            if self.eof:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                if time.monotonic() >= deadline:
                    raise
                data = b""
            if not data:
                self.eof = True  # (wsproto would invent a 1006 Close: not from the wire)
            else:
                self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    def expect(self, kind: type[ws.Event], timeout: float = 5) -> Any:
        """The next event that is not a Ping (answered) or a Pong; it must be ``kind``."""
        while True:
            event = self.next_event(timeout)
            if isinstance(event, ws.Ping):
                self.send(event.response())
                continue
            assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
            return event

    def send(self, event: ws.Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def wait_eof(self, timeout: float = 5) -> list[ws.Event]:
        """Read until the server closes TCP; return the events seen on the way."""
        seen = []
        while (event := self.next_event(timeout)) is not None:
            seen.append(event)
        return seen

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN (SO_LINGER on, zero seconds)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def ws_connect(srv: Server, path: str = "/echo", **kwargs: Any) -> ClientConnection:
    """The websockets sync client, with keepalive off unless asked for."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("open_timeout", 5 * TIME_FACTOR)
    kwargs.setdefault("close_timeout", 5 * TIME_FACTOR)
    return connect(f"ws://{srv.host}:{srv.port}{path}", proxy=None, **kwargs)


def raw_upgrade(path: str, extra: bytes = b"") -> bytes:
    return (
        b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
        % (path.encode(), extra)
    )


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    with Server(APP, "-w", "1") as server:
        yield server


_markers = itertools.count()


def log_mark(srv: Server) -> int:
    """The index of the log line after a fresh marker session's.

    The worker writes its log and the app's prints to one pipe in order, so every line
    written before the marker session is in ``srv.lines`` above the returned index.
    """
    path = f"/marker-{next(_markers)}"
    with ws_connect(srv, path):
        pass
    srv.wait_for_line(rf"ws-app: disconnect {path} 1000")
    return next(i for i, line in enumerate(srv.lines) if f"disconnect {path} " in line) + 1


# -- scope and handshake ----------------------------------------------------------------------


def test_scope_and_accept_with_subprotocol_and_headers(srv: Server) -> None:
    """Spec 2.5 scope keys; the app's subprotocol and headers reach the client."""
    target = "/sc%6Fpe?a=1&b=%20"
    with ws_connect(srv, target, subprotocols=["chat", "superchat"]) as client:
        assert client.subprotocol == "superchat"
        assert client.response.headers["x-app"] == "yes"
        assert client.response.headers["server"] == "corral"
        scope = json.loads(client.recv(5 * TIME_FACTOR))
        local = client.socket.getsockname()
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert (scope["path"], scope["raw_path"]) == ("/scope", "/sc%6Fpe")
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["client"] == [local[0], local[1]]
    assert scope["server"] == [srv.host, srv.port]
    assert scope["state"] == {"from_startup": "yes"}
    assert "method" not in scope
    headers = dict(scope["headers"])
    assert headers["sec-websocket-protocol"] == "chat, superchat"
    assert headers["upgrade"] == "websocket"

    with RawClient(srv, "/scope?x", subprotocols=["chat"]) as raw:
        accepted = raw.expect(ws.AcceptConnection)
        assert accepted.subprotocol == "chat"
        assert (b"x-app", b"yes") in accepted.extra_headers
        scope = json.loads(raw.expect(ws.TextMessage).data)
        assert (scope["path"], scope["query_string"]) == ("/scope", "x")


def test_text_and_bytes_both_ways(srv: Server) -> None:
    """Text stays str and bytes stay bytes, in both directions, fragmented or not."""
    with ws_connect(srv) as client:
        client.send("héllo")
        assert client.recv(5 * TIME_FACTOR) == "héllo"
        client.send(b"\x00\xff\x80")
        assert client.recv(5 * TIME_FACTOR) == b"\x00\xff\x80"
        client.send(["frag", "mented"])  # one message in two frames
        assert client.recv(5 * TIME_FACTOR) == "fragmented"
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage("ab", message_finished=False))
        raw.send(ws.TextMessage("cd"))
        assert raw.expect(ws.TextMessage).data == "abcd"
        raw.send(ws.BytesMessage(b"\x01\x02"))
        received = raw.expect(ws.BytesMessage)
        assert (received.data, received.message_finished) == (b"\x01\x02", True)


@pytest.mark.parametrize("loop", LOOPS)
def test_message_before_a_bad_frame_is_echoed_before_the_close(loop: str) -> None:
    """A valid text frame and a bad frame in one write (Autobahn 3.2, 4.1.3, 5.15): the
    echo of the valid one arrives, then the 1002 Close, then the end of TCP."""
    bad = b"\x83\x80" + b"\x00" * 4  # masked, empty, reserved opcode 3 (RFC 6455 5.2)
    with Server(APP, "-w", "1", "--loop", loop) as server, RawClient(server) as raw:
        raw.expect(ws.AcceptConnection)
        raw.sock.sendall(raw.ws.send(ws.TextMessage("valid first")) + bad)
        assert raw.expect(ws.TextMessage).data == "valid first"
        assert raw.expect(ws.CloseConnection).code == 1002
        assert raw.wait_eof() == []
        server.wait_for_line(r"ws-app: disconnect /echo 1002 ")


# -- closes -----------------------------------------------------------------------------------


def test_close_from_the_app_carries_code_and_reason(srv: Server) -> None:
    """websocket.close with 4000/"app says bye" is the Close frame the client gets."""
    with ws_connect(srv) as client:
        client.send("close 4000 app says bye")
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "app says bye")
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage("close 1008 policy"))
        close = raw.expect(ws.CloseConnection)
        assert (close.code, close.reason) == (1008, "policy")
        raw.send(close.response())
        assert raw.wait_eof() == []  # the server closes TCP after the handshake


def test_disconnect_carries_the_clients_code(srv: Server) -> None:
    """The app sees 4001/"bye"; 1005 for a Close without a code; 1006 for a drop."""
    mark = len(srv.lines)
    with ws_connect(srv, "/echo?websockets") as client:
        client.close(4001, "bye")
    srv.wait_for_line(r"ws-app: disconnect /echo 4001 'bye'", start=mark)

    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        # wsproto sends an empty Close body for exactly this enum member (not for 1005).
        raw.send(ws.CloseConnection(code=CloseReason.NO_STATUS_RCVD))
        assert raw.expect(ws.CloseConnection).code == 1005  # echoed, still without a code
        assert raw.wait_eof() == []
    srv.wait_for_line(r"ws-app: disconnect /echo 1005 ''", start=mark)

    mark = len(srv.lines)
    with ws_connect(srv) as client:
        client.socket.shutdown(socket.SHUT_RDWR)  # gone without a Close frame
    srv.wait_for_line(r"ws-app: disconnect /echo 1006 ''", start=mark)
    mark = len(srv.lines)
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        reset(raw.sock)
    srv.wait_for_line(r"ws-app: disconnect /echo 1006 ''", start=mark)  # reset


def test_drop_before_the_handshake_completes_is_1006(srv: Server) -> None:
    """The app, still deciding, gets websocket.disconnect 1006 when the client leaves."""
    mark = len(srv.lines)
    with RawClient(srv, "/hesitate"):
        srv.wait_for_line(r"ws-app: /hesitate websocket.connect", start=mark)
    srv.wait_for_line(r"ws-app: hesitate got websocket.disconnect 1006", start=mark)
    srv.wait_for_line(r"ws-app: accept after the drop raised ClientDisconnected", start=mark)
    mark = len(srv.lines)
    with pytest.raises((OSError, TimeoutError)):
        ws_connect(srv, "/hesitate", open_timeout=0.5)  # gives up waiting for the 101
    srv.wait_for_line(r"ws-app: hesitate got websocket.disconnect 1006", start=mark)
    srv.wait_for_line(r"ws-app: accept after the drop raised ClientDisconnected", start=mark)


@pytest.mark.parametrize("byte", [b"\x0b", b"\x0c", b"\x1c", b"\x1e", b"\x85"])
def test_control_bytes_in_upgrade_headers_are_400(srv: Server, byte: bytes) -> None:
    """B19: a header value with a byte other parsers split on is refused, app not run."""
    mark = len(srv.lines)
    with srv.connect() as sock:
        sock.sendall(raw_upgrade("/echo", b"X-Evil: a" + byte + b"b\r\n"))
        status, _, _ = read_response(sock)
    assert status == 400
    with ws_connect(srv, "/marker-b19"):
        pass
    srv.wait_for_line(r"ws-app: disconnect /marker-b19 1000", start=mark)
    assert "ws-app: /echo websocket.connect" not in "\n".join(srv.lines[mark:])


def test_app_exception_after_accept_is_1011(srv: Server) -> None:
    """An exception after accept: Close 1011, logged as an error."""
    with ws_connect(srv) as client:
        client.send("raise")
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage("raise"))
        assert raw.expect(ws.CloseConnection).code == 1011
    srv.wait_for_line(r"ERROR exception in ASGI WebSocket application")


def test_app_returning_without_close_sends_1000(srv: Server) -> None:
    """An app that just returns: a Close frame 1000 goes out, never a bare FIN."""
    with ws_connect(srv) as client:
        client.send("return")
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1000
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage("return"))
        assert raw.expect(ws.CloseConnection).code == 1000


def test_reserved_close_code_from_the_app_is_never_sent(srv: Server) -> None:
    """websocket.close with 1006 raises in the app; the client gets 1011, not 1006."""
    mark = len(srv.lines)
    with ws_connect(srv) as client:
        client.send("reserved")
        with pytest.raises(ConnectionClosed) as info:
            client.recv(5 * TIME_FACTOR)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011
    with RawClient(srv) as raw:
        raw.expect(ws.AcceptConnection)
        raw.send(ws.TextMessage("reserved"))
        assert raw.expect(ws.CloseConnection).code == 1011
    srv.wait_for_line(r"ws-app: reserved close refused: .*1006", start=mark)


def test_send_after_close_raises_oserror_not_logged(srv: Server) -> None:
    """After a Close, a FIN or a reset, send raises an OSError subclass; no ERROR logged."""
    start = log_mark(srv)
    for leave, code in (("close", 1000), ("fin", 1006), ("reset", 1006)):
        mark = len(srv.lines)
        if leave == "close":
            with ws_connect(srv, "/after-close") as client:
                client.close(1000)
        else:
            with RawClient(srv, "/after-close") as raw:
                raw.expect(ws.AcceptConnection)
                if leave == "reset":
                    reset(raw.sock)
        srv.wait_for_line(rf"ws-app: after-close got websocket.disconnect {code}", start=mark)
        srv.wait_for_line(r"ws-app: send after close raised ClientDisconnected", start=mark)
    output = "\n".join(srv.lines[start : log_mark(srv)])
    assert " ERROR " not in output
    assert "Traceback" not in output


# -- refusals ---------------------------------------------------------------------------------


def test_close_before_accept_is_403(srv: Server) -> None:
    """websocket.close before accept: HTTP 403, no handshake."""
    with pytest.raises(InvalidStatus) as info:
        ws_connect(srv, "/deny")
    assert info.value.response.status_code == 403
    with RawClient(srv, "/deny") as raw:
        rejected = raw.expect(ws.RejectConnection)
        assert rejected.status_code == 403
    srv.wait_for_line(r'"WEBSOCKET /deny" 403')


def test_http_response_extension_sends_a_full_denial(srv: Server) -> None:
    """websocket.http.response: a 401 with headers and a two-part body."""
    assert "websocket.http.response" in scope_extensions(srv)
    with pytest.raises(InvalidStatus) as info:
        ws_connect(srv, "/deny-custom")
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.body == b"who are you?"
    with RawClient(srv, "/deny-custom") as raw:
        rejected = raw.expect(ws.RejectConnection)
        assert (rejected.status_code, rejected.has_body) == (401, True)
        body = b""
        while True:
            data = raw.expect(ws.RejectData)
            body += data.data
            if data.body_finished:
                break
        assert body == b"who are you?"


def test_crash_before_accept_is_500(srv: Server) -> None:
    """An app that raises before deciding: HTTP 500 without details."""
    with pytest.raises(InvalidStatus) as info:
        ws_connect(srv, "/crash-before-accept")
    assert info.value.response.status_code == 500
    assert b"crash" not in (info.value.response.body or b"")


def scope_extensions(srv: Server) -> dict[str, Any]:
    with ws_connect(srv, "/scope") as client:
        scope: dict[str, Any] = json.loads(client.recv(5 * TIME_FACTOR))
    return scope["extensions"]
