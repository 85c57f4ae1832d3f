"""The asyncio transport adapter: one :class:`HTTPConnection` per TCP or unix connection.

``data_received`` feeds the sans-I/O core and dispatches its events; the request
cycle calls back into this object to write and to pause or resume reading. Deadlines
are not timers: each connection records one ``deadline`` and its reason, and the
worker's sweep (every :data:`~corral.workers.server.SWEEP_INTERVAL_S`) closes the
connections whose deadline passed. No timer is armed or cancelled per request.

Deadlines (all named, all configurable):

* ``header``: from the first byte of a request head to its end, absolute, so a client
  trickling one byte a second cannot hold the connection (slowloris).
* ``keep-alive``: idle between requests (and before the first byte of a new connection).
* ``body``: silence while the app waits for request body.
* ``write``: a response stalled because the client does not read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any, final
from urllib.parse import unquote

import h11

from corral.protocol.http import (
    REASONS,
    ConnectionClosed,
    HTTPCore,
    ProtocolError,
    UpgradeRequest,
    simple_response,
)
from corral.workers.cycle import CycleState, RequestCycle
from corral.workers.types import ASGI_WWW

if TYPE_CHECKING:
    from corral.workers.server import WorkerServer

logger = logging.getLogger("corral.error")

INF = float("inf")

# Errors a transport may raise when the peer is already gone; anything else is a bug.
_GONE = (ConnectionError, BrokenPipeError, OSError)


def _addr(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


@final
class HTTPConnection(asyncio.Protocol):
    """Serves HTTP/1.1 on one connection; hands WebSocket upgrades over."""

    __slots__ = (
        "_drain_waiter",
        "_paused_for_body",
        "_paused_for_pipeline",
        "client",
        "core",
        "cycle",
        "deadline",
        "deadline_reason",
        "loop",
        "server",
        "server_addr",
        "transport",
        "write_paused",
        "websocket",
    )

    def __init__(self, server: WorkerServer) -> None:
        self.server = server
        self.loop = server.loop
        self.core = HTTPCore(server.http_limits)
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestCycle | None = None
        self.client: tuple[str, int] | None = None
        self.server_addr: Any = None
        self.deadline = INF
        self.deadline_reason = ""
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_for_body = False
        self._paused_for_pipeline = False
        self.websocket: Any = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle plus delayed ACK stalls small responses by 40 ms; asyncio sets this
            # only for sockets it created, not for inherited listening sockets.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.client = _addr(transport.get_extra_info("peername"))
            self.server_addr = _addr(transport.get_extra_info("sockname"))
        elif sock is not None:
            self.server_addr = (str(transport.get_extra_info("sockname")), None)
        self.server.connections.add(self)
        self._set_deadline("keep-alive", self.server.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.deadline = INF
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnect()
        if self.websocket is not None:
            self.websocket.connection_lost()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.data_received(data)
            return
        if self.deadline_reason == "keep-alive":
            # The first byte of a head starts the absolute header deadline.
            self._set_deadline("header", self.server.timeout_header)
        elif self.deadline_reason == "body":
            self._set_deadline("body", self.server.timeout_body)
        self.core.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool | None:
        if self.websocket is not None:
            return self.websocket.eof_received()
        self.core.receive_eof()
        self._handle_events()
        # Keep the write side open while a response is owed (a half-closed client).
        return True if self.cycle is not None else None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.deadline == INF:
            self._set_deadline("write", self.server.timeout_write)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.deadline_reason == "write":
            self.deadline = INF
            self.deadline_reason = ""
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- events from the core ---------------------------------------------------------------

    def _handle_events(self) -> None:
        for event in self.core.events_received():
            kind = type(event)
            if kind is h11.Data:
                assert isinstance(event, h11.Data)
                if self.cycle is not None:
                    self.cycle.feed_body(event.data)
            elif kind is h11.Request:
                assert isinstance(event, h11.Request)
                self._start_cycle(event)
            elif kind is h11.EndOfMessage:
                if self.cycle is not None:
                    self.cycle.feed_end()
                    if self.deadline_reason == "body":
                        self.deadline = INF
            elif kind is ProtocolError:
                assert isinstance(event, ProtocolError)
                self._protocol_error(event)
            elif kind is UpgradeRequest:
                assert isinstance(event, UpgradeRequest)
                self.server.start_websocket(self, event)
            else:
                assert kind is ConnectionClosed
                if self.cycle is None and self.transport is not None:
                    self.transport.close()
        if self.core.wants_read_paused() and not self._paused_for_pipeline:
            self._paused_for_pipeline = True
            self._pause()

    def _start_cycle(self, request: h11.Request) -> None:
        server = self.server
        self.deadline = INF
        self.deadline_reason = ""
        target = request.target
        raw_path, _, query = target.partition(b"?")
        if raw_path[:1] != b"/" and b"://" in raw_path:
            # absolute-form (RFC 9112 section 3.2.2): serve the path part.
            rest = raw_path.split(b"://", 1)[1]
            slash = rest.find(b"/")
            raw_path = rest[slash:] if slash >= 0 else b"/"
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        root_path = server.root_path
        scope = {
            "type": "http",
            "asgi": ASGI_WWW,
            "http_version": "1.1" if request.http_version == b"1.1" else "1.0",
            "server": self.server_addr,
            "client": self.client,
            "scheme": server.scheme,
            "method": request.method.decode("ascii"),
            "root_path": root_path,
            "path": root_path + path if root_path else path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": list(request.headers),
            "state": server.lifespan_state.copy(),
        }
        cycle = self.cycle = RequestCycle(self, scope, request)
        cycle.started_at = self.loop.time()
        if server.admit():
            self.loop.create_task(cycle.run(server.app))
        else:
            # Over --limit-concurrency: refuse this request, not the connection's
            # future ones (idle keep-alive connections never count).
            self.cycle = None
            self.send_error(503, retry_after=True)

    def _protocol_error(self, event: ProtocolError) -> None:
        logger.info(
            "bad request from %s: %s", self.client[0] if self.client else "unix", event.reason
        )
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnect()
            if cycle.state is not CycleState.AWAIT_START:
                self.abort()
                return
        self.send_error(event.status)

    # -- called by the cycle -----------------------------------------------------------------

    def response_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The app's headers plus the server's defaults (Date, Server, extras)."""
        server = self.server
        defaults = server.default_headers
        if defaults:
            given = {name.lower() for name, _ in headers}
            headers.extend(h for h in defaults if h[0] not in given)
        if server.draining:
            headers.append((b"connection", b"close"))
        return headers

    def send_continue(self) -> None:
        self.core.send_continue()
        self.flush()

    def flush(self) -> None:
        data = self.core.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data[0] if len(data) == 1 else b"".join(data))

    def send_error(self, status: int, *, retry_after: bool = False) -> None:
        """Answer with a plain error response and close (nothing else was written)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        extra = list(self.server.default_headers)
        if retry_after:
            extra.append((b"retry-after", b"1"))
        body = b"%d %s\n" % (status, REASONS.get(status, b""))
        transport.write(simple_response(status, body, extra))
        transport.close()
        self.server.log_access(self, status, len(body))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading_for_body(self) -> None:
        if not self._paused_for_body:
            self._paused_for_body = True
            self._pause()

    def resume_reading_for_body(self) -> None:
        if self._paused_for_body:
            self._paused_for_body = False
            self._resume()

    def wait_for_body(self) -> None:
        """The app is blocked in receive(): read, and start the body-idle deadline."""
        self.resume_reading_for_body()
        if self.deadline == INF:
            self._set_deadline("body", self.server.timeout_body)

    async def wait_writable(self) -> None:
        if self.write_paused and self.transport is not None and not self.transport.is_closing():
            waiter = self._drain_waiter = self.loop.create_future()
            await waiter

    def response_finished(self, cycle: RequestCycle) -> None:
        """The cycle sent its last byte: log, and get ready for the next request."""
        self.server.log_access(self, cycle.status, cycle.bytes_sent, cycle)
        self.server.release()
        self.server.count_request()
        core = self.core
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if core.close_expected() or self.server.draining:
            transport.close()
            return
        self.cycle = None
        core.start_next_cycle()
        if core.close_expected():
            transport.close()
            return
        self._set_deadline("keep-alive", self.server.timeout_keep_alive)
        if self._paused_for_body:
            self._paused_for_body = False
            self._resume()
        if self._paused_for_pipeline:
            self._paused_for_pipeline = False
            self._resume()
        self._handle_events()

    def cycle_finished(self, cycle: RequestCycle) -> None:
        """The app's task ended (after or without a full response)."""
        if cycle.state is not CycleState.DONE:
            # response_finished() released the slot of a completed response.
            self.server.release()
            if self.cycle is cycle:
                self.cycle = None
                if self.transport is not None and self.server.draining:
                    self.transport.close()

    # -- deadlines and flow control ------------------------------------------------------------

    def _set_deadline(self, reason: str, seconds: float) -> None:
        self.deadline_reason = reason
        self.deadline = self.loop.time() + seconds

    def deadline_passed(self) -> None:
        """Called by the sweep once ``deadline`` is in the past."""
        reason = self.deadline_reason
        self.deadline = INF
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reason == "keep-alive":
            transport.close()
        elif reason == "header" or reason == "body":
            logger.info("closing a connection: %s timeout", reason)
            if self.cycle is not None:
                self.cycle.disconnect()
                if self.cycle.state is not CycleState.AWAIT_START:
                    transport.abort()
                    return
            self.send_error(408)
        else:
            logger.info("aborting a connection: the client stopped reading the response")
            transport.abort()

    def _pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume(self) -> None:
        if (
            self.transport is not None
            and not self._paused_for_body
            and not self._paused_for_pipeline
            and self.transport.is_reading() is False
        ):
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The worker is draining: close if idle, else close after the current response."""
        if self.cycle is None and self.websocket is None:
            if self.transport is not None:
                self.transport.close()
        elif self.websocket is not None:
            self.websocket.shutdown()

