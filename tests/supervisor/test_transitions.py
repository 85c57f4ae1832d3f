"""The transition table: its prose agrees with its data, and it is enforced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.supervisor import transitions
from corral.supervisor.policy import SupervisorSettings
from corral.supervisor.state import Supervisor
from corral.supervisor.transitions import (
    LIVE,
    TRANSITIONS,
    State,
    SupervisorInternalError,
    Trigger,
    render_table,
    transition,
)

SOURCE = Path(transitions.__file__).read_text()


def comment_block(title: str) -> list[str]:
    """The indented lines of the comment paragraph that follows the line starting ``title``."""
    lines = SOURCE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {title}"))
    block: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            block.append(line.removeprefix("#   "))
        elif block:
            break  # the blank comment line after the block
    return block


def test_the_comment_shows_the_table() -> None:
    """The prose table at the top of transitions.py is the data, row for row."""
    assert comment_block("Transition table") == render_table()


def test_the_comment_explains_every_trigger() -> None:
    """Every trigger has a line in the "Triggers" legend, in the enum's order."""
    names = [m.group(1) for line in comment_block("Triggers") if (m := re.match(r"(\w+) ", line))]
    assert names == [trigger.name for trigger in Trigger]


def test_every_state_but_exited_can_be_left_and_every_state_reached() -> None:
    """No dead row: each state has a way in (but STARTING, the first) and EXITED no way out."""
    sources = {state for state, _ in TRANSITIONS}
    targets = {step.state for step in TRANSITIONS.values()}
    assert sources == set(State) - {State.EXITED}
    assert targets | {State.STARTING} == set(State)


def test_reexec_only_from_live_states() -> None:
    """USR2 is a trigger only while live, and never changes the state by itself."""
    rows = {
        state: step for (state, trigger), step in TRANSITIONS.items() if trigger is Trigger.REEXEC
    }
    assert set(rows) == LIVE
    assert all(step.state is state for state, step in rows.items())


def test_a_transition_not_in_the_table_is_an_internal_error() -> None:
    """transition() raises for a pair the table does not list."""
    assert transition(State.RUNNING, Trigger.RELOAD).state is State.RELOADING
    with pytest.raises(SupervisorInternalError, match="no transition from STOPPING on RELOAD"):
        transition(State.STOPPING, Trigger.RELOAD)


def test_the_machine_changes_state_only_through_the_table() -> None:
    """A state change the table does not allow raises inside the machine, too."""
    sup = Supervisor(SupervisorSettings(), now=0.0)
    with pytest.raises(SupervisorInternalError):
        sup._enter(Trigger.REAPED)  # STARTING cannot exit without stopping first
    assert sup.state is State.STARTING
