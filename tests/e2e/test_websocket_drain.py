"""WebSockets and the worker's lifecycle: TERM (1001), HUP (1012), --limit-concurrency.

The app and clients come from test_websocket.py. Each test runs its own server, since
most of them stop it.
"""

from __future__ import annotations

import contextlib
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import events as ws

from tests.e2e.test_websocket import APP, RawClient, ws_connect
from tests.harness import TIME_FACTOR, Server, read_response, wait_until

GRACEFUL_S = 5


def test_term_closes_websockets_with_1001_and_tells_the_app() -> None:
    """TERM: open sessions get Close 1001, the app a disconnect, a deciding one too."""
    with (
        Server(APP, "-w", "1", "--graceful-timeout", str(GRACEFUL_S)) as srv,
        contextlib.ExitStack() as stack,
    ):
        raw = stack.enter_context(RawClient(srv))
        raw.expect(ws.AcceptConnection)
        client = stack.enter_context(ws_connect(srv))
        deciding = stack.enter_context(RawClient(srv, "/slow-accept"))
        srv.wait_for_line(r"ws-app: /slow-accept websocket.connect")
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        close = raw.expect(ws.CloseConnection, timeout=GRACEFUL_S)
        assert close.code == 1001
        raw.send(close.response())
        assert raw.wait_eof() == []
        with pytest.raises(ConnectionClosed) as info:
            client.recv(GRACEFUL_S * TIME_FACTOR)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
        # Accepted after the drain began: closed all the same, not left to the deadline.
        deciding.expect(ws.AcceptConnection)
        close = deciding.expect(ws.CloseConnection, timeout=GRACEFUL_S)
        assert close.code == 1001
        deciding.send(close.response())
        assert srv.wait(GRACEFUL_S + 5) == 0
        assert time.monotonic() - started < GRACEFUL_S * TIME_FACTOR
        for _ in range(3):
            srv.wait_for_line(r"ws-app: disconnect /(echo|slow-accept) 1001")
        assert srv.output.count("ws-app: disconnect") == 3
        assert "still open after the graceful timeout" not in srv.output


def test_hup_closes_the_old_workers_websockets_with_1012() -> None:
    """HUP: the old worker's sessions get 1012; the new worker takes new ones."""
    with Server(APP, "-w", "1", "--graceful-timeout", str(GRACEFUL_S)) as srv:
        old = srv.worker_pids(1)
        with RawClient(srv) as raw, ws_connect(srv) as client:
            raw.expect(ws.AcceptConnection)
            srv.signal(signal.SIGHUP)
            close = raw.expect(ws.CloseConnection, timeout=GRACEFUL_S + 5)
            assert close.code == 1012
            raw.send(close.response())
            with pytest.raises(ConnectionClosed) as info:
                client.recv(GRACEFUL_S * TIME_FACTOR)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
        srv.wait_for_line(r"generation 2 READY")
        wait_until(lambda: srv.output.count("ws-app: disconnect /echo 1012") == 2, 5, "disconnects")
        with ws_connect(srv) as client:
            client.send("new worker")
            assert client.recv(5 * TIME_FACTOR) == "new worker"
        assert srv.worker_pids(2).isdisjoint(old)


def test_limit_concurrency_counts_websocket_sessions() -> None:
    """Limit 1 and an open WebSocket: HTTP and a second upgrade get 503 until it closes."""
    with Server(APP, "-w", "1", "--limit-concurrency", "1") as srv:
        with ws_connect(srv) as client:
            client.send("hold")
            assert client.recv(5 * TIME_FACTOR) == "hold"
            with srv.connect() as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                status, headers, _ = read_response(sock)
            assert (status, headers["retry-after"]) == (503, "1")
            with pytest.raises(InvalidStatus) as info:
                ws_connect(srv)
            assert info.value.response.status_code == 503
            with RawClient(srv) as raw:
                assert raw.expect(ws.RejectConnection).status_code == 503
        # The session's slot is free once its app returns.
        srv.wait_for_line(r"ws-app: disconnect /echo 1000")

        def upgrade_works() -> bool:
            with RawClient(srv) as raw:
                return isinstance(raw.next_event(), ws.AcceptConnection)

        wait_until(upgrade_works, 5, "the slot to be released")
