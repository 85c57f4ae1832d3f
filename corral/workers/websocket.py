"""One ASGI WebSocket session (spec 2.5) over :class:`corral.protocol.websocket.WebSocketCore`.

The HTTP/1.1 connection hands its transport over once the core reports an
``UpgradeRequest`` (``upgraded.py``); from then on the connection's bytes come here, and
the session writes through a :class:`~corral.workers.channel.MessageChannel`, which an
HTTP/2 stream can implement too (RFC 8441). The session's state is an Enum:

    HANDSHAKE --websocket.accept--> CONNECTED --close sent or received--> CLOSED
    HANDSHAKE --websocket.close / http.response.start--> REJECTING --last body--> CLOSED
    HANDSHAKE --app returned or raised--> CLOSED (HTTP 500 / 403)

Rules (ASGI spec and RFC 6455):

* ``websocket.connect`` is the first message the app receives; nothing is sent to the
  client before the app answers it.
* ``websocket.close`` before accept is a 403, or with the ``websocket.http.response``
  extension any response the app sends.
* After accept, an app exception closes with 1011 and an app that returns without
  closing closes with 1000: never a bare FIN.
* ``send`` after the connection closed raises :class:`ClientDisconnected` (an OSError).
* ``websocket.disconnect`` carries the peer's code (1005 if its Close had none, 1006 for
  a drop without a Close) and reason.
* Bad input after valid messages: the core holds the failure (its FAILING state) until
  the app's answers are out. ``receive`` with nothing waiting tells the core the app
  caught up, which sends the Close and returns the disconnect; the core's grace timer
  bounds an app that never asks.
* Access log: one line at the handshake (its status and how long the app took to
  decide), and for an accepted session one more when the connection ends: duration,
  messages and bytes each way (frames on the wire, after the 101), close code.
* On a drain the client gets 1001 (stop) or 1012 (reload) and the app a disconnect,
  after :data:`DRAIN_GRACE_S`; a session the app accepts during the drain too.
* Reading pauses while the app has :data:`MAX_QUEUED_MESSAGES` messages unread;
  ``send`` waits while the transport's write buffer is over its high-water mark. Bytes
  that bypass that (Pongs, one huge message) are bounded by
  :data:`OUTBOUND_BUFFER_MESSAGES` maximum messages (1008 past it), and a connection
  closing with unsent bytes is cut after --timeout-write (the adapter's WRITE deadline).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from time import perf_counter
from typing import Any, final

from corral.logs import access_logger, format_access, format_websocket_end
from corral.protocol.http import UpgradeRequest
from corral.protocol.websocket import (
    BytesMessage,
    CloseReceived,
    ConnectionClosed,
    LocalProtocolError,
    TextMessage,
    WebSocketCore,
    WebSocketState,
)
from corral.workers.channel import MessageChannel
from corral.workers.server import WorkerServer
from corral.workers.types import ASGIApp, ClientDisconnected, Message

logger = logging.getLogger("corral.error")

#: Messages received but not yet taken by the app before reading pauses. Small, since
#: each can be up to --ws-max-size; the TCP window then pushes back on the client.
MAX_QUEUED_MESSAGES = 16

#: Seconds the app gets to notice a drain before its session is closed for it.
DRAIN_GRACE_S = 0.5


# Core states in which the app may still send: in FAILING only answers to what came
# before the bad input (see WebSocketCore).
_SENDING = frozenset({WebSocketState.OPEN, WebSocketState.FAILING})


class SessionState(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTED = "connected"
    REJECTING = "rejecting"
    CLOSED = "closed"


@final
class WebSocketSession:
    """The app's ``receive``/``send`` pair for one WebSocket connection."""

    __slots__ = (
        "_accepted",
        "_bytes_in",
        "_bytes_out",
        "_channel",
        "_client",
        "_connect_delivered",
        "_core",
        "_disconnect",
        "_drain_code",
        "_inbox",
        "_messages_in",
        "_messages_out",
        "_paused",
        "_server",
        "_started_at",
        "_timer",
        "_timer_at",
        "_waiter",
        "scope",
        "state",
    )

    def __init__(
        self,
        channel: MessageChannel,
        server: WorkerServer,
        scope: dict[str, Any],
        event: UpgradeRequest,
        client: tuple[str, int] | None,
    ) -> None:
        """``scope`` is the request's HTTP scope, made into the WebSocket scope here;
        ``client`` is the peer for the access log."""
        self._channel = channel
        self._server = server
        self._client = client
        limits = server.ws_limits
        assert limits is not None  # the connection refuses upgrades without them
        # perf_counter, not the loop's clock: uvloop's is 1 ms coarse.
        self._started_at = perf_counter()
        self._core = WebSocketCore(event.request, event.trailing, limits=limits)
        self.state = SessionState.HANDSHAKE
        self._inbox: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._disconnect: Message | None = None
        self._connect_delivered = False
        self._paused = False
        self._drain_code = 0  # set by a drain that found the app still deciding
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        # For the access line at the end: counted from the 101 on (the early frames in
        # ``trailing`` included), logged once if the app accepted.
        self._accepted = False
        self._messages_in = 0
        self._messages_out = 0
        self._bytes_in = len(event.trailing)
        self._bytes_out = 0
        tls = scope["extensions"].get("tls")
        del scope["method"]
        scope["type"] = "websocket"
        # http_scope chose http or https (TLS, or a trusted proxy's forwarding headers).
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        scope["subprotocols"] = self._core.subprotocols
        # Kept: the tls extension http_scope added on a TLS connection.
        # The HTTP scope's file-sending extensions mean nothing here; TLS carries over.
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        if tls is not None:
            extensions["tls"] = tls
        scope["extensions"] = extensions
        self.scope = scope

    def start(self) -> None:
        core = self._core
        server = self._server
        if core.error_status_hint is not None:
            # A bad handshake: the core queued the HTTP refusal; the app never runs.
            logger.info("refused a WebSocket handshake: %s", core.error_reason)
        elif server.draining or not server.admit():
            # Over --limit-concurrency (uvicorn lets upgrades bypass it), or going away.
            core.reject(503, [(b"retry-after", b"1")], b"503 Service Unavailable\n")
            self._log(503)
        else:
            # asyncio keeps only weak references to tasks: the server holds ours.
            task = self._channel.loop.create_task(self._run(server.app))
            server.tasks.add(task)
            task.add_done_callback(server.tasks.discard)
            return
        # Refused: the core queued the whole response and is CLOSED; write it and close.
        self.state = SessionState.CLOSED
        self._flush()

    # -- bytes from the connection ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        self._core.receive_data(data, self._channel.loop.time())
        self._after_input()

    def eof_received(self) -> bool | None:
        self._core.receive_eof()
        self._after_input()
        return None

    def connection_lost(self) -> None:
        # A reset comes without an EOF: end the core too (a no-op once it is CLOSED), so
        # the app's disconnect is 1006 and its next send raises ClientDisconnected.
        self._core.receive_eof()
        self._after_input()
        self._end()
        if self._accepted:
            self._accepted = False
            self._log_end()

    def shutdown(self) -> None:
        """The worker drains: tell the client (1001 or 1012) and the app."""
        code = self._server.close_code or 1001
        if self.state is SessionState.CONNECTED:
            self._channel.loop.call_later(DRAIN_GRACE_S, self._close_for_drain, code)
        elif self.state is SessionState.HANDSHAKE:
            # The app is deciding: a refusal ends it; an accept starts the same grace.
            self._drain_code = code

    def _close_for_drain(self, code: int) -> None:
        if self.state is not SessionState.CONNECTED:
            return
        core = self._core
        try:
            core.send_close(code, "server shutting down" if code == 1001 else "")
        except LocalProtocolError:
            return  # the peer's Close or a failure ended the connection first
        if core.state is WebSocketState.CLOSED:
            # A held failure (FAILING) ended instead, with its own code.
            self._after_input()
            return
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": ""}
        self._flush()
        self._wake()

    def _after_input(self) -> None:
        for event in self._core.events_received():
            if isinstance(event, TextMessage):
                self._inbox.append({"type": "websocket.receive", "text": event.data})
                self._messages_in += 1
            elif isinstance(event, BytesMessage):
                self._inbox.append({"type": "websocket.receive", "bytes": event.data})
                self._messages_in += 1
            elif isinstance(event, CloseReceived) and self._disconnect is None:
                self._disconnect = {
                    "type": "websocket.disconnect",
                    "code": event.code,
                    "reason": event.reason,
                }
        if len(self._inbox) >= MAX_QUEUED_MESSAGES and not self._paused:
            self._paused = True
            self._channel.pause_reading()
        self._flush()
        self._wake()

    # -- the app --------------------------------------------------------------------------

    async def _run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            self._abort_app(1001)
            raise
        except Exception:
            logger.exception("exception in ASGI WebSocket application")
            self._abort_app(1011)
        else:
            self._abort_app(1000)
        finally:
            self._server.release()  # the slot start() took with admit()
            self._end()

    def _abort_app(self, code: int) -> None:
        """The app ended: finish the handshake or the connection in its place."""
        core = self._core
        try:
            if self.state is SessionState.HANDSHAKE:
                core.reject(500, [], b"500 Internal Server Error\n")
                self._log(500)
            elif self.state is SessionState.CONNECTED and core.state in _SENDING:
                core.send_close(code)  # in FAILING: the held failure's Close instead
            elif self.state is SessionState.REJECTING:
                core.reject_body(b"", more=False)
        except LocalProtocolError:
            pass
        self._flush()
        self.state = SessionState.CLOSED

    async def receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        while not self._inbox and self._disconnect is None:
            if self._core.mark_caught_up():
                # The app answered all it was given: a held failure's Close goes now.
                self._after_input()
                continue
            waiter = self._waiter = self._channel.loop.create_future()
            await waiter
        if self._inbox:
            message = self._inbox.popleft()
            if self._paused and len(self._inbox) < MAX_QUEUED_MESSAGES // 2:
                self._paused = False
                self._channel.resume_reading()
            return message
        assert self._disconnect is not None
        return self._disconnect

    async def send(self, message: Message) -> None:
        kind = message["type"]
        core = self._core
        state = self.state
        if state is SessionState.CLOSED or core.state is WebSocketState.CLOSED:
            raise ClientDisconnected("the WebSocket connection is closed")
        try:
            if kind == "websocket.send" and state is SessionState.CONNECTED:
                data_bytes = message.get("bytes")
                text = message.get("text")
                if (data_bytes is None) == (text is None):
                    raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
                if isinstance(text, str):
                    core.send_text(text)
                elif isinstance(data_bytes, (bytes, bytearray, memoryview)):
                    core.send_bytes(bytes(data_bytes))
                else:
                    raise RuntimeError("websocket.send: 'text' must be str, 'bytes' bytes")
                self._messages_out += 1
            elif kind == "websocket.accept" and state is SessionState.HANDSHAKE:
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                core.accept(message.get("subprotocol"), headers + self._extra_headers(headers))
                self.state = SessionState.CONNECTED
                self._log(101)
                self._flush()  # the 101, which the session's byte count leaves out
                self._accepted = True
                self._bytes_out = 0
                if self._drain_code:
                    self._channel.loop.call_later(
                        DRAIN_GRACE_S, self._close_for_drain, self._drain_code
                    )
            elif kind == "websocket.close" and state is SessionState.HANDSHAKE:
                core.reject(403, [], b"")
                self.state = SessionState.CLOSED
                self._log(403)
            elif kind == "websocket.close" and state is SessionState.CONNECTED:
                core.send_close(message.get("code", 1000), message.get("reason") or "")
                self.state = SessionState.CLOSED
            elif kind == "websocket.http.response.start" and state is SessionState.HANDSHAKE:
                status = message["status"]
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                core.reject_start(status, headers + self._extra_headers(headers))
                self.state = SessionState.REJECTING
                self._log(status)
            elif kind == "websocket.http.response.body" and state is SessionState.REJECTING:
                more = bool(message.get("more_body", False))
                core.reject_body(message.get("body", b""), more=more)
                if not more:
                    self.state = SessionState.CLOSED
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} in state {state.value}")
        except ConnectionClosed:
            raise ClientDisconnected("the WebSocket connection is closed") from None
        except LocalProtocolError as exc:
            raise RuntimeError(f"invalid {kind!r}: {exc}") from None
        self._flush()
        channel = self._channel
        if channel.write_paused:
            await channel.wait_writable()

    def _extra_headers(self, given: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        names = {name for name, _ in given}
        return [h for h in self._server.default_headers if h[0] not in names]

    def _log(self, status: int) -> None:
        """The handshake's line: its status, and how long the app took to decide."""
        if self._server.access_log and access_logger.isEnabledFor(logging.INFO):
            duration = perf_counter() - self._started_at
            format_access(self._client, b"WEBSOCKET", self._target(), status, 0, duration)

    def _log_end(self) -> None:
        """The session's line, once, when the connection of an accepted session ends."""
        if self._server.access_log and access_logger.isEnabledFor(logging.INFO):
            disconnect = self._disconnect
            format_websocket_end(
                self._client,
                self._target(),
                disconnect["code"] if disconnect is not None else 1006,
                perf_counter() - self._started_at,
                (self._messages_in, self._bytes_in),
                (self._messages_out, self._bytes_out),
            )

    def _target(self) -> bytes:
        path: bytes = self.scope["raw_path"]
        query: bytes = self.scope["query_string"]
        return path + b"?" + query if query else path

    # -- plumbing -----------------------------------------------------------------------------

    def _flush(self) -> None:
        channel = self._channel
        core = self._core
        data = core.data_to_send()
        if channel.closing():
            return
        if data:
            chunk = data[0] if len(data) == 1 else b"".join(data)
            channel.write(chunk)
            self._bytes_out += len(chunk)
            if core.check_outbound_buffer(channel.write_buffer_size()):
                # The client stopped reading: the core failed the connection (1008).
                self._after_input()
                return
        if core.close_expected():
            channel.close()  # the WRITE deadline cuts a client that never reads the rest
            return
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        deadline = self._core.next_deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # the common case: the armed timer fires first and re-arms itself
            timer.cancel()
        loop = self._channel.loop
        now = loop.time()
        if deadline < now:
            deadline = now  # -inf: the core wants a tick as soon as possible
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._core.tick(self._channel.loop.time())
        self._after_input()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
