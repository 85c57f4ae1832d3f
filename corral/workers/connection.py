"""The asyncio transport adapter: one :class:`HTTPConnection` per TCP or unix connection.

``data_received`` feeds the sans-I/O core and dispatches its events. For the request in
progress the connection is the cycle's :class:`~corral.workers.channel.RequestChannel`:
the cycle writes and pauses or resumes reading through it, and never sees the core or
the transport. Its deadlines (one at a time, checked by the worker's sweep) are
described in ``deadlines.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import IO, TYPE_CHECKING, Any, cast, final

from corral.protocol.http import Event, HTTPCore, ProtocolError, UpgradeRequest, simple_response
from corral.protocol.request import Data, EndOfMessage, Request
from corral.protocol.response import REASONS
from corral.workers.channel import Exchange, Headers
from corral.workers.cycle import CycleState, RequestCycle
from corral.workers.deadlines import DRAIN_IDLE_GRACE_S, INF, LINGER_S, Deadline, write_stalled
from corral.workers.filesend import send_file
from corral.workers.peer import describe_peer
from corral.workers.scope import http_scope
from corral.workers.upgraded import hand_over

if TYPE_CHECKING:
    from corral.workers.server import WorkerServer

logger = logging.getLogger("corral.error")

#: Streamed body bytes held back so that chunks the app sends in one go leave in one
#: write at the end of the loop turn (one syscall, not one per chunk). Past this they
#: are written at once, so an app that streams without ever waiting still meets
#: backpressure (``pause_writing``) with at most this much held here.
COALESCE_BYTES = 64 * 1024


@final
class HTTPConnection(asyncio.Protocol):
    """Serves HTTP/1.1 on one connection; hands WebSocket upgrades over."""

    #: Never set: an upgrade hands the transport to ``upgraded.py`` and leaves this object.
    websocket: None = None

    __slots__ = (
        "_dispatching",
        "_drain_waiter",
        "_eager",
        "_held",
        "_held_bytes",
        "_lingering",
        "_paused_for_body",
        "_paused_for_pipeline",
        "_write_mark",
        "client",
        "core",
        "cycle",
        "deadline",
        "deadline_reason",
        "loop",
        "proxy_trusted",
        "server",
        "server_addr",
        "tls",
        "transport",
        "write_paused",
    )

    def __init__(self, server: WorkerServer) -> None:
        self.server = server
        self.loop = server.loop
        self.core = HTTPCore(server.http_limits, server.read_head)
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestCycle | None = None
        self.client: tuple[str, int] | None = None
        self.server_addr: tuple[str, int | None] | None = None
        self.deadline = INF
        self.deadline_reason = Deadline.NONE
        self.write_paused = False
        self._write_mark = 0  # write buffer size when WRITE was last armed
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_for_body = False
        self._paused_for_pipeline = False
        self._lingering = False
        # _handle_events is running: a nested call (a response finished inside it, as an
        # eagerly started app task can) leaves the new events to the running one.
        self._dispatching = False
        # The next app task may start eagerly (see WorkerServer.run_cycle): one per
        # call of _handle_events, so pipelined requests cannot run back to back
        # inside one callback while other connections wait.
        self._eager = False
        # Streamed body bytes waiting for the end of the loop turn (flush_soon).
        self._held: list[bytes] = []
        self._held_bytes = 0
        #: The scope's ``tls`` extension on a TLS connection (built once), else None.
        self.tls: dict[str, Any] | None = None
        #: --proxy-headers: whether the peer is a trusted proxy (decided once).
        self.proxy_trusted = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not assert: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast("asyncio.Transport", transport)
        self.client, self.server_addr, self.tls, self.proxy_trusted = describe_peer(
            self.server, transport
        )
        self.server.connections.add(self)
        self.set_deadline(Deadline.IDLE, self.server.timeout_header)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.deadline = INF
        self.deadline_reason = Deadline.NONE
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnect()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # an error response went out: input is dropped until the close
        reason = self.deadline_reason
        if reason is Deadline.IDLE:
            # The first byte of a head starts the absolute header deadline.
            self.set_deadline(Deadline.HEADER, self.server.timeout_header)
        elif reason is Deadline.BODY:
            self.set_deadline(Deadline.BODY, self.server.timeout_body)
        self.core.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client saw the error response and stopped: close now
        self.core.receive_eof()
        self._handle_events()
        cycle = self.cycle
        if cycle is None:
            return None  # nothing owed: asyncio closes the transport
        # Keep the write side open while a response is owed (a half-closed client).
        cycle.input_ended()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        transport = self.transport
        self._write_mark = transport.get_write_buffer_size() if transport is not None else 0
        self.set_deadline(Deadline.WRITE, self.server.timeout_write)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.deadline_reason is Deadline.WRITE:
            transport = self.transport
            if transport is not None and transport.is_closing():
                pass  # a close is flushing: keep watching it
            elif self.cycle is None:
                self.set_deadline(Deadline.IDLE, self.server.timeout_keep_alive)
            else:
                self.clear_deadline()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- events from the core ---------------------------------------------------------------

    def _handle_events(self) -> None:
        if self._dispatching:
            # A response finished while an event was being handled (an app task started
            # eagerly runs inside _start_cycle). Events of the next request must wait
            # for the current list: it may still hold the previous request's end.
            return
        self._dispatching = True
        self._eager = True
        try:
            while events := self.core.events_received():
                self._dispatch(events)
        finally:
            self._dispatching = False
        if not self._paused_for_pipeline and self.core.wants_read_paused():
            self._paused_for_pipeline = True
            self._pause()

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            # Most frequent first. The event classes are final, so an exact type test
            # says the same as isinstance, for less.
            if type(event) is Data:
                cycle = self.cycle
                if cycle is not None:
                    cycle.feed_body(event.data)
            elif type(event) is Request:
                self._start_cycle(event)
            elif type(event) is EndOfMessage:
                cycle = self.cycle
                if cycle is not None:
                    cycle.feed_end()
            elif isinstance(event, ProtocolError):
                self._protocol_error(event)
            elif isinstance(event, UpgradeRequest):
                self._upgrade(event)
            elif self.cycle is None:  # ConnectionClosed: the peer sent EOF
                self.close()

    def _start_cycle(self, request: Request) -> None:
        server = self.server
        if not self.write_paused:
            self.clear_deadline()
        scope = self.request_scope(request)
        cycle = self.cycle = RequestCycle(self, scope, request.method, request.target)
        if server.admit():
            eager = self._eager
            self._eager = False
            server.run_cycle(cycle, eager=eager)
        else:
            # Over --limit-concurrency: refuse this request, not the connection's
            # future ones (idle keep-alive connections never count).
            self.send_error(503, cycle, retry_after=True)
            self.cycle = None

    def _upgrade(self, event: UpgradeRequest) -> None:
        """Give the transport to a WebSocket session (``upgraded.py``); this object is
        done with it and serves nothing more."""
        server = self.server
        transport = self.transport
        if server.ws_limits is None or transport is None:
            self.send_error(400)
            return
        self.clear_deadline()  # the session's core keeps its own timers
        self.transport = None
        scope = self.request_scope(event.request)
        paused = self.write_paused
        hand_over(server, transport, event, scope, self.client, write_paused=paused, served=self)

    def _protocol_error(self, event: ProtocolError) -> None:
        logger.info(
            "bad request from %s: %s (%d)",
            self.client[0] if self.client else "unix",
            event.reason,
            event.status,
        )
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnect()
            if cycle.state is CycleState.STREAMING:
                self.abort()  # the response is half written: cut it
                return
        self.send_error(event.status, cycle)

    def request_scope(self, request: Request) -> dict[str, Any]:
        """The ASGI scope of ``request`` on this connection (HTTP, or the base of a
        WebSocket scope)."""
        return http_scope(
            self.server,
            http_version="1.1" if request.http_version == b"1.1" else "1.0",
            method=request.method,
            target=request.target,
            headers=request.headers,
            client=self.client,
            server_addr=self.server_addr,
            tls=self.tls,
            proxy_trusted=self.proxy_trusted,
        )

    # -- the request channel (see channel.py), called by the cycle ------------------------------

    def send_response(self, status: int, headers: Headers, body: bytes | None = None) -> None:
        server = self.server
        self.core.send_response(status, headers, server.defaults, server.draining, body)

    def send_body(self, data: bytes) -> None:
        self.core.send_body(data)

    def send_end(self) -> None:
        self.core.send_end()

    async def send_file(self, file: IO[bytes], offset: int, count: int) -> None:
        parts = self.core.frame_file(count)  # raises before anything is written
        self.flush()
        transport = self.transport
        if parts is not None and transport is not None:
            transport.write(parts[0])
            await send_file(self.loop, transport, file, offset, count, self.wait_writable)
            transport.write(parts[1])

    def expects_continue(self) -> bool:
        return self.core.they_are_waiting_for_100_continue

    def discard_unsent(self) -> None:
        self.core.data_to_send()

    def cut(self, cycle: Exchange) -> None:
        self.abort()
        self.server.log_access(self, cycle.status, cycle.bytes_sent, cycle)

    def send_continue(self) -> None:
        self.core.send_continue()
        self.flush()

    def flush(self) -> None:
        """Write what the core produced, after anything held (nothing once closing)."""
        data = self.core.data_to_send()
        if self._held:
            data = self._held + data
            self._held = []
            self._held_bytes = 0
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            # One send for head and body. (Writing a large body apart from its head
            # to save the copy measured no faster: the second syscall costs as much.)
            transport.write(data[0] if len(data) == 1 else b"".join(data))

    def flush_soon(self) -> None:
        """Hold what the core produced until the end of this loop turn (or until
        :data:`COALESCE_BYTES` are held), then write it: for streamed body chunks."""
        data = self.core.data_to_send()
        if not data:
            return
        held = self._held
        if not held:
            self.loop.call_soon(self._flush_held)
        for piece in data:
            held.append(piece)
            self._held_bytes += len(piece)
        if self._held_bytes >= COALESCE_BYTES:
            self.flush()

    def _flush_held(self) -> None:
        if self._held:
            self.flush()

    def send_error(
        self, status: int, cycle: Exchange | None = None, *, retry_after: bool = False
    ) -> None:
        """Answer with a plain error response and close. Call only if nothing was written.

        Resource handling: the write side is shut at once; the connection is closed when
        the client closes, or after :data:`LINGER_S` (``LINGER``).
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        extra = list(self.server.default_headers)
        if retry_after:
            extra.append((b"retry-after", b"1"))
        body = b"%d %s\n" % (status, REASONS.get(status, b""))
        transport.write(simple_response(status, body, extra))
        self.server.log_access(self, status, len(body), cycle)
        if not transport.can_write_eof():
            self.close()
            return
        try:
            transport.write_eof()
        except OSError:
            # asyncio's write_eof() calls shutdown() unguarded: ENOTCONN once the peer
            # has reset the connection. Nothing left to linger for.
            transport.abort()
            return
        self._lingering = True
        self._paused_for_body = self._paused_for_pipeline = False
        transport.resume_reading()
        if not self.write_paused:
            self.set_deadline(Deadline.LINGER, LINGER_S)

    def close(self) -> None:
        """Close after the pending writes; a client that stops reading is cut by WRITE."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self._held:
                self.flush()
            transport.close()
            self._write_mark = transport.get_write_buffer_size()
            self.set_deadline(Deadline.WRITE, self.server.timeout_write)

    def abort(self) -> None:
        if self._held:
            # What the app sent before the failure goes out as it would have without
            # the holding back; the cut that follows still marks the body truncated.
            self.flush()
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
        """The app blocks in receive(): read, and start the body-idle deadline."""
        self.resume_reading_for_body()
        if self.deadline_reason is Deadline.NONE:
            self.set_deadline(Deadline.BODY, self.server.timeout_body)

    def body_wait_over(self) -> None:
        """The app got what it waited for: its processing time is not client silence."""
        if self.deadline_reason is Deadline.BODY:
            self.clear_deadline()

    async def wait_writable(self) -> None:
        """Wait until the transport resumes writing, or the connection is lost."""
        transport = self.transport
        if self.write_paused and transport is not None and not transport.is_closing():
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.loop.create_future()
            await asyncio.shield(waiter)

    def response_finished(self, cycle: Exchange) -> None:
        """The cycle sent its last byte: log, and get ready for the next request."""
        server = self.server
        if server.access_log:
            server.log_access(self, cycle.status, cycle.bytes_sent, cycle)
        server.release()
        server.requests += 1
        if server.on_request is not None:
            server.on_request()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        core = self.core
        if core.close_expected() or server.draining:
            self.close()
            return
        self.cycle = None
        core.start_next_cycle()
        if core.close_expected():
            self.close()
            return
        if not self.write_paused:
            self.set_deadline(Deadline.IDLE, server.timeout_keep_alive)
        if self._paused_for_body or self._paused_for_pipeline:
            self._paused_for_body = self._paused_for_pipeline = False
            self._resume()
        self._handle_events()

    def cycle_finished(self, completed: bool) -> None:
        """The app's task ended (after or without a full response)."""
        if not completed:
            # response_finished() released the slot of a completed response. An
            # incomplete one always ends with the connection closed or cut (_fail).
            self.server.release()

    # -- deadlines and flow control ------------------------------------------------------------

    def set_deadline(self, reason: Deadline, seconds: float) -> None:
        self.deadline_reason = reason
        self.deadline = self.loop.time() + seconds

    def clear_deadline(self) -> None:
        self.deadline_reason = Deadline.NONE
        self.deadline = INF

    def deadline_passed(self) -> None:
        """Called by the sweep once ``deadline`` is in the past."""
        reason = self.deadline_reason
        self.clear_deadline()
        transport = self.transport
        if transport is None:
            return
        if reason is Deadline.WRITE or transport.is_closing():
            mark = write_stalled(transport, self._write_mark)
            if mark is not None:
                # Slow but moving: the stall deadline is about progress, not total time.
                self._write_mark = mark
                self.set_deadline(Deadline.WRITE, self.server.timeout_write)
                return
            if transport.get_write_buffer_size():
                logger.info("aborting a connection: the client stopped reading the response")
            transport.abort()
        elif reason is Deadline.IDLE or reason is Deadline.LINGER:
            self.close()
        else:
            logger.info("closing a connection: %s timeout", reason.value)
            cycle = self.cycle
            if cycle is not None:
                cycle.disconnect()
                if cycle.state is CycleState.STREAMING:
                    transport.abort()
                    return
            self.send_error(408, cycle)

    def _pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def _resume(self) -> None:
        transport = self.transport
        if (
            transport is not None
            and not self._paused_for_body
            and not self._paused_for_pipeline
            and not transport.is_closing()
        ):
            transport.resume_reading()

    def shutdown(self) -> None:
        """The worker is draining: close after the current response, or soon if idle.

        An idle keep-alive connection is not closed at once: under load its client may
        have the next request on the wire already, and closing under it loses that
        request (the client sees a reset; most do not retry). For
        :data:`DRAIN_IDLE_GRACE_S` a request that arrives is served with
        ``Connection: close``; a connection still silent then is closed.
        """
        if self.cycle is None and self.deadline_reason is Deadline.IDLE:
            deadline = self.loop.time() + DRAIN_IDLE_GRACE_S
            if deadline < self.deadline:
                self.deadline = deadline
