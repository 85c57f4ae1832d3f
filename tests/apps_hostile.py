"""ASGI apps for the hostile-condition tests and scripts (``tests.apps_hostile:NAME``).

* :func:`load` serves chaos, soak and flood runs: plain answers, slow streamed answers
  whose head (with the worker's pid) goes out before the body, body echoes and a
  WebSocket echo.
* :func:`bad` misbehaves in one way per path (tests/e2e/test_bad_apps.py): it raises,
  hangs, returns early, sends invalid messages or leaks tasks. ``/ok`` behaves.
"""

from __future__ import annotations

import asyncio
import os


def _query(scope) -> dict[str, str]:
    pairs = scope["query_string"].decode().split("&")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send, body: bytes, status: int = 200) -> None:
    pid = str(os.getpid()).encode()
    headers = [(b"x-pid", pid), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _ws_echo(receive, send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # The first message says which worker serves this connection.
    await send({"type": "websocket.send", "text": f"pid {os.getpid()}"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def load(scope, receive, send):
    """``/`` answers at once; ``/slow?ms=N`` streams: head and a first byte at once, the
    rest N ms later; ``/echo`` returns the request body; WebSocket echoes (after a
    ``pid N`` greeting). Every HTTP answer carries ``x-pid``."""
    kind = scope["type"]
    if kind == "lifespan":
        return await _lifespan(receive, send)
    if kind == "websocket":
        return await _ws_echo(receive, send)
    path = scope["path"]
    if path == "/slow":
        ms = float(_query(scope).get("ms", "50"))
        headers = [(b"x-pid", str(os.getpid()).encode()), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<", "more_body": True})
        await asyncio.sleep(ms / 1000)
        await send({"type": "http.response.body", "body": b">"})
    elif path == "/echo":
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        await _answer(send, b"".join(chunks))
    else:
        await _answer(send, b"ok")


# -- bad apps ---------------------------------------------------------------------------

#: Tasks the app leaks on purpose; kept so the leak is deliberate, not collected.
LEAKED: set[asyncio.Task[None]] = set()


async def _sleep_forever() -> None:
    await asyncio.Event().wait()


async def _fail_later() -> None:
    await asyncio.sleep(0.01)
    raise RuntimeError("leaked task failed")


async def _bad_http(path: str, receive, send) -> None:
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/raise":
        raise RuntimeError("bad app: raised before responding")
    if path == "/raise-mid-body":
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("bad app: raised mid-body")
    if path == "/return-early":
        return
    if path == "/return-after-start":
        await send(start)
        return
    if path == "/hang":
        print(f"bad: hanging in {os.getpid()}", flush=True)
        await _sleep_forever()
    if path == "/bad-type":
        await send({"type": "http.response.body", "body": b"no start"})
    if path == "/bad-status":
        await send({"type": "http.response.start", "status": "200", "headers": []})
    if path == "/body-str":
        await send(start)
        await send({"type": "http.response.body", "body": "not bytes"})
    if path == "/bad-header":
        headers = [(b"x-split", b"a\r\nset-cookie: injected=1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x"})
    if path in ("/length-short", "/length-long"):
        # One body message that does not match its own Content-Length.
        length = b"5" if path == "/length-short" else b"2"
        headers = [(b"content-length", length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"abc"})
    if path == "/send-after-end":
        await send(start)
        await send({"type": "http.response.body", "body": b"done"})
        await send({"type": "http.response.body", "body": b"again"})
    if path == "/leak-task":
        task = asyncio.get_running_loop().create_task(_sleep_forever())
        LEAKED.add(task)
    if path == "/leak-failing-task":
        # Not kept: asyncio reports the unretrieved exception when it is collected.
        asyncio.get_running_loop().create_task(_fail_later())
    await _answer(send, b"ok")


async def _bad_ws(path: str, receive, send) -> None:
    await receive()  # websocket.connect
    if path == "/ws/raise-before-accept":
        raise RuntimeError("bad app: raised before accepting")
    await send({"type": "websocket.accept"})
    if path == "/ws/raise-after-accept":
        raise RuntimeError("bad app: raised after accepting")
    if path == "/ws/bad-message":
        await send({"type": "websocket.send"})  # neither text nor bytes
    if path == "/ws/return":
        return
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def bad(scope, receive, send):
    """One misbehaviour per path (see the module docstring); ``/ok`` answers 200."""
    kind = scope["type"]
    if kind == "lifespan":
        return await _lifespan(receive, send)
    if kind == "websocket":
        return await _bad_ws(scope["path"], receive, send)
    return await _bad_http(scope["path"], receive, send)
