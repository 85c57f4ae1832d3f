"""Table tests of "limits keep their numbers" (lifecycle.py, "Limits"; state.py).

Max requests is the worker's rule (``RequestBudget``: pure, the clock is an argument);
max lifetime, max memory and the worker timeout are the state machine's. Time moves
only with the ``now`` passed in or with Tick, as in test_state.py, whose fake loop this
file reuses.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace

import pytest

from corral.lifecycle import LIMIT_SLACK, RequestBudget, WorkerSignal
from corral.supervisor.events import ReloadRequested, WorkerHeartbeat, WorkerRecycleRequested
from corral.supervisor.state import State
from tests.supervisor.test_state import (
    RETIRE,
    SETTINGS,
    STOP,
    Loop,
    booted,
    kills,
    logs,
    sent,
    spawns,
)

# -- max requests: the worker's early RECYCLE and hard cap --------------------------------

#: The worker's sweep, which rolls the rate window (workers/server.py SWEEP_INTERVAL_S).
SWEEP_S = 0.25


def serve(budget: RequestBudget, *, rate: float, boot_s: float, requests: int) -> list[str]:
    """Serve ``requests`` at a steady ``rate`` from READY at t=10, sweeping like the worker.

    Returns what happened, e.g. ``["recycle at 965", "cap at 1099"]``.
    """
    start = 10.0
    budget.start(start, boot_s)
    seen: list[str] = []
    next_sweep = start + SWEEP_S
    for served in range(1, requests + 1):
        now = start + served / rate
        while next_sweep <= now:
            budget.roll(next_sweep, served - 1)
            next_sweep += SWEEP_S
        if budget.should_recycle(now, served):
            seen.append(f"recycle at {served}")
        if budget.should_cap(served):
            seen.append(f"cap at {served}")
    return seen


@pytest.mark.parametrize(
    ("limit", "rate", "boot_s", "requests", "expected"),
    [
        # Steady 100/s, boot 0.2 s: lead 0.2 * 1.5 + 0.05 = 0.35 s, 35 requests early.
        (1000, 100.0, 0.2, 1000, ["recycle at 965"]),
        # A slow boot at a low rate: lead 3.05 s, 30.5 requests early (32 as measured
        # over a window of 10 to 20 requests that ends on a request).
        (1000, 10.0, 2.0, 1000, ["recycle at 968"]),
        # One request a second: the boot is no time at that rate, RECYCLE at the limit.
        (50, 1.0, 0.01, 50, ["recycle at 50"]),
        # 2000/s, worker life shorter than a boot: as early as the rate window allows,
        # and the cap stops it at the limit + 10% - 1 (the next response is the last).
        (50, 2000.0, 0.01, 60, ["recycle at 25", "cap at 54"]),
    ],
)
def test_early_recycle_counts_the_requests_expected_while_the_successor_starts(
    limit: int, rate: float, boot_s: float, requests: int, expected: list[str]
) -> None:
    """RECYCLE when served + rate * (boot * 1.5 + 0.05 s) reaches the limit; cap at +10%."""
    budget = RequestBudget(limit, limit)
    assert serve(budget, rate=rate, boot_s=boot_s, requests=requests) == expected


def test_a_burst_after_ready_does_not_recycle_a_quiet_worker() -> None:
    """Six requests within 6 ms of READY count as six, not as a rate of 1000/s."""
    budget = RequestBudget(1000, 1000)
    budget.start(10.0, 0.2)
    assert not any(budget.should_recycle(10.0 + i / 1000, i) for i in range(1, 7))
    assert budget.expected(10.006, 6) == pytest.approx(6.0)


def test_rate_window_follows_the_recent_rate() -> None:
    """An hour at 1/s, then 100/s: after a window roll the lead follows the new rate."""
    budget = RequestBudget(10_000, 10_000)
    budget.start(0.0, 0.2)  # lead 0.35 s
    for second in range(1, 3601):
        budget.roll(float(second), second)
    assert budget.expected(3600.0, 3600) == pytest.approx(0.35)
    budget.roll(3601.0, 3700)  # 100 requests in the last second
    budget.roll(3602.0, 3800)
    assert budget.expected(3602.0, 3800) == pytest.approx(35.0)


def test_hard_cap_is_the_limit_with_jitter_plus_ten_percent_of_max_requests() -> None:
    """--max-requests 50 with jitter 7 for this worker: limit 57, cap 62."""
    budget = RequestBudget(57, 50)
    assert budget.cap == 57 + 5
    assert not budget.should_cap(60)
    assert budget.should_cap(61)
    assert not budget.should_cap(62)  # once


# -- max lifetime: started one boot early, retired by lifetime + 10% ----------------------


def test_lifetime_successor_starts_one_expected_boot_early() -> None:
    """Boot 2 s, lifetime 100 s: the successor spawns at 98 s of life, READY at 100."""
    loop = Loop(workers=1, max_worker_lifetime_s=100.0, worker_timeout_s=None)
    loop.tick(2.0)
    loop.ready(100)  # 2 s from spawn to READY
    assert loop.sup.next_deadline() == 100.0
    started = loop.tick(100.0)
    assert spawns(started) == [(0, 1)]
    assert logs(started, logging.INFO) == [
        "worker 100 (slot 0, generation 1) reached its max lifetime less 2.00s"
        " (its successor's expected boot time): starting the successor"
    ]
    loop.tick(102.0)
    assert sent(loop.ready(101)) == [(100, RETIRE)]  # 100 s after 100 became READY


def test_expected_boot_is_the_slowest_recent_one() -> None:
    """Boots of 1, 4 and 2 s: the next lifetime replacement starts 4 s early."""
    loop = Loop(workers=3, max_worker_lifetime_s=100.0, worker_timeout_s=None)
    loop.tick(1.0)
    loop.ready(100)
    loop.tick(2.0)
    loop.ready(102)
    loop.tick(4.0)
    loop.ready(101)
    assert loop.sup.next_deadline() == 1.0 + 100.0 - 4.0


def test_lifetime_lead_is_at_most_half_the_lifetime() -> None:
    """A 30 s boot with a 10 s lifetime starts the successor after 5 s, not at READY."""
    loop = Loop(workers=1, max_worker_lifetime_s=10.0, worker_timeout_s=None, ready_timeout_s=60)
    loop.tick(30.0)
    loop.ready(100)
    assert loop.sup.next_deadline() == 35.0


def test_worker_waiting_its_turn_is_retired_at_lifetime_plus_ten_percent() -> None:
    """One replacement at a time: the second worker's successor is late, so at 110 s the
    worker is retired anyway and the slot waits for its successor."""
    loop = booted(max_worker_lifetime_s=100.0, worker_timeout_s=None)  # boots took 0 s
    assert spawns(loop.tick(100.0)) == [(0, 1)]  # pid 102; 101 waits its turn
    loop.tick(108.0)
    loop.ready(102)
    assert spawns(loop.tick(108.0)) == [(1, 1)]  # pid 103, booting for 8 s
    assert loop.sup.next_deadline() == 100.0 + 100.0 * LIMIT_SLACK
    retired = loop.tick(110.0)
    assert sent(retired) == [(101, RETIRE)]
    assert logs(retired, logging.INFO) == [
        "retiring worker 101 (slot 1, generation 1):"
        " max lifetime + 10% passed before its successor was READY"
    ]
    assert loop.serving() == [102]
    assert sent(loop.ready(103)) == []  # nothing left to retire


def test_lifetime_limit_leaves_a_hung_worker_to_the_heartbeat() -> None:
    """A worker dumped for silence at its lifetime limit is killed as hung, not retired."""
    loop = booted(workers=1, max_worker_lifetime_s=10.0, worker_timeout_s=12.0)
    loop.tick(10.5)  # its lifetime replacement would start now; it is silent since 0
    assert loop.sup.next_deadline() == 11.0  # the dump, before the limit
    assert sent(loop.tick(11.0)) == [(100, WorkerSignal.DUMP_STACK)]
    assert sent(loop.tick(11.5)) == []
    assert kills(loop.tick(12.0)) == [100]


# -- max memory ----------------------------------------------------------------------------


def test_memory_over_the_limit_plus_ten_percent_retires_at_once() -> None:
    """Over the limit: a successor starts, even 10% over. Still 10% over a sample later:
    retired without waiting for that successor."""
    loop = booted()
    over = loop.feed(WorkerRecycleRequested(100, "resident memory 120 MiB", retire_now=True))
    assert spawns(over) == [(0, 1)]  # pid 102
    assert sent(over) == []  # the first sample only starts the successor
    far_over = loop.feed(WorkerRecycleRequested(100, "resident memory 111 MiB", retire_now=True))
    assert sent(far_over) == [(100, RETIRE)]
    assert spawns(far_over) == []  # its successor is starting already
    assert logs(far_over, logging.INFO) == [
        "retiring worker 100 (slot 0, generation 1): resident memory 111 MiB,"
        " more than 10% over the limit: not waiting for its successor"
    ]
    assert loop.serving() == [101]
    assert sent(loop.ready(102)) == []


def test_memory_retire_now_leaves_a_hung_worker_to_the_heartbeat() -> None:
    """A worker dumped for silence is not retired for memory: it is about to be killed."""
    loop = booted(workers=1)
    loop.tick(9.0)  # dumped, successor 101 spawned (its replacement is under way)
    far_over = loop.feed(WorkerRecycleRequested(100, "resident memory 999 MiB", retire_now=True))
    assert sent(far_over) == []
    assert kills(loop.tick(10.0)) == [100]


# -- worker timeout: dumped and replaced within the timeout ------------------------------


@pytest.mark.parametrize(
    ("timeout_s", "boot_s", "serving_at"),
    [
        (3.0, 0.2, 2.2),  # dump and spawn at 2 s of silence, READY 0.2 s later
        (3.0, 1.0, 3.0),  # a one-second boot: a new worker serves at the timeout
        (3.0, 1.5, 3.5),  # a slower boot: killed at 3 s, new worker at 3.5 s
        (1.0, 0.2, 0.7),  # a short timeout dumps at half of it
    ],
)
def test_hung_worker_is_replaced_within_the_timeout(
    timeout_s: float, boot_s: float, serving_at: float
) -> None:
    """The successor starts at the stack dump, a second before the timeout: a new worker
    serves by last beat + timeout + (boot - 1 s); the hung one is SIGKILLed at the
    timeout, never RETIREd."""
    loop = booted(workers=1, worker_timeout_s=timeout_s)
    dump_at = loop.sup.next_deadline()
    assert dump_at == timeout_s - min(1.0, timeout_s / 2)
    dumped = loop.tick(dump_at)
    assert sent(dumped) == [(100, WorkerSignal.DUMP_STACK)]
    assert spawns(dumped) == [(0, 1)]
    later = loop.tick(dump_at + boot_s)
    later += loop.ready(101)
    assert loop.serving() == [101]
    assert dump_at + boot_s == pytest.approx(serving_at)
    later += loop.tick(timeout_s)
    assert kills(later) == [100]
    assert sent(later) == []  # no RETIRE: a blocked loop cannot drain
    # Next: the new worker's own dump deadline, counted from its READY.
    assert loop.sup.next_deadline() == pytest.approx(serving_at + dump_at)


def test_hung_worker_is_written_off_when_its_successor_is_ready() -> None:
    """The successor READY before the timeout serves at once; the silent worker is
    SIGKILLed at its timeout all the same (the stack dump gets its whole second)."""
    loop = booted()
    loop.tick(5.0)
    loop.feed(WorkerHeartbeat(101))
    loop.tick(9.0)  # 100 dumped, 102 spawned
    loop.tick(9.3)
    ready = loop.ready(102)
    assert kills(ready) == []
    assert sent(ready) == []
    assert logs(ready, logging.WARNING) == [
        "worker 100 (slot 0, generation 1) hung (no heartbeat for 9.3s); its successor is"
        " READY; SIGKILL at its worker timeout, in 0.7s"
    ]
    assert loop.serving() == [101, 102]
    assert loop.feed(WorkerHeartbeat(100)) == []  # too late: written off
    assert loop.sup.next_deadline() == 10.0
    killed = loop.tick(10.0)
    assert kills(killed) == [100]
    assert logs(killed, logging.WARNING) == [
        "worker 100 (slot 0, generation 1) hung (no heartbeat for 10.0s): SIGKILLed"
    ]
    assert spawns(loop.exit(100, sig=signal.SIGKILL)) == []


def test_hung_worker_past_its_timeout_is_killed_at_its_successors_ready() -> None:
    """Settings reloaded without a worker timeout: nothing to wait for, SIGKILL at once."""
    loop = booted(workers=1)
    loop.tick(9.0)  # 100 dumped, 101 spawned
    loop.feed(ReloadRequested("SIGHUP", None, replace(SETTINGS, workers=1, worker_timeout_s=None)))
    ready = loop.ready(101, 102)
    assert kills(ready) == [100]


def test_hung_worker_is_charged_to_the_crash_budget() -> None:
    """Killed as hung at its successor's READY: a crash, which can spend the budget."""
    loop = booted(crash_budget=0)
    loop.tick(5.0)
    loop.feed(WorkerHeartbeat(101))
    loop.tick(9.0)
    stopped = loop.ready(102)
    assert loop.state() is State.STOPPING
    assert sorted(sent(stopped)) == [(101, STOP), (102, STOP)]
    assert kills(loop.tick(10.0)) == [100]  # at its timeout, as it was written off
