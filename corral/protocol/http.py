"""The sans-I/O HTTP/1.1 server core: h11's rules with request-smuggling hardening in front.

Theory of operation
-------------------
Bytes go in with :meth:`HTTPCore.receive_data`; events come out of
:meth:`HTTPCore.events_received`; the response goes in with ``send_*`` and the bytes to
write come out of :meth:`HTTPCore.data_to_send`. Nothing here reads a clock, touches a
socket or knows about asyncio (``tests/protocol/test_sans_io_imports.py`` enforces the
imports).

Two objects do the work, each with one state enum: :class:`RequestReader`
(``reader.py``: bytes in, request events out; its states and transitions are a checked
table) and :class:`~corral.protocol.response.ResponseWriter` (``response.py``: the
response to one request, made by the reader when it reads the head, since the head
decides how the response may be framed). :class:`HTTPCore` joins them: the rules that
need both (a client still waiting for ``100 Continue`` gets ``Connection: close``; a
refused response closes the connection; the next cycle starts only once the response
is complete) and the bytes to write.

h11 decides how a request is parsed and framed. It is deliberately lenient in places
where a front-end proxy may parse differently (``research/protocol.md`` section 5), and
a difference between two parsers of one byte stream is a request-smuggling vector. So
every request head passes through :func:`check_head` before it is parsed:

* the head must end in CRLF CRLF and use CRLF everywhere (RFC 9112 section 2.2 allows
  a recipient to accept a bare LF; we do not, because a proxy in front may not);
* no obs-fold (RFC 9112 section 5.2: a server MUST reject it or replace it; rejecting
  is the only choice that cannot desynchronise);
* no control bytes in the head (RFC 9110 section 5.5);
* the head fits ``max_header_bytes`` or the answer is 431 (RFC 6585 section 5).

Every parsed request then passes ``RequestReader._check_request``:

* Content-Length together with Transfer-Encoding is rejected with 400 (RFC 9112
  section 6.1: "ought to be handled as an error"; h11 alone lets TE win);
* Transfer-Encoding in an HTTP/1.0 request is rejected with 400 (RFC 9112 section 6.1:
  the framing MUST be treated as faulty; h11 alone parses it as chunked);
* an HTTP version other than 1.0 and 1.1 gets 505 (h11 accepts any ``d.d``);
* a declared body over ``max_body_bytes`` is answered 413 before any
  ``100 Continue`` could go out, so the client never sends it.

and the end of a chunked body must be CRLF CRLF in the raw bytes: h11 ends the trailer
section at a bare LF too (``ReceiveBuffer.maybe_extract_lines``), which would let
``0\\r\\n\\nGET /admin`` be read as two requests here and as one elsewhere.

h11 itself already rejects a missing or repeated Host on HTTP/1.1, conflicting
Content-Lengths, a Content-Length over 20 digits, codings other than ``chunked``,
chunk sizes over 20 hex digits and anything but CRLF after chunk data (h11 >= 0.16,
CVE-2025-43859).

Two ways to read a checked head, one outcome. A plain head (no Transfer-Encoding, no
Expect, one well-formed Content-Length at most, the Host count right, version 1.0 or
1.1) is read by the core's head reader, and its Content-Length body is counted down
by the reader: no ``h11.Connection`` is made. The reader is
:func:`~corral.protocol.request.parse_head` (h11's own request-line grammar) or, with
``--http httptools``, ``HttptoolsHeadReader.read`` (llhttp). Every other head goes to
a fresh ``h11.Connection``, which parses it and its body or refuses it. A reader only
ever says "this is the request h11 would read", never "this is an error", so every
refusal is h11's (request.py explains the rule and ``tests/protocol/test_request.py``
checks both readers against h11).

Cycles
------
An h11 connection, when one is needed, serves one request. When both sides are done,
:meth:`HTTPCore.start_next_cycle` drops it and puts the pipelined bytes back through
the reader's ``HEAD``, so a pipelined request is checked exactly like the first one,
and only once the previous response is complete. A response complete before its
request's body has the rest read and dropped (``DISCARDING``), up to
:data:`MAX_DISCARD_BYTES`.

Pipelining is bounded: :meth:`HTTPCore.wants_read_paused` tells the adapter to stop
reading once the bytes waiting in ``DONE`` pass ``max_header_bytes``.

What this file must not know: ASGI, sockets, timers, logging, the application.
"""

from __future__ import annotations

from typing import Final, final

from corral.protocol.events import (
    DEFAULT_MAX_HEADER_BYTES,
    ConnectionClosed,
    Event,
    HeadReader,
    HTTPLimits,
    LocalProtocolError,
    ProtocolError,
    UpgradeRequest,
)
from corral.protocol.head import check_head
from corral.protocol.reader import MAX_DISCARD_BYTES, TRANSITIONS, CoreState, RequestReader
from corral.protocol.request import parse_head
from corral.protocol.response import (
    NO_DEFAULTS,
    REASONS,
    DefaultHeaders,
    ResponseError,
    ResponseState,
)

#: The server's defaults (``HTTPLimits()``), shared by every core made without limits.
DEFAULT_LIMITS = HTTPLimits()

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_DISCARD_BYTES",
    "REASONS",
    "TRANSITIONS",
    "ConnectionClosed",
    "CoreState",
    "Event",
    "HTTPCore",
    "HTTPLimits",
    "HeadReader",
    "LocalProtocolError",
    "ProtocolError",
    "UpgradeRequest",
    "check_head",
    "simple_response",
]


# Module aliases: an Enum member looked up on its class costs ten times a global (3.11).
_BODY: Final = CoreState.BODY
_DISCARDING: Final = CoreState.DISCARDING
_ERROR: Final = CoreState.ERROR
_RESPONSE_IDLE: Final = ResponseState.IDLE
_RESPONSE_DONE: Final = ResponseState.DONE


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

    __slots__ = ("_out", "_reader", "_refused", "receive_data", "receive_eof", "wants_read_paused")

    def __init__(
        self, limits: HTTPLimits = DEFAULT_LIMITS, read_head: HeadReader = parse_head
    ) -> None:
        reader = self._reader = RequestReader(limits, read_head)
        self._out: list[bytes] = []
        # A send_* was refused (a bad response from the app): the connection must close.
        self._refused = False
        # The reader's own methods, bound here: the facade adds no call on the read path.
        #: Feed bytes read from the peer; read :meth:`events_received` afterwards. Bad
        #: input never raises: it becomes a :class:`ProtocolError` event. Empty data is
        #: ignored; an end of stream is :meth:`receive_eof`.
        self.receive_data = reader.receive_data
        #: The peer will send nothing more. A partial head is abandoned
        #: (:class:`ConnectionClosed`); a partial body is a :class:`ProtocolError`; after
        #: a complete request the end is remembered, and once the response is complete
        #: any complete pipelined request is still served.
        self.receive_eof = reader.receive_eof
        #: True when the adapter should stop reading: pipelined bytes are piling up.
        #: Reading may resume after :meth:`start_next_cycle`.
        self.wants_read_paused = reader.wants_read_paused

    @property
    def state(self) -> CoreState:
        """The reader's state (see reader.py)."""
        return self._reader.state

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        reader = self._reader
        events = reader.events
        if events:
            reader.events = []
        return events

    # -- sending -------------------------------------------------------------------------

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """True when the client sent ``Expect: 100-continue`` and waits for the 100."""
        reader = self._reader
        writer = reader.writer
        return (
            writer.state is _RESPONSE_IDLE
            and not writer.continue_sent
            and reader.expects_continue()
        )

    @property
    def request_complete(self) -> bool:
        """True once the whole current request, body included, has been received."""
        state = self._reader.state
        return state is not _BODY and state is not _DISCARDING

    def send_continue(self) -> None:
        """Send ``100 Continue``; call only while :attr:`they_are_waiting_for_100_continue`.

        Raises:
            LocalProtocolError: if a response was already sent.
        """
        try:
            self._out.append(self._reader.writer.continue_())
        except ResponseError as exc:
            self._refused = True
            raise LocalProtocolError(str(exc)) from None

    def send_response(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        defaults: DefaultHeaders = NO_DEFAULTS,
        close: bool = False,
        body: bytes | None = None,
    ) -> None:
        """Send the response head (serialised by the ResponseWriter, not h11).

        ``defaults`` are added unless the app set the same names; ``close`` ends the
        connection after this response (``Connection: close``). With ``body`` the whole
        response goes at once: the same as this call without it, then
        :meth:`send_body` and :meth:`send_end`, for less work.

        Raises:
            LocalProtocolError: if a response was already sent, a header is invalid,
                ``status`` is not a final status or is a 2xx answer to CONNECT, or
                ``body`` does not match the Content-Length; the connection must then
                be closed.
        """
        reader = self._reader
        writer = reader.writer
        # A client still holding back its body may never send it: say the connection
        # closes (RFC 9110 section 10.1.1) so neither side waits for the other.
        if (
            not close
            and writer.state is _RESPONSE_IDLE
            and not writer.continue_sent
            and reader.expects_continue()
        ):
            close = True
        try:
            if body is None:
                out = writer.head(status, headers, close=close, defaults=defaults)
            else:
                out = writer.whole(status, headers, body, close=close, defaults=defaults)
        except ResponseError as exc:
            self._refused = True
            raise LocalProtocolError(str(exc)) from None
        self._out.append(out)

    def send_body(self, data: bytes) -> None:
        """Send part of the response body (dropped for HEAD, 204 and 304).

        Raises:
            LocalProtocolError: if the body runs past the declared Content-Length or
                no response head was sent; the connection must then be closed.
        """
        try:
            self._out += self._reader.writer.body(data)
        except ResponseError as exc:
            self._refused = True
            raise LocalProtocolError(str(exc)) from None

    def frame_file(self, count: int) -> tuple[bytes, bytes] | None:
        """Frame ``count`` body bytes that the adapter sends itself (zero-copy files).

        Write the first returned value, then the bytes, then the second; None means the
        bytes must not be sent at all (HEAD, 204, 304, or nothing to send).

        Raises:
            LocalProtocolError: as :meth:`send_body`.
        """
        try:
            return self._reader.writer.file(count)
        except ResponseError as exc:
            self._refused = True
            raise LocalProtocolError(str(exc)) from None

    def send_end(self) -> None:
        """End the response.

        Raises:
            LocalProtocolError: if the body was shorter than its Content-Length; the
                connection must then be closed.
        """
        try:
            out = self._reader.writer.end()
        except ResponseError as exc:
            self._refused = True
            raise LocalProtocolError(str(exc)) from None
        if out:
            self._out.append(out)

    def data_to_send(self) -> list[bytes]:
        """Return and forget the bytes to write. Call after every ``send_*``."""
        out = self._out
        if out:
            self._out = []
        return out

    def close_expected(self) -> bool:
        """True when the connection must close once the pending bytes are written.

        After a :class:`ProtocolError` this is true as well: write the error response
        (if no response started), then close.
        """
        reader = self._reader
        writer = reader.writer
        return (
            self._refused
            or reader.state is _ERROR
            or (writer.state is _RESPONSE_DONE and not writer.keep_alive)
        )

    def response_complete(self) -> bool:
        """True once :meth:`send_end` went out for the current request."""
        return self._reader.writer.state is _RESPONSE_DONE

    def start_next_cycle(self) -> None:
        """Prepare for the next request once the response is complete.

        If the current request's body has not all arrived, the rest is read and
        discarded first (up to :data:`MAX_DISCARD_BYTES`). Pipelined requests are
        parsed now: read :meth:`events_received` and :meth:`close_expected` afterwards.

        Raises:
            LocalProtocolError: if the response is not complete.
        """
        if self.close_expected():
            return
        if not self.response_complete():
            raise LocalProtocolError("start_next_cycle() before the response is complete")
        reader = self._reader
        if reader.state is _BODY:
            # The app answered without reading the whole body. The client is not waiting
            # for a 100 here: send_response closes in that case.
            reader.discard_rest()
            return
        reader.next_cycle()


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
