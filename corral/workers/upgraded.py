"""A connection after its upgrade to WebSocket: the transport's protocol from the 101 on.

When the HTTP/1.1 core reports an ``UpgradeRequest``, :class:`HTTPConnection` hands its
transport over (``transport.set_protocol``) to an :class:`UpgradedConnection` and is done:
it never sees another byte, so it serves HTTP/1.1 and nothing else. This object is the
session's :class:`~corral.workers.channel.MessageChannel` (bytes in, bytes out, flow
control) and the worker's :class:`~corral.workers.channel.ServedConnection` (the sweep,
the drain). The bytes that came after the upgrade head in the same read are handed to
the session with the request, so none is lost or read twice.

Its one deadline is ``WRITE``: armed while the transport has paused writing and by a
close that still has bytes to send, and measured as progress, like the HTTP
connection's: while the buffer keeps shrinking it moves on; a peer that stopped reading
is cut after ``--timeout-write``. Keepalive, pings and the closing handshake's timers
belong to the session's core.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, final

from corral.protocol.http import UpgradeRequest
from corral.workers.deadlines import INF, write_stalled
from corral.workers.server import WorkerServer
from corral.workers.websocket import WebSocketSession

if TYPE_CHECKING:
    from corral.workers.channel import MessageChannel, ServedConnection

logger = logging.getLogger("corral.error")


@final
class UpgradedConnection(asyncio.Protocol):
    """Carries one WebSocket session over the transport an HTTP/1.1 connection gave up."""

    __slots__ = (
        "_drain_waiter",
        "_transport",
        "_write_mark",
        "client",
        "closing",
        "deadline",
        "loop",
        "pause_reading",
        "server",
        "websocket",
        "write",
        "write_buffer_size",
        "write_paused",
    )

    def __init__(
        self,
        server: WorkerServer,
        transport: asyncio.Transport,
        client: tuple[str, int] | None,
        *,
        write_paused: bool,
    ) -> None:
        self.server = server
        self.loop = server.loop
        self._transport = transport
        self.client = client
        self.write_paused = write_paused
        self.deadline = INF
        self._write_mark = 0
        self._drain_waiter: asyncio.Future[None] | None = None
        self.websocket: WebSocketSession | None = None
        # The channel's plain calls are the transport's own, bound here: no extra call
        # per message on the WebSocket path.
        self.write = transport.write
        self.write_buffer_size = transport.get_write_buffer_size
        self.pause_reading = transport.pause_reading
        self.closing = transport.is_closing
        if write_paused:
            self._arm_write_deadline()

    # -- the message channel --------------------------------------------------------------

    # write, write_buffer_size, pause_reading and closing are the transport's (__init__).

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.close()
            self._arm_write_deadline()

    async def wait_writable(self) -> None:
        if self.write_paused and not self._transport.is_closing():
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.loop.create_future()
            await asyncio.shield(waiter)

    # -- asyncio.Protocol (after set_protocol; connection_made is not called again) -----------

    def data_received(self, data: bytes) -> None:
        assert self.websocket is not None  # set before the transport is handed over
        self.websocket.data_received(data)

    def eof_received(self) -> bool | None:
        assert self.websocket is not None
        return self.websocket.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.deadline = INF
        if self.websocket is not None:
            self.websocket.connection_lost()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._arm_write_deadline()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self._transport.is_closing():
            self.deadline = INF  # a close that is flushing stays watched
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the served connection --------------------------------------------------------------

    def _arm_write_deadline(self) -> None:
        self._write_mark = self._transport.get_write_buffer_size()
        self.deadline = self.loop.time() + self.server.timeout_write

    def deadline_passed(self) -> None:
        """The peer took nothing for ``--timeout-write``: cut it (unless it is slow but
        moving, which moves the deadline on)."""
        transport = self._transport
        if write_stalled(transport, self._write_mark) is not None:
            self._arm_write_deadline()  # slow but moving
            return
        self.deadline = INF
        if transport.get_write_buffer_size():
            logger.info("aborting a WebSocket connection: the client stopped reading")
        transport.abort()

    def shutdown(self) -> None:
        assert self.websocket is not None
        self.websocket.shutdown()

    def abort(self) -> None:
        self._transport.abort()


def hand_over(
    server: WorkerServer,
    transport: asyncio.Transport,
    event: UpgradeRequest,
    scope: dict[str, Any],
    client: tuple[str, int] | None,
    *,
    write_paused: bool,
    served: ServedConnection,
) -> None:
    """Give ``transport`` to a new :class:`UpgradedConnection` and start its session.

    ``scope`` is the request's HTTP scope (the session turns it into a WebSocket scope);
    ``served`` is the HTTP connection that gives the transport up: it leaves the worker's
    connections as the upgraded one joins (in that order, so the set is never empty in
    between and a drain cannot think the worker idle).
    """
    upgraded = UpgradedConnection(server, transport, client, write_paused=write_paused)
    channel: MessageChannel = upgraded
    session = upgraded.websocket = WebSocketSession(channel, server, scope, event, client)
    server.connections.add(upgraded)
    server.connections.discard(served)
    transport.set_protocol(upgraded)
    session.start()
