"""What happens to a worker that reaches a limit or misses a timer.

``state.py`` runs the machine and judges failures (a crash of a slot, an abandoned
reload, a spent crash budget); ``policy.py`` says when each timer fires. This module is
the part in between: given the pool and the time, it detaches, retires, dumps or marks
the workers concerned and returns the actions that follow, and it hands the workers that
*failed* (a successor never READY, a worker hung) back to ``state.py`` to be judged.
Like the rest of the state machine it does no I/O and reads no clock.

Limits keep their numbers (lifecycle.py, "Limits"): a replacement for a limit starts
early, so that the successor is READY about when the limit is reached, and a worker
LIMIT_SLACK (10 %) past its limit takes no new work even if its successor is not READY
(then the slot serves nothing until it is: siblings and the kernel's accept queue, which
the successor inherits, carry the load; a short dip beats an unbounded overrun).

- Max requests: the worker sends RECYCLE early (its own boot time times its request
  rate) and stops accepting at the limit + 10 % by itself; here it is a plain request.
- Max lifetime: the successor starts at READY + lifetime - expected boot time (the
  slowest of the last few spawn-to-READY times; policy.py). A worker still active at
  READY + lifetime + 10 % (one waiting its turn, or whose successor boots slowly) is
  retired then: it is retired by lifetime + 10 % (while RUNNING; a reload replaces it).
- Max memory: the loop samples every second. The first sample over the limit starts
  the replacement (the worker stays over it for about one boot time). A later sample
  that finds it more than 10 % over with its successor still not READY (retire_now)
  retires it then: it is over the limit + 10 % for at most about a second.
- Heartbeat: a worker silent for worker_timeout_s - dump_lead_s gets DUMP_STACK (its
  stack is logged first) and its successor is spawned at once. The successor takes its
  place as soon as it is READY; the silent worker is SIGKILLed (not retired: its loop
  cannot drain) when its silence reaches worker_timeout_s, and charged to the crash
  budget as hung. So a new worker serves within the timeout, plus whatever part of its
  boot exceeds dump_lead_s, and the SIGKILL never cuts the stack dump short: it comes
  dump_lead_s after DUMP_STACK even when the successor is READY in milliseconds. A
  worker that speaks again before its successor is READY is still replaced, gracefully
  (the successor is starting already); once the successor is READY it is written off.
- Ready timeout: a successor of the current generation not READY within
  ready_timeout_s is SIGKILLed and has failed. An obsolete one (an older generation) is
  retired by the pool's reconcile instead.
"""

from __future__ import annotations

import logging

from corral.lifecycle import WorkerSignal
from corral.supervisor.events import Action, Kill, Log, SendSignal
from corral.supervisor.policy import (
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


def recycle(
    pool: Pool, worker: Worker, reason: str, *, retire_now: bool, now: float
) -> list[Action]:
    """``worker``, the active worker of its slot, asked to be (or should be) replaced.

    Marks it so that its slot wants a successor. With ``retire_now`` (more than 10 % over
    a limit) it is retired at once, but only if its replacement was under way before this
    request: a successor always gets a chance (a memory sample, a second) to take over.
    One dumped for silence is left to the heartbeat timer.
    """
    actions: list[Action] = []
    under_way = worker.recycle_reason is not None
    if not under_way:
        worker.recycle_reason = reason
        actions.append(Log(logging.INFO, f"{describe(worker)} will be replaced: {reason}"))
    if retire_now and under_way and worker.dumped_at is None:
        slot = pool.slots[worker.slot]
        why = f"{reason}, more than 10% over the limit: not waiting for its successor"
        actions += pool.retire_active(slot, why, now)
    return actions


def check_lifetimes(pool: Pool, settings: SupervisorSettings, now: float) -> list[Action]:
    """Start the next lifetime replacement when it is due, and retire every active worker
    past its lifetime + 10 %. Call on Tick while RUNNING only."""
    actions: list[Action] = []
    boot_s = pool.expected_boot_s()
    oldest = pool.next_lifetime()
    if oldest is not None and now >= lifetime_deadline(oldest, settings, boot_s):
        oldest.recycle_reason = "max lifetime reached"
        lead_s = lifetime_lead_s(settings, boot_s)
        message = (
            f"{describe(oldest)} reached its max lifetime less {lead_s:.2f}s"
            " (its successor's expected boot time): starting the successor"
        )
        actions.append(Log(logging.INFO, message))
    for slot in pool.past_lifetime_limit(now):
        why = "max lifetime + 10% passed before its successor was READY"
        actions += pool.retire_active(slot, why, now)
    return actions


def lifetime_deadlines(pool: Pool, settings: SupervisorSettings) -> list[float]:
    """When ``check_lifetimes`` would act next: the next lifetime replacement's start and
    every active worker's lifetime + 10 %. Call while RUNNING only, as for that check."""
    oldest = pool.next_lifetime()
    times = pool.lifetime_limits()
    if oldest is not None:
        times.append(lifetime_deadline(oldest, settings, pool.expected_boot_s()))
    return times


def ready_timed_out(
    slot: Slot, generation: int, settings: SupervisorSettings, now: float
) -> Worker | None:
    """Detach and return the slot's successor of ``generation`` if it is still not READY
    at its ready deadline; the caller SIGKILLs it and judges the failure."""
    new = slot.successor
    if new is None or new.generation != generation or now < ready_deadline(new, settings):
        return None
    slot.successor = None
    new.stopping = True  # SIGKILLed right away: no kill deadline
    return new


def check_heartbeat(
    slot: Slot, settings: SupervisorSettings, now: float
) -> tuple[list[Action], Worker | None]:
    """Act on the silence of the slot's active worker.

    Returns:
        The actions, and the worker if it is hung: silent since its stack dump until its
        worker timeout. It is then detached and stopping; the caller SIGKILLs it and
        charges the crash.
    """
    old = slot.active
    due = None if old is None else heartbeat_deadline(old, settings)
    if old is None or due is None or now < due:
        return [], None
    if old.dumped_at is not None:
        slot.active = None
        old.stopping = True  # SIGKILLed right away: no kill deadline
        return [], old
    old.dumped_at = now
    silent = now - old.last_beat
    # The slot now wants a successor: state.py's reconcile spawns it in this same event.
    old.recycle_reason = old.recycle_reason or f"no heartbeat for {silent:.1f}s"
    message = (
        f"{describe(old)} sent no heartbeat for {silent:.1f}s: dumping its stack and"
        f" starting its successor; SIGKILL once that is READY, or in"
        f" {dump_lead_s(settings):.1f}s"
    )
    return [Log(logging.WARNING, message), SendSignal(old.pid, WorkerSignal.DUMP_STACK)], None


def write_off_hung(
    slot: Slot, old: Worker, settings: SupervisorSettings, now: float
) -> tuple[str, Kill | None]:
    """Detach the slot's silent active worker, whose successor is READY.

    It is SIGKILLed at the end of its worker timeout (``kill_at``, see Pool.kill_overdue),
    or now if that has passed (or a reload disabled the timeout).

    Returns:
        What happened, for the crash the caller charges, and the Kill to send now if any.
    """
    slot.active = None
    old.stopping = True
    due = heartbeat_deadline(old, settings)
    silent = now - old.last_beat
    what = f"{describe(old)} hung (no heartbeat for {silent:.1f}s); its successor is READY"
    if due is None or due <= now:
        return f"{what}; SIGKILL", Kill(old.pid)
    old.kill_at = due
    return f"{what}; SIGKILL at its worker timeout, in {due - now:.1f}s", None
