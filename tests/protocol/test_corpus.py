"""The request corpus in tests/corpus, fed to the sans-I/O core whole and byte by byte."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from corral.protocol.http import HTTPLimits
from tests.protocol.helpers import Outcome, serve

# Every case runs with each head reader of --http (conftest.py).
pytestmark = pytest.mark.usefixtures("head_reader")

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
CASES = sorted(CORPUS.glob("*.http"))


def load(case: Path) -> tuple[bytes, dict[str, Any]]:
    """The raw bytes of a case and its EXPECT dict."""
    expect = runpy.run_path(str(case.with_suffix(".py")))["EXPECT"]
    assert isinstance(expect, dict)
    return case.read_bytes(), expect


def expected(expect: dict[str, Any]) -> dict[str, Any]:
    """EXPECT with every default filled in, in the shape of :func:`observed`."""
    status = expect.get("status")
    return {
        "requests": [(*r, b"")[:3] for r in expect.get("requests", [])],
        "status": status,
        "close": expect.get("close", status is not None),
        "upgrade": expect.get("upgrade"),
        "continued": expect.get("continued", False),
    }


def observed(outcome: Outcome) -> dict[str, Any]:
    """The parts of an outcome that EXPECT describes."""
    return {
        "requests": outcome.requests,
        "status": outcome.status,
        "close": outcome.close,
        "upgrade": outcome.upgrade,
        "continued": outcome.continued,
    }


def test_corpus_is_complete() -> None:
    """Every case has both files, and the corpus is not empty."""
    assert len(CASES) >= 40
    scripts = {p.stem for p in CORPUS.glob("[0-9][0-9][0-9].py")}
    assert scripts == {p.stem for p in CASES}


@pytest.mark.parametrize("piece", [None, 1], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_case(case: Path, piece: int | None) -> None:
    """The core does with the case's bytes what its EXPECT says."""
    raw, expect = load(case)
    limits = HTTPLimits(**expect.get("limits", {}))
    outcome = serve(raw, limits, piece=piece, eof=expect.get("eof", False))
    doc = runpy.run_path(str(case.with_suffix(".py"))).get("__doc__")
    assert observed(outcome) == expected(expect), doc
    assert expect.get("reason", "") in outcome.reason
    # Every request served got exactly one response on the wire.
    assert outcome.sent.count(b"HTTP/1.1 200 OK\r\n") == len(outcome.requests)
