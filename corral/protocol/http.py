"""The sans-I/O HTTP/1.1 server core: h11 with request-smuggling hardening in front.

Theory of operation
-------------------
Bytes go in with :meth:`HTTPCore.receive_data`; events come out of
:meth:`HTTPCore.events_received`; the response goes in with ``send_*`` and the bytes to
write come out of :meth:`HTTPCore.data_to_send`. Nothing here reads a clock, touches a
socket or knows about asyncio (a test enforces the imports).

h11 does the parsing and the framing. It is deliberately lenient in places where a
front-end proxy may parse differently (``research/protocol.md`` section 5), and a
difference between two parsers of one byte stream is a request-smuggling vector. So
every request head passes through :func:`check_head` before h11 sees it:

* the head must end in CRLF CRLF and use CRLF everywhere (RFC 9112 section 2.2 allows
  a recipient to accept a bare LF; we do not, because a proxy in front may not);
* no obs-fold (RFC 9112 section 5.2: a server MUST reject it or replace it; rejecting
  is the only choice that cannot desynchronise);
* no control bytes in the head (RFC 9110 section 5.5);
* the head fits ``max_header_bytes`` or the answer is 431 (RFC 6585 section 5).

and every parsed request passes :meth:`HTTPCore._check_request`:

* Content-Length together with Transfer-Encoding is rejected with 400 (RFC 9112
  section 6.1: "ought to be handled as an error"; h11 alone lets TE win);
* a declared body over ``max_body_bytes`` is answered 413 before any
  ``100 Continue`` could go out, so the client never sends it.

h11 itself already rejects a missing or repeated Host on HTTP/1.1, conflicting
Content-Lengths, unknown transfer codings and malformed chunk framing.

States
------
``HEAD``     waiting for (the rest of) a request head; bytes collect in ``_head``.
``MESSAGE``  the head went to h11; h11 parses the body and holds any pipelined bytes
             after it until the response is complete.
``SWITCHED`` a WebSocket upgrade was handed over: this object is finished.
``ERROR``    a protocol error was reported; the connection is to be closed.

One h11 connection serves one request. When both sides are done,
:meth:`start_next_cycle` takes h11's unparsed bytes (``trailing_data``), starts a new
h11 connection and puts those bytes back through ``HEAD``, so a pipelined request is
checked exactly like the first one. That costs one small object per request and means
h11 never parses a head that was not checked.

Pipelining is bounded: while a response is in progress, bytes after the current
request stay in h11's buffer, and :meth:`HTTPCore.wants_read_paused` tells the adapter
to stop reading once they pass ``max_header_bytes``.

What this file must not know: ASGI, sockets, timers, logging, the application.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, TypeAlias, final

import h11

#: The default ceiling for a request head (request line plus headers), in bytes.
#: 16 KiB is h11's own default and what uvicorn and hypercorn use; nginx allows 8 KiB
#: per line with 4 lines, Apache 8 KiB per line.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024

#: How much of an unread request body we read and throw away after the response so
#: the connection can be reused. Past this it is cheaper to close the connection
#: than to keep reading a body nobody wants (uvicorn reads all of it).
MAX_DISCARD_BYTES: Final = 1024 * 1024

# Control bytes that may not appear anywhere in a head. CR and LF are checked apart,
# as line ends; HTAB is allowed in field values (RFC 9110 section 5.5).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Reason phrases, looked up once per status rather than per response.
REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


class LocalProtocolError(Exception):
    """The caller used the core wrongly (for example sent a body after the end)."""


@final
@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Limits applied by the core; the defaults are the server's defaults."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: Largest request body accepted, or ``None`` for no limit.
    max_body_bytes: int | None = None


@final
@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; answer ``status`` (if no response started) and close."""

    status: int
    reason: str


@final
@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A WebSocket upgrade request, handed over with the bytes read after its head."""

    request: h11.Request
    trailing: bytes


@final
@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its sending side."""


#: Everything :meth:`HTTPCore.events_received` may return. Request, body and end of
#: message are h11's own events, passed through to save an allocation per event.
Event: TypeAlias = "h11.Request | h11.Data | h11.EndOfMessage | UpgradeRequest | ProtocolError | ConnectionClosed"


class CoreState(enum.Enum):
    HEAD = "head"
    MESSAGE = "message"
    SWITCHED = "switched"
    ERROR = "error"


def check_head(head: bytes | bytearray) -> str | None:
    """Say what is wrong with a complete request head, or ``None`` if nothing is.

    ``head`` runs from the request line to the blank line that ends it, inclusive.
    """
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare LF line ending"  # RFC 9112 section 2.2
    if head.count(b"\r") != crlf:
        return "bare CR in request head"  # RFC 9112 section 2.2
    if b"\n " in head or b"\n\t" in head:
        return "obsolete line folding"  # RFC 9112 section 5.2
    if _CONTROL_BYTES.search(head) is not None:
        return "control character in request head"  # RFC 9110 section 5.5
    return None


@final
class HTTPCore:
    """One HTTP/1.1 server connection, without I/O.

    Call order per request: feed bytes with :meth:`receive_data` and read
    :meth:`events_received` after every call; answer with :meth:`send_response`, then
    :meth:`send_body` any number of times, then :meth:`send_end`; call
    :meth:`data_to_send` after every ``send_*`` and write what it returns; once
    :meth:`response_complete` is true call :meth:`start_next_cycle` (unless
    :meth:`close_expected`) and read :meth:`events_received` again, since pipelined
    requests may already be waiting.
    """

    __slots__ = (
        "_body_bytes",
        "_discarded",
        "_discarding",
        "_events",
        "_h11",
        "_head",
        "_limits",
        "_must_close",
        "_no_body",
        "_out",
        "_request",
        "_upgrade",
        "state",
    )

    def __init__(self, limits: HTTPLimits = HTTPLimits()) -> None:
        self._limits = limits
        self._h11 = self._new_h11()
        self._head = bytearray()
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self.state = CoreState.HEAD
        self._request: h11.Request | None = None
        self._upgrade: h11.Request | None = None
        self._body_bytes = 0
        self._discarding = False
        self._discarded = 0
        self._must_close = False
        # True when the response to the current request carries no body: HEAD,
        # 1xx, 204 and 304 (RFC 9110 sections 9.3.2, 15.3.5, 15.4.5).
        self._no_body = False

    def _new_h11(self) -> h11.Connection:
        # h11's own limit is a backstop for chunk-size lines and trailers; heads are
        # measured in check_head's caller before h11 sees them.
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)

    # -- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer. Read :meth:`events_received` afterwards."""
        state = self.state
        if state is CoreState.MESSAGE:
            self._h11.receive_data(data)
            self._pump()
        elif state is CoreState.HEAD:
            self._head += data
            self._scan_head()
        # In SWITCHED the bytes belong to the WebSocket core, in ERROR to nobody.

    def receive_eof(self) -> None:
        """Tell the core the peer will send nothing more."""
        if self.state is CoreState.MESSAGE:
            self._h11.receive_data(b"")
            self._pump()
        elif self.state is CoreState.HEAD:
            # A half-sent head is abandoned; an empty one is a normal close.
            self._events.append(ConnectionClosed())
            self.state = CoreState.ERROR

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        events = self._events
        if events:
            self._events = []
        return events

    def _scan_head(self) -> None:
        head = self._head
        # RFC 9112 section 2.2: ignore empty lines before the request line.
        while head.startswith(b"\r\n"):
            del head[:2]
        end = head.find(b"\r\n\r\n")
        limit = self._limits.max_header_bytes
        if end < 0:
            if b"\n\n" in head or b"\n\r\n" in head:
                # A head ended with bare LFs: reject now rather than wait for a CRLF
                # CRLF that will never come.
                self._fail(400, "bare LF line ending")
            elif len(head) > limit:
                self._fail(431, "request head too large")
            return
        end += 4
        if end > limit:
            self._fail(431, "request head too large")
            return
        problem = check_head(memoryview(head)[:end].tobytes())
        if problem is not None:
            self._fail(400, problem)
            return
        self.state = CoreState.MESSAGE
        self._h11.receive_data(bytes(head))
        self._head = bytearray()
        self._pump()

    def _pump(self) -> None:
        conn = self._h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc) or "malformed request")
                return
            kind = type(event)
            if kind is h11.Data:
                assert isinstance(event, h11.Data)
                self._body_bytes += len(event.data)
                cap = self._limits.max_body_bytes
                if cap is not None and self._body_bytes > cap:
                    self._fail(413, "request body too large")
                    return
                if self._discarding:
                    self._discarded += len(event.data)
                    if self._discarded > MAX_DISCARD_BYTES:
                        self._must_close = True
                        self._discarding = False
                        self.state = CoreState.ERROR
                        return
                    continue
                self._events.append(event)
            elif kind is h11.Request:
                assert isinstance(event, h11.Request)
                if not self._check_request(event):
                    return
            elif kind is h11.EndOfMessage:
                assert isinstance(event, h11.EndOfMessage)
                if self._discarding:
                    self._discarding = False
                    self._next_cycle()
                    return
                if self._upgrade is None:
                    self._events.append(event)
            elif event is h11.PAUSED:
                if self._upgrade is not None and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    self.state = CoreState.SWITCHED
                    trailing = conn.trailing_data[0]
                    self._events.append(UpgradeRequest(self._upgrade, trailing))
                return
            elif event is h11.NEED_DATA:
                return
            else:
                # h11.ConnectionClosed: the only event left for a server.
                self._events.append(ConnectionClosed())
                return

    def _check_request(self, request: h11.Request) -> bool:
        """Apply the checks h11 does not; emit the request or an error."""
        has_length = has_chunked = wants_websocket = False
        length = 0
        for name, value in request.headers:
            if name == b"content-length":
                has_length = True
                length = int(value)  # h11 has checked it is digits and consistent
            elif name == b"transfer-encoding":
                has_chunked = True
            elif name == b"upgrade" and value.lower() == b"websocket":
                wants_websocket = True
        if has_length and has_chunked:
            # RFC 9112 section 6.1: a smuggling signal, never a request to serve.
            self._fail(400, "both Content-Length and Transfer-Encoding")
            return False
        cap = self._limits.max_body_bytes
        if cap is not None and length > cap:
            # Answered before any 100 Continue, so the client need not send the body.
            self._fail(413, "request body too large")
            return False
        self._request = request
        self._no_body = request.method == b"HEAD"
        self._body_bytes = 0
        if wants_websocket and request.method == b"GET" and not has_length and not has_chunked:
            self._upgrade = request
        else:
            self._events.append(request)
        return True

    def _fail(self, status: int, reason: str) -> None:
        self.state = CoreState.ERROR
        self._must_close = True
        self._events.append(ProtocolError(status, reason))

    # -- sending -------------------------------------------------------------------------

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """True when the client sent ``Expect: 100-continue`` and waits for the 100."""
        return self._h11.they_are_waiting_for_100_continue

    @property
    def request_complete(self) -> bool:
        """True once the whole current request, body included, has been received."""
        return self._h11.their_state is not h11.SEND_BODY

    def send_continue(self) -> None:
        """Send ``100 Continue``; call only while :attr:`they_are_waiting_for_100_continue`."""
        self._out.append(self._h11.send(h11.InformationalResponse(status_code=100)) or b"")

    def send_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the response head.

        Raises:
            LocalProtocolError: if a response was already sent or a header is invalid.
        """
        if status in (204, 304) or status < 200:
            self._no_body = True
        if status == 204 or status < 200:
            # RFC 9110 section 8.6: no Content-Length on 1xx and 204; nor
            # Transfer-Encoding (RFC 9112 section 6.1).
            headers = [h for h in headers if h[0] not in (b"content-length", b"transfer-encoding")]
        try:
            event = h11.Response(
                status_code=status, headers=headers, reason=REASONS.get(status, b"")
            )
            data = self._h11.send(event)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        if data:
            self._out.append(data)

    def send_body(self, data: bytes) -> None:
        """Send part of the response body (dropped for HEAD, 204 and 304).

        Raises:
            LocalProtocolError: if the body runs past the declared Content-Length; the
                connection must then be closed.
        """
        if not data or self._no_body:
            return
        try:
            out = self._h11.send(h11.Data(data=data))
        except h11.LocalProtocolError as exc:
            self._must_close = True
            raise LocalProtocolError(str(exc)) from None
        if out:
            self._out.append(out)

    def send_end(self) -> None:
        """End the response.

        Raises:
            LocalProtocolError: if the body was shorter than its Content-Length; the
                connection must then be closed.
        """
        try:
            out = self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            self._must_close = True
            raise LocalProtocolError(str(exc)) from None
        if out:
            self._out.append(out)

    def data_to_send(self) -> list[bytes]:
        """Return and forget the bytes to write. Call after every ``send_*``."""
        out = self._out
        self._out = []
        return out

    def close_expected(self) -> bool:
        """True when the connection must close once the pending bytes are written."""
        return self._must_close or self._h11.our_state is h11.MUST_CLOSE

    def response_complete(self) -> bool:
        """True once :meth:`send_end` went out for the current request."""
        return self._h11.our_state is not h11.SEND_RESPONSE and self._h11.our_state is not (
            h11.SEND_BODY
        )

    def wants_read_paused(self) -> bool:
        """True when the adapter should stop reading: pipelined bytes are piling up."""
        if self.state is not CoreState.MESSAGE:
            return False
        return self._h11.their_state is h11.DONE and (
            len(self._h11.trailing_data[0]) > self._limits.max_header_bytes
        )

    def start_next_cycle(self) -> None:
        """Prepare for the next request once the response is complete.

        If the current request's body has not all arrived, the rest is read and
        discarded first (up to :data:`MAX_DISCARD_BYTES`), unless the client is still
        waiting for ``100 Continue``: then it may never send it, so the connection closes.
        """
        if self.close_expected():
            return
        their = self._h11.their_state
        if their is h11.SEND_BODY:
            if self._h11.they_are_waiting_for_100_continue:
                self._must_close = True
                return
            self._discarding = True
            self._discarded = 0
            self._pump()
            return
        self._next_cycle()

    def _next_cycle(self) -> None:
        leftover = self._h11.trailing_data[0]
        self._h11 = self._new_h11()
        self._request = None
        self._upgrade = None
        self._no_body = False
        self.state = CoreState.HEAD
        self._head = bytearray(leftover)
        if leftover:
            self._scan_head()


def simple_response(
    status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    """Serialise a complete, closing response without h11 (used for errors).

    h11 cannot always send a response after the peer broke the protocol (the request
    line may not even have been parsed), so errors are written by hand. The result is a
    valid HTTP/1.1 response that ends the connection.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))]
    for name, value in extra_headers or ():
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"content-type: text/plain; charset=utf-8\r\n")
    lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)
