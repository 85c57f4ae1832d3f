"""When the master acts: its settings, the per-worker timers, crash backoff and budget.

``state.py`` decides *what* happens (transitions and actions); this module answers *when*:
the deadline of each timer a worker can hit, which worker's max lifetime comes next, how
long a slot waits after a failure and when the server has crashed too often. Everything
is pure bookkeeping: time is passed in (``now``, monotonic seconds), nothing reads a clock.

Timers, each with one deadline function so that acting on a Tick and ``next_deadline()``
can never disagree:

- ready: a successor must report READY within ``ready_timeout_s`` of its spawn;
- heartbeat: an active worker silent for ``worker_timeout_s`` less ``dump_lead_s`` (one
  second) is asked for a stack dump and its successor is started; unless it speaks again
  it is SIGKILLed when the silence reaches ``worker_timeout_s`` (the dump's time plus
  ``dump_lead_s``), as the slot's active worker or, once its successor is READY, as a
  stopping one whose ``kill_at`` is that same time;
- kill: a stopping worker is SIGKILLed at its ``kill_at``;
- lifetime: an active worker READY for ``max_worker_lifetime_s`` less the expected boot
  time of its successor gets one, so that the swap happens when the lifetime ends;
- lifetime limit: an active worker READY for ``max_worker_lifetime_s`` plus LIMIT_SLACK
  (10 %) is retired whether its successor is READY or not.

Expected boot time: the slowest of the last ``BOOT_SAMPLES`` spawn-to-READY times the
master saw (the pool keeps them). The slowest, not the mean: starting a successor a little
early costs a few seconds of lifetime, starting it late makes the old worker overrun.

Crash accounting answers two questions with two mechanisms:

- *When may this slot try again?* Each slot keeps a streak of consecutive failures. The k-th
  failure in a row (k counted from 0) waits ``backoff_base_s * 2**k``, capped at
  ``backoff_max_s``. A slot whose most recent worker stayed READY for ``stable_after_s``
  starts a new streak at its next failure, so one crash a day never waits long.
- *Should the whole server give up?* Every counted failure is remembered for
  ``crash_window_s``; more than ``crash_budget`` of them inside the window means the
  service cannot keep workers alive, and the master stops with ``ExitCode.CRASH_BUDGET``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from corral.lifecycle import LIMIT_SLACK

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Time between asking a silent worker for a stack dump and the end of its
#: --worker-timeout, when it is SIGKILLed. faulthandler writes in milliseconds even with
#: the event loop blocked; one second leaves room for a slow stderr pipe. The successor
#: starts at the dump, so a hung worker is replaced within the timeout plus whatever part
#: of the successor's boot exceeds this second (a timeout under two seconds dumps at half).
DUMP_GRACE_S = 1.0

#: How many recent spawn-to-READY times the expected boot time is the slowest of. Five
#: follows a change in boot time (a deploy, a busier machine) within one rolling restart
#: of a typical pool, and keeps one slow outlier from counting for long.
BOOT_SAMPLES = 5

#: Time a fast stop (QUIT, or a second TERM/INT) gives workers before SIGKILL: enough to
#: flush a log line, too short to drain anything (that is what "fast" means).
FAST_KILL_S = 1.0

#: Shortest time a worker must stay READY before its slot's backoff streak is forgiven.
#: Ten seconds outlasts a typical "imports fine, dies on the first request" loop; a larger
#: ``backoff_max_s`` raises it, so a slot must survive at least one full backoff period.
MIN_STABLE_S = 10.0

#: Exponent cap for the backoff: ``2.0**64`` seconds is already absurd, and a float power
#: without a cap would overflow after about a thousand consecutive failures.
MAX_BACKOFF_EXPONENT = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorSettings:
    """What the state machine needs from the config. All times are monotonic seconds."""

    workers: int = 1
    #: Drain deadline after STOP or RETIRE, then SIGKILL.
    graceful_timeout_s: float = 30.0
    #: Heartbeat silence after which a READY worker is killed; None or 0 disables it.
    worker_timeout_s: float | None = 30.0
    #: How long a new worker may take to report READY (app import + lifespan startup).
    ready_timeout_s: float = 60.0
    #: Replace a worker once it has been READY this long; None or 0 disables it.
    max_worker_lifetime_s: float | None = None
    #: More than this many crashes within ``crash_window_s`` stops the server (exit 6).
    crash_budget: int = 5
    crash_window_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(slots=True, eq=False)
class Worker:
    """The master's record of one worker process (mutable; ``state.py`` owns it)."""

    pid: int
    slot: int
    generation: int
    spawned_at: float
    last_beat: float
    ready_at: float | None = None
    #: Set when the worker should be replaced (recycle request, max lifetime, silence).
    recycle_reason: str | None = None
    #: When DUMP_STACK was sent for heartbeat silence; cleared by the next heartbeat (the
    #: successor started at the dump still replaces it, gracefully then).
    dumped_at: float | None = None
    #: We told it to exit: its exit is expected and it belongs to no slot any more.
    stopping: bool = False
    #: SIGKILL deadline of a stopping worker; None once SIGKILL was sent.
    kill_at: float | None = None


@dataclass(slots=True)
class Slot:
    """One of the ``target`` places a worker serves in (see state.py, "Slots")."""

    active: Worker | None = None
    successor: Worker | None = None
    #: Generation of a Spawn issued for this slot and not yet answered.
    spawning: int | None = None
    #: Backoff: no Spawn for this slot before this time.
    not_before: float = 0.0

    def idle(self) -> bool:
        """Nothing serves, starts or is being spawned here."""
        return self.active is None and self.successor is None and self.spawning is None


def ready_deadline(worker: Worker, settings: SupervisorSettings) -> float:
    """When a successor that is still not READY has failed."""
    return worker.spawned_at + settings.ready_timeout_s


def dump_lead_s(settings: SupervisorSettings) -> float:
    """How long before the end of ``worker_timeout_s`` a silent worker is dumped (call only
    when the timeout is enabled)."""
    assert settings.worker_timeout_s
    return min(DUMP_GRACE_S, settings.worker_timeout_s / 2)


def heartbeat_deadline(worker: Worker, settings: SupervisorSettings) -> float | None:
    """When an active worker is due for a stack dump, or (once dumped) for SIGKILL."""
    if not settings.worker_timeout_s:
        return None
    lead_s = dump_lead_s(settings)
    if worker.dumped_at is None:
        return worker.last_beat + settings.worker_timeout_s - lead_s
    # The dump's time, not the last beat: a dump the loop sent late still gets its grace.
    return worker.dumped_at + lead_s


def next_lifetime(
    slots: Iterable[Slot], settings: SupervisorSettings, expected_boot_s: float
) -> Worker | None:
    """The worker whose max lifetime ends first, if a lifetime replacement may start now.

    Lifetime replacements roll one at a time, oldest first, and only while no other
    replacement is under way: workers started together do not all restart together, and
    never more than one extra worker runs because of them. A worker that waits its turn
    past its lifetime is bounded by ``lifetime_limit``.
    """
    if not settings.max_worker_lifetime_s:
        return None
    actives: list[Worker] = []
    for slot in slots:
        busy = slot.successor is not None or slot.spawning is not None
        if busy or (slot.active is not None and slot.active.recycle_reason is not None):
            return None
        if slot.active is not None:
            actives.append(slot.active)
    return min(
        actives,
        key=lambda worker: lifetime_deadline(worker, settings, expected_boot_s),
        default=None,
    )


def lifetime_lead_s(settings: SupervisorSettings, expected_boot_s: float) -> float:
    """How long before its lifetime ends a worker's successor is started.

    The expected boot time, but at most half the lifetime: one pathological boot must not
    make every worker serve only a sliver of its lifetime.
    """
    assert settings.max_worker_lifetime_s is not None
    return min(expected_boot_s, settings.max_worker_lifetime_s / 2)


def lifetime_deadline(
    worker: Worker, settings: SupervisorSettings, expected_boot_s: float
) -> float:
    """When an active worker's successor should start, to be READY as its lifetime ends
    (call only when max lifetime is enabled)."""
    # Active workers are READY by definition; ready_at is None only for successors.
    assert worker.ready_at is not None
    assert settings.max_worker_lifetime_s is not None
    lead_s = lifetime_lead_s(settings, expected_boot_s)
    return worker.ready_at + settings.max_worker_lifetime_s - lead_s


def lifetime_limit(worker: Worker, settings: SupervisorSettings) -> float:
    """When an active worker is retired even without a READY successor (max lifetime plus
    LIMIT_SLACK; call only when max lifetime is enabled)."""
    assert worker.ready_at is not None
    assert settings.max_worker_lifetime_s is not None
    lifetime_s = settings.max_worker_lifetime_s
    return worker.ready_at + lifetime_s + lifetime_s * LIMIT_SLACK


@final
class CrashPolicy:
    """Backoff per slot and a sliding-window crash budget (see the module docstring)."""

    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.stable_after_s = max(MIN_STABLE_S, settings.backoff_max_s)
        # slot -> consecutive failures so far (absent means 0).
        self._streaks: dict[int, int] = {}
        # slot -> when its latest worker became READY, consumed by the next failure.
        self._ready_at: dict[int, float] = {}
        # Times of the counted failures still inside the window, oldest first.
        self._recent: deque[float] = deque()

    def note_ready(self, slot: int, now: float) -> None:
        """Record that a worker of ``slot`` reported READY at ``now``."""
        self._ready_at[slot] = now

    def record(self, slot: int, now: float, *, counts: bool = True) -> float:
        """Record a failure in ``slot`` and return how long the slot must wait to respawn.

        Args:
            counts: whether the failure is charged to the crash budget. A replacement that
                failed while the old worker keeps serving is backed off but not charged:
                the service is still up, so it is no reason to stop the server.

        Call ``exhausted`` right after, with the same ``now``.
        """
        # The READY time is used once: a slot that keeps failing without ever becoming
        # READY again must not be forgiven twice for the same good run.
        ready_at = self._ready_at.pop(slot, None)
        if ready_at is not None and now - ready_at >= self.stable_after_s:
            self._streaks[slot] = 0
        streak = self._streaks.get(slot, 0)
        self._streaks[slot] = streak + 1
        if counts:
            self._recent.append(now)
        delay = self.settings.backoff_base_s * 2.0 ** min(streak, MAX_BACKOFF_EXPONENT)
        return min(delay, self.settings.backoff_max_s)

    def exhausted(self, now: float) -> bool:
        """Whether more than ``crash_budget`` counted failures happened within the window."""
        while self._recent and self._recent[0] <= now - self.settings.crash_window_s:
            self._recent.popleft()
        return len(self._recent) > self.settings.crash_budget

    def forget(self, slot: int) -> None:
        """Drop the history of a slot that no longer exists (the worker count shrank)."""
        self._streaks.pop(slot, None)
        self._ready_at.pop(slot, None)
