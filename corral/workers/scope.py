"""The ASGI HTTP scope of a request (ASGI HTTP spec 2.2), whatever carries it.

The connection or stream that received the request calls :func:`http_scope` with what it
knows of itself (its peer, its local address, TLS, whether the peer is a trusted proxy)
and of the request; the worker's settings come from the shared state. HTTP/1.1 passes
the request line's target; HTTP/2 will pass ``:path`` the same way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from corral.workers.server import WorkerServer
from corral.workers.types import ASGI_WWW


def http_scope(
    server: WorkerServer,
    *,
    http_version: str,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server_addr: tuple[str, int | None] | None,
    tls: dict[str, Any] | None,
    proxy_trusted: bool,
) -> dict[str, Any]:
    """The scope of one request (every key of spec 2.2)."""
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] != b"/" and b"://" in raw_path:
        # absolute-form (RFC 9112 section 3.2.2): serve the path part.
        rest = raw_path.split(b"://", 1)[1]
        slash = rest.find(b"/")
        raw_path = rest[slash:] if slash >= 0 else b"/"
    path = raw_path.decode("ascii")  # the cores admit only visible ASCII in a target
    if "%" in path:
        path = unquote(path)
    root_path = server.root_path
    extensions: dict[str, Any] = {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
    if tls is not None:
        extensions["tls"] = tls  # only on TLS connections (ASGI TLS spec)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_WWW.copy(),  # an app may change its own scope
        "http_version": http_version,
        "server": server_addr,
        "client": client,
        "scheme": server.scheme,
        "method": method.decode("ascii"),
        "root_path": root_path,
        # The spec's WSGI mapping: PATH_INFO is path with root_path stripped.
        "path": root_path + path if root_path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,  # the core built this list for this scope
        "state": server.lifespan_state.copy(),  # shallow: startup objects are shared
        "extensions": extensions,
    }
    if server.proxy is not None:
        server.proxy.apply(scope, proxy_trusted)
    return scope
