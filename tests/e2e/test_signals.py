"""Signals to a real master: HUP, TTIN/TTOU, USR2, TERM past the graceful timeout, KILL.

Every test runs ``python -m corral`` in its own session on port 0 (tests.harness kills
the whole process group on the way out, pass or fail) and synchronises on log lines and
bounded polls only. TERM/INT with a request in flight is in test_startup.py.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path

from tests.harness import TIME_FACTOR, Server, pid_alive, read_response, wait_until
from tests.supervisor.load import Load, live_children


def get(srv: Server, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with srv.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock)


def request_in_thread(srv: Server, path: str) -> tuple[threading.Thread, list[object]]:
    """Start ``GET path`` on its own connection; the outcome lands in the returned list."""
    outcome: list[object] = []

    def run() -> None:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30 * TIME_FACTOR)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            outcome.append((response.status, response.getheader("x-pid"), response.read()))
        except OSError as exc:
            outcome.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def all_gone(pids: set[int]) -> bool:
    return not any(pid_alive(pid) for pid in pids)


def test_hup_under_load_loses_no_request():
    """HUP under 4 looping clients: 0 failures, every worker replaced, slow request done."""
    with Server("tests.apps:tagged", "-w", "2", "--no-access-log") as srv:
        old = srv.worker_pids(1)
        slow, outcome = request_in_thread(srv, "/slow?sleep=1.5")
        srv.wait_for_line("tagged: sleeping /slow")
        with Load(srv.host, srv.port, threads=4) as load:
            load.wait_for(50)
            mark = len(srv.lines)
            srv.signal(signal.SIGHUP)
            srv.wait_for_line("generation 2 READY", start=mark)
            new = srv.worker_pids(2)
            wait_until(lambda: all_gone(old), 10, "the old workers to exit")
            load.wait_for(50)
            result = load.stop()
        slow.join(10 * TIME_FACTOR)
    assert result.failures == []
    # Only keep-alive connections the drain closed while a request crossed on the wire
    # are retried: at most once per keep-alive client (2) per old worker (2).
    assert result.retried <= 4
    assert len(new) == 2
    assert not new & old
    assert {pid for _, pid in result.answers[-20:]} <= new
    # The slow request started on an old worker before the HUP and was allowed to finish.
    assert outcome
    assert isinstance(outcome[0], tuple), outcome
    status, pid, _ = outcome[0]
    assert status == 200
    assert int(pid) in old


def test_ttin_ttou_change_the_worker_count():
    """TTIN adds a worker, TTOU retires one; /proc agrees with the log."""
    with Server("tests.apps:tagged", "--no-access-log") as srv:
        srv.signal(signal.SIGTTIN)
        srv.wait_for_line("SIGTTIN: 2 workers")
        srv.wait_for_line(r"worker \d+ \(slot 1, generation 1\) READY")
        wait_until(lambda: len(live_children(srv.pid)) == 2, 5, "two workers")
        mark = len(srv.lines)
        srv.signal(signal.SIGTTOU)
        srv.wait_for_line(
            r"retiring worker \d+ \(slot 1, generation 1\): fewer workers", start=mark
        )
        wait_until(lambda: len(live_children(srv.pid)) == 1, 5, "one worker")
        assert get(srv)[0] == 200


def test_usr2_reexecs_in_place_and_keeps_the_port_open(tmp_path: Path):
    """USR2: same master pid and pidfile, sockets kept (TCP and unix), workers replaced."""
    pidfile = tmp_path / "corral.pid"
    path = tmp_path / "s.sock"
    args = ("tests.apps:tagged", "-w", "2", "--no-access-log", "--pid", str(pidfile))
    binds = ("--bind", "127.0.0.1:0", "--bind", f"unix:{path}")
    with Server(*args, *binds) as srv:
        old = srv.worker_pids(1)
        with Load(srv.host, srv.port, threads=2) as load:
            load.wait_for(20)
            mark = len(srv.lines)
            srv.signal(signal.SIGUSR2)
            srv.wait_for_line("re-executed: adopted 2 serving worker", start=mark)
            srv.wait_for_line("generation 2 READY", start=mark)
            wait_until(lambda: all_gone(old), 10, "the adopted workers to exit")
            load.wait_for(20)
            result = load.stop()
        assert result.failures == []
        assert srv.proc.poll() is None
        assert srv.output.count(f"corral master {srv.pid} serving") == 2
        assert pidfile.read_text().strip() == str(srv.pid)
        new = srv.worker_pids(2)
        assert len(new) == 2
        assert not new & old
        assert live_children(srv.pid) == new
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5 * TIME_FACTOR)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not path.exists()
    assert not pidfile.exists()


def test_hup_with_an_invalid_config_keeps_the_old_one(tmp_path: Path):
    """An invalid file on HUP: logged, old config kept; a valid one later applies."""
    config = tmp_path / "corral.toml"
    config.write_text("workers = 1\n")
    with Server("tests.apps:tagged", "--config", str(config), "--no-access-log") as srv:
        config.write_text('workers = "many"\n')
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        srv.wait_for_line("the new configuration is invalid, keeping the old one", start=mark)
        srv.wait_for_line("generation 2 READY: 1 workers", start=mark)
        assert get(srv)[0] == 200
        config.write_text("workers = 2\n")
        srv.signal(signal.SIGHUP)
        srv.wait_for_line("generation 3 READY: 2 workers", start=mark)
        wait_until(lambda: len(live_children(srv.pid)) == 2, 10, "two workers")


def test_graceful_timeout_cuts_a_long_request():
    """A request longer than --graceful-timeout 1 is cut; the master exits 0 promptly."""
    with Server("tests.apps:tagged", "--graceful-timeout", "1") as srv:
        workers = srv.worker_pids()
        thread, outcome = request_in_thread(srv, "/long?sleep=60")
        srv.wait_for_line("tagged: sleeping /long")
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(timeout=10) == 0
        took = time.monotonic() - started
        thread.join(5 * TIME_FACTOR)
        assert 0.9 < took < 3.5 * TIME_FACTOR, took
        assert "still open after the graceful timeout" in srv.output
        assert outcome
        assert isinstance(outcome[0], OSError)
        assert all_gone(workers)


def test_workers_die_with_the_master():
    """SIGKILL to the master: PR_SET_PDEATHSIG takes every worker down within 2 s."""
    with Server("tests.apps:tagged", "-w", "3") as srv:
        workers = live_children(srv.pid)
        assert len(workers) == 3
        os.kill(srv.pid, signal.SIGKILL)
        wait_until(lambda: all_gone(workers), 2, "the workers to die with the master")
