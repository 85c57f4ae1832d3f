"""The package's layers, checked from the source: who may import whom.

Read with ``ast`` (nothing is imported or run), so the rules hold for every import in a
file, at module level, inside functions and under ``TYPE_CHECKING`` alike:

- ``corral/protocol/`` is the sans-I/O bottom layer: it imports nothing of corral above it;
- ``corral/workers/`` never imports ``corral/supervisor/`` (what both need, the
  master-worker contract, lives below both in ``corral/lifecycle.py``);
- the supervisor's state machine and its pure helpers import no I/O, clock or process
  module, and of corral only each other and ``corral.lifecycle``;
- the import graph has no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "corral"

#: The state machine and the modules it is made of (supervisor/state.py's theory of operation).
PURE_SUPERVISOR = ("state", "policy", "pool", "events", "transitions", "limits")

#: Modules that do I/O, read clocks or manage processes: none of them in the pure core.
IMPURE = frozenset(
    {"asyncio", "os", "selectors", "signal", "socket", "subprocess", "threading", "time"}
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` gives x and x.y)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative import"
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def corral_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The corral modules ``path`` imports (a name imported from a module counts as the
    module unless it is a module itself)."""
    return {name for name in imports(path) if name in known} - {module_name(path)}


def test_protocol_imports_nothing_of_corral_above_it() -> None:
    """protocol/ is the sans-I/O bottom: only corral.protocol.* from corral."""
    known = modules()
    for name, path in known.items():
        if name.startswith("corral.protocol"):
            above = {m for m in corral_imports(path, known) if not m.startswith("corral.protocol")}
            assert not above, f"{name} imports {sorted(above)}"


def test_workers_never_import_the_supervisor() -> None:
    """A worker knows the master only through corral.lifecycle (the pipe and signals)."""
    known = modules()
    for name, path in known.items():
        if name.startswith("corral.workers"):
            up = {m for m in corral_imports(path, known) if m.startswith("corral.supervisor")}
            assert not up, f"{name} imports {sorted(up)}"


@pytest.mark.parametrize("part", PURE_SUPERVISOR)
def test_the_state_machine_does_no_io(part: str) -> None:
    """supervisor/state.py and its helpers: no I/O, clock or process module, and of corral
    only each other and corral.lifecycle."""
    known = modules()
    path = PACKAGE / "supervisor" / f"{part}.py"
    top = {name.split(".")[0] for name in imports(path)}
    assert not top & IMPURE, f"{part}.py imports {sorted(top & IMPURE)}"
    allowed = {f"corral.supervisor.{p}" for p in PURE_SUPERVISOR} | {"corral.lifecycle"}
    others = corral_imports(path, known) - allowed
    assert not others, f"{part}.py imports {sorted(others)}"


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    """Modules that import each other, directly or around a ring, are a design smell."""
    known = modules()
    graph = {name: corral_imports(path, known) for name, path in known.items()}
    # A package's __init__ re-exports its modules; importing the package is not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert cycles(graph) == set()


def test_the_cycle_finder_finds_a_ring() -> None:
    """The check above cannot pass by finding nothing."""
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(ring) == {("a", "b", "c")}
