"""Accepting connections: refused at once on a stop, queued ones served, fair between workers.

A real server in its own session on port 0 (tests.harness), real sockets and real
signals, on asyncio and on uvloop. What is asserted is what corral/workers/accept.py
guarantees by construction: a worker more than accept.MARGIN connections ahead of its
least-loaded live sibling leaves the next connection to the others, so the split does
not depend on which worker the scheduler runs first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from corral.workers.accept import MARGIN
from tests.e2e.test_signals import request_in_thread
from tests.harness import (
    ROOT,
    TIME_FACTOR,
    WS_UPGRADE,
    Server,
    jain,
    open_sockets,
    read_response,
    refused,
    wait_until,
    websocket_greeting_pid,
)

LOOPS = ["asyncio", "uvloop"]

#: The bound on "refused at once". Refusal follows as soon as each process has run its
#: stop handling (about 5 ms on an idle machine, printed by the test); the bound leaves a
#: loaded machine's scheduler room while staying well below the slow requests below,
#: which is what a server that keeps its sockets open would make a new client wait for.
REFUSED_WITHIN_S = 1.0


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_a_stop_refuses_new_connections_while_a_request_finishes(loop: str, signum: int) -> None:
    """After TERM, INT or QUIT, with a slow request in flight, a new connection is refused
    at once instead of waiting in a queue nobody accepts from; on a graceful stop
    the slow request still gets its answer. The server exits 0."""
    with Server("tests.apps:tagged", "-w", "2", "--loop", loop, "--graceful-timeout", "10") as srv:
        slow, outcome = request_in_thread(srv, "/slow?sleep=3")
        srv.wait_for_line("tagged: sleeping /slow")
        assert not refused(srv)
        started = time.monotonic()
        srv.signal(signum)
        wait_until(lambda: refused(srv), REFUSED_WITHIN_S, "new connections to be refused")
        took = time.monotonic() - started
        slow.join(10 * TIME_FACTOR)
        assert len(outcome) == 1, outcome
        if signum != signal.SIGQUIT:
            assert outcome[0][0] == 200, outcome  # type: ignore[index]
        assert srv.wait() == 0
    print(f"refused {took * 1000:.1f} ms after the signal")


def test_a_stop_after_a_failed_handover_refuses_new_connections(tmp_path: Path) -> None:
    """USR2 whose new generation cannot import the app: the adopted workers serve on; the
    stop that follows still closes every copy (the re-exec'd master's inherited ones and
    the adopted workers' own), so new connections are refused."""
    module = tmp_path / "handover_app.py"
    module.write_text("from tests.apps import tagged as app\n")
    env = {"PYTHONPATH": str(ROOT)}
    with Server("handover_app:app", "-w", "2", "--app-dir", str(tmp_path), env=env) as srv:
        mark = len(srv.lines)
        module.write_text("raise RuntimeError('broken deploy')\n")
        srv.signal(signal.SIGUSR2)
        srv.wait_for_line("re-executed: adopted 2 serving worker", start=mark)
        srv.wait_for_line("reload abandoned", start=mark)
        assert not refused(srv)
        slow, outcome = request_in_thread(srv, "/slow?sleep=3")
        srv.wait_for_line("tagged: sleeping /slow", start=mark)
        srv.signal(signal.SIGTERM)
        wait_until(lambda: refused(srv), REFUSED_WITHIN_S, "new connections to be refused")
        slow.join(10 * TIME_FACTOR)
        assert outcome[0][0] == 200, outcome  # type: ignore[index]
        assert srv.wait() == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_connections_queued_before_a_stop_are_served(loop: str) -> None:
    """Connections waiting in the accept queue when TERM arrives get their answer, not a
    reset: each worker takes what is queued before it closes its copy of the socket."""
    with Server("tests.apps:tagged", "-w", "2", "--loop", loop, "--no-access-log") as srv:
        workers = srv.worker_pids(1)
        with contextlib.ExitStack() as stack:
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            try:
                # The kernel completes the handshakes; the requests wait in the queue.
                socks = [stack.enter_context(srv.connect()) for _ in range(10)]
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                mark = len(srv.lines)
                srv.signal(signal.SIGTERM)
                srv.wait_for_line("SIGTERM: graceful stop", start=mark)
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            answers = [read_response(sock) for sock in socks]
        assert [status for status, _, _ in answers] == [200] * 10
        assert srv.wait() == 0


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("workers", [2, 4])
def test_websockets_opened_at_once_are_spread_evenly(loop: str, workers: int) -> None:
    """200 WebSocket connections opened at once: Jain's index >= 0.95 and no worker below
    half its fair share (issue 13's goal). The rule keeps the spread within MARGIN plus
    the accepts in flight while every worker's loop turns within LIVE_S, which holds
    here but not under a tracer's slowdown, where a silent worker is rightly not waited
    for; the goal holds either way (the old accept missed it in 6-14 of 20 trials)."""
    with Server(
        "tests.apps_hostile:load", "-w", str(workers), "--loop", loop, "--no-access-log"
    ) as srv:
        wait_until(lambda: len(srv.worker_pids(1)) == workers, 10, f"{workers} workers")
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(srv.connect()) for _ in range(200)]
            for sock in socks:
                sock.sendall(WS_UPGRADE)
            pids = [websocket_greeting_pid(sock) for sock in socks]
        shares = [pids.count(pid) for pid in srv.worker_pids(1)]
    assert jain(shares) >= 0.95, shares
    assert min(shares) >= 200 / workers / 2, shares


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("workers", [2, 4])
def test_a_burst_queued_while_every_worker_slept_reaches_every_worker(
    loop: str, workers: int
) -> None:
    """48 connections queued while every worker is stopped: when they all resume, the
    first one scheduled cannot take them all; five bursts, each split within the margin."""
    with Server("tests.apps:tagged", "-w", str(workers), "--loop", loop, "--no-access-log") as srv:
        wait_until(lambda: len(srv.worker_pids(1)) == workers, 10, f"{workers} workers")
        pids = srv.worker_pids(1)
        baseline = {pid: open_sockets(pid) for pid in pids}
        for _ in range(5):
            with contextlib.ExitStack() as stack:
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                try:
                    socks = [stack.enter_context(srv.connect()) for _ in range(48)]
                finally:
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                served = []
                for sock in socks:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    served.append(int(read_response(sock)[1]["x-pid"]))
            shares = [served.count(pid) for pid in pids]
            assert max(shares) - min(shares) <= MARGIN + 2, shares
            # The next burst starts from zero: a worker still counting this one's
            # connections would rightly take fewer of the next.
            wait_until(
                lambda: all(open_sockets(pid) <= baseline[pid] for pid in pids),
                10,
                "the workers to close the burst's connections",
            )
