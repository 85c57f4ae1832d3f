"""The one ASGI application every server in the benchmark serves.

Plain ASGI 3, no framework, so the numbers measure the servers and not a router:

* ``GET /`` (any other path too): ``hello, world`` with a Content-Length.
* ``POST /echo``: the request body back, read in full first, with a Content-Length.
* ``GET /stream``: 16 chunks of 1 KiB, each its own ``http.response.body`` message
  (no Content-Length, so HTTP/1.1 servers send it chunked).
* WebSocket ``/ws``: every message echoed back as it came (text as text, bytes as bytes).
* lifespan: accepted and acknowledged, so no server logs a missing-lifespan warning.

``make_bulky_app`` is a factory for the ``--preload`` memory measurement: it builds
about 40 MiB of small Python objects before returning the same app, the way a real
application's imports (ORM models, templates, tables) fill a worker's heap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO = b"hello, world\n"
STREAM_CHUNK = b"x" * 1023 + b"\n"
STREAM_CHUNKS = 16

_HELLO_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(HELLO))],
}
_HELLO_BODY: Message = {"type": "http.response.body", "body": HELLO}
_STREAM_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/octet-stream")],
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path == "/echo":
            await _echo(receive, send)
        elif path == "/stream":
            await send(_STREAM_START)
            for _ in range(STREAM_CHUNKS - 1):
                await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
            await send({"type": "http.response.body", "body": STREAM_CHUNK})
        else:
            # Fresh dicts: a server may legally mutate the messages it is given.
            await send(dict(_HELLO_START))
            await send(dict(_HELLO_BODY))
    elif kind == "websocket":
        await _websocket(receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _echo(receive: Receive, send: Send) -> None:
    parts = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect: the client left
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(parts)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif kind == "websocket.disconnect":
            return


#: Kept alive for the life of the process, like module-level state in a real app.
_BULK: list[Any] = []


def make_bulky_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Build ~40 MiB of small objects, then return :func:`app` (for --factory)."""
    if not _BULK:
        _BULK.extend((f"key-{i}", i * 3, float(i), [i]) for i in range(250_000))
    return app
