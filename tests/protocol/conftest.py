"""The ``head_reader`` fixture: run a core test once with each head reader of ``--http``."""

from __future__ import annotations

import pytest

from tests.protocol import helpers


@pytest.fixture(params=sorted(helpers.READERS))
def head_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of the reader every core made by ``helpers`` uses in this test."""
    name: str = request.param
    monkeypatch.setattr(helpers, "READ_HEAD", helpers.READERS[name])
    return name
