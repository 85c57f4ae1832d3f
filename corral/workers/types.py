"""ASGI types shared by the worker modules (after uvicorn's ``_types.py``, much smaller)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The ``asgi`` scope entry for HTTP and WebSocket (spec 2.5: ``send`` after close raises
#: an OSError subclass, and ``websocket.disconnect`` carries a reason).
ASGI_WWW = {"version": "3.0", "spec_version": "2.5"}
#: The ``asgi`` scope entry for lifespan.
ASGI_LIFESPAN = {"version": "3.0", "spec_version": "2.0"}


class ClientDisconnected(OSError):
    """Raised by ``send`` once the client has gone (ASGI spec 2.4).

    Servers must not log it as an error: a client leaving is normal.
    """
