"""The master's state machine: events in, actions out, no I/O.

``Supervisor.handle(event) -> list[Action]`` is the whole interface. The loop (``loop.py``)
is the only code that forks, reaps, signals, kills, writes sd_notify and exits; it turns
what it observes into events and executes the actions this module returns. The events
and actions are declared in ``events.py`` (and re-exported here), the worker records and
slots live in ``pool.py``, and the timers and crash accounting in ``policy.py``.
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
# worker at a time, oldest first. A crashed slot respawns on a later Tick, after backoff.
# The timers and the crash accounting live in policy.py; this file only acts on them.
#
# Limits keep their numbers (lifecycle.py, "Limits"): a replacement for a limit starts
# early, so that the successor is READY about when the limit is reached, and a worker
# LIMIT_SLACK (10 %) past its limit takes no new work even if its successor is not READY
# (then the slot serves nothing until it is: siblings and the kernel's accept queue, which
# the successor inherits, carry the load; a short dip beats an unbounded overrun).
# - Max requests: the worker sends RECYCLE early (its own boot time times its request
#   rate) and stops accepting at the limit + 10 % by itself; here it is a plain request.
# - Max lifetime: the successor starts at READY + lifetime - expected boot time (the
#   slowest of the last few spawn-to-READY times; policy.py). A worker still active at
#   READY + lifetime + 10 % (one waiting its turn, or whose successor boots slowly) is
#   retired then: it is retired by lifetime + 10 % (while RUNNING; a reload replaces it).
# - Max memory: the loop samples every second. The first sample over the limit starts
#   the replacement (the worker stays over it for about one boot time). A later sample
#   that finds it more than 10 % over with its successor still not READY (retire_now)
#   retires it then: it is over the limit + 10 % for at most about a second.
# - Heartbeat: a worker silent for worker_timeout_s - dump_lead_s gets DUMP_STACK (its
#   stack is logged first) and its successor is spawned at once. The successor takes its
#   place as soon as it is READY; the silent worker is SIGKILLed (not retired: its loop
#   cannot drain) when its silence reaches worker_timeout_s, and charged to the crash
#   budget as hung. So a new worker serves within the timeout, plus whatever part of its
#   boot exceeds dump_lead_s, and the SIGKILL never cuts the stack dump short: it comes
#   dump_lead_s after DUMP_STACK even when the successor is READY in milliseconds. A
#   worker that speaks again before its successor is READY is still replaced, gracefully
#   (the successor is starting already); once the successor is READY it is written off.
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
# States and transitions: transitions.py holds the table as data (STARTING, RUNNING,
# RELOADING, STOPPING, EXITED; the triggers that move between them and the sd_notify line
# each sends), with the same table as prose. Every change of ``_state`` goes through
# ``_enter``, which checks it against the table: a change it does not list raises
# SupervisorInternalError. The table lives beside this file rather than at its top so
# that each file keeps to one responsibility and to the house size limit.
#
# Invariants:
# - at most one active and one successor per slot: never more than 2 * target workers
#   are serving or starting (stopping ones are bounded by their SIGKILL deadline);
# - every stopping worker has a SIGKILL deadline until it has been sent SIGKILL;
# - Exit is the last action and comes only when every worker child has been reaped;
# - between a Spawn and its Spawned/SpawnFailed the loop feeds no other event (enforced).

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
from corral.supervisor.policy import (
    CrashPolicy,
    Slot,
    SupervisorSettings,
    Worker,
    dump_lead_s,
    heartbeat_deadline,
    lifetime_deadline,
    lifetime_lead_s,
    ready_deadline,
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
        oldest = self._next_lifetime()
        if oldest is not None:
            boot_s = self._pool.expected_boot_s()
            times.append(lifetime_deadline(oldest, self.settings, boot_s))
        if self._state is State.RUNNING:
            times += self._pool.lifetime_limits()
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
        actions: list[Action] = [
            Log(
                logging.INFO,
                f"reload ({reason}): starting generation {self._generation}"
                f" with {self._target} workers",
            )
        ]
        # RUNNING becomes RELOADING; a reload while STARTING or RELOADING keeps the state.
        return actions + self._enter(Trigger.RELOAD)

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
            actions += self._write_off_hung(worker.slot, slot, old)
            if self._state is State.STOPPING:
                return actions  # the crash budget ran out: the stop told the successor too
            old = None
        # After the crash above: that record consumes the old worker's READY time.
        self._policy.note_ready(worker.slot, self._now)
        slot.active, slot.successor = worker, None
        actions.append(Log(logging.INFO, f"{describe(worker)} READY after {took:.2f}s"))
        if old is not None:
            why = old.recycle_reason or f"replaced by generation {worker.generation}"
            actions.append(Log(logging.INFO, f"retiring {describe(old)}: {why}"))
            actions.append(self._pool.tell_stop(old, WorkerSignal.RETIRE, self._now))
        return actions

    def _on_recycle(self, pid: int, reason: str, *, retire_now: bool) -> list[Action]:
        worker = self._pool.procs.get(pid)
        if worker is None or worker.stopping or worker.ready_at is None:
            return []
        actions: list[Action] = []
        under_way = worker.recycle_reason is not None  # memory is sampled every second
        if not under_way:
            worker.recycle_reason = reason
            actions.append(Log(logging.INFO, f"{describe(worker)} will be replaced: {reason}"))
        # READY and not stopping: the active worker of its slot. Retired now only if its
        # replacement was under way before this sample: a successor always gets a chance
        # (a second) to take over. One dumped for silence is left to the heartbeat timer.
        if retire_now and under_way and worker.dumped_at is None:
            slot = self._pool.slots[worker.slot]
            why = f"{reason}, more than 10% over the limit: not waiting for its successor"
            actions += self._pool.retire_active(slot, why, self._now)
        return actions

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
            return [
                Log(
                    logging.WARNING,
                    f"{describe(worker)} was killed by SIGKILL from outside corral "
                    "(the OOM killer?); replacing it",
                )
            ]
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
        boot_s = self._pool.expected_boot_s()
        oldest = self._next_lifetime()
        if oldest is not None and self._now >= lifetime_deadline(oldest, self.settings, boot_s):
            oldest.recycle_reason = "max lifetime reached"
            lead_s = lifetime_lead_s(self.settings, boot_s)
            message = (
                f"{describe(oldest)} reached its max lifetime less {lead_s:.2f}s"
                " (its successor's expected boot time): starting the successor"
            )
            actions.append(Log(logging.INFO, message))
        for slot in self._pool.past_lifetime_limit(self._now):
            why = "max lifetime + 10% passed before its successor was READY"
            actions += self._pool.retire_active(slot, why, self._now)
        return actions

    # -- helpers ----------------------------------------------------------------------------

    def _check_slot(self, slot_id: int, slot: Slot) -> list[Action]:
        """Ready timeout of the successor and heartbeat of the active worker."""
        actions: list[Action] = []
        new = slot.successor
        # An obsolete successor (older generation) is retired by _reconcile, not failed here.
        if (
            new is not None
            and new.generation == self._generation
            and self._now >= ready_deadline(new, self.settings)
        ):
            slot.successor = None
            new.stopping = True  # SIGKILLed right away: no kill deadline
            why = f"not READY after {self.settings.ready_timeout_s}s, SIGKILL"
            actions += self._successor_failed(slot_id, new.generation, why, None)
            actions.append(Kill(new.pid))
        old = slot.active
        due = None if old is None else heartbeat_deadline(old, self.settings)
        if old is None or due is None or self._now < due:
            return actions
        if old.dumped_at is None:
            old.dumped_at = self._now
            silent = self._now - old.last_beat
            # The slot now wants a successor: _reconcile spawns it in this same event.
            old.recycle_reason = old.recycle_reason or f"no heartbeat for {silent:.1f}s"
            message = (
                f"{describe(old)} sent no heartbeat for {silent:.1f}s: dumping its stack and"
                f" starting its successor; SIGKILL once that is READY, or in"
                f" {dump_lead_s(self.settings):.1f}s"
            )
            actions += [Log(logging.WARNING, message), SendSignal(old.pid, WorkerSignal.DUMP_STACK)]
        else:
            slot.active = None
            old.stopping = True  # SIGKILLed right away: no kill deadline
            silent = self._now - old.last_beat
            what = f"{describe(old)} hung (no heartbeat for {silent:.1f}s): SIGKILLed"
            actions += [Kill(old.pid), *self._crash(slot_id, what)]
        return actions

    def _write_off_hung(self, slot_id: int, slot: Slot, old: Worker) -> list[Action]:
        """Detach the slot's silent active worker, whose successor is READY: a crash,
        SIGKILL at the end of its worker timeout (``kill_at``, see Pool.kill_overdue)."""
        slot.active = None
        old.stopping = True
        due = heartbeat_deadline(old, self.settings)
        silent = self._now - old.last_beat
        what = f"{describe(old)} hung (no heartbeat for {silent:.1f}s); its successor is READY"
        if due is None or due <= self._now:  # a reload disabled the timeout, or it is over
            return [Kill(old.pid), *self._crash(slot_id, f"{what}; SIGKILL", replaced=True)]
        old.kill_at = due
        message = f"{what}; SIGKILL at its worker timeout, in {due - self._now:.1f}s"
        return self._crash(slot_id, message, replaced=True)

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

    def _next_lifetime(self) -> Worker | None:
        """The worker whose max lifetime replacement comes next (only while RUNNING)."""
        if self._state is not State.RUNNING:
            return None
        return self._pool.next_lifetime()

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
        if self._state is State.STOPPING:
            status = f"STATUS=stopping, {len(pool.procs)} workers left"
        else:
            # Count the workers that are what the server should be: in range, current generation.
            ready = pool.current(self._target, self._generation)
            status = f"STATUS={ready}/{self._target} workers ready, generation {self._generation}"
        if status != self._status:
            self._status = status
            actions.append(Notify(status))
        return actions
