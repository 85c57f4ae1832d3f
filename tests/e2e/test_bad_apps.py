"""Misbehaving apps never take the worker down for other connections.

``tests.apps_hostile:bad`` misbehaves in one way per path: it raises (before the
response, or half-way through the body), returns early, hangs, sends invalid messages
(wrong type, bad status, a str body, a header with CRLF in it, a body after the end),
or leaks tasks; over WebSocket it raises before or after accepting, or sends a message
without data. For each case the client gets a clean 500, a cut response or a 1011
close as the ASGI spec says, exactly one clear line is logged, and the same worker
process then serves the next request.

Lifespan startups that raise are here too: a Starlette app (which sends
``lifespan.startup.failed`` and then raises) gets its traceback logged once, and a
plain app that raises while handling ``lifespan.startup`` under ``--lifespan auto`` is
told from one without lifespan support. Their apps are defined at the bottom of this
module, which the worker imports by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from tests.harness import TIME_FACTOR, Server, http_request, read_response

APP = "tests.apps_hostile:bad"

RAISED = "exception in ASGI application"
RETURNED = "ASGI application returned without completing the response"
WS_RAISED = "exception in ASGI WebSocket application"


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    with Server(APP, "-w", "1") as server:
        yield server


def ask(server: Server, path: str) -> bytes:
    """One request on its own connection; everything the server sent until it closed."""
    with server.connect() as sock:
        return http_request(
            sock, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )


def ok_from_same_worker(server: Server) -> None:
    """The worker that handled the bad request still serves, and no other one started."""
    (worker,) = server.worker_pids()
    with server.connect() as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (status, body) == (200, b"ok")
    assert int(headers["x-pid"]) == worker


def logged_once(server: Server, mark: int, text: str, detail: str = "") -> None:
    """``text`` appears on exactly one log line after ``mark`` (and ``detail`` somewhere)."""
    server.wait_for_line(re.escape(text), start=mark)
    if detail:
        server.wait_for_line(re.escape(detail), start=mark)
    lines = [line for line in server.lines[mark:] if text in line]
    assert len(lines) == 1, "\n".join(server.lines[mark:])


@pytest.mark.parametrize(
    ("path", "status", "text", "detail"),
    [
        ("/raise", 500, RAISED, "RuntimeError: bad app: raised before responding"),
        ("/return-early", 500, RETURNED, ""),
        # The head is held until the first body message, so it is still a clean 500.
        ("/return-after-start", 500, RETURNED, ""),
        ("/bad-type", 500, RAISED, "expected 'http.response.start', got 'http.response.body'"),
        ("/bad-status", 500, RAISED, "invalid HTTP status '200'"),
        ("/body-str", 500, RAISED, "response body must be bytes, not str"),
        ("/bad-header", 500, RAISED, "RuntimeError: invalid response"),
        # Checked before anything is written, so still a clean 500.
        ("/length-short", 500, RAISED, "Too little data for declared Content-Length"),
        ("/length-long", 500, RAISED, "Too much data for declared Content-Length"),
        # The response is complete and correct; the extra message is the app's error.
        ("/send-after-end", 200, RAISED, "unexpected ASGI message 'http.response.body'"),
    ],
)
def test_bad_http_app(srv: Server, path: str, status: int, text: str, detail: str) -> None:
    """A clean answer for the client, one log line, and the worker carries on."""
    mark = len(srv.lines)
    raw = ask(srv, path)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw
    assert b"injected" not in raw
    if status == 200:
        assert raw.endswith(b"\r\n\r\n4\r\ndone\r\n0\r\n\r\n")
    logged_once(srv, mark, text, detail)
    ok_from_same_worker(srv)


def test_raise_mid_body_cuts_the_response(srv: Server) -> None:
    """After the body started, an exception can only cut the connection: the chunked
    body never gets its last chunk, so the client cannot take it as complete."""
    mark = len(srv.lines)
    raw = ask(srv, "/raise-mid-body")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in raw
    assert not raw.endswith(b"0\r\n\r\n")
    logged_once(srv, mark, RAISED, "bad app: raised mid-body")
    ok_from_same_worker(srv)


def test_leaked_tasks(srv: Server) -> None:
    """Tasks an app leaves behind, sleeping or failing, do not disturb the worker; a
    failed one is reported once by asyncio."""
    mark = len(srv.lines)
    for _ in range(50):
        assert ask(srv, "/leak-task").startswith(b"HTTP/1.1 200 ")
    assert ask(srv, "/leak-failing-task").startswith(b"HTTP/1.1 200 ")
    logged_once(srv, mark, "Task exception was never retrieved", "leaked task failed")
    ok_from_same_worker(srv)


def _ws_outcome(server: Server, path: str) -> tuple[str, int | None]:
    async def scenario() -> tuple[str, int | None]:
        uri = f"ws://{server.host}:{server.port}{path}"
        try:
            async with websockets.connect(uri, open_timeout=10 * TIME_FACTOR) as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10 * TIME_FACTOR)
                return "closed", ws.close_code
        except websockets.InvalidStatus as exc:
            return "refused", exc.response.status_code

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("path", "outcome", "text", "detail"),
    [
        ("/ws/raise-before-accept", ("refused", 500), WS_RAISED, "raised before accepting"),
        ("/ws/raise-after-accept", ("closed", 1011), WS_RAISED, "raised after accepting"),
        ("/ws/bad-message", ("closed", 1011), WS_RAISED, "needs exactly one of"),
    ],
)
def test_bad_websocket_app(
    srv: Server, path: str, outcome: tuple[str, int], text: str, detail: str
) -> None:
    """500 before the handshake, 1011 after it; one log line; the worker carries on."""
    mark = len(srv.lines)
    assert _ws_outcome(srv, path) == outcome
    logged_once(srv, mark, text, detail)
    ok_from_same_worker(srv)


def test_websocket_app_returning_without_close(srv: Server) -> None:
    """An app that returns after accepting: a normal 1000 close, nothing logged."""
    mark = len(srv.lines)
    assert _ws_outcome(srv, "/ws/return") == ("closed", 1000)
    ok_from_same_worker(srv)
    assert not any("exception" in line for line in srv.lines[mark:])


def test_hanging_app_does_not_block_others_and_is_cut_at_the_graceful_timeout() -> None:
    """A request whose app never answers: others are served meanwhile; on TERM the
    drain waits --graceful-timeout, then cuts it with one warning and exits 0."""
    with Server(APP, "-w", "1", "--graceful-timeout", "1") as server:
        hung = server.connect()
        hung.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        server.wait_for_line("bad: hanging in")
        for _ in range(5):
            ok_from_same_worker(server)
        mark = len(server.lines)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        logged_once(server, mark, "still open after the graceful timeout; closing")
        hung.settimeout(5 * TIME_FACTOR)
        try:
            assert hung.recv(100) == b""
        except ConnectionResetError:
            pass  # aborted: a reset is as good as an EOF here
        finally:
            hung.close()


def test_stop_is_prompt_with_leaked_tasks() -> None:
    """Leaked tasks are cancelled by the drain; they do not hold the worker's exit."""
    with Server(APP, "-w", "1", "--graceful-timeout", "30") as server:
        for _ in range(10):
            assert ask(server, "/leak-task").startswith(b"HTTP/1.1 200 ")
        server.signal(signal.SIGTERM)
        # Well inside the 30 s graceful timeout: no connection is open, tasks don't count.
        assert server.wait(timeout=10) == 0
        assert "still open" not in server.output


EXIT_LIFESPAN = 4
TRACEBACK = "Traceback (most recent call last)"


def test_starlette_startup_raising_logs_its_traceback_once() -> None:
    """Starlette sends startup.failed and re-raises: one traceback, labelled as startup."""
    server = Server(
        "tests.e2e.test_bad_apps:starlette_startup_raises", "--factory", "-w", "1", wait_ready=False
    )
    with server:
        assert server.wait() == EXIT_LIFESPAN
    assert server.output.count(TRACEBACK) == 1, server.output
    assert server.output.count("RuntimeError: starlette startup: no database") == 1, server.output
    assert "lifespan startup failed" in server.output
    assert "after startup" not in server.output


def test_plain_startup_raising_in_auto_mode_is_a_warning_with_traceback() -> None:
    """auto: an app that took lifespan.startup and raised supports lifespan and failed; it
    is logged at WARNING with its traceback (not taken for "not supported"), and the
    server carries on without lifespan, as auto always has."""
    with Server("tests.e2e.test_bad_apps:startup_raises", "-w", "1") as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = read_response(sock)
        assert (status, body) == (200, b"served")
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    output = server.output
    (warning,) = [line for line in server.lines if "exception in lifespan startup" in line]
    assert " WARNING " in warning
    assert "--lifespan on makes this fatal" in warning
    assert output.count(TRACEBACK) == 1, output
    assert "RuntimeError: plain startup: no database" in output
    assert "not supported" not in output


def test_plain_startup_raising_in_on_mode_stops_the_server() -> None:
    """on: the same app is a startup failure, exit code 4."""
    server = Server("tests.e2e.test_bad_apps:startup_raises", "--lifespan", "on", wait_ready=False)
    with server:
        assert server.wait() == EXIT_LIFESPAN
    assert "RuntimeError: plain startup: no database" in server.output


# -- apps for the lifespan tests, imported by the workers ---------------------------------


def starlette_startup_raises() -> Any:
    """A Starlette app (made by --factory, so collecting this module needs no Starlette)
    whose lifespan startup raises."""
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("starlette startup: no database")
        yield  # unreachable: makes this an async generator

    return Starlette(lifespan=lifespan)


async def startup_raises(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app whose lifespan startup raises after receiving lifespan.startup."""
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("plain startup: no database")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})
