"""ASGI apps for the HTTP end-to-end tests (``tests.apps_http:NAME``).

``app`` dispatches on the path (below ``root_path``). Routes that the tests watch from
outside print a marker line to stderr, which the harness collects with the server log.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from urllib.parse import parse_qsl


def mark(text: str) -> None:
    print(f"APP {text}", file=sys.stderr, flush=True)


def _query(scope) -> dict[str, str]:
    return dict(parse_qsl(scope["query_string"].decode("latin-1")))


async def _read_body(receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send, status=200, body=b"", headers=(), length=True):
    hdrs = [(b"x-pid", str(os.getpid()).encode()), *headers]
    if length:
        hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def _lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["shared"] = {"hits": 0}
            scope["state"]["started"] = True
            mark("lifespan startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    root = scope["root_path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    route = "/" + path.split("/")[1]
    handler = ROUTES.get(route, hello)
    await handler(scope, receive, send)


async def hello(scope, receive, send):
    await _respond(send, body=b"hello", headers=[(b"content-type", b"text/plain")])


async def echo(scope, receive, send):
    body = await _read_body(receive)
    if body is not None:
        await _respond(send, body=body)


async def scope_dump(scope, receive, send):
    data = {k: _jsonable(v) for k, v in scope.items() if k != "state"}
    data["state"] = sorted(scope["state"]) if "state" in scope else None
    await _respond(send, body=json.dumps(data).encode())


async def state(scope, receive, send):
    """B21: top-level keys must not leak between requests; startup objects are shared."""
    st = scope["state"]
    keys = sorted(st)
    st["leak"] = True
    shared = st.get("shared")
    if shared is not None:
        shared["hits"] += 1
    body = json.dumps({"keys": keys, "hits": shared["hits"] if shared else None})
    await _respond(send, body=body.encode())


async def stream(scope, receive, send):
    """``?n=N`` chunks without Content-Length: chunked framing."""
    n = int(_query(scope).get("n", "3"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(n):
        await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def head_body(scope, receive, send):
    """Sends a 10-byte body whatever the method (B25: dropped for HEAD)."""
    await _respond(send, body=b"0123456789")


async def status(scope, receive, send):
    """``?code=N``: that status, with a 5-byte body the server must drop for 204/304."""
    code = int(_query(scope).get("code", "200"))
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-length", b"5"), (b"etag", b'"x"')],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def too_long(scope, receive, send):
    """Body longer than Content-Length: in the first body message (``?first``) or later."""
    first = "first" in _query(scope)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    try:
        if first:
            await send({"type": "http.response.body", "body": b"0123456789"})
        else:
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            await send({"type": "http.response.body", "body": b"defghij"})
    except RuntimeError as exc:
        mark(f"too-long: send raised RuntimeError: {exc}")
        raise


async def too_short(scope, receive, send):
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    await send({"type": "http.response.body", "body": b"abc"})


async def raise_before(scope, receive, send):
    raise RuntimeError("raised before the response")


async def raise_after_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("raised after http.response.start")


async def raise_mid_body(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("raised in the middle of the body")


async def return_early(scope, receive, send):
    return None


async def return_mid(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


async def reflect(scope, receive, send):
    """B9: copies the decoded path into a response header (response splitting)."""
    value = scope["path"].encode("latin-1", "replace")
    try:
        await _respond(send, headers=[(b"x-reflected", value)])
    except RuntimeError:
        mark("reflect: send raised RuntimeError")
        raise


async def bad_header_name(scope, receive, send):
    name = _query(scope)["name"].encode("latin-1")
    await _respond(send, headers=[(name, b"1")])


async def custom_server(scope, receive, send):
    await _respond(send, headers=[(b"server", b"app"), (b"x-frame-options", b"app")])


async def app_framing(scope, receive, send):
    """Sets its own Transfer-Encoding, which the server must ignore."""
    headers = [(b"transfer-encoding", b"gzip, chunked"), (b"content-length", b"4")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"body"})


async def sleep(scope, receive, send):
    seconds = float(_query(scope).get("s", "1"))
    mark(f"sleep: started {scope['query_string'].decode()}")
    await asyncio.sleep(seconds)
    await _respond(send, body=b"slept")


async def forever(scope, receive, send):
    """B22: streams until send raises, then reports what it raised and what receive says."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = b"x" * 16384
    try:
        while True:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.005)
    except Exception as exc:
        message = await receive()
        mark(
            f"forever: send raised {type(exc).__name__} oserror={isinstance(exc, OSError)}"
            f" receive={message['type']}"
        )
        raise


async def wait_body(scope, receive, send):
    """B7: reads the body; reports a disconnect instead of answering."""
    body = await _read_body(receive)
    if body is None:
        mark("wait-body: disconnect")
        return
    await _respond(send, body=b"%d" % len(body))


async def late_receive(scope, receive, send):
    """Reads the body only after a pause (the 100 Continue must wait for it)."""
    await asyncio.sleep(float(_query(scope).get("s", "0.3")))
    mark("late-receive: calling receive")
    body = await _read_body(receive)
    if body is not None:
        await _respond(send, body=body)


async def big(scope, receive, send):
    """``?n=BYTES`` in one body message; the client may not read it (write stall)."""
    n = int(_query(scope).get("n", "1000000"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        await send({"type": "http.response.body", "body": b"b" * n, "more_body": True})
        await send({"type": "http.response.body", "body": b"b" * n, "more_body": True})
    except OSError as exc:
        mark(f"big: send raised {type(exc).__name__}")
        raise
    await send({"type": "http.response.body", "body": b""})


async def long_poll(scope, receive, send):
    """Waits for the client to go away (the way SSE and long-poll apps notice it)."""
    body = await _read_body(receive)
    message = await receive()
    mark(f"long-poll: {message['type']} after body={body!r}")


ROUTES = {
    "/long-poll": long_poll,
    "/echo": echo,
    "/scope": scope_dump,
    "/state": state,
    "/stream": stream,
    "/head-body": head_body,
    "/status": status,
    "/too-long": too_long,
    "/too-short": too_short,
    "/raise-before": raise_before,
    "/raise-after-start": raise_after_start,
    "/raise-mid-body": raise_mid_body,
    "/return-early": return_early,
    "/return-mid": return_mid,
    "/reflect": reflect,
    "/bad-header-name": bad_header_name,
    "/custom-server": custom_server,
    "/app-framing": app_framing,
    "/sleep": sleep,
    "/forever": forever,
    "/wait-body": wait_body,
    "/late-receive": late_receive,
    "/big": big,
}


async def lifespan_raises(scope, receive, send):
    """Does not support lifespan: raises on the lifespan scope."""
    if scope["type"] == "lifespan":
        mark("lifespan scope seen")
        raise RuntimeError("no lifespan here")
    await scope_dump(scope, receive, send)


async def lifespan_fails(scope, receive, send):
    """Supports lifespan, but startup fails."""
    if scope["type"] == "lifespan":
        mark("lifespan scope seen")
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await scope_dump(scope, receive, send)
