"""Table tests of the master's state machine: event sequences in, actions out.

A tiny fake loop (``Loop``) answers every Spawn with Spawned and the next pid (100, 101,
...), the way the real loop must, and returns every action in order. No forks, no
signals, no clocks: time only moves with Tick.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from typing import Any

import pytest

from corral.lifecycle import ExitCode, WorkerSignal
from corral.supervisor.events import (
    Action,
    AdoptedWorker,
    ChildExited,
    Event,
    Exit,
    Kill,
    Log,
    Notify,
    ReExec,
    ReloadRequested,
    ReopenLogs,
    SendSignal,
    SignalReceived,
    Spawn,
    Spawned,
    SpawnFailed,
    Tick,
    WorkerHeartbeat,
    WorkerInfo,
    WorkerReady,
    WorkerRecycleRequested,
)
from corral.supervisor.policy import CrashPolicy, SupervisorSettings
from corral.supervisor.state import State, Supervisor, SupervisorUsageError

SETTINGS = SupervisorSettings(
    workers=2,
    graceful_timeout_s=30.0,
    worker_timeout_s=10.0,
    ready_timeout_s=20.0,
    max_worker_lifetime_s=None,
    crash_budget=3,
    crash_window_s=60.0,
    backoff_base_s=1.0,
    backoff_max_s=8.0,
)

STOP, RETIRE, QUIT = WorkerSignal.STOP, WorkerSignal.RETIRE, WorkerSignal.QUIT


class Loop:
    """Feeds events and answers Spawns like the real loop; keeps the machine in ``sup``."""

    def __init__(
        self, *, failing_spawns: int = 0, adopted: tuple[AdoptedWorker, ...] = (), **changes: Any
    ) -> None:
        self.sup = Supervisor(replace(SETTINGS, **changes), now=0.0, adopted=adopted)
        self.next_pid = 100
        #: How many of the next Spawns fail (answered with SpawnFailed).
        self.failing_spawns = failing_spawns
        self.started = self._run(self.sup.start())

    def _run(self, actions: list[Action]) -> list[Action]:
        done: list[Action] = []
        for action in actions:
            done.append(action)
            if isinstance(action, Spawn):
                answer: Event
                if self.failing_spawns:
                    self.failing_spawns -= 1
                    answer = SpawnFailed(action.slot, action.generation, "EAGAIN")
                else:
                    answer = Spawned(action.slot, self.next_pid, action.generation)
                    self.next_pid += 1
                done += self._run(self.sup.handle(answer))
        return done

    def feed(self, *events: Event) -> list[Action]:
        done: list[Action] = []
        for event in events:
            done += self._run(self.sup.handle(event))
        return done

    def tick(self, now: float) -> list[Action]:
        return self.feed(Tick(now))

    def ready(self, *pids: int) -> list[Action]:
        return self.feed(*(WorkerReady(pid) for pid in pids))

    def exit(self, pid: int, code: int | None = 0, sig: int | None = None) -> list[Action]:
        return self.feed(ChildExited(pid, None if sig else code, sig))

    def signal(self, signum: int) -> list[Action]:
        return self.feed(SignalReceived(signum))

    def reap_all(self) -> list[Action]:
        """Every worker exits (as it would after STOP/QUIT/Kill)."""
        return self.feed(*(ChildExited(pid, 0, None) for pid in sorted(self.sup.workers())))

    def state(self) -> State:
        # A call, not an attribute: mypy would keep an asserted state narrowed across events.
        return self.sup.state

    def serving(self) -> list[int]:
        """Pids of the workers that are neither stopping nor just starting."""
        infos = self.sup.workers().items()
        return sorted(pid for pid, w in infos if w.ready and not w.stopping)


def booted(**changes: Any) -> Loop:
    """A machine whose first generation (pids 100, 101, ...) is READY at t=0."""
    loop = Loop(**changes)
    loop.ready(*sorted(loop.sup.workers()))
    assert loop.state() is State.RUNNING
    return loop


def spawns(actions: list[Action]) -> list[tuple[int, int]]:
    return [(a.slot, a.generation) for a in actions if isinstance(a, Spawn)]


def sent(actions: list[Action]) -> list[tuple[int, int]]:
    return [(a.pid, a.signum) for a in actions if isinstance(a, SendSignal)]


def kills(actions: list[Action]) -> list[int]:
    return [a.pid for a in actions if isinstance(a, Kill)]


def notes(actions: list[Action]) -> list[str]:
    """sd_notify messages other than STATUS."""
    return [a.message for a in actions if isinstance(a, Notify) and "STATUS" not in a.message]


def statuses(actions: list[Action]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Notify) and "STATUS" in a.message]


def logs(actions: list[Action], level: int) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log) and a.level == level]


def exits(actions: list[Action]) -> list[int]:
    return [a.code for a in actions if isinstance(a, Exit)]


# -- rule 1 and 2: start and READY --------------------------------------------------------


def test_start_spawns_the_first_generation() -> None:
    """start() asks for one worker per slot, generation 1."""
    loop = Loop(workers=3)
    assert spawns(loop.started) == [(0, 1), (1, 1), (2, 1)]
    assert statuses(loop.started) == ["STATUS=0/3 workers ready, generation 1"]
    assert loop.state() is State.STARTING


def test_ready_only_when_every_first_worker_is_ready() -> None:
    """READY=1 waits for the last worker of the first generation; STATUS follows counts."""
    loop = Loop()
    first = loop.ready(100)
    assert notes(first) == []
    assert statuses(first) == ["STATUS=1/2 workers ready, generation 1"]
    second = loop.ready(101)
    assert notes(second) == ["READY=1"]
    assert statuses(second) == ["STATUS=2/2 workers ready, generation 1"]
    assert loop.state() is State.RUNNING


def test_settings_reject_zero_workers() -> None:
    """A server with no workers is a configuration error."""
    with pytest.raises(ValueError, match="at least 1"):
        SupervisorSettings(workers=0)


def test_workers_query_reports_each_process() -> None:
    """workers() maps pid to slot, generation, readiness, spawn time and stopping."""
    loop = Loop()
    loop.tick(2.0)
    loop.ready(100)
    assert loop.sup.workers() == {
        100: WorkerInfo(slot=0, generation=1, ready=True, spawned_at=0.0, stopping=False),
        101: WorkerInfo(slot=1, generation=1, ready=False, spawned_at=0.0, stopping=False),
    }


def test_duplicate_ready_is_a_heartbeat() -> None:
    """A second READY changes nothing but the heartbeat clock."""
    loop = booted()
    loop.tick(8.0)
    assert loop.ready(100) == []
    assert sent(loop.tick(9.0)) == [(101, WorkerSignal.DUMP_STACK)]


def test_messages_from_unknown_pids_are_ignored() -> None:
    """READY, heartbeat, recycle and exit of pids we never spawned do nothing."""
    loop = booted()
    assert loop.ready(999) == []
    assert loop.feed(WorkerHeartbeat(999), WorkerRecycleRequested(999, "x")) == []
    assert loop.exit(999, code=1) == []  # an orphan reaped as PID 1
    loop.signal(signal.SIGTTOU)  # 101 is retiring now
    assert loop.ready(101) == []
    assert loop.serving() == [100]


def test_time_never_goes_backwards() -> None:
    """A Tick older than the last one is treated as the last one."""
    loop = booted()
    loop.tick(5.0)
    loop.tick(1.0)
    assert loop.sup.next_deadline() == 9.0  # the stack dumps, a second before the timeout
    assert sent(loop.tick(9.0)) == [(100, WorkerSignal.DUMP_STACK), (101, WorkerSignal.DUMP_STACK)]


# -- rule 3 and 4: the replacement primitive and reloads ----------------------------------


def test_hup_reload_replaces_each_slot_after_ready() -> None:
    """HUP: RELOADING=1, a full new generation, RETIRE per READY, then READY=1."""
    loop = booted()
    started = loop.signal(signal.SIGHUP)
    assert notes(started) == ["RELOADING=1"]
    assert statuses(started) == ["STATUS=0/2 workers ready, generation 2"]
    assert spawns(started) == [(0, 2), (1, 2)]
    assert sent(started) == []
    assert loop.state() is State.RELOADING
    assert sent(loop.ready(102)) == [(100, RETIRE)]
    assert loop.state() is State.RELOADING
    done = loop.ready(103)
    assert sent(done) == [(101, RETIRE)]
    assert notes(done) == ["READY=1"]
    assert statuses(done) == ["STATUS=2/2 workers ready, generation 2"]
    assert loop.state() is State.RUNNING
    assert loop.serving() == [102, 103]


def test_retired_worker_is_killed_after_graceful_timeout() -> None:
    """An old worker that outlives graceful_timeout_s after RETIRE gets SIGKILL, once."""
    loop = booted(worker_timeout_s=None)
    loop.signal(signal.SIGHUP)
    loop.tick(5.0)
    loop.ready(102, 103)
    assert loop.sup.next_deadline() == 35.0
    assert kills(loop.tick(34.9)) == []
    assert kills(loop.tick(35.0)) == [100, 101]
    assert kills(loop.tick(99.0)) == []
    assert spawns(loop.exit(100, sig=signal.SIGKILL)) == []


def test_reload_abandoned_when_new_worker_exits_before_ready() -> None:
    """A new worker dying before READY: old generation keeps serving, READY=1 again."""
    loop = booted()
    loop.signal(signal.SIGHUP)
    failed = loop.exit(102, code=1)
    assert notes(failed) == ["READY=1"]
    assert any("reload abandoned" in m for m in logs(failed, logging.ERROR))
    assert sent(failed) == [(103, RETIRE)]
    assert spawns(failed) == []
    assert loop.state() is State.RUNNING
    assert loop.serving() == [100, 101]
    # Later respawns belong to the generation that kept serving.
    loop.exit(100, code=1)
    assert spawns(loop.tick(1.0)) == [(0, 1)]


def test_reload_abandoned_when_new_workers_are_not_ready_in_time() -> None:
    """A new worker not READY within ready_timeout_s is killed and the reload abandoned."""
    loop = booted(worker_timeout_s=None)
    loop.signal(signal.SIGHUP)
    assert loop.sup.next_deadline() == 20.0
    timed_out = loop.tick(20.0)
    assert kills(timed_out) == [102]
    assert sent(timed_out) == [(103, RETIRE)]  # no longer wanted, not failed
    assert notes(timed_out) == ["READY=1"]
    assert loop.serving() == [100, 101]
    reaped = loop.exit(102, sig=signal.SIGKILL)
    assert reaped == [
        Log(logging.INFO, "worker 102 (slot 0, generation 2) exited (killed by SIGKILL)")
    ]


def test_fatal_exit_during_reload_abandons_without_exiting() -> None:
    """APP_IMPORT in a new generation abandons the reload; the server keeps running."""
    loop = booted()
    loop.signal(signal.SIGHUP)
    failed = loop.exit(103, code=ExitCode.APP_IMPORT)
    assert exits(failed) == []
    assert notes(failed) == ["READY=1"]
    assert loop.state() is State.RUNNING


def test_reload_failures_are_not_charged_to_the_crash_budget() -> None:
    """Repeated bad deploys never stop a server whose old workers serve."""
    loop = booted(crash_budget=0)
    for _ in range(3):
        loop.signal(signal.SIGHUP)
        actions = loop.exit(loop.next_pid - 2, code=ExitCode.APP_IMPORT)
        assert exits(actions) == []
    assert loop.state() is State.RUNNING


def test_reload_during_reload_restarts_with_the_newest_generation() -> None:
    """A second HUP retires the unfinished new workers and starts a newer generation."""
    loop = booted()
    loop.signal(signal.SIGHUP)  # generation 2: pids 102, 103
    loop.ready(102)  # slot 0 swapped, 100 retired
    again = loop.feed(ReloadRequested("file changed"))
    assert notes(again) == []  # still reloading: no second RELOADING=1
    assert sent(again) == [(103, RETIRE)]
    assert spawns(again) == [(0, 3), (1, 3)]  # pids 104, 105
    assert sent(loop.ready(104)) == [(102, RETIRE)]
    done = loop.ready(105)
    assert sent(done) == [(101, RETIRE)]
    assert notes(done) == ["READY=1"]
    assert {w.generation for w in loop.sup.workers().values() if not w.stopping} == {3}


def test_reload_with_more_workers() -> None:
    """ReloadRequested(workers=3) starts three new workers and retires the two old ones."""
    loop = booted()
    started = loop.feed(ReloadRequested("SIGHUP", workers=3))
    assert spawns(started) == [(0, 2), (1, 2), (2, 2)]
    assert sent(loop.ready(104)) == []  # a new slot replaces nobody
    loop.ready(102)
    done = loop.ready(103)
    assert notes(done) == ["READY=1"]
    assert loop.serving() == [102, 103, 104]


def test_reload_with_fewer_workers_keeps_extras_until_done() -> None:
    """Shrinking on reload retires the extra old workers only once the new ones are READY."""
    loop = booted(workers=3)
    started = loop.feed(ReloadRequested("SIGHUP", workers=1))
    assert spawns(started) == [(0, 2)]
    done = loop.ready(103)
    assert sorted(sent(done)) == [(100, RETIRE), (101, RETIRE), (102, RETIRE)]
    assert notes(done) == ["READY=1"]
    assert loop.serving() == [103]


def test_reload_never_runs_more_than_twice_the_target() -> None:
    """Serving plus starting workers stay within 2 * target during a reload."""
    loop = booted(workers=3)
    loop.signal(signal.SIGHUP)
    alive = [pid for pid, w in loop.sup.workers().items() if not w.stopping]
    assert len(alive) == 6
    loop.signal(signal.SIGHUP)
    alive = [pid for pid, w in loop.sup.workers().items() if not w.stopping]
    assert len(alive) == 6


def test_abandoned_reload_restores_the_worker_count() -> None:
    """A failed reload to more workers retires every new worker, extra slots included."""
    loop = booted()
    loop.feed(ReloadRequested("SIGHUP", workers=4))  # pids 102..105
    failed = loop.exit(104, code=1)
    assert sorted(sent(failed)) == [(102, RETIRE), (103, RETIRE), (105, RETIRE)]
    assert spawns(failed) == []
    assert statuses(failed) == ["STATUS=2/2 workers ready, generation 1"]


def test_abandoned_reload_with_spawns_in_flight() -> None:
    """A fork failure abandons the reload; workers forked after that are retired at once."""
    loop = booted()
    loop.failing_spawns = 1
    actions = loop.feed(ReloadRequested("SIGHUP", workers=3))
    assert notes(actions) == ["RELOADING=1", "READY=1"]
    assert sorted(sent(actions)) == [(102, RETIRE), (103, RETIRE)]
    assert loop.serving() == [100, 101]
    assert loop.sup.next_deadline() == 9.0  # their stack dumps (heartbeat)


def test_reload_while_starting_restarts_the_first_start() -> None:
    """HUP before the first READY=1: no RELOADING=1, the starting workers are replaced."""
    loop = Loop()
    restarted = loop.signal(signal.SIGHUP)
    assert notes(restarted) == []
    assert sent(restarted) == [(100, RETIRE), (101, RETIRE)]
    assert spawns(restarted) == [(0, 2), (1, 2)]
    assert loop.state() is State.STARTING
    assert notes(loop.ready(102, 103)) == ["READY=1"]


def test_replacement_failure_keeps_the_old_worker_serving() -> None:
    """A failed recycle replacement: old worker serves on, retried after a backoff."""
    loop = booted(crash_budget=0)
    loop.feed(WorkerRecycleRequested(100, "max requests"))  # spawns 102
    failed = loop.exit(102, code=1)
    assert exits(failed) == []  # not charged: the old worker still serves
    assert sent(failed) == []
    assert loop.serving() == [100, 101]
    assert loop.sup.next_deadline() == 1.0
    assert spawns(loop.tick(1.0)) == [(0, 1)]  # pid 103
    retired = loop.ready(103)
    assert sent(retired) == [(100, RETIRE)]
    assert any("max requests" in m for m in logs(retired, logging.INFO))


# -- rule 5: TTIN / TTOU ------------------------------------------------------------------


def test_ttin_adds_a_worker_in_a_new_slot() -> None:
    """TTIN spawns one more worker; it replaces nobody."""
    loop = booted()
    more = loop.signal(signal.SIGTTIN)
    assert spawns(more) == [(2, 1)]
    ready = loop.ready(102)
    assert sent(ready) == []
    assert statuses(ready) == ["STATUS=3/3 workers ready, generation 1"]


def test_ttou_retires_the_highest_slot() -> None:
    """TTOU drains the worker of the highest slot."""
    loop = booted(workers=3)
    fewer = loop.signal(signal.SIGTTOU)
    assert sent(fewer) == [(102, RETIRE)]
    assert statuses(fewer) == ["STATUS=2/2 workers ready, generation 1"]
    assert spawns(loop.signal(signal.SIGTTIN)) == [(2, 1)]


def test_ttou_at_one_worker_stays_at_one() -> None:
    """TTOU never goes below one worker."""
    loop = booted(workers=1)
    actions = loop.signal(signal.SIGTTOU)
    assert sent(actions) == []
    assert loop.serving() == [100]


def test_ttou_while_starting_retires_the_starting_worker() -> None:
    """A slot that goes away before its worker is READY loses it at once."""
    loop = Loop()
    fewer = loop.signal(signal.SIGTTOU)
    assert sent(fewer) == [(101, RETIRE)]
    assert notes(loop.ready(100)) == ["READY=1"]


def test_ttou_during_reload_waits_for_the_reload() -> None:
    """The extra old worker keeps serving until the reload is done."""
    loop = booted()
    loop.signal(signal.SIGHUP)  # pids 102, 103
    fewer = loop.signal(signal.SIGTTOU)
    assert sent(fewer) == [(103, RETIRE)]  # the new one of slot 1, not yet READY
    done = loop.ready(102)
    assert sorted(sent(done)) == [(100, RETIRE), (101, RETIRE)]
    assert notes(done) == ["READY=1"]


def test_ttin_and_ttou_survive_an_abandoned_reload() -> None:
    """The worker count changed during a reload is kept when the reload fails."""
    loop = booted()
    loop.signal(signal.SIGHUP)  # pids 102, 103
    loop.signal(signal.SIGTTIN)  # pid 104 in slot 2
    loop.signal(signal.SIGTTOU)
    loop.signal(signal.SIGTTIN)  # pid 105 in slot 2
    failed = loop.exit(102, code=1)
    assert spawns(failed) == [(2, 1)]
    assert statuses(loop.ready(106)) == ["STATUS=3/3 workers ready, generation 1"]


# -- rule 6: crashes, backoff, budget -----------------------------------------------------


def test_crashed_worker_is_respawned_on_a_later_tick() -> None:
    """An unexpected exit schedules a respawn in the same slot after backoff_base_s."""
    loop = booted()
    crashed = loop.exit(101, code=1)
    assert spawns(crashed) == []
    assert any("exited unexpectedly" in m for m in logs(crashed, logging.WARNING))
    assert loop.sup.next_deadline() == 1.0
    assert spawns(loop.tick(0.9)) == []
    assert spawns(loop.tick(1.0)) == [(1, 1)]
    assert sent(loop.ready(102)) == []


def test_backoff_doubles_per_consecutive_crash_and_is_capped() -> None:
    """base, 2*base, 4*base, ... capped at backoff_max_s."""
    loop = booted(crash_budget=100, worker_timeout_s=None)
    now, pid, delays = 0.0, 101, []
    for _ in range(6):
        loop.tick(now)
        loop.exit(pid, code=1)
        deadline = loop.sup.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        loop.tick(now)
        pid = loop.next_pid - 1
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_resets_after_a_stable_run() -> None:
    """A crash after the slot's worker stayed READY for a while starts a new streak."""
    loop = booted(crash_budget=100, worker_timeout_s=None)
    loop.exit(101, code=1)
    loop.tick(1.0)
    loop.exit(102, code=1)  # never READY: second crash in a row
    assert loop.sup.next_deadline() == 3.0
    loop.tick(3.0)
    loop.ready(103)
    loop.tick(13.0)  # READY for 10 s: stable
    loop.ready(100, 103)
    loop.exit(103, code=1)
    assert loop.sup.next_deadline() == 14.0


def test_crash_budget_spent_stops_gracefully_with_exit_6() -> None:
    """More than crash_budget crashes in the window: graceful stop, then Exit(6)."""
    loop = booted(workers=4, crash_budget=3)
    for pid in (100, 101, 102):
        assert exits(loop.exit(pid, code=1)) == []
    stopping = loop.exit(103, sig=signal.SIGSEGV)
    assert notes(stopping) == ["STOPPING=1"]
    assert any("crash budget" in m for m in logs(stopping, logging.ERROR))
    assert spawns(stopping) == []
    assert exits(stopping) == [ExitCode.CRASH_BUDGET]  # nobody left to wait for
    assert loop.state() is State.EXITED


def test_crash_budget_stops_the_survivors_first() -> None:
    """The budget stop sends STOP to survivors and exits 6 once they are reaped."""
    loop = booted(workers=3, crash_budget=1)
    loop.exit(100, code=1)
    stopping = loop.exit(101, code=1)
    assert sent(stopping) == [(102, STOP)]
    assert exits(stopping) == []
    assert exits(loop.exit(102)) == [6]


def test_crashes_outside_the_window_are_forgotten() -> None:
    """Only crashes within crash_window_s count against the budget."""
    loop = booted(crash_budget=1, crash_window_s=60.0)
    loop.exit(100, code=1)
    loop.tick(61.0)  # respawns slot 0 as 102
    assert exits(loop.exit(101, code=1)) == []
    assert loop.state() is State.RUNNING


def test_crash_during_stop_is_not_respawned() -> None:
    """Workers dying during a stop are never replaced."""
    loop = booted()
    loop.signal(signal.SIGTERM)
    crashed = loop.exit(100, sig=signal.SIGSEGV)
    assert spawns(crashed) == []
    assert spawns(loop.tick(50.0)) == []


def test_failed_start_is_a_crash_with_backoff() -> None:
    """A non-fatal exit before READY while starting is retried after backoff."""
    loop = Loop()
    failed = loop.exit(100, code=1)
    assert exits(failed) == []
    assert spawns(loop.tick(1.0)) == [(0, 1)]


def test_start_not_ready_in_time_is_killed_and_retried() -> None:
    """A first worker stuck in startup is SIGKILLed and its slot retried."""
    loop = Loop(workers=1)
    stuck = loop.tick(20.0)
    assert kills(stuck) == [100]
    assert loop.sup.next_deadline() == 21.0
    assert spawns(loop.tick(21.0)) == [(0, 1)]


def test_spawn_failure_while_starting_is_a_crash() -> None:
    """A fork failure is retried after backoff like a crash."""
    loop = Loop(failing_spawns=1)
    started = loop.started
    assert any("could not be spawned" in m for m in logs(started, logging.WARNING))
    assert spawns(loop.tick(1.0)) == [(0, 1)]


def test_budget_spent_while_spawns_are_in_flight() -> None:
    """A worker forked after the stop began is stopped at once; exit waits for it."""
    loop = Loop(failing_spawns=1, crash_budget=0)
    started = loop.started
    assert notes(started) == ["STOPPING=1"]
    assert sent(started) == [(100, STOP)]
    assert exits(started) == []
    assert exits(loop.exit(100)) == [ExitCode.CRASH_BUDGET]


def test_several_failures_in_one_tick_stop_at_the_budget() -> None:
    """Once one timeout spends the budget, the same Tick checks no more slots."""
    loop = Loop(crash_budget=0)
    stuck = loop.tick(20.0)
    assert kills(stuck) == [100]
    assert sent(stuck) == [(101, STOP)]


# -- rule 7: fatal exits ------------------------------------------------------------------


@pytest.mark.parametrize("code", [ExitCode.APP_IMPORT, ExitCode.LIFESPAN])
def test_fatal_exit_at_first_start_exits_with_that_code(code: ExitCode) -> None:
    """APP_IMPORT or LIFESPAN before the first READY=1: fast stop, same exit code."""
    loop = Loop(workers=3)
    loop.ready(101)
    fatal = loop.exit(100, code=code)
    assert sent(fatal) == [(101, QUIT), (102, QUIT)]
    assert notes(fatal) == ["STOPPING=1"]
    assert spawns(fatal) == []
    assert kills(loop.tick(1.0)) == [101, 102]
    loop.exit(101, sig=signal.SIGKILL)
    assert exits(loop.exit(102, sig=signal.SIGKILL)) == [code]
    assert loop.state() is State.EXITED


def test_fatal_code_from_a_respawn_is_a_crash() -> None:
    """After the first READY=1, APP_IMPORT from a respawned worker is a crash."""
    loop = booted()
    loop.exit(100, code=1)
    loop.tick(1.0)
    failed = loop.exit(102, code=ExitCode.APP_IMPORT)
    assert exits(failed) == []
    assert loop.state() is State.RUNNING
    assert loop.sup.next_deadline() == 3.0


# -- rule 8: heartbeat --------------------------------------------------------------------


def test_silent_worker_gets_a_stack_dump_then_sigkill() -> None:
    """Silent for worker_timeout_s - 1: DUMP_STACK, then its successor's Spawn; SIGKILL
    at worker_timeout_s if that successor is not READY by then."""
    loop = booted()
    loop.tick(5.0)
    loop.feed(WorkerHeartbeat(101))
    dumped = loop.tick(9.0)
    assert sent(dumped) == [(100, WorkerSignal.DUMP_STACK)]
    assert spawns(dumped) == [(0, 1)]  # pid 102
    order = [type(a) for a in dumped if isinstance(a, (SendSignal, Spawn))]
    assert order == [SendSignal, Spawn]  # the stack is asked for first
    assert any("no heartbeat for 9.0s" in m for m in logs(dumped, logging.WARNING))
    assert loop.sup.next_deadline() == 10.0
    killed = loop.tick(10.0)
    assert kills(killed) == [100]
    assert logs(killed, logging.WARNING) == [
        "worker 100 (slot 0, generation 1) hung (no heartbeat for 10.0s): SIGKILLed;"
        " its successor is starting"
    ]
    assert spawns(loop.exit(100, sig=signal.SIGKILL)) == []
    assert sent(loop.ready(102)) == []  # nothing left to retire
    assert loop.serving() == [101, 102]


def test_heartbeat_after_the_dump_cancels_the_kill() -> None:
    """A worker that beats again after the stack dump is not killed; the successor
    started at the dump replaces it gracefully."""
    loop = booted()
    loop.tick(5.0)
    loop.feed(WorkerHeartbeat(101))
    loop.tick(9.0)
    again = loop.feed(WorkerHeartbeat(100), WorkerHeartbeat(101))
    assert logs(again, logging.INFO) == [
        "worker 100 (slot 0, generation 1) speaks again; its successor replaces it gracefully"
    ]
    assert kills(loop.tick(10.0)) == []
    assert sent(loop.ready(102)) == [(100, RETIRE)]


def test_heartbeat_check_can_be_disabled() -> None:
    """worker_timeout_s=0 never dumps or kills silent workers."""
    loop = booted(worker_timeout_s=0)
    assert loop.tick(1000.0) == []
    assert loop.sup.next_deadline() is None


# -- rule 9: recycle and max lifetime -----------------------------------------------------


def test_recycle_request_replaces_the_worker() -> None:
    """WorkerRecycleRequested: spawn a successor, RETIRE the old one once it is READY."""
    loop = booted()
    asked = loop.feed(WorkerRecycleRequested(101, "max requests"))
    assert spawns(asked) == [(1, 1)]
    assert loop.feed(WorkerRecycleRequested(102, "not READY yet")) == []
    again = loop.feed(WorkerRecycleRequested(101, "memory"))
    assert spawns(again) == []
    assert sent(loop.ready(102)) == [(101, RETIRE)]
    assert loop.feed(WorkerRecycleRequested(101, "retiring already")) == []


def test_max_lifetime_rolls_one_worker_at_a_time() -> None:
    """Workers past max lifetime are replaced oldest first, one at a time."""
    loop = Loop(max_worker_lifetime_s=100.0, worker_timeout_s=None)
    loop.ready(100)
    loop.tick(1.0)
    loop.ready(101)  # READY 1 s after its spawn: the expected boot time is 1 s
    assert loop.sup.next_deadline() == 99.0
    first = loop.tick(99.0)
    assert spawns(first) == [(0, 1)]  # pid 102
    assert loop.sup.next_deadline() == 110.0  # 100's lifetime limit; 101 waits its turn
    assert spawns(loop.tick(100.0)) == []
    loop.ready(102)
    assert spawns(loop.tick(100.0)) == [(1, 1)]


def test_max_lifetime_waits_while_reloading() -> None:
    """No lifetime replacement starts during a reload."""
    loop = booted(max_worker_lifetime_s=100.0, worker_timeout_s=None)
    loop.signal(signal.SIGHUP)
    assert loop.sup.next_deadline() == 20.0


def test_max_lifetime_ignores_slots_waiting_for_a_respawn() -> None:
    """A slot whose worker crashed does not hold back the lifetime of the others."""
    loop = booted(
        max_worker_lifetime_s=100.0,
        worker_timeout_s=None,
        backoff_base_s=500.0,
        backoff_max_s=500.0,
    )
    loop.exit(101, code=1)
    assert loop.sup.next_deadline() == 100.0
    assert spawns(loop.tick(100.0)) == [(0, 1)]


# -- rule 10 and 11: stopping -------------------------------------------------------------


def test_graceful_stop_drains_and_exits_0() -> None:
    """TERM: STOPPING=1, STOP to every worker (starting ones too), Exit(0) after reaping."""
    loop = booted()
    loop.signal(signal.SIGTTIN)  # pid 102, still starting
    stopping = loop.signal(signal.SIGTERM)
    assert notes(stopping) == ["STOPPING=1"]
    assert sent(stopping) == [(100, STOP), (101, STOP), (102, STOP)]
    assert loop.state() is State.STOPPING
    assert exits(loop.exit(100)) == []
    assert exits(loop.exit(101)) == []
    assert statuses(loop.exit(102)) == []
    assert loop.state() is State.EXITED


def test_graceful_stop_kills_survivors_after_the_timeout() -> None:
    """Workers still alive graceful_timeout_s after STOP get SIGKILL."""
    loop = booted()
    loop.tick(1.0)
    loop.signal(signal.SIGINT)
    assert loop.sup.next_deadline() == 31.0
    assert kills(loop.tick(31.0)) == [100, 101]
    loop.exit(100, sig=signal.SIGKILL)
    assert exits(loop.exit(101, sig=signal.SIGKILL)) == [0]


def test_graceful_stop_leaves_draining_workers_to_their_deadline() -> None:
    """A worker already retiring gets no STOP and keeps its earlier SIGKILL deadline."""
    loop = booted(worker_timeout_s=None)
    loop.signal(signal.SIGHUP)  # pids 102, 103
    loop.ready(102)  # 100 retired at t=0
    loop.tick(10.0)
    stopping = loop.signal(signal.SIGTERM)
    assert sent(stopping) == [(101, STOP), (102, STOP), (103, STOP)]
    assert kills(loop.tick(30.0)) == [100]
    assert kills(loop.tick(40.0)) == [101, 102, 103]


def test_second_term_makes_the_stop_fast() -> None:
    """A second TERM/INT sends QUIT and kills 1 s later."""
    loop = booted()
    loop.signal(signal.SIGTERM)
    loop.exit(100)
    faster = loop.signal(signal.SIGINT)
    assert sent(faster) == [(101, QUIT)]
    assert loop.sup.next_deadline() == 1.0
    assert kills(loop.tick(1.0)) == [101]
    assert sent(loop.signal(signal.SIGTERM)) == []  # already SIGKILLed


def test_quit_is_a_fast_stop() -> None:
    """QUIT: fast stop at once (QUIT to workers, SIGKILL after 1 s)."""
    loop = booted()
    quick = loop.signal(signal.SIGQUIT)
    assert notes(quick) == ["STOPPING=1"]
    assert sent(quick) == [(100, QUIT), (101, QUIT)]
    assert kills(loop.tick(1.0)) == [100, 101]


def test_stop_with_no_workers_exits_at_once() -> None:
    """When every worker is already gone, the stop exits immediately."""
    loop = booted(workers=1)
    loop.exit(100, code=1)
    stopped = loop.signal(signal.SIGTERM)
    assert exits(stopped) == [0]
    assert isinstance(stopped[-1], Exit)
    assert loop.sup.next_deadline() is None
    assert loop.signal(signal.SIGTERM) == []  # EXITED ignores everything


def test_requests_are_ignored_while_stopping() -> None:
    """HUP, reload, TTIN, TTOU and USR2 do nothing during a stop."""
    loop = booted()
    loop.signal(signal.SIGTERM)
    for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
        actions = loop.signal(signum)
        assert [type(a) for a in actions] == [Log]
    assert [type(a) for a in loop.feed(ReloadRequested("watch"))] == [Log]


def test_spawn_failure_while_stopping_is_only_logged() -> None:
    """A fork failure after the stop began is logged; the exit waits for nobody."""
    loop = Loop(failing_spawns=2, crash_budget=0)
    started = loop.started
    assert any("could not spawn" in m for m in logs(started, logging.WARNING))
    assert exits(started) == [ExitCode.CRASH_BUDGET]


# -- other signals ------------------------------------------------------------------------


def test_usr1_reopens_logs_everywhere() -> None:
    """USR1: the master reopens its logs and tells every worker to."""
    loop = booted()
    assert loop.signal(signal.SIGUSR1) == [
        ReopenLogs(),
        SendSignal(100, WorkerSignal.REOPEN_LOGS),
        SendSignal(101, WorkerSignal.REOPEN_LOGS),
    ]


def test_usr2_re_execs_the_master() -> None:
    """USR2 asks the loop to re-exec the master."""
    loop = booted()
    assert ReExec() in loop.signal(signal.SIGUSR2)


@pytest.mark.parametrize("signum", [signal.SIGWINCH, 999])
def test_other_signals_are_ignored(signum: int) -> None:
    """Signals without a meaning for the master are logged at debug level only."""
    loop = booted()
    actions = loop.signal(signum)
    assert [type(a) for a in actions] == [Log]
    assert logs(actions, logging.DEBUG)


# -- the Spawn contract -------------------------------------------------------------------


def test_event_while_a_spawn_is_unanswered_is_an_error() -> None:
    """Every Spawn must be answered before any other event is fed."""
    sup = Supervisor(SETTINGS, now=0.0)
    sup.start()
    with pytest.raises(SupervisorUsageError):
        sup.handle(Tick(1.0))


def test_spawned_without_a_spawn_is_an_error() -> None:
    """Spawned must answer a Spawn action."""
    loop = booted()
    with pytest.raises(SupervisorUsageError):
        loop.feed(Spawned(0, 500, 1))


def test_spawned_for_the_wrong_generation_is_an_error() -> None:
    """Spawned must name the slot and generation of its Spawn."""
    sup = Supervisor(replace(SETTINGS, workers=1), now=0.0)
    sup.start()
    with pytest.raises(SupervisorUsageError):
        sup.handle(Spawned(0, 100, 7))


# -- policy -------------------------------------------------------------------------------


def test_backoff_exponent_is_capped() -> None:
    """Thousands of failures in a row do not overflow the delay."""
    policy = CrashPolicy(replace(SETTINGS, crash_budget=10**6))
    delays = [policy.record(0, float(i)) for i in range(2000)]
    assert delays[-1] == SETTINGS.backoff_max_s
    policy.forget(0)
    assert policy.record(0, 0.0) == SETTINGS.backoff_base_s


def test_repeated_recycle_requests_are_logged_once() -> None:
    """Memory is sampled every second: only the first request of a worker counts."""
    loop = booted()
    first = loop.feed(WorkerRecycleRequested(100, "resident memory 900 MiB"))
    assert logs(first, logging.INFO) == [
        "worker 100 (slot 0, generation 1) will be replaced: resident memory 900 MiB"
    ]
    again = loop.feed(WorkerRecycleRequested(100, "resident memory 901 MiB"))
    assert again == []


def test_reload_with_settings_applies_them() -> None:
    """A re-read config's settings take effect with the reload (here: graceful timeout)."""
    loop = booted(worker_timeout_s=None)
    new = replace(SETTINGS, worker_timeout_s=None, graceful_timeout_s=5.0)
    loop.feed(ReloadRequested("SIGHUP", 2, new))
    loop.ready(102, 103)
    assert loop.sup.next_deadline() == 5.0
    assert kills(loop.tick(5.0)) == [100, 101]


# -- re-exec: adopting the previous master's workers --------------------------------------

ADOPTED = (
    AdoptedWorker(pid=50, slot=0, generation=3, ready=True),
    AdoptedWorker(pid=51, slot=1, generation=3, ready=True),
    AdoptedWorker(pid=52, slot=1, generation=4, ready=False),  # a successor, not READY
)


def test_adopted_workers_serve_until_the_next_generation_is_ready() -> None:
    """Re-exec: READY workers stay active; the rest are retired; generation 4+1 starts."""
    loop = Loop(adopted=ADOPTED)
    started = loop.started
    assert loop.state() is State.RELOADING
    assert sent(started) == [(52, RETIRE)]
    assert spawns(started) == [(0, 5), (1, 5)]
    assert loop.serving() == [50, 51]
    assert sent(loop.ready(100)) == [(50, RETIRE)]
    done = loop.ready(101)
    assert sent(done) == [(51, RETIRE)]
    assert notes(done) == ["READY=1"]
    assert loop.state() is State.RUNNING


def test_adopted_workers_keep_serving_when_the_new_code_fails() -> None:
    """A first generation that cannot import after re-exec: the adopted ones serve on."""
    loop = Loop(adopted=ADOPTED[:2])
    failed = loop.exit(100, code=ExitCode.APP_IMPORT)
    assert exits(failed) == []
    assert notes(failed) == ["READY=1"]
    assert any("reload abandoned, generation 3" in m for m in logs(failed, logging.ERROR))
    assert sent(failed) == [(101, RETIRE)]  # the other new worker is obsolete now
    assert loop.state() is State.RUNNING
    assert loop.ready(101) == []
    assert loop.serving() == [50, 51]


def test_adopted_extra_slots_are_retired_after_the_swap() -> None:
    """More adopted workers than the configured count: the extra slot goes after READY."""
    loop = Loop(adopted=ADOPTED[:2], workers=1)
    assert spawns(loop.started) == [(0, 4)]
    done = loop.ready(100)
    assert sent(done) == [(50, RETIRE), (51, RETIRE)]
    assert loop.serving() == [100]


def test_nothing_ready_to_adopt_is_a_first_start() -> None:
    """Only unready workers handed over: they are stopped and the start is ordinary."""
    loop = Loop(adopted=(AdoptedWorker(pid=52, slot=0, generation=4, ready=False),))
    assert loop.state() is State.STARTING
    assert sent(loop.started) == [(52, RETIRE)]
    assert spawns(loop.started) == [(0, 5), (1, 5)]
    stopping = loop.exit(100, code=ExitCode.APP_IMPORT)
    assert sorted(sent(stopping)) == [(52, QUIT), (101, QUIT)]  # fatal at first start
    loop.exit(52)
    assert exits(loop.exit(101)) == [ExitCode.APP_IMPORT]


def test_external_sigkill_is_replaced_at_once_without_charge() -> None:
    """A serving worker SIGKILLed from outside (OOM killer, chaos) is replaced at once."""
    loop = booted(crash_budget=1)
    for round_ in range(5):  # far more than the budget, each at the same instant
        pid = loop.serving()[0]
        actions = loop.exit(pid, sig=signal.SIGKILL)
        assert exits(actions) == []
        assert any("SIGKILL from outside" in m for m in logs(actions, logging.WARNING))
        assert len(spawns(actions)) == 1  # no backoff: the replacement starts now
        loop.ready(loop.next_pid - 1)
        assert len(loop.serving()) == 2, round_
    assert loop.state() is State.RUNNING


def test_sigkill_before_ready_is_still_a_failed_start() -> None:
    """A new worker SIGKILLed before READY is a failed start, backed off as before."""
    loop = booted()
    loop.exit(100, code=1)  # a real crash: slot 0 backs off 1 s
    loop.tick(1.0)  # pid 102 spawned for slot 0
    actions = loop.exit(102, sig=signal.SIGKILL)
    assert spawns(actions) == []  # backed off, not replaced at once
