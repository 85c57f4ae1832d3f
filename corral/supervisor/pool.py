"""The master's books: every worker process not yet reaped, and the slots they serve in.

``state.py`` decides what happens; this module keeps the records it decides about and
answers the questions it asks of them ("is every slot served by the current
generation?", "whose SIGKILL deadline has passed?"). Like the state machine it does no
I/O and reads no clock: ``now`` is passed in, and the only things it produces are
actions for the state machine to return.

Invariants (see "Slots" in state.py): a worker record is in ``procs`` from its Spawned
(or adoption) until its exit is reaped; it is in at most one slot, as ``active`` or as
``successor``; a record in no slot is stopping and has a SIGKILL deadline (``kill_at``)
until it has been sent SIGKILL.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import final

from corral.lifecycle import WorkerSignal
from corral.supervisor.events import (
    Action,
    AdoptedWorker,
    Kill,
    Log,
    SendSignal,
    Spawn,
    WorkerInfo,
)
from corral.supervisor.policy import (
    BOOT_SAMPLES,
    FAST_KILL_S,
    Slot,
    SupervisorSettings,
    Worker,
    heartbeat_deadline,
    lifetime_limit,
    next_lifetime,
    ready_deadline,
)


def describe(worker: Worker) -> str:
    """How the log names a worker (tests and operators grep for this shape)."""
    return f"worker {worker.pid} (slot {worker.slot}, generation {worker.generation})"


@final
class Pool:
    """Worker records by pid and slots by number (mutable; owned by one Supervisor)."""

    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.slots: dict[int, Slot] = {}
        self.procs: dict[int, Worker] = {}
        #: Spawn actions returned and not yet answered by Spawned/SpawnFailed.
        self.spawns_in_flight = 0
        #: Spawn-to-READY times of the latest successors, oldest first.
        self._boot_times: deque[float] = deque(maxlen=BOOT_SAMPLES)

    def note_boot(self, seconds: float) -> None:
        """Record how long a successor took from its spawn to READY."""
        self._boot_times.append(seconds)

    def expected_boot_s(self) -> float:
        """The slowest recent boot (policy.py, "Expected boot time"); 0 before any READY."""
        return max(self._boot_times, default=0.0)

    def info(self) -> dict[int, WorkerInfo]:
        """Every worker process not yet reaped, by pid."""
        return {
            pid: WorkerInfo(w.slot, w.generation, w.ready_at is not None, w.spawned_at, w.stopping)
            for pid, w in self.procs.items()
        }

    def adopt(self, adopted: Iterable[AdoptedWorker], now: float) -> list[Action]:
        """Take over the workers of the master this one replaced by re-exec.

        A READY worker becomes the active worker of its slot (the first one wins if two
        claim a slot); every other one is told to stop, as it would have been.
        """
        actions: list[Action] = []
        for record in adopted:
            worker = Worker(record.pid, record.slot, record.generation, now, now)
            self.procs[record.pid] = worker
            slot = self.slots.setdefault(record.slot, Slot())
            if record.ready and slot.active is None:
                worker.ready_at = now
                slot.active = worker
                actions.append(Log(logging.INFO, f"adopted {describe(worker)}"))
            else:
                actions.append(self.tell_stop(worker, WorkerSignal.RETIRE, now))
        return actions

    def add(self, pid: int, slot_id: int, generation: int, now: float) -> Worker:
        """Record a freshly forked worker (not yet in any slot)."""
        worker = Worker(pid, slot_id, generation, now, now)
        self.procs[pid] = worker
        return worker

    def promote(self, slot: Slot, worker: Worker, now: float) -> list[Action]:
        """The slot's successor ``worker`` is READY: it becomes the active worker, and the
        one it replaces (if any is left) gets RETIRE."""
        old = slot.active
        slot.active, slot.successor = worker, None
        if old is None:
            return []
        why = old.recycle_reason or f"replaced by generation {worker.generation}"
        return [
            Log(logging.INFO, f"retiring {describe(old)}: {why}"),
            self.tell_stop(old, WorkerSignal.RETIRE, now),
        ]

    def retire_active(self, slot: Slot, why: str, now: float) -> list[Action]:
        """Detach the slot's active worker and RETIRE it; the slot then wants a successor."""
        old = slot.active
        assert old is not None
        slot.active = None
        return [
            Log(logging.INFO, f"retiring {describe(old)}: {why}"),
            self.tell_stop(old, WorkerSignal.RETIRE, now),
        ]

    def tell_stop(self, worker: Worker, signum: int, now: float) -> SendSignal:
        """Detached ``worker`` must exit: signal it and arm its SIGKILL deadline."""
        fast = signum == WorkerSignal.QUIT
        deadline = now + (FAST_KILL_S if fast else self.settings.graceful_timeout_s)
        worker.stopping = True
        worker.kill_at = deadline if worker.kill_at is None else min(worker.kill_at, deadline)
        return SendSignal(worker.pid, signum)

    def stop_all(self, *, fast: bool, now: float) -> list[Action]:
        """Tell every worker to stop: QUIT if ``fast``, else STOP to those not stopping yet."""
        actions: list[Action] = []
        for worker in self.procs.values():
            if worker.stopping and worker.kill_at is None:
                continue  # already SIGKILLed
            if fast:
                actions.append(self.tell_stop(worker, WorkerSignal.QUIT, now))
            elif not worker.stopping:
                actions.append(self.tell_stop(worker, WorkerSignal.STOP, now))
        return actions

    def kill_overdue(self, now: float) -> list[Action]:
        """SIGKILL, once, every stopping worker whose deadline has passed (a worker written
        off as hung: at the end of its --worker-timeout)."""
        actions: list[Action] = []
        for worker in self.procs.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.kill_at = None
                if worker.dumped_at is not None:
                    # Written off as hung when its successor became READY (state.py). The
                    # line says it is done, so it follows the Kill, as in state.py.
                    silent = now - worker.last_beat
                    message = f"{describe(worker)} hung (no heartbeat for {silent:.1f}s): SIGKILLed"
                    actions += [Kill(worker.pid), Log(logging.WARNING, message)]
                else:
                    message = f"{describe(worker)} did not exit in time: SIGKILL"
                    actions += [Log(logging.WARNING, message), Kill(worker.pid)]
        return actions

    def wants_spawn(self, slot_id: int, slot: Slot, target: int, generation: int) -> bool:
        """Whether the slot needs a successor and nothing is already starting for it."""
        if slot_id >= target or slot.successor is not None or slot.spawning is not None:
            return False
        old = slot.active
        return old is None or old.generation < generation or old.recycle_reason is not None

    def claim(self, slot_id: int, generation: int) -> Slot | None:
        """The slot a Spawned/SpawnFailed answers, or None if no such Spawn is pending."""
        slot = self.slots.get(slot_id)
        if slot is None or slot.spawning != generation:
            return None
        slot.spawning = None
        return slot

    def reconcile(
        self, target: int, generation: int, *, shrink: bool, now: float
    ) -> tuple[list[Action], list[int]]:
        """Retire what no longer belongs and Spawn what is missing, slot by slot.

        Successors of another generation, or in a slot beyond ``target``, are retired;
        active workers beyond ``target`` too when ``shrink``. A slot wanting a successor
        gets a Spawn once its backoff has passed.

        Returns:
            The actions, and the slots beyond ``target`` that are now gone (their crash
            history should be forgotten).
        """
        actions: list[Action] = []
        removed: list[int] = []
        for slot_id, slot in sorted(self.slots.items()):
            extra = slot_id >= target
            new = slot.successor
            if new is not None and (extra or new.generation != generation):
                slot.successor = None
                actions.append(self.tell_stop(new, WorkerSignal.RETIRE, now))
            old = slot.active
            if old is not None and extra and shrink:
                slot.active = None
                actions.append(Log(logging.INFO, f"retiring {describe(old)}: fewer workers"))
                actions.append(self.tell_stop(old, WorkerSignal.RETIRE, now))
            if extra and slot.idle():
                del self.slots[slot_id]
                removed.append(slot_id)
            elif self.wants_spawn(slot_id, slot, target, generation) and now >= slot.not_before:
                slot.spawning = generation
                self.spawns_in_flight += 1
                actions.append(Spawn(slot_id, generation))
        return actions, removed

    def current(self, target: int, generation: int) -> int:
        """How many in-range slots are served by a worker of ``generation`` or newer."""
        return sum(
            s.active is not None and s.active.generation >= generation
            for i, s in self.slots.items()
            if i < target
        )

    def status(self, target: int, generation: int, *, stopping: bool) -> str:
        """The sd_notify STATUS= line: workers left while stopping, else how many in-range
        slots the current generation serves."""
        if stopping:
            return f"STATUS=stopping, {len(self.procs)} workers left"
        ready = self.current(target, generation)
        return f"STATUS={ready}/{target} workers ready, generation {generation}"

    def settled(self, target: int, generation: int) -> bool:
        """Every in-range slot is served by ``generation`` (or newer) and starts nothing."""
        return all(
            s.active is not None and s.active.generation >= generation and s.successor is None
            for i, s in self.slots.items()
            if i < target
        )

    def deadlines(self, target: int, generation: int, *, live: bool) -> list[float]:
        """When each timer of each worker fires (only kill deadlines unless ``live``)."""
        times = [w.kill_at for w in self.procs.values() if w.kill_at is not None]
        if not live:
            return times
        for slot_id, slot in self.slots.items():
            if slot.successor is not None:
                times.append(ready_deadline(slot.successor, self.settings))
            if self.wants_spawn(slot_id, slot, target, generation):
                times.append(slot.not_before)
            if slot.active is not None:
                beat = heartbeat_deadline(slot.active, self.settings)
                if beat is not None:
                    times.append(beat)
        return times

    def next_lifetime(self) -> Worker | None:
        """The worker whose max lifetime replacement comes next, if one may start now."""
        return next_lifetime(self.slots.values(), self.settings, self.expected_boot_s())

    def past_lifetime_limit(self, now: float) -> list[Slot]:
        """Slots whose active worker has outlived ``lifetime_limit`` (when it is enabled).

        A worker dumped for heartbeat silence is left to the heartbeat timer: it is
        killed as hung, not retired.
        """
        if not self.settings.max_worker_lifetime_s:
            return []
        return [
            slot
            for slot in self.slots.values()
            if slot.active is not None
            and slot.active.dumped_at is None
            and now >= lifetime_limit(slot.active, self.settings)
        ]

    def lifetime_limits(self) -> list[float]:
        """``lifetime_limit`` of every active worker the check above would look at."""
        if not self.settings.max_worker_lifetime_s:
            return []
        return [
            lifetime_limit(slot.active, self.settings)
            for slot in self.slots.values()
            if slot.active is not None and slot.active.dumped_at is None
        ]
