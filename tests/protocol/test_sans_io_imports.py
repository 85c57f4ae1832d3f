"""The protocol cores stay sans-I/O: no module in corral/protocol imports I/O or time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corral.protocol

PROTOCOL_DIR = Path(corral.protocol.__file__).parent

#: Modules that would let a core block, read a clock or touch the process.
FORBIDDEN = frozenset({"asyncio", "os", "selectors", "signal", "socket", "threading", "time"})

MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level package names of every import in ``tree``, at any depth."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_modules_found() -> None:
    """The glob sees the HTTP core, so the parametrized test below is not vacuous."""
    assert PROTOCOL_DIR / "http.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_io_imports(path: Path) -> None:
    """A protocol module imports none of asyncio, os, selectors, signal, socket, threading, time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_modules(tree) & FORBIDDEN == set()


def test_checker_sees_every_import_form() -> None:
    """The checker catches plain, dotted, aliased, from- and nested imports."""
    source = (
        "import os.path\nimport asyncio as aio\nfrom time import monotonic\n"
        "def f():\n    import socket\n"
        "from . import http\n"
    )
    assert imported_modules(ast.parse(source)) == {"os", "asyncio", "time", "socket"}
