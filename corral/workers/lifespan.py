"""The ASGI lifespan protocol (spec 2.0), run once per worker process.

``auto`` runs it and carries on without it if the app raises before answering
``lifespan.startup``. Two cases are told apart by whether the app had received the
startup message when it raised:

- before receiving it, the app does not handle the lifespan scope at all (Django's
  handler, a Channels router): that is how an app says it does not support lifespan,
  logged at INFO;
- after receiving it, the app supports lifespan and its startup raised: logged at
  WARNING with the traceback. The server still carries on without lifespan, as
  ``auto`` always has: this is not fatal (use ``on`` to make it exit code 4).

``on`` treats a raise before answering as a startup failure, in both cases; ``off``
never calls the app with a lifespan scope. A ``lifespan.startup.failed`` message is a
failure in every mode; an exception the app raises after sending it (Starlette raises
what its startup raised) is the same failure and is not reported a second time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, final

from corral.workers.types import ASGI_LIFESPAN, ASGIApp, Message

logger = logging.getLogger("corral.error")


@final
class Lifespan:
    """Drives one app through ``lifespan.startup`` and ``lifespan.shutdown``.

    Call :meth:`startup` once before serving and :meth:`shutdown` once after.
    """

    def __init__(self, app: ASGIApp, mode: str, *, log_failures: bool = True) -> None:
        self._app = app
        self._mode = mode
        #: Log a startup failure here (False: the caller reports it, as --reload does).
        self._log_failures = log_failures
        #: What the app raised if startup failed that way (for --reload's error page).
        self.startup_error: BaseException | None = None
        #: The lifespan state; every request scope gets a shallow copy.
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._failure: str | None = None
        #: The task running the app's lifespan scope, if lifespan runs.
        self.task: asyncio.Task[None] | None = None
        self._supported = True
        #: The app has taken ``lifespan.startup`` from receive (so it handles lifespan).
        self._startup_received = False
        #: The app sent ``lifespan.startup.failed``.
        self._startup_failed = False
        self._shutdown_requested = False

    async def startup(self) -> bool:
        """Run startup; return False if the server must not start."""
        if self._mode == "off":
            return True
        scope = {"type": "lifespan", "asgi": dict(ASGI_LIFESPAN), "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            if self._log_failures:
                logger.error("lifespan startup failed: %s", self._failure)
            return False
        return True

    @property
    def failure(self) -> str | None:
        """Why startup (or shutdown) failed, in one line; None if it did not."""
        return self._failure

    async def shutdown(self) -> None:
        """Run shutdown, if startup ran and the app supports lifespan."""
        if self.task is None or not self._supported or self.task.done():
            return
        self._shutdown_requested = True
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._failure is not None:
            logger.error("lifespan shutdown failed: %s", self._failure)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._receive, self._send)
        except BaseException as exc:  # the app's failure is reported, not propagated
            if not self._startup_done.is_set():
                if self._mode == "auto" and not self._startup_received:
                    self._supported = False
                    logger.info("ASGI lifespan not supported by the app; continuing without it")
                elif self._mode == "auto":
                    self._supported = False
                    logger.warning(
                        "exception in lifespan startup; serving without lifespan "
                        "(--lifespan auto; --lifespan on makes this fatal)",
                        exc_info=exc,
                    )
                else:
                    self._fail(f"the app raised {exc!r}")
                    self.startup_error = exc
                    if self._log_failures:
                        logger.error("exception in lifespan startup", exc_info=exc)
            elif self._startup_failed:
                # Sent startup.failed, then raised: startup() reports that failure once.
                if self.startup_error is None:
                    self.startup_error = exc
            elif self._shutdown_requested and not self._shutdown_done.is_set():
                self._fail(f"the app raised {exc!r}")
                logger.error("exception in lifespan shutdown", exc_info=exc)
            elif not self._shutdown_done.is_set():
                # Startup went through; the lifespan task died while the server runs.
                # Requests are unaffected, and shutdown has nothing left to wait for.
                logger.error("exception in the lifespan task after startup", exc_info=exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self._startup_done.is_set() and self._mode == "on":
                self._fail("the app returned without completing startup")
            elif not self._startup_done.is_set():
                self._supported = False
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    def _fail(self, message: str) -> None:
        # The first failure is the one to report: a raise after startup.failed is noise.
        if self._failure is None:
            self._failure = message

    async def _receive(self) -> Message:
        message = await self._inbox.get()
        if message["type"] == "lifespan.startup":
            self._startup_received = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._startup_failed = True
            # Stripped: Starlette's message is a traceback ending in a newline.
            self._fail(str(message.get("message", "")).strip() or "lifespan.startup.failed")
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._fail(str(message.get("message", "")).strip() or "lifespan.shutdown.failed")
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
