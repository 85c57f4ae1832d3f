"""The master's state machine: events in, actions out, no I/O.

``Supervisor.handle(event) -> list[Action]`` is the whole interface. The loop (``loop.py``)
is the only code that forks, reaps, signals, kills, writes sd_notify and exits; it turns
what it observes into events and executes the actions this module returns.
"""

# Theory of operation
# ===================
#
# What this file must not know: processes, pipes, sockets, clocks, config files. It never
# imports os, time, socket or asyncio (``signal`` only for signal numbers, ``logging`` only
# for level numbers). Time arrives in ``Tick(now)``: every other event happens "at the last
# Tick", so the loop feeds a Tick right after waking up, before the events it gathered.
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
# Failures of a successor are judged by state:
# - STARTING, exit code in FATAL_WORKER_EXITS: it would fail forever; fast stop and exit
#   with that code.
# - RELOADING, a worker of the new generation: the reload is abandoned, the previous
#   generation and worker count are restored, READY=1 is sent again; no crash is charged
#   (the old workers serve, a bad deploy must not stop the server).
# - otherwise: a crash of the slot (backoff). It is charged to the crash budget only if the
#   slot has no active worker; a failed recycle with the old worker serving just backs off.
# An active worker that exits unexpectedly, or is SIGKILLed for heartbeat silence, is a
# crash charged to the budget. Spending the budget is a graceful stop with exit code 6.
#
# Reload during a reload: the newest request wins. The generation is bumped again, the
# unfinished successors are retired and new ones started. Reloading during STARTING
# restarts the first start with the new generation (still STARTING, no RELOADING=1).
#
# Transition table (anything not listed keeps the state):
#
#   state      event                                       new state   notify
#   STARTING   every slot has an active worker of the gen  RUNNING     READY=1
#   STARTING   fatal exit code before READY                STOPPING    STOPPING=1 (fast)
#   RUNNING    HUP / ReloadRequested                       RELOADING   RELOADING=1
#   RELOADING  every slot has an active worker of the gen  RUNNING     READY=1
#   RELOADING  a new-generation successor failed           RUNNING     READY=1 (abandoned)
#   any live   TERM/INT; crash budget spent                STOPPING    STOPPING=1
#   any live   QUIT                                        STOPPING    STOPPING=1 (fast)
#   STOPPING   TERM/INT/QUIT again                         STOPPING    (made fast)
#   STOPPING   last worker reaped, no Spawn in flight      EXITED      (Exit action)
#
# "Live" is STARTING, RUNNING or RELOADING. In STOPPING nothing is spawned and HUP, TTIN,
# TTOU, USR2 and reload requests are ignored; in EXITED every event is ignored.
#
# Invariants:
# - at most one active and one successor per slot: never more than 2 * target workers
#   are serving or starting (stopping ones are bounded by their SIGKILL deadline);
# - every stopping worker has a SIGKILL deadline until it has been sent SIGKILL;
# - Exit is the last action and comes only when every worker child has been reaped;
# - between a Spawn and its Spawned/SpawnFailed the loop feeds no other event (enforced).

from __future__ import annotations

import enum
import logging
import signal
from dataclasses import dataclass
from typing import TypeAlias, final

from corral.lifecycle import FATAL_WORKER_EXITS, ExitCode, WorkerSignal
from corral.supervisor.policy import (
    DUMP_GRACE_S,
    FAST_KILL_S,
    CrashPolicy,
    Slot,
    Worker,
    heartbeat_deadline,
    lifetime_deadline,
    next_lifetime,
    ready_deadline,
)

# Re-exported: the settings are part of this module's API.
from corral.supervisor.policy import SupervisorSettings as SupervisorSettings


class State(enum.Enum):
    """Where the master is in its life (see the transition table above)."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    EXITED = "exited"


class SupervisorUsageError(RuntimeError):
    """The loop broke the Spawn -> Spawned/SpawnFailed ordering rule."""


# Events: what the loop observed. Frozen and slotted: they are values, not mailboxes.


@dataclass(frozen=True, slots=True)
class SignalReceived:
    signum: int


@dataclass(frozen=True, slots=True)
class ReloadRequested:
    """A new generation is wanted (HUP after the config was re-read, or the file watcher)."""

    reason: str
    #: The new worker count, or None to keep the current one.
    workers: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerReady:
    pid: int


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    pid: int


@dataclass(frozen=True, slots=True)
class WorkerRecycleRequested:
    """The worker (max requests) or the loop (memory sampled) wants the worker replaced."""

    pid: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildExited:
    """A decoded waitpid status: exactly one of exit_code and signal is set."""

    pid: int
    exit_code: int | None
    signal: int | None


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class Spawned:
    """The loop forked the worker a Spawn action asked for."""

    slot: int
    pid: int
    generation: int


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """The loop could not fork the worker a Spawn action asked for (EAGAIN, ENOMEM)."""

    slot: int
    generation: int
    error: str


Event: TypeAlias = (
    SignalReceived
    | ReloadRequested
    | WorkerReady
    | WorkerHeartbeat
    | WorkerRecycleRequested
    | ChildExited
    | Tick
    | Spawned
    | SpawnFailed
)


# Actions: what the loop must do, in list order.


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork a worker for ``slot``, then feed Spawned (or SpawnFailed) before anything else."""

    slot: int
    generation: int


@dataclass(frozen=True, slots=True)
class SendSignal:
    pid: int
    signum: int


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL ``pid``."""

    pid: int


@dataclass(frozen=True, slots=True)
class Notify:
    """An sd_notify payload; the loop adds MONOTONIC_USEC where systemd wants it."""

    message: str


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class ReopenLogs:
    """Reopen the master's own log files (workers get REOPEN_LOGS separately)."""


@dataclass(frozen=True, slots=True)
class ReExec:
    """Re-exec the master in place; the new master starts a fresh Supervisor."""


@dataclass(frozen=True, slots=True)
class Exit:
    code: int


Action: TypeAlias = Spawn | SendSignal | Kill | Notify | Log | ReopenLogs | ReExec | Exit


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A read-only view of one worker process, for status pages and the control socket."""

    slot: int
    generation: int
    ready: bool
    spawned_at: float
    stopping: bool


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@final
class Supervisor:
    """The master's state machine. Create it, call ``start()``, then ``handle`` each event."""

    def __init__(self, settings: SupervisorSettings, *, now: float) -> None:
        self.settings = settings
        self._now = now
        self._state = State.STARTING
        self._target = self._stable_target = settings.workers
        # _generation is what new workers are; _stable_generation is the last one that was
        # fully READY (restored when a reload is abandoned); _last_generation only grows,
        # so a generation number is never reused.
        self._generation = self._stable_generation = self._last_generation = 1
        self._slots: dict[int, Slot] = {}
        self._procs: dict[int, Worker] = {}
        self._spawns_in_flight = 0
        self._policy = CrashPolicy(settings)
        self._exit_code = ExitCode.OK
        self._fast = False
        self._status = ""

    @property
    def state(self) -> State:
        return self._state

    def workers(self) -> dict[int, WorkerInfo]:
        """Every worker process not yet reaped, by pid."""
        return {
            pid: WorkerInfo(w.slot, w.generation, w.ready_at is not None, w.spawned_at, w.stopping)
            for pid, w in self._procs.items()
        }

    def start(self) -> list[Action]:
        """Return the Spawn actions of the first generation. Call once, before ``handle``."""
        return self._finish([])

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; return the actions to execute, in order.

        Raises:
            SupervisorUsageError: a Spawn is unanswered and ``event`` is not its Spawned or
                SpawnFailed, or a Spawned/SpawnFailed answers no Spawn.
        """
        if self._state is State.EXITED:
            return []
        answer = isinstance(event, (Spawned, SpawnFailed))
        if answer != bool(self._spawns_in_flight):
            raise SupervisorUsageError(f"{event!r} with {self._spawns_in_flight} Spawn(s) pending")
        if isinstance(event, Tick):
            self._now = max(self._now, event.now)
            actions = self._on_tick()
        elif isinstance(event, SignalReceived):
            actions = self._on_signal(event.signum)
        elif isinstance(event, ReloadRequested):
            actions = self._reload(event.reason, event.workers)
        elif isinstance(event, (WorkerReady, WorkerHeartbeat)):
            actions = self._on_ready(event.pid, isinstance(event, WorkerReady))
        elif isinstance(event, WorkerRecycleRequested):
            actions = self._on_recycle(event.pid, event.reason)
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
        times = [w.kill_at for w in self._procs.values() if w.kill_at is not None]
        if self._state is not State.STOPPING:
            for slot_id, slot in self._slots.items():
                if slot.successor is not None:
                    times.append(ready_deadline(slot.successor, self.settings))
                if self._wants_spawn(slot_id, slot):
                    times.append(slot.not_before)
                beat = (
                    None if slot.active is None else heartbeat_deadline(slot.active, self.settings)
                )
                if beat is not None:
                    times.append(beat)
            oldest = self._next_lifetime()
            if oldest is not None:
                times.append(lifetime_deadline(oldest, self.settings))
        return min(times, default=None)

    # -- event handlers -------------------------------------------------------------------

    def _on_signal(self, signum: int) -> list[Action]:
        name = _signame(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            fast = self._state is State.STOPPING
            return self._stop(f"{name}: {'fast' if fast else 'graceful'} stop", fast=fast)
        if signum == signal.SIGQUIT:
            return self._stop(f"{name}: fast stop", fast=True)
        if signum == signal.SIGUSR1:
            reopen = [SendSignal(pid, WorkerSignal.REOPEN_LOGS) for pid in self._procs]
            return [ReopenLogs(), *reopen]
        if self._state is State.STOPPING:
            return [Log(logging.INFO, f"{name} ignored while stopping")]
        if signum == signal.SIGHUP:
            return self._reload(name, None)
        if signum == signal.SIGTTIN:
            self._target += 1
            self._stable_target += 1
            return [Log(logging.INFO, f"{name}: {self._target} workers")]
        if signum == signal.SIGTTOU:
            if self._target == 1:
                return [Log(logging.INFO, f"{name} ignored: already at one worker")]
            self._target -= 1
            self._stable_target = max(1, self._stable_target - 1)
            return [Log(logging.INFO, f"{name}: {self._target} workers")]
        if signum == signal.SIGUSR2:
            return [Log(logging.INFO, f"{name}: re-executing the master"), ReExec()]
        return [Log(logging.DEBUG, f"{name} ignored")]

    def _reload(self, reason: str, workers: int | None) -> list[Action]:
        if self._state is State.STOPPING:
            return [Log(logging.INFO, f"reload ({reason}) ignored while stopping")]
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
        if self._state is State.RUNNING:
            self._state = State.RELOADING
            actions.append(Notify("RELOADING=1"))
        return actions

    def _on_ready(self, pid: int, ready: bool) -> list[Action]:
        worker = self._procs.get(pid)
        # A stopping worker's news is irrelevant: it is going away whatever it says.
        if worker is None or worker.stopping:
            return []
        worker.last_beat = self._now
        worker.dumped_at = None
        if not ready or worker.ready_at is not None:
            return []
        # Not stopping and not READY yet: by the slot invariant it is its slot's successor.
        worker.ready_at = self._now
        self._policy.note_ready(worker.slot, self._now)
        slot = self._slots[worker.slot]
        old, slot.active, slot.successor = slot.active, worker, None
        took = self._now - worker.spawned_at
        actions: list[Action] = [Log(logging.INFO, f"{self._name(worker)} READY after {took:.1f}s")]
        if old is not None:
            why = old.recycle_reason or f"replaced by generation {worker.generation}"
            actions.append(Log(logging.INFO, f"retiring {self._name(old)}: {why}"))
            actions.append(self._tell_stop(old, WorkerSignal.RETIRE))
        return actions

    def _on_recycle(self, pid: int, reason: str) -> list[Action]:
        worker = self._procs.get(pid)
        if worker is None or worker.stopping or worker.ready_at is None:
            return []
        if worker.recycle_reason is None:
            worker.recycle_reason = reason
        return [Log(logging.INFO, f"{self._name(worker)} will be replaced: {reason}")]

    def _on_exit(self, event: ChildExited) -> list[Action]:
        worker = self._procs.pop(event.pid, None)
        if worker is None:
            # Not ours: as PID 1 we reap orphans reparented to us too.
            return []
        if event.signal is not None:
            how = f"killed by {_signame(event.signal)}"
        else:
            how = f"exit code {event.exit_code}"
        if worker.stopping:
            return [Log(logging.INFO, f"{self._name(worker)} exited ({how})")]
        slot = self._slots[worker.slot]
        if slot.successor is worker:
            slot.successor = None
            return self._successor_failed(
                worker.slot, worker.generation, f"exited before READY ({how})", event.exit_code
            )
        slot.active = None
        return self._crash(worker.slot, f"{self._name(worker)} exited unexpectedly ({how})")

    def _on_spawned(self, event: Spawned) -> list[Action]:
        self._spawns_in_flight -= 1
        worker = Worker(event.pid, event.slot, event.generation, self._now, self._now)
        self._procs[event.pid] = worker
        if self._state is State.STOPPING:
            # Forked after the stop began (the Spawn was already in the loop's queue).
            return [self._tell_stop(worker, WorkerSignal.QUIT if self._fast else WorkerSignal.STOP)]
        self._claim(event.slot, event.generation).successor = worker
        return [Log(logging.DEBUG, f"spawned {self._name(worker)}")]

    def _on_spawn_failed(self, event: SpawnFailed) -> list[Action]:
        self._spawns_in_flight -= 1
        if self._state is State.STOPPING:
            return [Log(logging.WARNING, f"could not spawn worker: {event.error}")]
        self._claim(event.slot, event.generation)
        why = f"could not be spawned ({event.error})"
        return self._successor_failed(event.slot, event.generation, why, None)

    def _on_tick(self) -> list[Action]:
        actions: list[Action] = []
        for worker in self._procs.values():
            if worker.kill_at is not None and self._now >= worker.kill_at:
                worker.kill_at = None
                message = f"{self._name(worker)} did not exit in time: SIGKILL"
                actions += [Log(logging.WARNING, message), Kill(worker.pid)]
        for slot_id, slot in list(self._slots.items()):
            if self._state is State.STOPPING:
                # The crash budget ran out in an earlier slot: the stop owns everything now.
                break
            actions += self._check_slot(slot_id, slot)
        oldest = self._next_lifetime()
        if oldest is not None and self._now >= lifetime_deadline(oldest, self.settings):
            oldest.recycle_reason = "max lifetime reached"
            actions.append(Log(logging.INFO, f"{self._name(oldest)} reached its max lifetime"))
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
            message = (
                f"{self._name(old)} sent no heartbeat for {self._now - old.last_beat:.1f}s:"
                f" dumping its stack, SIGKILL in {DUMP_GRACE_S}s"
            )
            actions += [Log(logging.WARNING, message), SendSignal(old.pid, WorkerSignal.DUMP_STACK)]
        else:
            slot.active = None
            old.stopping = True  # SIGKILLed right away: no kill deadline
            actions.append(Kill(old.pid))
            actions += self._crash(slot_id, f"{self._name(old)} hung: SIGKILLed")
        return actions

    def _successor_failed(
        self, slot_id: int, generation: int, why: str, exit_code: int | None
    ) -> list[Action]:
        what = f"new worker for slot {slot_id} (generation {generation}) {why}"
        if self._state is State.STARTING and exit_code in FATAL_WORKER_EXITS:
            code = ExitCode(exit_code)
            return self._stop(f"{what}: {code.name} at first start is fatal", fast=True, code=code)
        if self._state is State.RELOADING and generation == self._generation:
            self._state = State.RUNNING
            self._generation, self._target = self._stable_generation, self._stable_target
            message = f"{what}: reload abandoned, generation {self._generation} keeps serving"
            return [Log(logging.ERROR, message), Notify("READY=1")]
        return self._crash(slot_id, what, counts=self._slots[slot_id].active is None)

    def _crash(self, slot_id: int, what: str, *, counts: bool = True) -> list[Action]:
        delay_s = self._policy.record(slot_id, self._now, counts=counts)
        if self._policy.exhausted(self._now):
            budget = f"{self.settings.crash_budget} in {self.settings.crash_window_s}s"
            return self._stop(
                f"{what}; crash budget ({budget}) spent", fast=False, code=ExitCode.CRASH_BUDGET
            )
        self._slots[slot_id].not_before = self._now + delay_s
        return [Log(logging.WARNING, f"{what}; next worker for slot {slot_id} in {delay_s:.1f}s")]

    def _stop(self, why: str, *, fast: bool, code: ExitCode = ExitCode.OK) -> list[Action]:
        actions: list[Action] = [Log(logging.ERROR if code else logging.INFO, why)]
        if self._state is not State.STOPPING:
            self._state = State.STOPPING
            self._exit_code = code
            self._slots.clear()
            actions.append(Notify("STOPPING=1"))
        self._fast = self._fast or fast
        for worker in self._procs.values():
            if worker.stopping and worker.kill_at is None:
                continue  # already SIGKILLed
            if fast:
                actions.append(self._tell_stop(worker, WorkerSignal.QUIT))
            elif not worker.stopping:
                actions.append(self._tell_stop(worker, WorkerSignal.STOP))
        return actions

    def _tell_stop(self, worker: Worker, signum: int) -> SendSignal:
        """Detached ``worker`` must exit: signal it and arm its SIGKILL deadline."""
        fast = signum == WorkerSignal.QUIT
        deadline = self._now + (FAST_KILL_S if fast else self.settings.graceful_timeout_s)
        worker.stopping = True
        worker.kill_at = deadline if worker.kill_at is None else min(worker.kill_at, deadline)
        return SendSignal(worker.pid, signum)

    def _claim(self, slot_id: int, generation: int) -> Slot:
        slot = self._slots.get(slot_id)
        if slot is None or slot.spawning != generation:
            raise SupervisorUsageError(f"no Spawn({slot_id}, {generation}) is pending")
        slot.spawning = None
        return slot

    def _wants_spawn(self, slot_id: int, slot: Slot) -> bool:
        """Whether the slot needs a successor and nothing is already starting for it."""
        if slot_id >= self._target or slot.successor is not None or slot.spawning is not None:
            return False
        old = slot.active
        return old is None or old.generation < self._generation or old.recycle_reason is not None

    def _next_lifetime(self) -> Worker | None:
        """The worker whose max lifetime replacement comes next (only while RUNNING)."""
        if self._state is not State.RUNNING:
            return None
        return next_lifetime(self._slots.values(), self.settings)

    def _reconcile(self) -> list[Action]:
        """Move the slots towards the target: the replacement primitive lives here."""
        actions: list[Action] = []
        in_range = [self._slots.setdefault(i, Slot()) for i in range(self._target)]
        if self._state is not State.RUNNING and all(
            s.active is not None and s.active.generation >= self._generation and s.successor is None
            for s in in_range
        ):
            self._state = State.RUNNING
            self._stable_generation, self._stable_target = self._generation, self._target
            message = f"generation {self._generation} READY: {self._target} workers"
            actions += [Log(logging.INFO, message), Notify("READY=1")]
        for slot_id, slot in sorted(self._slots.items()):
            new = slot.successor
            if new is not None and (slot_id >= self._target or new.generation != self._generation):
                slot.successor = None
                actions.append(self._tell_stop(new, WorkerSignal.RETIRE))
            # Extra slots keep serving until a reload is over: capacity never drops mid-swap.
            old = slot.active
            if old is not None and slot_id >= self._target and self._state is not State.RELOADING:
                slot.active = None
                actions.append(Log(logging.INFO, f"retiring {self._name(old)}: fewer workers"))
                actions.append(self._tell_stop(old, WorkerSignal.RETIRE))
            if slot_id >= self._target and slot.idle():
                del self._slots[slot_id]
                self._policy.forget(slot_id)
            elif self._wants_spawn(slot_id, slot) and self._now >= slot.not_before:
                slot.spawning = self._generation
                self._spawns_in_flight += 1
                actions.append(Spawn(slot_id, self._generation))
        return actions

    def _finish(self, actions: list[Action]) -> list[Action]:
        """Common tail of every event: reconcile, exit when done, report status changes."""
        if self._state in (State.STARTING, State.RUNNING, State.RELOADING):
            actions += self._reconcile()
        elif not self._procs and not self._spawns_in_flight:
            self._state = State.EXITED
            code = self._exit_code
            return [*actions, Log(logging.INFO, f"all workers gone: exit {code}"), Exit(code)]
        if self._state is State.STOPPING:
            status = f"STATUS=stopping, {len(self._procs)} workers left"
        else:
            # Count the workers that are what the server should be: in range, current generation.
            ready = sum(
                s.active is not None and s.active.generation >= self._generation
                for i, s in self._slots.items()
                if i < self._target
            )
            status = f"STATUS={ready}/{self._target} workers ready, generation {self._generation}"
        if status != self._status:
            self._status = status
            actions.append(Notify(status))
        return actions

    def _name(self, worker: Worker) -> str:
        return f"worker {worker.pid} (slot {worker.slot}, generation {worker.generation})"
