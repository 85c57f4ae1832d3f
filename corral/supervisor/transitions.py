"""The master's states and the transitions between them, as checked data.

``state.py`` decides *when* a trigger happens (every slot served, a signal, a failed
successor); this module says what each trigger may do from each state: the new state and
the sd_notify line that announces it. ``Supervisor`` changes its state only through
``transition``, so a change the table does not allow is an internal error, raised at
once instead of becoming a master that, say, reloads while stopping. The layout follows
h11's ``_state.py``: the table is the rules, and the prose below is kept equal to it
by tests/supervisor/test_transitions.py.

Like the rest of the state machine it imports no I/O, clock or signal module.
"""

# Transition table (rendered by ``render_table``; a (state, trigger) pair not listed
# cannot happen, and ``transition`` raises SupervisorInternalError for it):
#
#   state      trigger    new state  notify
#   STARTING   ADOPT      RELOADING  -
#   STARTING   SETTLE     RUNNING    READY=1
#   STARTING   RELOAD     STARTING   -
#   STARTING   REEXEC     STARTING   RELOADING=1
#   STARTING   FATAL      STOPPING   STOPPING=1
#   STARTING   STOP       STOPPING   STOPPING=1
#   STARTING   FAST_STOP  STOPPING   STOPPING=1
#   RUNNING    RELOAD     RELOADING  RELOADING=1
#   RUNNING    REEXEC     RUNNING    RELOADING=1
#   RUNNING    STOP       STOPPING   STOPPING=1
#   RUNNING    FAST_STOP  STOPPING   STOPPING=1
#   RELOADING  SETTLE     RUNNING    READY=1
#   RELOADING  ABANDON    RUNNING    READY=1
#   RELOADING  RELOAD     RELOADING  -
#   RELOADING  REEXEC     RELOADING  RELOADING=1
#   RELOADING  STOP       STOPPING   STOPPING=1
#   RELOADING  FAST_STOP  STOPPING   STOPPING=1
#   STOPPING   STOP       STOPPING   -
#   STOPPING   FAST_STOP  STOPPING   -
#   STOPPING   REAPED     EXITED     -
#
# Triggers (what makes ``state.py`` fire each one):
#
#   ADOPT      built with ``adopted=`` workers, one of them READY (the re-exec hand-over;
#              RELOADING=1 was sent by the master before the exec)
#   SETTLE     every slot has an active worker of the current generation
#   ABANDON    a successor of the generation being reloaded to failed: the previous
#              generation and worker count are restored
#   RELOAD     HUP or ReloadRequested (a reload during STARTING restarts the first start)
#   REEXEC     USR2: the machine returns ReExec; if the exec works this machine is gone
#   FATAL      a successor exits before READY with a code in FATAL_WORKER_EXITS (fast)
#   STOP       TERM or INT while live; the crash budget is spent
#   FAST_STOP  QUIT; TERM or INT again while stopping
#   REAPED     the last worker is reaped with no Spawn in flight (the Exit action)
#
# "Live" is STARTING, RUNNING or RELOADING: in STOPPING nothing is spawned and HUP, TTIN,
# TTOU, USR2 and reload requests are ignored before they become triggers; in EXITED
# every event is ignored, so EXITED has no row.

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    """Where the master is in its life (see the transition table above)."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    EXITED = "exited"


#: The states in which the master spawns workers and acts on reloads and re-exec.
LIVE = frozenset({State.STARTING, State.RUNNING, State.RELOADING})


class Trigger(enum.Enum):
    """What can move the master from one state to another (see "Triggers" above)."""

    ADOPT = enum.auto()
    SETTLE = enum.auto()
    ABANDON = enum.auto()
    RELOAD = enum.auto()
    REEXEC = enum.auto()
    FATAL = enum.auto()
    STOP = enum.auto()
    FAST_STOP = enum.auto()
    REAPED = enum.auto()


@dataclass(frozen=True, slots=True)
class Transition:
    """Where a trigger leads, and the sd_notify line that says so (None: nothing new)."""

    state: State
    notify: str | None = None


class SupervisorInternalError(RuntimeError):
    """A bug in the state machine: a change of state that the table does not allow."""


def _rows() -> dict[tuple[State, Trigger], Transition]:
    s, t = State, Trigger
    stopping = Transition(s.STOPPING, "STOPPING=1")
    table = {
        (s.STARTING, t.ADOPT): Transition(s.RELOADING),
        (s.STARTING, t.SETTLE): Transition(s.RUNNING, "READY=1"),
        (s.STARTING, t.RELOAD): Transition(s.STARTING),
        (s.STARTING, t.FATAL): stopping,
        (s.RUNNING, t.RELOAD): Transition(s.RELOADING, "RELOADING=1"),
        (s.RELOADING, t.SETTLE): Transition(s.RUNNING, "READY=1"),
        (s.RELOADING, t.ABANDON): Transition(s.RUNNING, "READY=1"),
        (s.RELOADING, t.RELOAD): Transition(s.RELOADING),
        (s.STOPPING, t.STOP): Transition(s.STOPPING),
        (s.STOPPING, t.FAST_STOP): Transition(s.STOPPING),
        (s.STOPPING, t.REAPED): Transition(s.EXITED),
    }
    for live in LIVE:
        # systemd (Type=notify-reload) hears READY=1 from the new master once it serves.
        table[live, t.REEXEC] = Transition(live, "RELOADING=1")
        table[live, t.STOP] = table[live, t.FAST_STOP] = stopping
    states, triggers = list(State), list(Trigger)
    return {
        key: table[key]
        for key in sorted(table, key=lambda k: (states.index(k[0]), triggers.index(k[1])))
    }


#: (state, trigger) -> where it leads. Rows in State order, then Trigger order.
TRANSITIONS: dict[tuple[State, Trigger], Transition] = _rows()


def transition(state: State, trigger: Trigger) -> Transition:
    """Where ``trigger`` leads from ``state``.

    Raises:
        SupervisorInternalError: the table has no such row (a bug in ``state.py``).
    """
    step = TRANSITIONS.get((state, trigger))
    if step is None:
        raise SupervisorInternalError(f"no transition from {state.name} on {trigger.name}")
    return step


def render_table() -> list[str]:
    """The table as the comment above shows it, one line per row, header first."""
    rows = [("state", "trigger", "new state", "notify")]
    rows += [
        (state.name, trigger.name, step.state.name, step.notify or "-")
        for (state, trigger), step in TRANSITIONS.items()
    ]
    return [f"{a:<10} {b:<10} {c:<10} {d}" for a, b, c, d in rows]
