"""Worker failures and recycling against a real master.

A worker SIGKILLed, a worker whose event loop is blocked, workers that keep crashing,
and workers replaced for max requests, max lifetime and memory. Each test runs
``python -m corral`` in its own session (the harness kills the process group whatever
happens) and waits on log lines and bounded polls only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.harness import ROOT, TIME_FACTOR, Server, pid_alive, read_response, wait_until
from tests.supervisor.load import Load, live_children

READY = r"worker (\d+) \(slot {slot}, generation \d+\) READY"


def get(srv: Server, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with srv.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock)


def test_killed_worker_is_replaced_within_a_second():
    """SIGKILL to the only worker: a replacement serves within 1 s."""
    with Server("tests.apps:tagged", "--no-access-log") as srv:
        (old,) = srv.worker_pids()
        mark = len(srv.lines)
        started = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = int(srv.wait_for_line(READY.format(slot=0), start=mark).group(1))
        status, headers, _ = get(srv)
        took = time.monotonic() - started
        assert status == 200
        assert int(headers["x-pid"]) == new != old
        assert took < 1.0 * TIME_FACTOR, took
        assert f"worker {old} (slot 0, generation 1) was killed by SIGKILL from outside" in (
            srv.output
        )


def test_blocked_worker_is_dumped_killed_and_replaced():
    """A loop blocked past --worker-timeout: its stack is logged, then it is replaced."""
    args = ("tests.apps:blocking", "--worker-timeout", "2", "--no-access-log")
    with Server(*args) as srv:
        (old,) = srv.worker_pids()
        sock = srv.connect()
        sock.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        srv.wait_for_line("blocking: blocking the loop")
        mark = len(srv.lines)
        srv.wait_for_line(rf"worker {old} .* sent no heartbeat for [\d.]+s: dumping its stack")
        # faulthandler writes the stack to the shared stderr: the app frame is in the log.
        srv.wait_for_line(r'File ".*apps\.py", line \d+ in block_the_loop_forever', start=mark)
        srv.wait_for_line(
            rf"worker {old} \(slot 0, generation 1\) hung \(no heartbeat for [\d.]+s\): SIGKILLed"
        )
        new = int(srv.wait_for_line(READY.format(slot=0), start=mark).group(1))
        sock.close()
        status, headers, _ = get(srv)
        assert status == 200
        assert int(headers["x-pid"]) == new != old
        assert not pid_alive(old)


def test_crash_loop_stops_with_exit_6():
    """Workers dying right after READY, over and over: exit code 6 in bounded time."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "tests.apps:dies_after_ready",
            "-w",
            "3",
            "--port",
            "0",
            "--app-dir",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=30 * TIME_FACTOR,
        cwd=ROOT,
        start_new_session=True,
    )
    assert proc.returncode == 6, proc.stderr
    assert "crash budget (5 in 60.0s) spent" in proc.stderr
    assert time.monotonic() - started < 15 * TIME_FACTOR


def test_max_requests_rotates_workers_under_load():
    """--max-requests recycles workers one by one under load, with no failed request."""
    args = ("tests.apps:tagged", "-w", "2", "--max-requests", "100", "--max-requests-jitter", "20")
    with Server(*args, "--no-access-log") as srv:
        first = srv.worker_pids()
        with Load(srv.host, srv.port, threads=4) as load:
            wait_until(lambda: len(srv.worker_pids()) >= 6, 20, "four recycled workers")
            result = load.stop()
        assert result.failures == []
        assert "will be replaced: max requests reached" in srv.output
        assert len(result.pids - first) >= 2
        wait_until(lambda: not any(pid_alive(p) for p in first), 10, "the first workers to exit")
        # Without requests nothing more is recycled: the pool settles at two workers.
        wait_until(lambda: len(live_children(srv.pid)) == 2, 10, "two workers")


def test_max_worker_lifetime_rolls_one_worker_at_a_time():
    """--max-worker-lifetime replaces the oldest worker first, without failed requests."""
    args = ("tests.apps:tagged", "-w", "2", "--max-worker-lifetime", "1", "--no-access-log")
    with Server(*args) as srv:
        first = srv.worker_pids()
        with Load(srv.host, srv.port, threads=2) as load:
            srv.wait_for_line("reached its max lifetime")
            wait_until(lambda: not any(pid_alive(p) for p in first), 15, "both replaced")
            result = load.stop()
        assert result.failures == []
        assert srv.output.count("reached its max lifetime") >= 2


def test_max_worker_memory_recycles_a_worker_over_the_limit():
    """--max-worker-memory 1 (MiB): every worker is over it and gets replaced in turn."""
    with Server("tests.apps:tagged", "--max-worker-memory", "1", "--no-access-log") as srv:
        (first,) = srv.worker_pids()
        srv.wait_for_line(rf"worker {first} .* will be replaced: resident memory \d+ MiB")
        mark = len(srv.lines)
        new = int(srv.wait_for_line(READY.format(slot=0), start=mark).group(1))
        srv.wait_for_line(rf"retiring worker {first} ", start=mark)
        assert new != first
        wait_until(lambda: not pid_alive(first), 10, "the first worker to exit")
        assert get(srv)[0] == 200
