"""The master's state machine: events in, actions out, no I/O.

``Supervisor.handle(event) -> list[Action]`` is the whole interface. The loop (``loop.py``)
is the only code that forks, reaps, signals, kills, writes sd_notify and exits; it turns
what it observes into events and executes the actions this module returns. The machine's
other parts: the events and actions in ``events.py``, the states and the transition table
in ``transitions.py``, the worker records and slots in ``pool.py``, the timers and crash
accounting in ``policy.py``, and what a limit or a missed timer does to a worker in
``limits.py``. This file runs the machine and judges failures.
"""

# Theory of operation
# ===================
#
# What this file must not know: processes, pipes, sockets, clocks, config files. It never
# imports os, signal, time, socket or asyncio (signal numbers and names come from
# corral.lifecycle; ``logging`` only for level numbers), and tests/test_layering.py checks
# that for this file and its helpers. Time arrives in ``Tick(now)``: every other event
# happens "at the last Tick", so the loop feeds a Tick right after waking up, before the
# events it gathered.
# ``next_deadline()`` says when the next Tick would change anything.
#
# Slots. The server wants ``target`` workers, numbered 0..target-1. A slot holds at most
# one *active* worker (READY, serving) and at most one *successor* (spawned, not READY yet),
# or a Spawn issued whose pid is not yet reported (``spawning``). Every worker process that
# is not attached to a slot is *stopping*: we told it to exit, so its exit is expected.
#
# The replacement primitive. Each event ends with ``_reconcile``: a slot *wants* a
# successor when it has no active worker, when its active worker is of an older generation
# than the current one, or when that worker asked to be recycled. A wanted successor is
# spawned once the slot's backoff has passed. When the successor reports READY it becomes
# the active worker and the old one gets RETIRE, then SIGKILL if it outlives
# ``graceful_timeout_s``. A successor that exits before READY, or is not READY within
# ``ready_timeout_s`` (then SIGKILLed), has failed: the old worker keeps serving. Reload,
# TTIN/TTOU, recycle requests, max lifetime, heartbeat kills and crash respawns all go
# through this one path; they differ only in what makes the slot want a successor.
#
# Triggers. HUP (as SignalReceived) reloads with the same worker count; a loop that re-reads
# the config feeds ReloadRequested(workers=n) instead. TTIN adds a slot, TTOU drops the
# highest one (never below one). WorkerRecycleRequested comes from the worker (max
# requests) or the loop (it samples memory). Max lifetime is checked here on Tick, one
# worker at a time, oldest first (limits.py). A crashed slot respawns on a later Tick,
# after backoff. The timers and the crash accounting live in policy.py.
#
# Limits and timers (max requests, max lifetime, max memory, heartbeat, ready timeout)
# are described in limits.py, which acts on them; this file judges what fails there.
#
# Failures of a successor are judged by state:
# - STARTING, exit code in FATAL_WORKER_EXITS: it would fail forever; fast stop and exit
#   with that code.
# - RELOADING, a worker of the new generation: the reload is abandoned, the previous
#   generation and worker count are restored, READY=1 is sent again; no crash is charged
#   (the old workers serve, a bad deploy must not stop the server).
# - otherwise: a crash of the slot (backoff). It is charged to the crash budget only if the
#   slot has no active worker; a failed recycle with the old worker serving just backs off.
# An active worker that exits unexpectedly, or is SIGKILLed as hung, is a crash charged
# to the budget. Spending the budget is a graceful stop with exit code 6.
# The exception is an active worker killed by a SIGKILL we did not send (the kernel's
# OOM killer, an operator, a chaos test): that is no bug that would recur at once, so
# it is replaced at once, with no backoff and no charge to the budget.
#
# Re-exec (USR2): the machine returns ReExec and the loop replaces the program. The new
# master's machine is built with ``adopted=`` workers: READY ones stay active in their
# slots as the previous generation, the others are told to stop, and the machine starts
# in RELOADING with the next generation number, so the hand-over is an ordinary reload
# (a new generation that cannot start leaves the adopted workers serving). With no READY
# worker to adopt it is an ordinary first start (STARTING).
#
# Reload during a reload: the newest request wins. The generation is bumped again, the
# unfinished successors are retired and new ones started. Reloading during STARTING
# restarts the first start with the new generation (still STARTING, no RELOADING=1).
#
# States and transitions: the table is data in transitions.py (with the same table as
# prose), beside this file rather than at its top so that each file keeps to one job.
# Every change of ``_state`` goes through ``_enter``, which checks it against the table:
# a change the table does not list raises SupervisorInternalError.
#
# Invariants:
# - at most one active and one successor per slot: never more than 2 * target workers
#   are serving or starting (stopping ones are bounded by their SIGKILL deadline);
# - every stopping worker has a SIGKILL deadline until it has been sent SIGKILL;
# - Exit is the last action and comes only when every worker child has been reaped;
# - between a Spawn and its Spawned/SpawnFailed the loop feeds no other event (enforced).
# tests/supervisor/test_state_rules.py checks these under random sequences of events.

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import final

from corral.lifecycle import FATAL_WORKER_EXITS, ExitCode, MasterSignal, WorkerSignal, signal_name
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
    Spawned,
    SpawnFailed,
    Tick,
    WorkerHeartbeat,
    WorkerInfo,
    WorkerReady,
    WorkerRecycleRequested,
)
from corral.supervisor.limits import (
    check_heartbeat,
    check_lifetimes,
    lifetime_deadlines,
    ready_timed_out,
    recycle,
    write_off_hung,
)
from corral.supervisor.policy import (
    CrashPolicy,
    Slot,
    SupervisorSettings,
)
from corral.supervisor.pool import Pool, describe
from corral.supervisor.transitions import (
    LIVE,
    State,
    SupervisorInternalError,
    Trigger,
    transition,
)

__all__ = ["State", "Supervisor", "SupervisorInternalError", "SupervisorUsageError"]


class SupervisorUsageError(RuntimeError):
    """The loop broke the Spawn -> Spawned/SpawnFailed ordering rule."""


@final
class Supervisor:
    """The master's state machine. Create it, call ``start()``, then ``handle`` each event."""

    def __init__(
        self,
        settings: SupervisorSettings,
        *,
        now: float,
        adopted: Iterable[AdoptedWorker] = (),
    ) -> None:
        self.settings = settings
        self._now = now
        self._state = State.STARTING
        self._target = self._stable_target = settings.workers
        # _generation is what new workers are; _stable_generation is the last one that was
        # fully READY (restored when a reload is abandoned); _last_generation only grows,
        # so a generation number is never reused.
        self._generation = self._stable_generation = self._last_generation = 1
        self._pool = Pool(settings)
        self._policy = CrashPolicy(settings)
        self._exit_code = ExitCode.OK
        self._fast = False
        self._status = ""
        self._pending = self._adopt(list(adopted))

    def _adopt(self, adopted: list[AdoptedWorker]) -> list[Action]:
        if not adopted:
            return []
        actions = self._pool.adopt(adopted, self._now)
        self._last_generation = max(w.generation for w in adopted) + 1
        self._generation = self._last_generation
        serving = [s.active.generation for s in self._pool.slots.values() if s.active]
        if serving:
            # An ordinary reload from here on: abandoning it keeps the adopted workers.
            self._enter(Trigger.ADOPT)  # sends nothing: RELOADING=1 went out before the exec
            self._stable_generation = min(serving)
        message = f"re-executed: adopted {len(serving)} serving worker(s)"
        return [Log(logging.INFO, message), *actions]

    @property
    def state(self) -> State:
        return self._state

    @property
    def target(self) -> int:
        """How many slots the machine is filling (TTIN/TTOU and reloads change it)."""
        return self._target

    def workers(self) -> dict[int, WorkerInfo]:
        """Every worker process not yet reaped, by pid."""
        return self._pool.info()

    def start(self) -> list[Action]:
        """Return the first actions (Spawns of the first generation). Call once, first."""
        actions, self._pending = self._pending, []
        return self._finish(actions)

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; return the actions to execute, in order.

        Raises:
            SupervisorUsageError: a Spawn is unanswered and ``event`` is not its Spawned or
                SpawnFailed, or a Spawned/SpawnFailed answers no Spawn.
        """
        if self._state is State.EXITED:
            return []
        answer = isinstance(event, (Spawned, SpawnFailed))
        if answer != bool(self._pool.spawns_in_flight):
            pending = self._pool.spawns_in_flight
            raise SupervisorUsageError(f"{event!r} with {pending} Spawn(s) pending")
        if isinstance(event, Tick):
            self._now = max(self._now, event.now)
            actions = self._on_tick()
        elif isinstance(event, SignalReceived):
            actions = self._on_signal(event.signum)
        elif isinstance(event, ReloadRequested):
            actions = self._reload(event.reason, event.workers, event.settings)
        elif isinstance(event, (WorkerReady, WorkerHeartbeat)):
            actions = self._on_ready(event.pid, isinstance(event, WorkerReady))
        elif isinstance(event, WorkerRecycleRequested):
            actions = self._on_recycle(event.pid, event.reason, retire_now=event.retire_now)
        elif isinstance(event, ChildExited):
            actions = self._on_exit(event)
        elif isinstance(event, Spawned):
            actions = self._on_spawned(event)
        else:
            # mypy has narrowed ``event`` to SpawnFailed: a new Event type that is not
            # dispatched above fails type checking here, which is our exhaustiveness check.
            actions = self._on_spawn_failed(event)
        return self._finish(actions)

    def next_deadline(self) -> float | None:
        """The earliest time at which a Tick would return actions, or None if none would."""
        if self._state is State.EXITED:
            return None
        live = self._state is not State.STOPPING
        times = self._pool.deadlines(self._target, self._generation, live=live)
        if self._state is State.RUNNING:
            times += lifetime_deadlines(self._pool, self.settings)
        return min(times, default=None)

    # -- event handlers -------------------------------------------------------------------

    def _on_signal(self, signum: int) -> list[Action]:
        name = signal_name(signum)
        if signum in (MasterSignal.TERM, MasterSignal.INT):
            if self._state is State.STOPPING:  # a second TERM/INT makes the stop fast
                return self._stop(f"{name}: fast stop", Trigger.FAST_STOP)
            return self._stop(f"{name}: graceful stop", Trigger.STOP)
        if signum == MasterSignal.QUIT:
            return self._stop(f"{name}: fast stop", Trigger.FAST_STOP)
        if signum == MasterSignal.USR1:
            reopen = [SendSignal(pid, WorkerSignal.REOPEN_LOGS) for pid in self._pool.procs]
            return [ReopenLogs(), *reopen]
        if self._state is State.STOPPING:
            return [Log(logging.INFO, f"{name} ignored while stopping")]
        if signum == MasterSignal.HUP:
            return self._reload(name, None)
        if signum == MasterSignal.TTIN:
            self._target += 1
            self._stable_target += 1
            return [Log(logging.INFO, f"{name}: {self._target} workers")]
        if signum == MasterSignal.TTOU:
            if self._target == 1:
                return [Log(logging.INFO, f"{name} ignored: already at one worker")]
            self._target -= 1
            self._stable_target = max(1, self._stable_target - 1)
            return [Log(logging.INFO, f"{name}: {self._target} workers")]
        if signum == MasterSignal.USR2:
            # systemd (Type=notify-reload) hears READY=1 from the new master once its
            # first generation serves.
            return [
                Log(logging.INFO, f"{name}: re-executing the master"),
                *self._enter(Trigger.REEXEC),
                ReExec(),
            ]
        return [Log(logging.DEBUG, f"{name} ignored")]

    def _reload(
        self, reason: str, workers: int | None, settings: SupervisorSettings | None = None
    ) -> list[Action]:
        if self._state is State.STOPPING:
            return [Log(logging.INFO, f"reload ({reason}) ignored while stopping")]
        if settings is not None:
            # New timeouts apply at once, to old workers too (deadlines read settings).
            self.settings = self._pool.settings = self._policy.settings = settings
        self._last_generation += 1
        self._generation = self._last_generation
        if workers is not None:
            self._target = max(1, workers)
        what = f"starting generation {self._generation} with {self._target} workers"
        # RUNNING becomes RELOADING; a reload while STARTING or RELOADING keeps the state.
        return [Log(logging.INFO, f"reload ({reason}): {what}"), *self._enter(Trigger.RELOAD)]

    def _on_ready(self, pid: int, ready: bool) -> list[Action]:
        worker = self._pool.procs.get(pid)
        # A stopping worker's news is irrelevant: it is going away whatever it says.
        if worker is None or worker.stopping:
            return []
        worker.last_beat = self._now
        actions: list[Action] = []
        if worker.dumped_at is not None:
            worker.dumped_at = None
            message = f"{describe(worker)} speaks again; its successor replaces it gracefully"
            actions.append(Log(logging.INFO, message))
        if not ready or worker.ready_at is not None:
            return actions
        # Not stopping and not READY yet: by the slot invariant it is its slot's successor.
        worker.ready_at = self._now
        took = self._now - worker.spawned_at
        self._pool.note_boot(took)
        slot = self._pool.slots[worker.slot]
        old = slot.active
        if old is not None and old.dumped_at is not None:
            # Still silent since its stack dump: written off as hung (no RETIRE, its loop
            # cannot drain). SIGKILLed at its timeout, not now: the successor serves
            # already, and faulthandler gets its whole grace even on a loaded machine.
            what, kill = write_off_hung(slot, old, self.settings, self._now)
            actions += [] if kill is None else [kill]
            actions += self._crash(worker.slot, what, replaced=True)
            if self._state is State.STOPPING:
                return actions  # the crash budget ran out: the stop told the successor too
        # After the crash above: that record consumes the old worker's READY time.
        self._policy.note_ready(worker.slot, self._now)
        actions.append(Log(logging.INFO, f"{describe(worker)} READY after {took:.2f}s"))
        return actions + self._pool.promote(slot, worker, self._now)

    def _on_recycle(self, pid: int, reason: str, *, retire_now: bool) -> list[Action]:
        worker = self._pool.procs.get(pid)
        if worker is None or worker.stopping or worker.ready_at is None:
            return []
        # READY and not stopping: the active worker of its slot.
        return recycle(self._pool, worker, reason, retire_now=retire_now, now=self._now)

    def _on_exit(self, event: ChildExited) -> list[Action]:
        worker = self._pool.procs.pop(event.pid, None)
        if worker is None:
            # Not ours: as PID 1 we reap orphans reparented to us too.
            return []
        if event.signal is not None:
            how = f"killed by {signal_name(event.signal)}"
        else:
            how = f"exit code {event.exit_code}"
        if worker.stopping:
            return [Log(logging.INFO, f"{describe(worker)} exited ({how})")]
        slot = self._pool.slots[worker.slot]
        if slot.successor is worker:
            slot.successor = None
            return self._successor_failed(
                worker.slot, worker.generation, f"exited before READY ({how})", event.exit_code
            )
        slot.active = None
        if event.signal == MasterSignal.KILL:
            slot.not_before = self._now
            message = f"{describe(worker)} was killed by SIGKILL from outside corral"
            return [Log(logging.WARNING, f"{message} (the OOM killer?); replacing it")]
        return self._crash(worker.slot, f"{describe(worker)} exited unexpectedly ({how})")

    def _on_spawned(self, event: Spawned) -> list[Action]:
        self._pool.spawns_in_flight -= 1
        worker = self._pool.add(event.pid, event.slot, event.generation, self._now)
        if self._state is State.STOPPING:
            # Forked after the stop began (the Spawn was already in the loop's queue).
            signum = WorkerSignal.QUIT if self._fast else WorkerSignal.STOP
            return [self._pool.tell_stop(worker, signum, self._now)]
        self._claim(event.slot, event.generation).successor = worker
        return [Log(logging.DEBUG, f"spawned {describe(worker)}")]

    def _on_spawn_failed(self, event: SpawnFailed) -> list[Action]:
        self._pool.spawns_in_flight -= 1
        if self._state is State.STOPPING:
            return [Log(logging.WARNING, f"could not spawn worker: {event.error}")]
        self._claim(event.slot, event.generation)
        why = f"could not be spawned ({event.error})"
        return self._successor_failed(event.slot, event.generation, why, None)

    def _on_tick(self) -> list[Action]:
        actions = self._pool.kill_overdue(self._now)
        for slot_id, slot in list(self._pool.slots.items()):
            if self._state is State.STOPPING:
                # The crash budget ran out in an earlier slot: the stop owns everything now.
                break
            actions += self._check_slot(slot_id, slot)
        if self._state is not State.RUNNING:
            return actions
        return actions + check_lifetimes(self._pool, self.settings, self._now)

    # -- helpers ----------------------------------------------------------------------------

    def _check_slot(self, slot_id: int, slot: Slot) -> list[Action]:
        """Ready timeout of the successor and heartbeat of the active worker."""
        actions: list[Action] = []
        new = ready_timed_out(slot, self._generation, self.settings, self._now)
        if new is not None:
            why = f"not READY after {self.settings.ready_timeout_s}s, SIGKILL"
            actions += self._successor_failed(slot_id, new.generation, why, None)
            actions.append(Kill(new.pid))
        more, hung = check_heartbeat(slot, self.settings, self._now)
        if hung is not None:
            silent = self._now - hung.last_beat
            what = f"{describe(hung)} hung (no heartbeat for {silent:.1f}s): SIGKILLed"
            more = [Kill(hung.pid), *self._crash(slot_id, what)]
        return actions + more

    def _successor_failed(
        self, slot_id: int, generation: int, why: str, exit_code: int | None
    ) -> list[Action]:
        what = f"new worker for slot {slot_id} (generation {generation}) {why}"
        if self._state is State.STARTING and exit_code in FATAL_WORKER_EXITS:
            code = ExitCode(exit_code)
            why = f"{what}: {code.name} at first start is fatal"
            return self._stop(why, Trigger.FATAL, code=code)
        if self._state is State.RELOADING and generation == self._generation:
            self._generation, self._target = self._stable_generation, self._stable_target
            message = f"{what}: reload abandoned, generation {self._generation} keeps serving"
            return [Log(logging.ERROR, message), *self._enter(Trigger.ABANDON)]
        return self._crash(slot_id, what, counts=self._pool.slots[slot_id].active is None)

    def _crash(
        self, slot_id: int, what: str, *, counts: bool = True, replaced: bool = False
    ) -> list[Action]:
        delay_s = self._policy.record(slot_id, self._now, counts=counts)
        if self._policy.exhausted(self._now):
            budget = f"{self.settings.crash_budget} in {self.settings.crash_window_s}s"
            why = f"{what}; crash budget ({budget}) spent"
            return self._stop(why, Trigger.STOP, code=ExitCode.CRASH_BUDGET)
        slot = self._pool.slots[slot_id]
        slot.not_before = self._now + delay_s
        if replaced:
            return [Log(logging.WARNING, what)]
        if slot.successor is not None:
            # Its replacement is starting already (a hung worker's starts at the dump).
            return [Log(logging.WARNING, f"{what}; its successor is starting")]
        return [Log(logging.WARNING, f"{what}; next worker for slot {slot_id} in {delay_s:.1f}s")]

    def _stop(self, why: str, trigger: Trigger, *, code: ExitCode = ExitCode.OK) -> list[Action]:
        """Stop (STOP: graceful, FAST_STOP or FATAL: QUIT to every worker); a stop that is
        under way keeps its exit code and can only become fast."""
        actions: list[Action] = [Log(logging.ERROR if code else logging.INFO, why)]
        if self._state is not State.STOPPING:
            self._exit_code = code
            self._pool.slots.clear()
        actions += self._enter(trigger)
        fast = trigger is not Trigger.STOP
        self._fast = self._fast or fast
        return actions + self._pool.stop_all(fast=fast, now=self._now)

    def _enter(self, trigger: Trigger) -> list[Action]:
        """Change state as the table says for ``trigger``; return its Notify, if any.

        Raises:
            SupervisorInternalError: the table has no row for this state and trigger.
        """
        step = transition(self._state, trigger)
        self._state = step.state
        return [] if step.notify is None else [Notify(step.notify)]

    def _claim(self, slot_id: int, generation: int) -> Slot:
        slot = self._pool.claim(slot_id, generation)
        if slot is None:
            raise SupervisorUsageError(f"no Spawn({slot_id}, {generation}) is pending")
        return slot

    def _reconcile(self) -> list[Action]:
        """Move the slots towards the target: the replacement primitive lives here."""
        target, generation = self._target, self._generation
        actions: list[Action] = []
        for i in range(target):
            self._pool.slots.setdefault(i, Slot())
        if self._state is not State.RUNNING and self._pool.settled(target, generation):
            self._stable_generation, self._stable_target = generation, target
            message = f"generation {generation} READY: {target} workers"
            actions += [Log(logging.INFO, message), *self._enter(Trigger.SETTLE)]
        # Extra slots keep serving until a reload is over: capacity never drops mid-swap.
        shrink = self._state is not State.RELOADING
        more, removed = self._pool.reconcile(target, generation, shrink=shrink, now=self._now)
        for slot_id in removed:
            self._policy.forget(slot_id)
        return actions + more

    def _finish(self, actions: list[Action]) -> list[Action]:
        """Common tail of every event: reconcile, exit when done, report status changes."""
        pool = self._pool
        if self._state in LIVE:
            actions += self._reconcile()
        elif not pool.procs and not pool.spawns_in_flight:
            self._enter(Trigger.REAPED)  # sends nothing: the Exit says it all
            code = self._exit_code
            return [*actions, Log(logging.INFO, f"all workers gone: exit {code}"), Exit(code)]
        stopping = self._state is State.STOPPING
        status = pool.status(self._target, self._generation, stopping=stopping)
        if status != self._status:
            self._status = status
            actions.append(Notify(status))
        return actions
