"""Hostile conditions, CI-sized: worker kills under load, a short soak, connection
floods, and running out of file descriptors.

The long versions are scripts: benchmarks/chaos.py (60 s of kills) and
benchmarks/soak.py (10 minutes); their results are in benchmarks/HOSTILE.md. Every
server here runs ``tests.apps_hostile:load`` on port 0 in its own session, and every
wait is a bounded poll.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from benchmarks.chaos import report as chaos_report
from benchmarks.chaos import run_chaos
from benchmarks.soak import fd_count, run_soak
from benchmarks.soak import report as soak_report
from tests.harness import TIME_FACTOR, Server, pid_alive, read_response, wait_until

APP = "tests.apps_hostile:load"

# Descriptor and memory figures come from /proc.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def get(srv: Server, path: str = "/", timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    with srv.connect(timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock, timeout)


@contextlib.contextmanager
def nofile_at_least(count: int) -> Iterator[None]:
    """Raise this process's soft RLIMIT_NOFILE to ``count`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {count} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def open_sockets() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_chaos_only_requests_in_flight_on_the_killed_worker_fail() -> None:
    """SIGKILL a random worker every 2 s under load for 9 s (4 kills): the server keeps
    answering, and each failed request was in flight on a killed worker.
    benchmarks/chaos.py runs the 60 s version."""
    result = run_chaos(duration_s=9, every_s=2, workers=2, threads=4, wait_full=True)
    summary = chaos_report(result)
    print(summary)
    assert result.exit_code is None, summary
    assert len(result.kills) == 4, summary
    assert result.unexplained == [], summary
    assert result.ok >= 100, summary
    assert result.max_gap_s < 2 * TIME_FACTOR, summary
    # Each kill landed in a busy worker: some requests were in flight, but few.
    assert len(result.in_flight) <= 4 * len(result.kills) * 4, summary


#: RSS growth allowed in the short soak. The issue's 5 % is for the 10-minute run
#: (benchmarks/soak.py; +1.3 % in HOSTILE.md): in 15 s a fresh worker's one-off warm-up
#: climb reaches 5 % on a busy machine. 15 % still fails for a leak of ~300 bytes per
#: request (some 14,000 requests on a ~25 MiB worker), which is the leak this catches.
SHORT_SOAK_MAX_RSS_GROWTH = 0.15


def test_soak_short() -> None:
    """15 s of mixed HTTP and WebSocket load after a warm-up: no failure, no worker
    replaced, no per-request leak, no descriptor leaked (benchmarks/soak.py: 10 min)."""
    result = run_soak(duration_s=15, warmup_s=10, workers=2, http_threads=4, ws_threads=2)
    summary = soak_report(result, max_rss_growth=SHORT_SOAK_MAX_RSS_GROWTH)
    print(summary)
    assert result.problems(max_rss_growth=SHORT_SOAK_MAX_RSS_GROWTH) == [], summary
    assert result.counts.http_ok > 100, summary
    assert result.counts.ws_messages > 100, summary


def test_idle_and_slow_connections_do_not_starve_other_clients() -> None:
    """500 idle and 500 slowloris connections on one worker: other clients are still
    served at once, and the header deadline then closes the flood (408 for the slow)."""
    deadline = str(5 * TIME_FACTOR)
    with nofile_at_least(4096), Server(APP, "--no-access-log", "--timeout-header", deadline) as srv:
        (worker,) = srv.worker_pids()
        baseline = fd_count(worker)
        with open_sockets() as idle, open_sockets() as slow:
            for _ in range(500):
                idle.append(socket.create_connection((srv.host, srv.port)))
                sock = socket.create_connection((srv.host, srv.port))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                slow.append(sock)
            wait_until(lambda: fd_count(worker) >= baseline + 1000, 10, "the flood accepted")
            # Slowloris: one more byte on each slow connection, all along.
            for sock in slow:
                sock.sendall(b"a")
            latencies = []
            for _ in range(30):
                started = time.monotonic()
                status, _, body = get(srv)
                latencies.append(time.monotonic() - started)
                assert (status, body) == (200, b"ok")
            print(f"1,000 flooding connections: 30 requests, slowest {max(latencies):.3f} s")
            assert max(latencies) < 1.0 * TIME_FACTOR, latencies
            # The flood was still there all along.
            assert fd_count(worker) >= baseline + 1000
            # Then the deadline ends the flood: 408 for a started head, a close otherwise.
            for sock in slow[:20]:
                sock.settimeout(10 * TIME_FACTOR)
                assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
            for sock in idle[:20]:
                sock.settimeout(10 * TIME_FACTOR)
                assert sock.recv(100) == b""
            wait_until(lambda: fd_count(worker) <= baseline, 10, "the flood to be closed")
        assert get(srv)[0] == 200
        assert srv.worker_pids() == {worker}
        assert "Traceback" not in srv.output


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_running_out_of_descriptors_slows_accepting_and_recovers(loop: str) -> None:
    """A worker at its RLIMIT_NOFILE: accepting waits (corral's acceptor backs off, on
    either loop), nothing crashes, and queued clients are served once connections close."""
    with Server(APP, "--no-access-log", "--timeout-header", "30", "--loop", loop) as srv:
        (worker,) = srv.worker_pids()
        spare = 16
        limit = fd_count(worker) + spare
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, limit))
        with open_sockets() as held:
            for _ in range(spare + 24):
                held.append(socket.create_connection((srv.host, srv.port)))
            wait_until(lambda: fd_count(worker) >= limit, 10, "the worker to run out of fds")
            srv.wait_for_line("accept: out of system resources", timeout=10)
            # A new client connects (the kernel queues it) but is not served yet.
            waiting = srv.connect()
            waiting.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            waiting.settimeout(0.5)
            with pytest.raises(socket.timeout):
                waiting.recv(100)
            # Free the descriptors: everything queued is accepted and served.
            for sock in held:
                sock.close()
            held.clear()
            freed = time.monotonic()
            status, _, body = read_response(waiting, timeout=10)
            waiting.close()
            print(f"out of fds: queued client served {time.monotonic() - freed:.3f} s after")
            assert (status, body) == (200, b"ok")
        for _ in range(20):
            assert get(srv)[0] == 200
        assert srv.worker_pids() == {worker}
        assert pid_alive(worker)
        assert srv.proc.poll() is None
