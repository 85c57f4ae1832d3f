"""The supervisor's rules tested as rules: random event sequences against its invariants.

A Hypothesis state machine plays the master's loop around the pure ``Supervisor`` (no
I/O, no event loop, no mocks). It feeds signals, reload requests, worker messages, child
exits and Ticks in any order and with time jumping by any amount, and does what the loop
does with the actions: it answers every Spawn at once with Spawned (a new pid) or
SpawnFailed, keeps the set of live children, lets a signalled or SIGKILLed child exit
later (or any child at any time, with any status), and on ReExec builds the next
master's machine from ``workers()``, as ``handover.py`` does, unless the exec fails.

After every event it checks the rules of state.py's theory of operation:

- the state is one of the transition table's, and ReExec comes only from a live state;
- no worker is forgotten or made up: ``workers()`` is exactly the children not reaped,
  and no action names a reaped pid;
- at most one active and one successor per slot, so at most 2 * target workers serve or
  start (plus, while a reload is under way, the active workers of dropped slots);
  nothing serves or starts while stopping; the target never drops below one;
- a READY worker leaves its slot only once a successor serves there, or for a documented
  reason (fewer slots, memory or lifetime more than 10 % over), or by a stop, a kill or a
  crash; no worker leaves its slot without being told, killed or written off as hung;
- every stopping worker has a SIGKILL deadline (``next_deadline`` shows it) and gets
  SIGKILL once it has passed, unless it was killed already;
- Exit comes last, once, and only when every child is reaped; events after it do nothing;
- the STATUS line counts exactly the in-range slots served by the current generation, and
  while RUNNING no worker is started beside an older one (no reload left half done).

Every run ends with TERM, every deadline passing and every child exiting: Exit must come.
"""

from __future__ import annotations

import re
import signal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from corral.lifecycle import LIMIT_SLACK, MasterSignal, WorkerSignal
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
from corral.supervisor.policy import DUMP_GRACE_S, FAST_KILL_S, SupervisorSettings
from corral.supervisor.state import Supervisor
from corral.supervisor.transitions import LIVE, TRANSITIONS, State

#: Pids the model hands out start here; lower ones are orphans the machine never spawned.
FIRST_PID = 1000

#: Signals that tell a worker to go away (besides Kill).
STOPS = frozenset({WorkerSignal.STOP, WorkerSignal.RETIRE, WorkerSignal.QUIT})

TABLE_STATES = {state for state, _ in TRANSITIONS} | {step.state for step in TRANSITIONS.values()}

#: How a child can end: any exit code, or killed by any of a few signals.
STATUSES = st.one_of(
    st.tuples(st.sampled_from([0, 1, 3, 4, 6]) | st.integers(0, 255), st.none()),
    st.tuples(
        st.none(),
        st.sampled_from([signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV, signal.SIGQUIT]),
    ),
)

#: Time steps: often short (timers of a few seconds), sometimes long (backoff, budget
#: window, lifetime).
STEPS = st.floats(0, 2) | st.floats(0, 100)

PICK = st.integers(0, 1000)

STATUS = re.compile(r"STATUS=(\d+)/(\d+) workers ready, generation (\d+)")

#: What an operator (or systemd, or a terminal) sends the master. The stops have their
#: own rule, so that a run spends most of its steps live; USR2 has its own too.
SIGNALS = [MasterSignal.HUP, MasterSignal.TTIN, MasterSignal.TTOU, MasterSignal.USR1]
STOP_SIGNALS = [MasterSignal.TERM, MasterSignal.INT, MasterSignal.QUIT]


def running(machine: SupervisorRules) -> bool:
    """Events still mean something (after Exit only time passes, to finish the run)."""
    return machine.sup.state is not State.EXITED


def serving(workers: dict[int, WorkerInfo]) -> dict[int, WorkerInfo]:
    """The workers that are not stopping: active (READY) or successors (not yet)."""
    return {pid: w for pid, w in workers.items() if not w.stopping}


class SupervisorRules(RuleBasedStateMachine):
    """The loop around one Supervisor (a new one after each successful re-exec)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_pid = FIRST_PID
        #: Children forked and not yet reaped.
        self.live: set[int] = set()
        #: Children the machine sent SIGKILL (since the current machine adopted them).
        self.killed: set[int] = set()
        #: Children sent DUMP_STACK and silent since: they may be written off as hung.
        self.dumped: set[int] = set()
        #: When each stopping child was told to go (or written off).
        self.told_at: dict[int, float] = {}
        #: When each child first showed up READY.
        self.ready_at: dict[int, float] = {}
        self.spawn_failures = 0
        self.exec_works = True
        #: The machine's last STATUS line while live (None while stopping).
        self.status: re.Match[str] | None = None
        self.exit_code: int | None = None
        #: Every check passed after the last step: only then does teardown drain the run.
        self.clean = False

    # -- the loop's side -------------------------------------------------------------------

    @initialize(
        workers=st.integers(1, 3),
        worker_timeout_s=st.sampled_from([2.0, None, 10.0]),
        lifetime_s=st.sampled_from([5.0, None, 40.0]),
        ready_timeout_s=st.sampled_from([3.0, 20.0]),
        graceful_timeout_s=st.sampled_from([2.0, 30.0]),
        crash_budget=st.integers(2, 8),
    )
    def start(
        self,
        workers: int,
        worker_timeout_s: float | None,
        lifetime_s: float | None,
        ready_timeout_s: float,
        graceful_timeout_s: float,
        crash_budget: int,
    ) -> None:
        self.settings = SupervisorSettings(
            workers=workers,
            graceful_timeout_s=graceful_timeout_s,
            worker_timeout_s=worker_timeout_s,
            ready_timeout_s=ready_timeout_s,
            max_worker_lifetime_s=lifetime_s,
            crash_budget=crash_budget,
            crash_window_s=60.0,
            backoff_base_s=0.5,
            backoff_max_s=8.0,
        )
        #: The longest a stopping worker may live before its SIGKILL is due.
        self.kill_bound_s = max(graceful_timeout_s, FAST_KILL_S, DUMP_GRACE_S)
        self.sup = Supervisor(self.settings, now=0.0)
        self.execute(self.checked(self.sup.start()))

    def execute(self, actions: list[Action]) -> list[Action]:
        """Carry out ``actions`` as the loop does; return them with those they led to."""
        done: list[Action] = []
        for i, action in enumerate(actions):
            done.append(action)
            if isinstance(action, Spawn):
                done += self.execute(self.handle(self.answer(action)))
            elif isinstance(action, (SendSignal, Kill)):
                # Never a reaped pid: it may belong to another process by now.
                assert action.pid in self.live, f"{action} names a reaped pid"
                if isinstance(action, Kill):
                    self.killed.add(action.pid)
                elif action.signum == WorkerSignal.DUMP_STACK:
                    self.dumped.add(action.pid)
            elif isinstance(action, Exit):
                assert not self.live, f"Exit with children {sorted(self.live)} not reaped"
                assert i == len(actions) - 1, f"actions after Exit: {actions[i:]}"
                assert self.exit_code is None, "a second Exit"
                self.exit_code = action.code
            elif isinstance(action, ReExec):
                assert self.sup.state in LIVE, f"ReExec while {self.sup.state}"
                rest = actions[i + 1 :]
                assert all(isinstance(a, (Log, Notify)) for a in rest), f"after ReExec: {rest}"
                if self.exec_works:
                    return done + self.reexec()
        return done

    def handle(self, event: Event) -> list[Action]:
        return self.checked(self.sup.handle(event))

    def checked(self, actions: list[Action]) -> list[Action]:
        """The rules about what the machine says, checked against what it is at that moment
        (before the loop carries the actions out and answers its Spawns)."""
        sup, up = self.sup, serving(self.sup.workers())
        in_range = [w for w in up.values() if w.slot < sup.target]
        for action in actions:
            if isinstance(action, Notify) and action.message.startswith("STATUS="):
                self.status = STATUS.fullmatch(action.message)
            elif isinstance(action, Spawn) and sup.state is State.RUNNING:
                # RUNNING means no reload is under way: nothing in range is older than a
                # worker being started (an abandoned reload went back to its generation).
                oldest = min((w.generation for w in in_range), default=action.generation)
                assert action.generation <= oldest, f"{action} beside generation {oldest}"
        if self.status and sup.state in LIVE:
            # The last status line (it is sent again only when it changes) counts the
            # in-range slots that a worker of the current generation serves.
            ready, target, generation = map(int, self.status.groups())
            assert target == sup.target, self.status.group(0)
            current = [w for w in in_range if w.ready and w.generation >= generation]
            assert ready == len(current), f"{self.status.group(0)} but {len(current)} serve"
        return actions

    def answer(self, spawn: Spawn) -> Event:
        """Spawned (a fresh pid) or SpawnFailed: the loop answers every Spawn at once."""
        if self.spawn_failures:
            self.spawn_failures -= 1
            return SpawnFailed(spawn.slot, spawn.generation, "EAGAIN")
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.live.add(pid)
        return Spawned(spawn.slot, pid, spawn.generation)

    def reexec(self) -> list[Action]:
        """The new master adopts every child, as handover.py hands them over."""
        adopted = [
            AdoptedWorker(pid, w.slot, w.generation, w.ready and not w.stopping)
            for pid, w in sorted(self.sup.workers().items())
        ]
        self.sup = Supervisor(self.settings, now=self.now, adopted=adopted)
        self.status = None  # the new machine reports its own
        # The new machine knows nothing of dumps and kills: it starts every timer anew.
        self.killed.clear()
        self.dumped.clear()
        actions = self.execute(self.checked(self.sup.start()))
        for pid, worker in self.sup.workers().items():
            if worker.stopping:
                self.told_at[pid] = self.now
            elif worker.ready:
                self.ready_at[pid] = self.now
        return actions

    def feed(self, event: Event) -> list[Action]:
        """Hand ``event`` to the machine, carry out the actions, check the event's rules."""
        self.clean = False
        state, before, killed = self.sup.state, self.sup.workers(), set(self.killed)
        if isinstance(event, (WorkerReady, WorkerHeartbeat)) and event.pid in serving(before):
            self.dumped.discard(event.pid)  # it speaks again
        done = self.execute(self.handle(event))
        if state is State.EXITED:
            assert done == [], f"{event} after Exit gave {done}"
        self.check_event(event, before, killed, done)
        return done

    def exits(self, pid: int, code: int | None, sig: int | None) -> None:
        self.live.discard(pid)
        self.killed.discard(pid)
        self.feed(ChildExited(pid, code, sig))

    def pick(self, index: int, pids: set[int]) -> int:
        """One of ``pids`` (any of them, as Hypothesis chooses), or an unknown pid."""
        return sorted(pids)[index % len(pids)] if pids else 1 + index % (FIRST_PID - 1)

    # -- rules: what the world does --------------------------------------------------------

    @rule(step_s=STEPS)
    def tick(self, step_s: float) -> None:
        self.now += step_s
        self.feed(Tick(self.now))

    @precondition(running)
    @rule()
    def sleep_until_deadline(self) -> None:
        """What the loop does when nothing happens: sleep until ``next_deadline()``, tick."""
        deadline = self.sup.next_deadline()
        self.now = self.now if deadline is None else max(self.now, deadline)
        self.feed(Tick(self.now))

    @precondition(running)
    @rule(signum=st.sampled_from(SIGNALS))
    def master_signal(self, signum: int) -> None:
        self.feed(SignalReceived(signum))

    @precondition(running)
    @rule(signum=st.sampled_from(STOP_SIGNALS))
    def stop_signal(self, signum: int) -> None:
        self.feed(SignalReceived(signum))

    @precondition(running)
    @rule(exec_works=st.booleans())
    def usr2(self, exec_works: bool) -> None:
        self.exec_works = exec_works
        self.feed(SignalReceived(MasterSignal.USR2))

    @precondition(running)
    @rule(workers=st.none() | st.integers(0, 4))
    def reload(self, workers: int | None) -> None:
        self.feed(ReloadRequested("rules", workers=workers))

    @precondition(running)
    @rule(index=PICK)
    def boot(self, index: int) -> None:
        """A starting worker reports READY."""
        starting = {pid for pid, w in serving(self.sup.workers()).items() if not w.ready}
        self.feed(WorkerReady(self.pick(index, starting)))

    @precondition(running)
    @rule()
    def boot_all(self) -> None:
        """Every starting worker reports READY (a generation that boots fine)."""
        for pid, worker in sorted(serving(self.sup.workers()).items()):
            if not worker.ready and pid in self.live:
                self.feed(WorkerReady(pid))

    @precondition(running)
    @rule(index=PICK)
    def worker_ready(self, index: int) -> None:
        """Any child says READY: again, late, or while stopping."""
        self.feed(WorkerReady(self.pick(index, self.live)))

    @precondition(running)
    @rule(index=PICK)
    def heartbeat(self, index: int) -> None:
        self.feed(WorkerHeartbeat(self.pick(index, self.live)))

    @precondition(running)
    @rule()
    def all_beat(self) -> None:
        """Every worker's event loop turns (one of them at least, if all others hang)."""
        for pid in sorted(self.live):
            self.feed(WorkerHeartbeat(pid))

    @precondition(running)
    @rule(index=PICK, retire_now=st.booleans(), anyone=st.booleans())
    def recycle(self, index: int, retire_now: bool, anyone: bool) -> None:
        """A READY worker (or any child, if ``anyone``) asks to be replaced."""
        ready = {pid for pid, w in serving(self.sup.workers()).items() if w.ready}
        pid = self.pick(index, self.live if anyone else ready)
        self.feed(WorkerRecycleRequested(pid, "rules", retire_now=retire_now))

    @precondition(running)
    @rule(index=PICK, status=STATUSES, anyone=st.booleans())
    def child_exits(self, index: int, status: tuple[int | None, int | None], anyone: bool) -> None:
        """A worker that should be serving or starting (or any child, if ``anyone``) dies,
        of anything: a crash, a bad import, the OOM killer."""
        up = set(serving(self.sup.workers()))
        self.exits(self.pick(index, self.live if anyone else up), *status)

    @precondition(running)
    @rule(index=PICK)
    def told_child_exits(self, index: int) -> None:
        """A child that was told to go (or SIGKILLed) does."""
        gone = {pid for pid, w in self.sup.workers().items() if w.stopping} | self.killed
        pid = self.pick(index, gone)
        self.exits(pid, *((None, signal.SIGKILL) if pid in self.killed else (0, None)))

    @precondition(running)
    @rule(pid=st.integers(1, FIRST_PID - 1), status=STATUSES)
    def orphan_exits(self, pid: int, status: tuple[int | None, int | None]) -> None:
        """A process the machine never spawned is reaped (the master as PID 1)."""
        self.exits(pid, *status)

    @precondition(running)
    @rule(count=st.integers(1, 3))
    def spawns_fail(self, count: int) -> None:
        """The next few forks fail (EAGAIN)."""
        self.spawn_failures = count

    # -- the rules -------------------------------------------------------------------------

    def check_event(
        self, event: Event, before: dict[int, WorkerInfo], killed: set[int], done: list[Action]
    ) -> None:
        """The rules about one event: what it may do to the workers it found."""
        after = self.sup.workers()
        told = {a.pid for a in done if isinstance(a, SendSignal) and a.signum in STOPS}
        sigkilled = {a.pid for a in done if isinstance(a, Kill)}
        for pid, info in after.items():
            if not info.stopping or (pid in before and before[pid].stopping):
                continue
            # Nobody is dropped in silence: a worker leaves its slot told to go, killed, or
            # written off as hung after its stack dump (then SIGKILLed at its timeout).
            assert pid in told | sigkilled | self.dumped, f"{pid} dropped in silence"
            self.told_at.setdefault(pid, self.now)
            worker = before.get(pid)
            # Told to go while the master stays live: not by a stop, a kill or a crash.
            if worker and worker.ready and pid in told and self.sup.state in LIVE:
                self.check_retire(event, pid, worker, after)
        for pid, worker in after.items():
            if worker.ready and not worker.stopping:
                self.ready_at.setdefault(pid, self.now)
        if isinstance(event, Tick):
            # Every stopping worker has a SIGKILL deadline: it comes within the bound.
            for pid, worker in before.items():
                if not worker.stopping or pid in killed:
                    continue
                if self.now >= self.told_at[pid] + self.kill_bound_s:
                    assert pid in sigkilled, f"stopping worker {pid} not SIGKILLed in time"

    def check_retire(
        self, event: Event, pid: int, worker: WorkerInfo, after: dict[int, WorkerInfo]
    ) -> None:
        """A serving (READY) worker is retired only once a successor serves in its slot,
        or for a documented reason: its slot is gone (fewer workers), or it is more than
        LIMIT_SLACK past its memory or lifetime limit (limits.py)."""
        successor = any(
            w.slot == worker.slot and w.ready and not w.stopping for w in after.values()
        )
        memory = isinstance(event, WorkerRecycleRequested) and event.pid == pid and event.retire_now
        lifetime_s = self.settings.max_worker_lifetime_s
        lifetime = (
            isinstance(event, Tick)
            and lifetime_s is not None
            and self.now >= self.ready_at[pid] + lifetime_s * (1 + LIMIT_SLACK)
        )
        shrunk = worker.slot >= self.sup.target
        assert successor or memory or lifetime or shrunk, f"READY {pid} retired too early"

    @invariant()
    def always(self) -> None:
        if not hasattr(self, "sup"):
            return  # before the initialize rule
        sup = self.sup
        workers = sup.workers()
        assert sup.state in TABLE_STATES
        assert sup.target >= 1
        # No worker is forgotten, and none is made up.
        assert set(workers) == self.live
        assert (sup.state is State.EXITED) == (self.exit_code is not None)
        up = serving(workers)
        if sup.state not in LIVE:
            assert not up, f"serving while {sup.state}: {up}"
        # At most one active and one successor per slot: at most 2 * target in range;
        # slots beyond the target only while a reload is under way, and only active ones.
        for slot in {w.slot for w in up.values()}:
            here = [w for w in up.values() if w.slot == slot]
            assert sum(w.ready for w in here) <= 1, f"two active workers in slot {slot}"
            assert sum(not w.ready for w in here) <= 1, f"two successors in slot {slot}"
        extra = [w for w in up.values() if w.slot >= sup.target]
        assert len(up) - len(extra) <= 2 * sup.target
        if extra:
            assert sup.state is State.RELOADING, extra
            assert all(w.ready for w in extra), extra
        # Every stopping worker not yet SIGKILLed has a deadline: next_deadline says so.
        pending = [
            self.told_at[p] for p, w in workers.items() if w.stopping and p not in self.killed
        ]
        if pending:
            deadline = sup.next_deadline()
            assert deadline is not None
            assert deadline <= min(pending) + self.kill_bound_s
        self.clean = True

    def teardown(self) -> None:
        """Stop, let the deadlines pass, let every child exit: Exit must come."""
        if not self.clean:
            return  # a check failed: that is the error to report
        if self.sup.state is not State.EXITED:
            self.feed(SignalReceived(MasterSignal.TERM))
            self.now += self.kill_bound_s
            self.feed(Tick(self.now))  # check_event: every stopping child is SIGKILLed
            for pid in sorted(self.live):
                self.exits(pid, None, signal.SIGKILL)
        self.always()
        assert self.sup.state is State.EXITED
        assert self.exit_code is not None


SupervisorRules.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
)
TestSupervisorRules = SupervisorRules.TestCase
