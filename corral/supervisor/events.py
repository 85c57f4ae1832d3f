"""The vocabulary between the master's loop and its state machine: events and actions.

Events are what the loop observed; actions are what the state machine wants done. Both
are frozen, slotted dataclasses: values, not mailboxes. The loop turns every observation
into exactly one event and executes every action in list order; ``state.py`` documents
which event leads to which action.

Rules the loop must follow (``Supervisor.handle`` enforces the first one):

- a ``Spawn`` is answered by ``Spawned`` or ``SpawnFailed`` before any other event;
- every other event happens "at the last Tick": feed ``Tick(now)`` first after waking up;
- ``Exit`` is the last action ever returned; nothing after it is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from corral.supervisor.policy import SupervisorSettings

# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signal reached the master (SIGHUP only when the loop does not re-read config)."""

    signum: int


@dataclass(frozen=True, slots=True)
class ReloadRequested:
    """A new generation is wanted (HUP after the config was re-read, or the file watcher)."""

    reason: str
    #: The new worker count, or None to keep the current one.
    workers: int | None = None
    #: Settings from the re-read config (timeouts, lifetime), or None to keep the current.
    settings: SupervisorSettings | None = None


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """The worker imported the app, finished lifespan startup and is listening."""

    pid: int


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """The worker's event loop is turning (sent from inside the loop, four times a second)."""

    pid: int


@dataclass(frozen=True, slots=True)
class WorkerRecycleRequested:
    """The worker (max requests) or the loop (memory sampled) wants the worker replaced."""

    pid: int
    reason: str
    #: Past its limit plus LIMIT_SLACK: if its replacement is already under way, retire it
    #: now, without waiting for its successor.
    retire_now: bool = False


@dataclass(frozen=True, slots=True)
class ChildExited:
    """A decoded waitpid status: exactly one of exit_code and signal is set."""

    pid: int
    exit_code: int | None
    signal: int | None


@dataclass(frozen=True, slots=True)
class Tick:
    """The time now (monotonic seconds); it never goes backwards for the machine."""

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


# -- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork a worker for ``slot``, then feed Spawned (or SpawnFailed) before anything else."""

    slot: int
    generation: int


@dataclass(frozen=True, slots=True)
class SendSignal:
    """Send ``signum`` to ``pid``; a pid already gone is not an error (it will be reaped)."""

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
    """A line for the master's log (``corral.error``), at a ``logging`` level."""

    level: int
    message: str


@dataclass(frozen=True, slots=True)
class ReopenLogs:
    """Reopen the master's own log files (workers get REOPEN_LOGS separately)."""


@dataclass(frozen=True, slots=True)
class ReExec:
    """Re-exec the master in place, handing every live worker to the new master.

    The loop passes the listening sockets and the workers (``Supervisor.workers()``) to
    the new program; it builds its machine with ``adopted=``. If the exec fails the loop
    says so and this machine carries on as if nothing happened.
    """


@dataclass(frozen=True, slots=True)
class Exit:
    """Every worker is reaped: exit the master with ``code``."""

    code: int


Action: TypeAlias = Spawn | SendSignal | Kill | Notify | Log | ReopenLogs | ReExec | Exit


# -- views ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A read-only view of one worker process, for status pages and the re-exec hand-off."""

    slot: int
    generation: int
    ready: bool
    spawned_at: float
    stopping: bool


@dataclass(frozen=True, slots=True)
class AdoptedWorker:
    """A worker a previous master (same pid, before a re-exec) left running.

    A READY, non-stopping one keeps serving in its slot until the new master's own
    generation replaces it; any other is told to stop at once.
    """

    pid: int
    slot: int
    generation: int
    ready: bool
