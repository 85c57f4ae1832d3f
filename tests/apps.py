"""Small ASGI apps the end-to-end tests serve (``tests.apps:NAME``)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys


async def _lifespan(receive, send, state=None):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if state is not None:
                state.update({"started": True, "pid": os.getpid()})
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    body = b"hello"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo(scope, receive, send):
    """Echoes the body; the response says the path, pid and the method."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, scope.get("state"))
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"x-pid", str(os.getpid()).encode()),
                (b"x-path", scope["path"].encode("utf-8", "surrogateescape").hex().encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def request_echo(scope, receive, send):
    """Answers with what it read of the request, as JSON: method, version, path, query,
    headers and body (nothing that differs between two servers, such as addresses)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, scope.get("state"))
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    seen = {
        "method": scope["method"],
        "http_version": scope["http_version"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "body": b"".join(chunks).decode("latin-1"),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


async def scope_dump(scope, receive, send):
    """Answers with the scope as JSON (bytes as latin-1 strings)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send, scope.get("state"))

    def conv(value):
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [conv(v) for v in value]
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        return value

    state = scope.get("state", {})
    state_keys = sorted(state)
    state["mutated"] = True  # must not leak into the next request's scope
    data = {k: conv(v) for k, v in scope.items() if k != "state"}
    data["state_keys"] = state_keys
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def slow(scope, receive, send):
    """Sleeps for ?seconds (default 1) before answering; streams if ?stream."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
    )
    # A marker the tests wait for: the request has reached the app.
    print(f"slow: started {scope['path']}", file=sys.stderr, flush=True)
    await asyncio.sleep(float(query.get("seconds", "1")))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-pid", str(os.getpid()).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"slow done"})


async def boom(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    raise RuntimeError("boom")


async def no_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        raise RuntimeError("lifespan is not supported here")
    await hello(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await hello(scope, receive, send)


def factory():
    return hello


async def frozen(scope, receive, send):
    """Answers with the worker's gc.get_freeze_count() (objects in the permanent generation)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    body = str(gc.get_freeze_count()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


not_an_app = 42


# -- supervisor tests (tests/e2e/test_signals.py, test_supervisor.py) ----------------------


async def tagged(scope, receive, send):
    """Answers at once with its pid in x-pid; ?sleep=S first sleeps S seconds (and says so)."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
    )
    if "sleep" in query:
        print(f"tagged: sleeping {scope['path']} in {os.getpid()}", file=sys.stderr, flush=True)
        await asyncio.sleep(float(query["sleep"]))
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-pid", body), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def block_the_loop_forever():
    """Blocks the worker's event loop: the master sees no heartbeat (name grepped in tests)."""
    import time

    while True:
        time.sleep(0.1)


async def blocking(scope, receive, send):
    """/block never returns and blocks the event loop; any other path answers with x-pid."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["path"] == "/block":
        print(f"blocking: blocking the loop in {os.getpid()}", file=sys.stderr, flush=True)
        block_the_loop_forever()
    await tagged(scope, receive, send)


async def dies_after_ready(scope, receive, send):
    """Completes lifespan startup, then the process exits with code 1 0.2 s later."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        asyncio.get_running_loop().call_later(0.2, os._exit, 1)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        return
    await tagged(scope, receive, send)
