"""Who is on the other end of a new connection, worked out once when it is made.

Every kind of connection (HTTP/1.1 today, HTTP/2 next) needs the same facts for its
scopes and its log lines: the client's and the local address, the scope's ``tls``
extension, and whether the peer is a proxy trusted with forwarding headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from corral.workers.server import WorkerServer


class Peer(NamedTuple):
    #: ``(host, port)`` of the client, or None on a unix socket.
    client: tuple[str, int] | None
    #: ``(host, port)`` we listen on, or ``(path, None)`` on a unix socket (spec 2.2).
    server_addr: tuple[str, int | None] | None
    #: The scope's ``tls`` extension on a TLS connection, else None.
    tls: dict[str, Any] | None
    #: --proxy-headers: whether the peer is a trusted proxy.
    proxy_trusted: bool


def _addr(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def describe_peer(server: WorkerServer, transport: asyncio.BaseTransport) -> Peer:
    """The facts of a connection just made (and TCP_NODELAY set on a TCP one)."""
    client: tuple[str, int] | None = None
    server_addr: tuple[str, int | None] | None = None
    local = transport.get_extra_info("sockname")
    tcp = isinstance(local, tuple)
    if tcp:
        # Nagle plus delayed ACK stalls a small response by 40 ms. asyncio and uvloop
        # both set TCP_NODELAY on their TCP transports today; this keeps it true for
        # any loop, for one syscall per connection.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = _addr(transport.get_extra_info("peername"))
        server_addr = _addr(local)
    elif local is not None:
        server_addr = (str(local), None)
    tls = server.tls.extension(transport) if server.tls is not None else None
    trusted = server.proxy.trusts(client, unix=not tcp) if server.proxy is not None else False
    return Peer(client, server_addr, tls, trusted)
