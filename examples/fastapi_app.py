"""A FastAPI app: ``corral examples.fastapi_app:app``.

JSON, validated path and query parameters and bodies (pydantic), a raw request body, a
streamed response, a WebSocket echo, and state made by the lifespan and seen by every
request (``request.state``; corral gives each request a shallow copy, so objects are
shared).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    print(f"fastapi lifespan startup in {os.getpid()}", flush=True)
    # The dict is copied per request, the objects in it are not: "hits" is shared.
    yield {"started_at": time.time(), "worker_pid": os.getpid(), "hits": {"count": 0}}
    print(f"fastapi lifespan shutdown in {os.getpid()}", flush=True)


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float = 0.0


@app.get("/")
async def hello() -> dict[str, Any]:
    return {"framework": "fastapi", "pid": os.getpid()}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(new: Item) -> dict[str, Any]:
    return {"name": new.name, "price": new.price, "with_tax": round(new.price * 1.2, 2)}


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/state")
async def state(request: Request) -> dict[str, Any]:
    hits = request.state.hits
    hits["count"] += 1
    return {
        "worker_pid": request.state.worker_pid,
        "pid": os.getpid(),
        "started_at": request.state.started_at,
        "hits": hits["count"],
    }


@app.websocket("/ws")
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
