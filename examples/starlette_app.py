"""A Starlette app: ``corral examples.starlette_app:app``.

JSON, path and query parameters, request bodies (JSON and raw), a streamed response,
a WebSocket echo, and state made by the lifespan and seen by every request
(``request.state``; corral gives each request a shallow copy, so objects are shared).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    print(f"starlette lifespan startup in {os.getpid()}", flush=True)
    # The dict is copied per request, the objects in it are not: "hits" is shared.
    yield {"started_at": time.time(), "worker_pid": os.getpid(), "hits": {"count": 0}}
    print(f"starlette lifespan shutdown in {os.getpid()}", flush=True)


async def hello(request: Request) -> Response:
    return JSONResponse({"framework": "starlette", "pid": os.getpid()})


async def item(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "q": request.query_params.get("q")})


async def create_item(request: Request) -> Response:
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"detail": "body is not JSON"}, status_code=400)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return JSONResponse({"detail": "name (a string) is required"}, status_code=422)
    price = float(data.get("price", 0))
    return JSONResponse({"name": data["name"], "price": price, "with_tax": round(price * 1.2, 2)})


async def upload(request: Request) -> Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def stream(request: Request) -> Response:
    count = int(request.query_params.get("n", "5"))

    async def lines() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain")


async def state(request: Request) -> Response:
    hits = request.state.hits
    hits["count"] += 1
    return JSONResponse(
        {
            "worker_pid": request.state.worker_pid,
            "pid": os.getpid(),
            "started_at": request.state.started_at,
            "hits": hits["count"],
        }
    )


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/items/{item_id:int}", item),
        Route("/items", create_item, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        Route("/state", state),
        WebSocketRoute("/ws", echo),
    ],
    lifespan=lifespan,
)
