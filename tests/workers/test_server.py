"""WorkerServer's pieces that need no connection: the Date header."""

from __future__ import annotations

import email.utils

import pytest

from corral.workers.server import http_date


@pytest.mark.parametrize("seconds", [0, 784111777, 951782400, 1700000000.9, 4102444799])
def test_http_date_is_imf_fixdate(seconds: float) -> None:
    """The Date value matches the standard library's RFC 9110 IMF-fixdate."""
    assert http_date(seconds) == email.utils.formatdate(int(seconds), usegmt=True).encode()
