"""The lifespan driver in-process: failure reporting in each mode."""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral.workers.lifespan import Lifespan


def drive(app, mode="auto"):
    async def main():
        lifespan = Lifespan(app, mode)
        ok = await lifespan.startup()
        await asyncio.sleep(0)
        await lifespan.shutdown()
        return ok, lifespan

    return asyncio.run(main())


async def crash_after_startup(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.complete"})
    raise RuntimeError("background job died")


async def fail_then_raise(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})
    raise RuntimeError("noise")


async def unsupported(scope, receive, send):
    raise RuntimeError("only http here")


def test_crash_after_startup_is_not_called_shutdown(caplog):
    """A lifespan task dying after startup is reported as such, and shutdown still ends."""
    caplog.set_level(logging.ERROR, "corral.error")
    ok, _ = drive(crash_after_startup)
    assert ok
    assert "after startup" in caplog.text
    assert "lifespan shutdown" not in caplog.text


def test_first_failure_message_wins(caplog):
    """startup.failed's message is reported, not the exception the app raised after it."""
    caplog.set_level(logging.ERROR, "corral.error")
    ok, _ = drive(fail_then_raise, "on")
    assert not ok
    assert "no database" in caplog.text


@pytest.mark.parametrize(("mode", "expected"), [("auto", True), ("on", False)])
def test_unsupported_lifespan(mode, expected):
    """auto carries on without lifespan; on treats it as a startup failure."""
    assert drive(unsupported, mode)[0] is expected


def test_off_never_calls_the_app():
    """--lifespan off does not call the app with a lifespan scope."""
    calls = []

    async def app(scope, receive, send):
        calls.append(scope)

    assert drive(app, "off")[0]
    assert calls == []
