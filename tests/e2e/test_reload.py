"""--reload against a real server: edits, broken code, ignored files, load, env file, Ctrl-C.

Each test copies a tiny app into ``tmp_path`` and serves it from there (``--app-dir``
and ``--reload-dir``), in its own session on port 0; tests.harness kills the whole
process group on the way out. Every wait is a log line or a bounded poll. Edits change
the file's size, so that no test depends on the mtime resolution of bytecode caches.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.harness import TIME_FACTOR, Server, pid_alive, wait_until
from tests.supervisor.load import Load

APP = """
import asyncio
import os

VERSION = "one"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": VERSION})
        return
    headers = [(b"x-pid", str(os.getpid()).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/stream":
        while True:  # an endless stream, like server-sent events
            await send({"type": "http.response.body", "body": b"tick\\n", "more_body": True})
            await asyncio.sleep(0.05)
    body = f"{VERSION} {os.environ.get('GREETING', '-')}"
    await send({"type": "http.response.body", "body": body.encode()})
"""

#: The reloader's line once its watch is armed: edits before it may go unnoticed.
WATCHING = r"reload: watching \d+ director"


def write_app(directory: Path, version: str = "one", extra: str = "") -> Path:
    path = directory / "app.py"
    path.write_text(APP.replace('VERSION = "one"', f"VERSION = {version!r}") + extra)
    return path


def reload_server(directory: Path, *args: str, wait_ready: bool = True) -> Server:
    srv = Server(
        "app:app",
        "--reload",
        "--app-dir",
        str(directory),
        "--reload-dir",
        str(directory),
        "--no-access-log",
        *args,
        cwd=directory,
        wait_ready=wait_ready,
    )
    try:
        srv.wait_for_line(WATCHING)
    except BaseException:
        srv.kill()
        raise
    return srv


def get(srv: Server, path: str = "/", accept: str = "*/*") -> tuple[int, str]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5 * TIME_FACTOR)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_for_body(srv: Server, expected: str, what: str) -> None:
    wait_until(lambda: get(srv) == (200, expected), 10, what)


def reload_reasons(srv: Server) -> list[str]:
    return [line.split("reload (", 1)[1] for line in srv.lines if "] INFO reload (" in line]


@pytest.mark.parametrize("how", ["events", "--reload-poll"])
def test_an_edit_changes_the_response(tmp_path: Path, how: str):
    """Saving a new version rolls the workers: the new response, one reload, old workers gone."""
    app = write_app(tmp_path)
    with reload_server(tmp_path, *([how] if how.startswith("--") else [])) as srv:
        assert get(srv) == (200, "one -")
        old = srv.worker_pids(1)
        write_app(tmp_path, "second")
        srv.wait_for_line("generation 2 READY")
        wait_for_body(srv, "second -", "the edited app")
        wait_until(lambda: not any(pid_alive(p) for p in old), 10, "the old worker to exit")
        assert reload_reasons(srv) == ["changed: app.py): starting generation 2 with 1 workers"]
        assert app.exists()


def test_a_syntax_error_is_a_500_page_until_fixed(tmp_path: Path):
    """A broken save: 500 with the traceback (HTML or text), WebSocket refused; a fix heals."""
    write_app(tmp_path)
    with reload_server(tmp_path) as srv:
        write_app(tmp_path, extra="\nbroken = (\n")
        srv.wait_for_line("generation 2 READY")
        # The retired worker answers until its drain signal is handled, a moment after
        # the master's READY line: wait for it to go, so only the error page answers.
        srv.wait_for_line(r"generation 1\) exited")
        wait_until(lambda: get(srv)[0] == 500, 10, "the error page")
        _, text = get(srv)
        assert "SyntaxError" in text
        assert "app.py" in text
        assert "importlib" not in text  # the loader's frames are cut
        _, page = get(srv, accept="text/html,*/*")
        assert page.startswith("<!doctype html>")
        assert "SyntaxError" in page
        assert srv.output.count("SyntaxError") == 1  # logged once, with its traceback
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{srv.host}:{srv.port}/ws", open_timeout=5 * TIME_FACTOR)
        assert refused.value.response.status_code == 500
        assert b"SyntaxError" in refused.value.response.body
        write_app(tmp_path, "fixed")
        srv.wait_for_line("generation 3 READY")
        wait_for_body(srv, "fixed -", "the fixed app")
        assert srv.proc.poll() is None


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("import no_such_module_here\n", "ModuleNotFoundError"),
        ("raise RuntimeError('boom at import')\n", "boom at import"),
        ("VERSION = (\n", "SyntaxError"),
    ],
)
def test_first_start_with_broken_code_serves_the_error_page(
    tmp_path: Path, broken: str, expected: str
):
    """Broken code at the very first start: no exit 3, a 500 page, and a save brings the app."""
    write_app(tmp_path, extra="\n" + broken)
    with reload_server(tmp_path) as srv:
        status, text = get(srv)
        assert status == 500
        assert expected in text
        write_app(tmp_path, "healed")
        wait_for_body(srv, "healed -", "the healed app")


def test_failing_lifespan_startup_serves_the_error_page(tmp_path: Path):
    """A lifespan startup that fails (--lifespan on): 500 page with the app's traceback."""
    app = write_app(tmp_path)
    app.write_text(
        app.read_text().replace(
            'await send({"type": "lifespan.startup.complete"})',
            'raise ValueError("no database")',
        )
    )
    with reload_server(tmp_path, "--lifespan", "on") as srv:
        status, text = get(srv)
        assert status == 500
        assert "lifespan startup failed" in text
        assert 'raise ValueError("no database")' in text
        write_app(tmp_path, "up")
        wait_for_body(srv, "up -", "the app with a working lifespan")


def test_ignored_and_excluded_files_do_not_reload(tmp_path: Path):
    """Ignored dirs, editor files, other extensions and --reload-exclude: no reload."""
    write_app(tmp_path)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "generated").mkdir()
    with reload_server(tmp_path, "--reload-exclude", "generated") as srv:
        (tmp_path / ".venv" / "site.py").write_text("x = 1\n")
        (tmp_path / "node_modules" / "thing.py").write_text("x = 1\n")
        (tmp_path / "generated" / "models.py").write_text("x = 1\n")
        (tmp_path / "notes.txt").write_text("not python\n")
        (tmp_path / ".app.py.swp").write_text("swap\n")
        (tmp_path / "app.py~").write_text("backup\n")
        (tmp_path / "__pycache__").mkdir(exist_ok=True)
        (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
        # Then a change that counts: the reloads logged up to it say what reloaded.
        write_app(tmp_path, "counted")
        srv.wait_for_line("generation 2 READY")
        wait_for_body(srv, "counted -", "the edited app")
    assert reload_reasons(srv) == ["changed: app.py): starting generation 2 with 1 workers"]


def test_changes_outside_the_reload_dirs_do_not_reload(tmp_path: Path):
    """Only --reload-dir is watched (and its new subdirectories); a sibling is not."""
    src = tmp_path / "src"
    src.mkdir()
    write_app(src)
    with reload_server(src) as srv:
        (tmp_path / "other.py").write_text("x = 1\n")
        (tmp_path / "sibling").mkdir()
        (tmp_path / "sibling" / "mod.py").write_text("x = 1\n")
        # A directory created under a watched one is watched from then on.
        (src / "pkg").mkdir()
        (src / "pkg" / "mod.py").write_text("x = 1\n")
        srv.wait_for_line("generation 2 READY")
        write_app(src, "counted")
        wait_for_body(srv, "counted -", "the edited app")
    # The new file may be seen twice (found by the rescan, then its write as an event),
    # and that second report may share a reload with the edit.
    reasons = [re.findall(r"[\w/]+\.py", r.split(")")[0]) for r in reload_reasons(srv)]
    assert reasons[0] == ["pkg/mod.py"]
    assert "app.py" in reasons[-1]
    assert {name for names in reasons for name in names} == {"pkg/mod.py", "app.py"}


def test_no_request_fails_during_a_reload_under_load(tmp_path: Path):
    """Two workers under a steady load: an edit rolls both, and every request is answered."""
    write_app(tmp_path)
    with reload_server(tmp_path, "-w", "2") as srv:
        srv.wait_for_line("generation 1 READY: 2 workers")
        old = srv.worker_pids(1)
        with Load(srv.host, srv.port, threads=4) as load:
            load.wait_for(50)
            write_app(tmp_path, "under load")
            srv.wait_for_line("generation 2 READY: 2 workers")
            wait_until(lambda: not any(pid_alive(p) for p in old), 10, "the old workers to exit")
            load.wait_for(50)
            result = load.stop()
        assert result.failures == []
        assert len(srv.worker_pids(2)) == 2
        assert {pid for _, pid in result.answers[-10:]} <= srv.worker_pids(2)


def test_env_file_changes_reach_the_next_generation(tmp_path: Path):
    """--env-file is watched: a new value, then a removed key, reach the new workers."""
    write_app(tmp_path)
    env = tmp_path / ".env"
    env.write_text("GREETING=hello\n")
    with reload_server(tmp_path, "--env-file", str(env)) as srv:
        assert get(srv) == (200, "one hello")
        env.write_text("GREETING=bonjour\n")
        wait_for_body(srv, "one bonjour", "the new greeting")
        env.write_text("OTHER=1\n")
        wait_for_body(srv, "one -", "the greeting removed")
        srv.wait_for_line(r"env file .*\.env: GREETING, OTHER changed")


def test_ctrl_c_with_an_open_websocket_stops_in_bounded_time(tmp_path: Path):
    """SIGINT to the process group (a terminal's Ctrl-C): the socket gets 1001, exit 0."""
    write_app(tmp_path)
    with reload_server(tmp_path) as srv:
        with connect(f"ws://{srv.host}:{srv.port}/ws", open_timeout=5 * TIME_FACTOR) as ws:
            ws.send("version?")
            assert ws.recv(timeout=5 * TIME_FACTOR) == "one"
            os.killpg(srv.pid, signal.SIGINT)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5 * TIME_FACTOR)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
        assert srv.wait(timeout=5) == 0
        wait_until(lambda: not any(pid_alive(p) for p in srv.worker_pids()), 5, "workers gone")


def test_ctrl_c_with_an_endless_stream(tmp_path: Path):
    """An endless response: one Ctrl-C stops within --reload's 5 s; a second one at once."""
    write_app(tmp_path)
    with reload_server(tmp_path) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=10 * TIME_FACTOR)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"tick" in sock.recv(4096)
        os.killpg(srv.pid, signal.SIGINT)
        srv.wait_for_line("SIGINT: graceful stop")
        os.killpg(srv.pid, signal.SIGINT)
        srv.wait_for_line("SIGINT: fast stop")
        assert srv.wait(timeout=3) == 0
        sock.close()
    with reload_server(tmp_path) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=10 * TIME_FACTOR)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"tick" in sock.recv(4096)
        os.killpg(srv.pid, signal.SIGINT)
        # The graceful timeout under --reload is 5 s, then the stream is cut.
        assert srv.wait(timeout=9) == 0
        sock.close()
        assert "still open after the graceful timeout" in srv.output


def test_usr2_reexec_hands_over_to_a_new_watcher(tmp_path: Path):
    """USR2 under --reload: the watcher stops before the exec, the new master watches."""
    write_app(tmp_path)
    with reload_server(tmp_path) as srv:
        mark = len(srv.lines)
        srv.signal(signal.SIGUSR2)
        srv.wait_for_line("re-executed: adopted 1 serving worker", start=mark)
        srv.wait_for_line(WATCHING, start=mark)
        srv.wait_for_line("generation 2 READY", start=mark)
        write_app(tmp_path, "after exec")
        wait_for_body(srv, "after exec -", "the edit after the re-exec")
        assert srv.output.count("reload: watching 1 directory") == 2
        assert len(reload_reasons(srv)) == 1
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
