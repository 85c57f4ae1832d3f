"""Starting and stopping a real server: exit codes, binds, pidfile, preload, factory."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness import ROOT, TIME_FACTOR, Server, pid_alive, read_response, wait_until

#: The event loops a worker can run, for ``pytest.mark.parametrize("loop", LOOPS)``: what
#: the app's subprocesses inherit depends on the loop (uvloop ignores close_fds), and
#: ``--loop auto`` would test whichever happens to be installed.
LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvloop") is None,
            reason="uvloop (the speedups extra) is not installed",
        ),
    ),
]


def run_to_exit(
    *args: str, timeout: float = 20, wrap: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run corral (under ``wrap``, a command prefix, if given) until it exits."""
    return subprocess.run(
        [*wrap, sys.executable, "-m", "corral", *args, "--app-dir", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=timeout * TIME_FACTOR,
        cwd=ROOT,
        start_new_session=True,
    )


def get(srv: Server, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with srv.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock)


def test_serves_and_stops_cleanly():
    """The example app answers; TERM stops the server with exit 0 and no worker left."""
    with Server("examples.hello:app", "-w", "2") as srv:
        status, headers, body = get(srv)
        assert (status, body) == (200, b"Hello, world!\n")
        assert headers["server"] == "corral"
        workers = srv.worker_pids()
        assert len(workers) == 2
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
        wait_until(lambda: not any(pid_alive(p) for p in workers), 5, "workers to exit")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_finishes_in_flight_request(signum):
    """TERM/INT during a slow request: it completes, new connections are refused, exit 0."""
    with Server("tests.apps:slow", "--graceful-timeout", "10") as srv:
        result: list[object] = []
        sock = srv.connect()

        def request() -> None:
            sock.sendall(b"GET /?seconds=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            result.append(read_response(sock, timeout=10))

        thread = threading.Thread(target=request)
        thread.start()
        srv.wait_for_line("slow: started")
        srv.signal(signum)
        srv.wait_for_line(r"graceful stop")
        # The listening socket stays open in the master until exit, but no worker
        # accepts on it any more: a new request is never served.
        thread.join(10 * TIME_FACTOR)
        sock.close()
        assert result
        assert result[0][0] == 200
        assert result[0][2] == b"slow done"
        assert srv.wait() == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((srv.host, srv.port), timeout=1).close()


def test_app_import_failure_exit_3():
    """A module that does not exist: one clear line, exit code 3."""
    proc = run_to_exit("no_such_module:app", "--port", "0")
    assert proc.returncode == 3, proc.stderr
    assert "could not import module 'no_such_module'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_app_attribute_missing_exit_3():
    """A missing attribute names the module and attribute."""
    proc = run_to_exit("tests.apps:nope", "--port", "0")
    assert proc.returncode == 3
    assert "has no attribute 'nope'" in proc.stderr


def test_not_an_app_exit_3():
    """An attribute that is not an ASGI app is refused at start."""
    proc = run_to_exit("tests.apps:not_an_app", "--port", "0")
    assert proc.returncode == 3
    assert "not an ASGI application" in proc.stderr


def test_preload_import_failure_exit_3():
    """With --preload the master itself fails to import, with the same code."""
    proc = run_to_exit("no_such_module:app", "--port", "0", "--preload")
    assert proc.returncode == 3


def test_lifespan_startup_failure_exit_4():
    """lifespan.startup.failed stops the server with exit code 4 and the app's message."""
    proc = run_to_exit("tests.apps:failing_startup", "--port", "0", "-w", "2")
    assert proc.returncode == 4, proc.stderr
    assert "database unreachable" in proc.stderr


def test_port_in_use_exit_5():
    """Binding a port in use is one line and exit code 5."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        proc = run_to_exit("tests.apps:hello", "--port", str(port))
    finally:
        holder.close()
    assert proc.returncode == 5
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


#: A port below 1024 (only the permission check is reached: nothing listens on it).
PRIVILEGED_PORT = 80


def _unprivileged() -> tuple[str, ...]:
    """A command prefix that runs corral without the privilege to bind a low port, or skip.

    As root the privilege is CAP_NET_BIND_SERVICE, dropped from the bounding set for the
    command (it keeps root's uid, so it can still read an interpreter installed under
    /root, as pyenv's are: running it as nobody could not even load libpython).
    """
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if start.exists() and int(start.read_text()) <= PRIVILEGED_PORT:
        pytest.skip(f"this kernel lets anyone bind port {PRIVILEGED_PORT}")
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop the capability for this test")
    return (setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service")


def test_privileged_port_as_a_normal_user_says_why():
    """A port below 1024 without the privilege: exit 5, one line that says what is needed."""
    proc = run_to_exit("tests.apps:hello", "--port", str(PRIVILEGED_PORT), wrap=_unprivileged())
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.strip().endswith(
        f"cannot bind 127.0.0.1:{PRIVILEGED_PORT}: Permission denied "
        "(ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    ), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_port_is_free_after_exit_while_the_apps_child_lives_on(loop):
    """A process the app started without closing descriptors (os.system, close_fds=False,
    any subprocess under uvloop) does not get the listening socket: once corral has
    exited, connections are refused and a restarted server can bind the port again,
    although that process still runs."""
    with Server("tests.apps_deploy:orphans", "--loop", loop) as srv:
        status, _, body = get(srv, "/helper")
        assert status == 200, body
        helper = json.loads(body)["pid"]
        try:
            srv.signal(signal.SIGTERM)
            assert srv.wait() == 0
            assert pid_alive(helper)  # else the checks below would prove nothing
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((srv.host, srv.port), timeout=1).close()
            with socket.socket() as again:
                again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                again.bind((srv.host, srv.port))
                again.listen()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)


def test_usage_error_exit_2():
    """A bad option is exit code 2 from the real entry point."""
    proc = run_to_exit("tests.apps:hello", "--workers", "none")
    assert proc.returncode == 2
    assert "invalid value for workers" in proc.stderr


def test_factory_and_preload():
    """--factory calls module:function; --preload imports it in the master first."""
    with Server("tests.apps:factory", "--factory", "--preload") as srv:
        assert get(srv)[2] == b"hello"


@pytest.mark.parametrize("preload", [True, False])
def test_preload_freezes_the_imported_heap(preload):
    """With --preload the master freezes the GC generations before forking, so a
    worker's collections leave the shared pages alone; without it nothing is frozen."""
    with Server("tests.apps:frozen", *(["--preload"] if preload else [])) as srv:
        frozen = int(get(srv)[2])
    assert (frozen > 0) is preload


def test_unix_socket(tmp_path):
    """unix:PATH serves, and the socket file is removed on exit."""
    path = tmp_path / "s.sock"
    with Server("tests.apps:hello", "--bind", f"unix:{path}") as srv:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not path.exists()


def test_stale_unix_socket_replaced(tmp_path):
    """A socket file nobody listens on is replaced; a live one is refused (exit 5)."""
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with Server("tests.apps:hello", "--bind", f"unix:{path}") as srv:
        proc = run_to_exit("tests.apps:hello", "--bind", f"unix:{path}")
        assert proc.returncode == 5
        assert "another server is listening" in proc.stderr
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_pidfile(tmp_path):
    """--pid writes the master's pid, refuses a live one (exit 2), and is removed on exit."""
    pidfile = tmp_path / "corral.pid"
    with Server("tests.apps:hello", "--pid", str(pidfile)) as srv:
        assert pidfile.read_text().strip() == str(srv.pid)
        proc = run_to_exit("tests.apps:hello", "--port", "0", "--pid", str(pidfile))
        assert proc.returncode == 2
        assert "names a live process" in proc.stderr
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not pidfile.exists()


def test_console_script_and_python_m():
    """Both entry points exist and agree."""
    out = subprocess.run(
        [sys.executable, "-m", "corral", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("corral ")
