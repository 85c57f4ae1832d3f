"""Apps for the zero-copy file extensions (``tests.apps_files:NAME``)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs


def _query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def pathsend(scope, receive, send):
    """Sends the file named by ?path= with http.response.pathsend."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/extensions":
        body = json.dumps(sorted(scope.get("extensions", {}))).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    await send({"type": "http.response.pathsend", "path": _query(scope)["path"]})


async def zerocopy(scope, receive, send):
    """'<' + bytes [offset, offset+count) of ?path= by zerocopysend + '>', chunked."""
    if scope["type"] != "http":
        return
    query = _query(scope)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"<", "more_body": True})
    with open(query["path"], "rb") as file:  # noqa: ASYNC230 - a test app, local file
        await send(
            {
                "type": "http.response.zerocopysend",
                "file": file,
                "offset": int(query["offset"]),
                "count": int(query["count"]),
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b">"})
