"""The sans-I/O WebSocket server core: wsproto behind a checked handshake and limits.

Theory of operation
-------------------
The HTTP core parses the upgrade request once, with h11's grammar, and hands over the
:class:`~corral.protocol.request.Request` plus the bytes it read after the head. This
object takes it from there: bytes go in with :meth:`WebSocketCore.receive_data` (and
:meth:`~WebSocketCore.tick` for time), events come out of
:meth:`~WebSocketCore.events_received`, the app's decisions go in with
``accept``/``reject*``/``send_*``, and the bytes to write come out of
:meth:`~WebSocketCore.data_to_send`. Time is an argument, never read.

States (:class:`WebSocketState`)::

    CONNECTING --accept()------> OPEN --send_close()--> CLOSING --peer Close, EOF,
        |                          |                            close timeout--> CLOSED
        |                          +--peer Close (echoed), EOF, failure -------> CLOSED
        |                          +--bad input, answers owed--> FAILING --caught up,
        |                                  grace over, send_close(), EOF-------> CLOSED
        +--reject_start()--> CLOSING (rejecting) --last reject_body()----------> CLOSED
        +--bad handshake (at construction), EOF -------------------------------> CLOSED

The work is split as h11 splits its state machine from its readers and writers. This
file is the state machine: the states, the app's decisions, the timers, the endings.
Beside it, :class:`~corral.protocol.ws_handshake.Handshake` checks the upgrade request
(400, or 426, RFC 6455 section 4.2.1) and builds the handshake's responses, handing
wsproto the request h11 already parsed; :class:`~corral.protocol.ws_reader.MessageReader`
reads the peer's frames into messages, answers its Pings and Close, and reports how
its input ended; ``ws_frames.py`` builds the frames we send (only Close goes through
wsproto, to keep its closing handshake state right); ``ws_limits.py`` and
``ws_deflate.py`` hold the policy.

Rules:

* Nothing is sent before the app decides (ASGI: the server must not finish the
  handshake first). Bytes the client sends early are buffered, up to one maximum
  message, and read after the 101 goes out.
* Bad peer input never raises: the connection is failed (RFC 6455 section 7.1.7) with
  a Close frame carrying 1002, 1007, 1009 or the guard's code, then CLOSED. Misuse by
  the caller raises :class:`LocalProtocolError`; sending on a closing or closed
  connection raises its subclass :class:`ConnectionClosed`.
* What was valid is answered first. Messages that arrived before the bad input were
  delivered; the app's answers to them are owed to the peer, and a Close would forbid
  them (section 5.5.1: nothing after a Close). So while answers are owed the failure
  is held in FAILING: input is ignored, messages may still be sent, and the Close goes
  out when the caller reports with :meth:`~WebSocketCore.mark_caught_up` that the app
  took every message and waits for more, or after ``answer_grace_s``, whichever is
  first (the app sending a Close or the peer's EOF end it too). Answers are owed from
  the moment a message is delivered until the next ``mark_caught_up()``; a failure
  with none owed is immediate, as is one the caller causes (keepalive timeout, full
  outbound buffer), which no answer can help. The close code is the same either way.
* A Close from the peer is echoed at once (section 5.5.1), and the server then closes
  TCP first (section 7.1.1). Pings are answered as they are read (ws_reader.py).
* Every connection that got past the handshake check ends in exactly one
  :class:`CloseReceived` from the input side (``receive_*``, ``tick``,
  ``check_outbound_buffer``, ``mark_caught_up``; and ``send_close`` in FAILING, which
  ends the held failure). Its code is the peer's Close code (1005 if its Close had
  none), else the code this core sent when it failed the connection, else 1006: the
  connection ended with no Close frame (section 7.1.5). ``reject`` emits none: the app
  ended that connection itself.

Timers: ``next_deadline()`` says when ``tick(now)`` has work; ``-inf`` means "call it
now", which starts a timer whose start the core could not know (after ``accept`` and
``send_close``, which take no time). FAILING's grace runs from the read that brought
the bad input (from the first tick if that was inside ``accept``). Keepalive pings go
out after ``ping_interval_s`` without inbound bytes. A ping is answered if any inbound
bytes arrive within ``ping_timeout_s``: a peer busy uploading one huge frame cannot
slip a Pong into it, yet is plainly alive.

What this file must not know: sockets, event loops, clocks, ASGI message dicts,
logging, the application.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

from wsproto import events as wsevents

from corral.protocol.request import Request
from corral.protocol.ws_deflate import BoundedDeflate
from corral.protocol.ws_events import (
    ABNORMAL,
    CLOSED,
    CLOSING,
    CONNECTING,
    FAILING,
    OPEN,
    BytesMessage,
    CloseReceived,
    ConnectionClosed,
    Event,
    LocalProtocolError,
    PongReceived,
    TextMessage,
    WebSocketState,
)
from corral.protocol.ws_frames import FIN_BINARY, FIN_PING, FIN_TEXT, queue_frame, queue_message
from corral.protocol.ws_handshake import Handshake
from corral.protocol.ws_limits import (
    REFUSAL_400,
    REFUSAL_426,
    Refusal,
    WebSocketLimits,
    sendable_close_code,
)
from corral.protocol.ws_reader import Ending, MessageReader

if TYPE_CHECKING:
    from collections.abc import Iterable

    from wsproto.connection import Connection

__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "FAILING",
    "OPEN",
    "BytesMessage",
    "CloseReceived",
    "ConnectionClosed",
    "Event",
    "LocalProtocolError",
    "PongReceived",
    "TextMessage",
    "WebSocketCore",
    "WebSocketLimits",
    "WebSocketState",
]


@final
class WebSocketCore:
    """One server-side WebSocket connection, from the upgrade request to the end.

    Construct it with the parsed upgrade request; if the handshake is bad, the object
    is CLOSED at once with the HTTP refusal queued in :meth:`data_to_send` and
    ``error_status_hint`` set, and the app must not be called.

    One class for the whole life, though it is longer than the house's ~250 lines:
    every public method reads and moves the one state, and splitting it would spread
    that state over objects or put a hop on the per-message path. What is not state
    lives beside it (module docstring).

    Attributes:
        error_status_hint: The HTTP status of a refused handshake, else None.
        error_reason: Why the handshake was refused, for the log; "" if it was not.
    """

    def __init__(self, request: Request, trailing: bytes, *, limits: WebSocketLimits) -> None:
        self._limits = limits
        # An unset timer is infinitely far away: no Optional on the tick path.
        self._ping_interval = math.inf if limits.ping_interval_s is None else limits.ping_interval_s
        self._ping_timeout = math.inf if limits.ping_timeout_s is None else limits.ping_timeout_s
        self._close_timeout = math.inf if limits.close_timeout_s is None else limits.close_timeout_s
        self._state = CONNECTING
        self._rejecting = False
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._early = bytearray(trailing)
        # Set by accept(): the frame-level connection, for our Close, and the inflater
        # and compressor if permessage-deflate was negotiated, for our messages.
        self._conn: Connection | None = None
        self._deflate: BoundedDeflate | None = None
        # The peer's side (ws_reader.py), started by accept(). Its receive() is bound
        # here: reading adds no call to the per-message path.
        reader = self._reader = MessageReader(limits)
        self._read = reader.receive
        # Timers: last inbound activity or keepalive ping (the payload awaiting its
        # Pong is the reader's), a counter to make payloads unique, and when our Close
        # went out.
        self._idle_since: float | None = None
        self._ping_count = 0
        self._closing_since: float | None = None
        # A failure found while answers are owed (the reader's ``owed``) waits in
        # FAILING: its code and reason, and since when.
        self._failure: tuple[int, str] | None = None
        self._failing_since: float | None = None
        self.error_status_hint: int | None = None
        self.error_reason = ""
        self._handshake = Handshake(request, trailing, limits)
        if self._handshake.refusal is not None:
            self._refuse(self._handshake.refusal)

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> WebSocketState:
        """The current :class:`WebSocketState`."""
        return self._state

    @property
    def subprotocols(self) -> list[str]:
        """Subprotocols the client offered, in its order of preference (a copy)."""
        return list(self._handshake.subprotocols)

    @property
    def simple_frames(self) -> int:
        """Messages read on the fast path, without wsproto: for tests and debugging."""
        return self._reader.simple_frames

    def close_expected(self) -> bool:
        """True once the TCP connection should be closed after flushing data_to_send()."""
        return self._state is CLOSED

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Return and forget the bytes to write, in order.

        Call it after every receive_data(), receive_eof(), tick(), accept(), reject*(),
        send_*() and check_outbound_buffer(). Write the chunks in order (writelines or
        a join); big payloads come as a chunk of their own, uncopied.
        """
        out = self._out
        self._out = []
        return out

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call, in order."""
        events = self._events
        self._events = []
        return events

    # -- opening handshake -------------------------------------------------------------

    def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """Complete the handshake with 101 Switching Protocols.

        Negotiates permessage-deflate if the limits allow it and the client offered it,
        then processes any frames the client sent early.

        Raises:
            LocalProtocolError: not CONNECTING; ``subprotocol`` was not offered (RFC 6455
                section 4.2.2); a header is one the handshake sets itself (such as
                sec-websocket-protocol) or is not a valid header. The state is then
                unchanged, so the caller may still reject().
            ConnectionClosed: the client is gone or the handshake was refused.
        """
        if self._state is not CONNECTING:
            raise self._state_error("accept")
        response, conn, guard, self._deflate = self._handshake.accept(subprotocol, headers)
        self._conn = conn
        self._reader.start(conn, guard, self._deflate)
        self._state = OPEN
        self._out.append(response)
        early = self._early
        self._early = bytearray()
        if early:
            ending = self._read(bytes(early), self._events, self._out)
            if ending is not None:
                self._end_input(ending)

    def reject(
        self, status: int = 403, headers: Iterable[tuple[bytes, bytes]] = (), body: bytes = b""
    ) -> None:
        """Refuse the handshake with a complete HTTP response, then close.

        The ASGI "close before accept" is ``reject(403)``. A Content-Length is added
        unless ``headers`` has one.

        Raises:
            LocalProtocolError: as for :meth:`reject_start` and :meth:`reject_body`.
        """
        extra = list(headers)
        if not any(name.lower() == b"content-length" for name, _ in extra):
            extra.append((b"content-length", b"%d" % len(body)))
        self.reject_start(status, extra)
        self.reject_body(body)

    def reject_start(self, status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Begin an HTTP response refusing the handshake (ASGI websocket.http.response).

        Follow with :meth:`reject_body` until ``more=False``. Without a Content-Length
        the body is sent chunked. The connection closes after the response whatever the
        headers say: the client may have sent frames after its request already, which
        HTTP cannot parse, so any Connection header is replaced by ``close``.

        Raises:
            LocalProtocolError: not CONNECTING, or h11 refused the status or a header;
                in the second case the state is unchanged and reject() may be retried.
        """
        if self._state is not CONNECTING:
            raise self._state_error("reject")
        self._out.append(self._handshake.reject_head(status, headers))
        self._state = CLOSING
        self._rejecting = True

    def reject_body(self, data: bytes, *, more: bool = False) -> None:
        """Send part of the rejection body; ``more=False`` ends it and the connection.

        Raises:
            LocalProtocolError: no rejection in progress, or the body broke its
                Content-Length; the connection is then CLOSED, the response truncated.
            ConnectionClosed: the client went away mid-response.
        """
        if self._state is not CLOSING or not self._rejecting:
            raise self._state_error("send a rejection body")
        try:
            chunk = self._handshake.reject_body(data, more)
        except LocalProtocolError:
            # The head is out; a broken body can only be ended by closing.
            self._state = CLOSED
            raise
        self._out.append(chunk)
        if not more:
            self._state = CLOSED

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the peer; then call events_received() and data_to_send().

        Bytes are buffered before accept(), parsed while OPEN or CLOSING, and dropped
        once the connection is ending (nothing after a Close can matter, RFC 6455
        section 5.5.1) or failing (nothing after bad input can be trusted). Bad input
        never raises: it fails the connection, at once or, with answers owed, through
        FAILING (see the module docstring).
        """
        state = self._state
        if state is OPEN or (state is CLOSING and not self._rejecting):
            self._idle_since = now
            ending = self._read(data, self._events, self._out)
            if ending is not None:
                self._end_input(ending)
        elif state is CONNECTING:
            self._early += data
            if len(self._early) > self._limits.max_message_size:
                # The client must wait for the 101 before sending (section 4.1);
                # one maximum message of patience is all it gets.
                self._refuse(Refusal(400, "too much data before the handshake response"))
                self._events.append(ABNORMAL)

    def receive_eof(self) -> None:
        """The peer closed its side. Unless the connection is already over, this ends
        it with :class:`CloseReceived` 1006 (RFC 6455 section 7.1.5): no Close frame
        came, including before the handshake completed. A held failure ends with its
        own code: its Close is queued, in case the peer only half-closed."""
        if self._state is FAILING:
            self._fail_held()
        elif self._state is not CLOSED:
            self._finish(1006, "")

    def mark_caught_up(self) -> bool:
        """Report that the app has taken every message delivered and waits for the next.

        No answer is owed any more, so a failure found later is immediate, and one held
        in FAILING happens now (its Close queued behind the app's answers): then call
        events_received() and data_to_send(). Call it each time the app asks for a
        message and none is waiting; cheap when nothing is held.

        Returns:
            True if this ended a held failure (the state is now CLOSED).
        """
        if self._state is FAILING:
            self._fail_held()
            return True
        self._reader.owed = False
        return False

    def _end_input(self, ending: Ending) -> None:
        """The reader's input ended: a Close from the peer, or bad input."""
        code = ending.code
        reason = ending.reason
        if not ending.fail:
            self._finish(code, reason)
        elif self._reader.owed and self._state is OPEN and self._limits.answer_grace_s > 0:
            # Answers are owed: hold the failure (module docstring). wsproto stays
            # OPEN, so the Close can still be sent later, and it is fed nothing more.
            self._failure = (code, reason)
            # The time of the read that brought the bad frame; None from accept(),
            # which takes no time: next_deadline() then asks for a tick at once.
            self._failing_since = self._idle_since
            self._state = FAILING
        else:
            # Fail the connection (section 7.1.7): a Close with the chosen code, then
            # close TCP without waiting.
            self._fail(code, reason)

    # -- sending -----------------------------------------------------------------------

    def send_text(self, data: str) -> None:
        """Queue a text message.

        Allowed in OPEN and FAILING (an answer to a message received before bad input).

        Raises:
            LocalProtocolError: not OPEN, or ``data`` cannot be UTF-8 (lone surrogate).
            ConnectionClosed: the connection is closing or closed.
        """
        state = self._state
        if state is not OPEN and state is not FAILING:
            raise self._state_error("send")
        try:
            payload = data.encode()
        except UnicodeEncodeError as exc:
            raise LocalProtocolError("text is not encodable as UTF-8") from exc
        queue_message(self._out, FIN_TEXT, payload, self._deflate)

    def send_bytes(self, data: bytes) -> None:
        """Queue a binary message; allowed in OPEN and FAILING, as send_text().

        Raises:
            LocalProtocolError: not OPEN.
            ConnectionClosed: the connection is closing or closed.
        """
        state = self._state
        if state is not OPEN and state is not FAILING:
            raise self._state_error("send")
        queue_message(self._out, FIN_BINARY, data, self._deflate)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a Ping; its Pong arrives as :class:`PongReceived`.

        Raises:
            LocalProtocolError: not OPEN, or ``payload`` over 125 bytes (section 5.5).
            ConnectionClosed: the connection is failing, closing or closed.
        """
        if self._state is not OPEN:
            raise self._state_error("ping")
        if len(payload) > 125:
            raise LocalProtocolError("a ping payload is at most 125 bytes")
        queue_frame(self._out, FIN_PING, payload)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the state becomes CLOSING until the peer's
        Close (then :class:`CloseReceived`) or the close timeout.

        ``reason`` is cut to 123 UTF-8 bytes on a character boundary (section 5.5).
        In FAILING the held failure happens instead: the peer broke the protocol, so
        its Close carries the failure's code (section 7.1.7), and the state is CLOSED.

        Raises:
            LocalProtocolError: ``code`` may not be sent (1004-1006, 1015, 1016-2999,
                outside 1000-4999; wsproto would silently send 1000 instead, wsproto#182),
                ``reason`` is not encodable, or the handshake is not done (use reject()).
            ConnectionClosed: the connection is closing or closed.
        """
        if not sendable_close_code(code):
            raise LocalProtocolError(f"close code {code} may not be sent (RFC 6455 7.4)")
        if self._state is FAILING:
            self._fail_held()
            return
        if self._state is not OPEN:
            raise self._state_error("close")
        conn = self._conn
        assert conn is not None  # OPEN implies accept() ran
        try:
            frame = conn.send(wsevents.CloseConnection(code=code, reason=reason))
        except UnicodeEncodeError as exc:
            raise LocalProtocolError("close reason is not encodable as UTF-8") from exc
        self._out.append(frame)
        self._state = CLOSING
        # wsproto alone reads the rest of the closing handshake (ws_reader.py).
        self._reader.fast_path = False

    # -- time and flow control ---------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When tick() next has work: None for never, ``-inf`` for at once."""
        state = self._state
        if state is OPEN:
            wait = self._ping_interval if self._reader.awaited_pong is None else self._ping_timeout
            if wait == math.inf:
                return None
            return -math.inf if self._idle_since is None else self._idle_since + wait
        if state is FAILING:
            since = self._failing_since
            return -math.inf if since is None else since + self._limits.answer_grace_s
        if state is CLOSING and not self._rejecting and self._close_timeout != math.inf:
            return (
                -math.inf
                if self._closing_since is None
                else self._closing_since + self._close_timeout
            )
        return None

    def tick(self, now: float) -> None:
        """Run the timers; then call events_received() and data_to_send().

        OPEN: after ``ping_interval_s`` without inbound bytes, send a keepalive Ping; if
        nothing arrives for ``ping_timeout_s`` after it, fail the connection with 1011.
        RFC 6455 section 7.1.7 asks for a Close before dropping an established
        connection, 1006 may never be sent (section 7.4.1), and 1011 (an unexpected
        condition) is what websockets sends for a keepalive timeout. FAILING: after
        ``answer_grace_s``, send the held failure's Close. CLOSING: after
        ``close_timeout_s`` without the peer's Close, give up with 1006.
        """
        state = self._state
        if state is OPEN:
            idle_since = self._idle_since
            if idle_since is None:
                self._idle_since = now
            elif self._reader.awaited_pong is not None:
                if now >= idle_since + self._ping_timeout:
                    self._fail(1011, "keepalive ping timeout")
            elif now >= idle_since + self._ping_interval:
                # A counter makes each payload unique without a random source.
                self._ping_count = (self._ping_count + 1) & 0xFFFFFFFF
                payload = self._reader.awaited_pong = self._ping_count.to_bytes(4, "big")
                queue_frame(self._out, FIN_PING, payload)
                self._idle_since = now
        elif state is FAILING:
            if self._failing_since is None:
                self._failing_since = now
            elif now >= self._failing_since + self._limits.answer_grace_s:
                self._fail_held()
        elif state is CLOSING and not self._rejecting:
            if self._closing_since is None:
                self._closing_since = now
            elif now >= self._closing_since + self._close_timeout:
                self._finish(1006, "")

    def check_outbound_buffer(self, pending_bytes: int) -> bool:
        """Fail the connection if the peer has stopped reading; True if it did.

        ``pending_bytes`` is what the transport holds unsent. Past
        ``max_outbound_buffer`` an OPEN connection is failed with 1008: the cause is
        the peer's behaviour, a policy matter, where 1013 ("try again later") would
        invite a client to reconnect into the same state. A FAILING one fails now with
        its own code; a CLOSING one is dropped (1006). Then call events_received() and
        data_to_send().

        Resource handling: the Close frame queues behind everything unsent, so the
        caller should abort the transport if it cannot be flushed promptly.
        """
        if pending_bytes <= self._limits.max_outbound_buffer:
            return False
        state = self._state
        if state is OPEN:
            self._fail(1008, "outbound buffer full")
            return True
        if state is FAILING:
            self._fail_held()
            return True
        if state is CLOSING:
            self._finish(1006, "")
            return True
        return False

    # -- endings -----------------------------------------------------------------------

    def _state_error(self, action: str) -> LocalProtocolError:
        if self._state is CLOSING or self._state is CLOSED or self._state is FAILING:
            return ConnectionClosed(f"cannot {action}: the connection is closing or closed")
        if self._state is CONNECTING:
            return LocalProtocolError(f"cannot {action} in state CONNECTING: accept() or reject()")
        return LocalProtocolError(f"cannot {action} in state {self._state.name}")

    def _refuse(self, refusal: Refusal) -> None:
        """Refuse the handshake with a fixed HTTP response and end the connection."""
        self.error_status_hint = refusal.status
        self.error_reason = refusal.reason
        self._out.append(REFUSAL_426 if refusal.status == 426 else REFUSAL_400)
        self._state = CLOSED
        self._early = bytearray()

    def _fail(self, code: int, reason: str) -> None:
        """Fail an OPEN or FAILING connection (RFC 6455 section 7.1.7): Close, CLOSED."""
        conn = self._conn
        assert conn is not None  # OPEN implies accept() ran
        self._out.append(conn.send(wsevents.CloseConnection(code=code, reason=reason)))
        self._finish(code, reason)

    def _fail_held(self) -> None:
        """End FAILING: the held failure's Close, after the answers already queued."""
        failure = self._failure
        assert failure is not None  # FAILING implies a held failure
        self._failure = None
        self._fail(*failure)

    def _finish(self, code: int, reason: str) -> None:
        self._events.append(ABNORMAL if code == 1006 else CloseReceived(code, reason))
        self._state = CLOSED
        # Drop a half-reassembled message now rather than with the object.
        self._reader.drop_message()
