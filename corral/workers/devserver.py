"""The development error page (``--reload`` only): broken code answers 500 with its traceback.

In ``--reload`` mode a worker whose app cannot be imported (SyntaxError, ImportError,
any exception at import) or whose lifespan startup fails does not exit with code 3 or 4.
It logs why, reports READY and serves :class:`ErrorPage` instead of the app: every HTTP
request gets a 500 page showing the traceback, and every WebSocket handshake a 500
(through the ``websocket.http.response`` extension). So the development server never
dies of a typo, the first start included: the supervisor sees a READY worker, the
replacement primitive retires the one before it, and the next save that works brings
the app back the same way.

Only one worker of a generation logs the traceback (slot 0); the others say in one line
that they serve the error page, so ``--workers 4`` does not print it four times.

Never used without ``--reload``: a traceback is for the developer's eyes only (the
banner warns when the server is reachable from other machines).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from types import TracebackType
from typing import final

from corral.config import Config
from corral.workers.app import AppLoadError, load_app
from corral.workers.lifespan import Lifespan
from corral.workers.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("corral.error")

#: Frames from these are the machinery of loading the app, not the app: the traceback
#: shown starts below them (for a SyntaxError nothing is left but the error itself).
_LOADER_PREFIXES = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # corral
    os.path.dirname(os.path.abspath(importlib.__file__)),
    "<frozen importlib",
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>500: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
h1 {{ color: #b00020; font-size: 1.4rem; }}
pre {{ background: #f6f6f6; border-left: 4px solid #b00020; padding: 1rem; overflow: auto; }}
</style></head>
<body><h1>{title}</h1>
<pre>{details}</pre>
<p>corral --reload: save a fix and reload this page. (This page exists in development
mode only.)</p>
</body></html>
"""


@final
class ErrorPage:
    """An ASGI app that answers everything with 500 and ``details`` (a traceback)."""

    def __init__(self, title: str, details: str) -> None:
        self.title = title
        self.details = details
        self._text = f"{title}\n\n{details}\n".encode()
        import html  # here: only --reload's error page needs it (2 ms off every start)

        page = _PAGE.format(title=html.escape(title), details=html.escape(details))
        self._html = page.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            body, content_type = self._text, b"text/plain; charset=utf-8"
            if _wants_html(scope):
                body, content_type = self._html, b"text/html; charset=utf-8"
            await send(_start("http.response.start", content_type, body))
            await send({"type": "http.response.body", "body": body})
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send(_start("websocket.http.response.start", b"text/plain", self._text))
            await send({"type": "websocket.http.response.body", "body": self._text})
        # lifespan: never called (the worker runs the error page with lifespan off).


def _start(kind: str, content_type: bytes, body: bytes) -> Message:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return {"type": kind, "status": 500, "headers": headers}


def _wants_html(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"accept":
            return b"text/html" in value
    return False


def format_failure(exc: BaseException) -> str:
    """The traceback of ``exc``, less the frames of corral and importlib before the app's."""
    tb = exc.__traceback__
    while tb is not None and _ours(tb):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def _ours(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(_LOADER_PREFIXES)


def load_or_error_page(config: Config, slot: int) -> ASGIApp:
    """Import the app; if that fails, say so and return an :class:`ErrorPage` instead."""
    # A .pyc records its source's mtime in whole seconds: a worker's cache of a file saved
    # again within the same second at the same size would be taken for current, and the
    # previous code served. Workers of a dev server therefore write no bytecode.
    sys.dont_write_bytecode = True
    try:
        return load_app(config.app, factory=config.factory, app_dir=config.app_dir)
    except AppLoadError as exc:
        # Already one clear line (no such module or attribute): no traceback to show.
        return _failed(slot, f"cannot load the application {config.app}", str(exc))
    except (Exception, SystemExit) as exc:
        return _failed(slot, f"cannot load the application {config.app}", format_failure(exc))


def lifespan_error_page(lifespan: Lifespan, slot: int) -> ErrorPage:
    """The error page for a failed lifespan startup (``lifespan.startup()`` was False)."""
    error = lifespan.startup_error
    details = format_failure(error) if error is not None else lifespan.failure or "(no message)"
    return _failed(slot, "lifespan startup failed", details)


def _failed(slot: int, title: str, details: str) -> ErrorPage:
    what = f"{title}; serving it as a 500 page until the next change"
    if slot == 0:
        logger.error("%s:\n%s", what, details)
    else:
        logger.error("%s (details in worker slot 0's log)", what)
    return ErrorPage(title, details)
