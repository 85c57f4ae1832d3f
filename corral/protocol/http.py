"""The sans-I/O HTTP/1.1 server core: h11's rules with request-smuggling hardening in front.

Theory of operation
-------------------
Bytes go in with :meth:`HTTPCore.receive_data`; events come out of
:meth:`HTTPCore.events_received`; the response goes in with ``send_*`` and the bytes to
write come out of :meth:`HTTPCore.data_to_send`. Nothing here reads a clock, touches a
socket or knows about asyncio (``tests/protocol/test_sans_io_imports.py`` enforces the
imports).

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

Every parsed request then passes :meth:`HTTPCore._check_request`:

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
here: no ``h11.Connection`` is made. The reader is
:func:`~corral.protocol.request.parse_head` (h11's own request-line grammar) or, with
``--http httptools``, ``HttptoolsHeadReader.read`` (llhttp). Every other head goes to
a fresh ``h11.Connection``, which parses it and its body or refuses it. A reader only
ever says "this is the request h11 would read", never "this is an error", so every
refusal is h11's (request.py explains the rule and ``tests/protocol/test_request.py``
checks both readers against h11).

States
------
``HEAD``     waiting for (the rest of) a request head; bytes collect in ``_head``.
``BODY``     the head was read; the body is counted here (``_h11`` is None, bytes
             still due in ``_remaining``) or parsed by h11. After the response is
             complete an unread body is read and discarded (``_discarding``).
``DONE``     the whole request is in; the response may still be in progress. Bytes
             that arrive now belong to pipelined requests and collect in ``_head``.
``SWITCHED`` a WebSocket upgrade was handed over: this object is finished.
``ERROR``    the connection is over: a ``ProtocolError`` or ``ConnectionClosed`` was
             reported and :meth:`HTTPCore.close_expected` is true.

An h11 connection, when one is needed, serves one request. When both sides are done,
:meth:`HTTPCore.start_next_cycle` drops it and puts the pipelined bytes back through
``HEAD``, so a pipelined request is checked exactly like the first one, and only once
the previous response is complete.

Pipelining is bounded: :meth:`HTTPCore.wants_read_paused` tells the adapter to stop
reading once the bytes waiting in ``DONE`` pass ``max_header_bytes``.

Invariants: ``_head`` is empty in ``BODY``; in ``HEAD`` it never holds a complete head
(a complete head is read at once) nor more than ``max_header_bytes``; only heads that
passed :func:`check_head` are read, either way; after ``ERROR`` nothing is parsed
again.

What this file must not know: ASGI, sockets, timers, logging, the application.

:class:`HTTPCore` is longer than the 250 lines STYLE.md suggests. Half of it is comment,
and moving head scanning into a second object would add a call per read on the hot path.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias, final

import h11

from corral.protocol.request import (
    END_OF_MESSAGE,
    Data,
    EndOfMessage,
    ParsedHead,
    Request,
    parse_head,
)
from corral.protocol.response import (
    NO_DEFAULTS,
    REASONS,
    DefaultHeaders,
    ResponseError,
    ResponseState,
    ResponseWriter,
)

#: The default ceiling for a request head (request line plus headers), in bytes.
#: 16 KiB is h11's own default and what uvicorn and hypercorn use; nginx allows 8 KiB
#: per line with 4 lines, Apache 8 KiB per line.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024

#: How much of an unread request body we read and throw away after the response so
#: the connection can be reused. Past this it is cheaper to close the connection
#: than to keep reading a body nobody wants (uvicorn reads all of it).
MAX_DISCARD_BYTES: Final = 1024 * 1024

# Every byte that may appear inside a head line: VCHAR, SP, HTAB and obs-text
# (RFC 9110 section 5.5). Deleting them leaves only CR, LF and forbidden control bytes.
_LINE_BYTES: Final = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

# Control bytes that may not appear anywhere in a head. CR and LF are checked apart,
# as line ends; HTAB is allowed in field values (RFC 9110 section 5.5).
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# A line that starts with whitespace continues the previous one (RFC 9112 section 5.2).
# Only used once every LF is known to follow a CR.
_OBS_FOLD: Final = re.compile(rb"\r\n[ \t]")

# The interim response is the same every time: build it once.
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


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

    request: Request
    trailing: bytes


@final
@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over without an error to report.

    Either the peer closed its sending side with no request left to serve, or the core
    gave up reading after the response was complete (an unread body too long or
    malformed to discard), when nothing more may be written. Close the transport once
    any response in progress has been written.
    """


#: A head reader: ``parse_head`` or ``HttptoolsHeadReader.read`` (``--http``). Given a
#: checked head and the offset just past its blank line, it returns the request h11
#: would read, or None to leave the head to h11.
HeadReader: TypeAlias = Callable[[bytes, int], "ParsedHead | None"]

#: Everything :meth:`HTTPCore.events_received` may return. Request, body and end of
#: message are the same events whichever path read the request (see request.py).
Event: TypeAlias = (
    "Request | Data | EndOfMessage | UpgradeRequest | ProtocolError | ConnectionClosed"
)


class CoreState(enum.Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"
    SWITCHED = "switched"
    ERROR = "error"


def check_head(head: bytes | bytearray, end: int | None = None) -> str | None:
    """Say what is wrong with a complete request head, or ``None`` if nothing is.

    ``head[:end]`` runs from the request line to the blank line that ends it, inclusive
    (``end`` defaults to the whole of ``head``).
    """
    if end is not None and end != len(head):
        head = head[:end]
    # The fast path is two C-speed passes and a regex search (about 1 us for a 400-byte
    # head): what is left after deleting the line bytes must be exactly the CRLF pairs,
    # so no bare CR, bare LF or control byte is present.
    if len(head.translate(None, _LINE_BYTES)) == 2 * head.count(b"\r\n"):
        if _OBS_FOLD.search(head) is None:
            return None
        return "obsolete line folding"  # RFC 9112 section 5.2
    # Something is wrong: find out what, for the log line.
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare LF line ending"  # RFC 9112 section 2.2
    if head.count(b"\r") != crlf:
        return "bare CR in request head"  # RFC 9112 section 2.2
    return "control character in request head"  # RFC 9110 section 5.5


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
        "_chunked",
        "_connect",
        "_continue_sent",
        "_discarded",
        "_discarding",
        "_eof",
        "_events",
        "_h11",
        "_head",
        "_limits",
        "_must_close",
        "_out",
        "_read_head",
        "_remaining",
        "_scanned",
        "_tail",
        "_upgrade",
        "_writer",
        "state",
    )

    def __init__(
        self, limits: HTTPLimits = HTTPLimits(), read_head: HeadReader = parse_head
    ) -> None:
        self._limits = limits
        # How plain heads are read without h11 (--http); either way h11 reads the rest.
        self._read_head = read_head
        # The h11 connection reading the current request, or None when request.py read
        # its head and the body (if any) is a Content-Length counted here.
        self._h11: h11.Connection | None = None
        # Body bytes still to come of a Content-Length request read without h11.
        self._remaining = 0
        self.state = CoreState.HEAD
        # HEAD: the partial head. DONE: pipelined bytes. Otherwise empty.
        self._head = bytearray()
        # How much of ``_head`` has been searched for the end of the head, so a head
        # trickled in byte by byte costs O(n) rather than O(n^2) to scan.
        self._scanned = 0
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # A WebSocket upgrade request waiting for its end of message.
        self._upgrade: Request | None = None
        # The request is chunked: its raw end is checked, and ``_tail`` keeps the last
        # four bytes fed to h11 before the current chunk for that check.
        self._chunked = False
        self._tail = b""
        # The request is CONNECT: a 2xx answer would open a tunnel (RFC 9110 9.3.6).
        self._connect = False
        # Request body bytes received, against ``max_body_bytes``.
        self._body_bytes = 0
        # After the response: reading and dropping the rest of the body.
        self._discarding = False
        self._discarded = 0
        # The peer closed its sending side; serve what is complete, then close.
        self._eof = False
        self._must_close = False
        # The response to the current request (see response.py); h11 never sees it.
        self._writer = ResponseWriter(head_request=False, http10=False, keep_alive=True)
        self._continue_sent = False

    # -- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer. Read :meth:`events_received` afterwards.

        Bad input never raises: it becomes a :class:`ProtocolError` event. Empty
        ``data`` is ignored; an end of stream is :meth:`receive_eof`.
        """
        if not data:
            return
        state = self.state
        if state is CoreState.BODY:
            conn = self._h11
            if conn is None:
                self._receive_length(data)
                return
            conn.receive_data(data)
            before = self._tail
            if self._chunked:
                # Keep the stream's last four bytes for the chunked end check; set
                # before pumping, because the pump may start the next request.
                self._tail = (before + data[-4:])[-4:]
            self._pump(data, before)
        elif state is CoreState.HEAD:
            head = self._head
            if head:
                head += data
                self._scan_head(head)
            else:
                # The usual case, a whole head in one read: scan it without a copy.
                self._scan_head(data)
        elif state is CoreState.DONE:
            # Pipelined bytes: parsed once the response is complete. The adapter
            # stops reading when wants_read_paused() says so.
            self._head += data
        # In SWITCHED the bytes belong to the WebSocket core, in ERROR to nobody.

    def receive_eof(self) -> None:
        """Tell the core the peer will send nothing more.

        A partial head is abandoned (:class:`ConnectionClosed`); a partial body is a
        :class:`ProtocolError`; after a complete request the end is remembered, and
        once the response is complete any complete pipelined request is still served.
        """
        if self._eof:
            return
        self._eof = True
        state = self.state
        if state is CoreState.BODY:
            conn = self._h11
            if conn is None:
                self._length_cut_short()
                return
            conn.receive_data(b"")
            # h11 raises for a body cut short: a ProtocolError, or a quiet close if
            # the response is already out.
            self._pump(b"", b"")
        elif state is CoreState.HEAD:
            self._close()

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        events = self._events
        if events:
            self._events = []
        return events

    def _scan_head(self, buf: bytes | bytearray) -> None:
        """Look for a complete head at the start of ``buf`` (``_head`` or fresh data)."""
        if buf.startswith(b"\r\n"):
            # RFC 9112 section 2.2: ignore empty lines before the request line.
            skip = 2
            while buf.startswith(b"\r\n", skip):
                skip += 2
            buf = buf[skip:]
            self._scanned = 0
        limit = self._limits.max_header_bytes
        # The end marker may straddle the previous read: back up three bytes.
        start = self._scanned - 3 if self._scanned > 3 else 0
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if buf.find(b"\n\n", start) >= 0 or buf.find(b"\n\r\n", start) >= 0:
                # A head ended with bare LFs: reject now rather than wait for a CRLF
                # CRLF that will never come.
                self._fail(400, "bare LF line ending")
            elif _CONTROL_BYTES.search(buf, start) is not None:
                # Binary garbage (a TLS handshake sent to the plain port starts with
                # 0x16) is rejected at once rather than at the header deadline.
                self._fail(400, "control character in request head")
            elif len(buf) > limit:
                self._fail(431, "request head too large")
            else:
                if buf is not self._head:
                    # Fresh data, or ``_head`` minus its leading CRLFs: keep a copy we own.
                    self._head = bytearray(buf)
                self._scanned = len(buf)
            return
        end += 4
        if end > limit:
            self._fail(431, "request head too large")
            return
        problem = check_head(buf, end)
        if problem is not None:
            self._fail(400, problem)
            return
        if isinstance(buf, bytearray):
            # ``_head`` (or a slice of it) was the source: h11 wants bytes, and
            # ``_head`` starts afresh for the pipelined bytes of DONE.
            raw = bytes(buf)
            self._head = bytearray()
        else:
            raw = buf
        self._scanned = 0
        parsed = self._read_head(raw, end)
        if parsed is None:
            self._start_h11(raw)
            return
        length = parsed.length
        # No Transfer-Encoding reaches this path, so no framing conflict either.
        if not self._check_request(
            parsed.request, length, False, False, parsed.upgrade, parsed.connection
        ):
            return
        self._remaining = length
        self.state = CoreState.BODY
        if not length:
            self._finish_message(raw[end:])
            return
        self._receive_length(raw[end:])
        if self._eof and self.state is CoreState.BODY:
            self._length_cut_short()  # the peer is gone: the rest never comes

    def _length_cut_short(self) -> None:
        # The words h11 uses for the same thing, so both paths log alike.
        self._fail(
            400,
            "peer closed connection without sending complete message body "
            f"(received {self._body_bytes} bytes, expected "
            f"{self._body_bytes + self._remaining})",
        )

    def _receive_length(self, data: bytes) -> None:
        """Body bytes of a request read without h11: a Content-Length to count down."""
        remaining = self._remaining
        size = len(data)
        if size < remaining:
            self._remaining = remaining - size
            if data:
                self._deliver(data)
            return
        self._remaining = 0
        if not self._deliver(data[:remaining] if size > remaining else data):
            return
        self._finish_message(data[remaining:] if size > remaining else b"")

    def _deliver(self, data: bytes) -> bool:
        """Pass on (or, after the response, drop) body bytes; False if that ended it."""
        if self._discarding:
            self._discarded += len(data)
            if self._discarded > MAX_DISCARD_BYTES:
                self._close()
                return False
            return True
        self._body_bytes += len(data)
        cap = self._limits.max_body_bytes
        if cap is not None and self._body_bytes > cap:
            self._fail(413, "request body too large")
            return False
        self._events.append(Data(data))
        return True

    def _start_h11(self, raw: bytes) -> None:
        """Hand a checked head, and whatever followed it, to a fresh h11 connection."""
        # h11's own limit is a backstop for chunk-size lines and trailers; heads are
        # measured in _scan_head before h11 sees them.
        conn = self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes
        )
        conn.receive_data(raw)
        if self._eof:
            conn.receive_data(b"")
        self.state = CoreState.BODY
        try:
            request = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc))
            return
        # A complete head always parses to a Request or raises: h11 needs no more bytes.
        assert isinstance(request, h11.Request)
        has_length = has_chunked = False
        upgrade = connection = b""
        length = 0
        headers = list(request.headers)
        for name, value in headers:
            if name == b"content-length":
                has_length = True
                length = int(value)  # h11 has checked it is digits and consistent
            elif name == b"transfer-encoding":
                has_chunked = True  # h11 has checked it is exactly "chunked"
            elif name == b"upgrade":
                upgrade = value
            elif name == b"connection":
                connection += b"," + value
        ours = Request(request.method, request.target, request.http_version, headers)
        if self._check_request(ours, length, has_length, has_chunked, upgrade, connection):
            self._tail = b""
            if self._chunked:
                self._tail = raw[-4:]
            self._pump(raw, b"")

    def _check_request(
        self,
        request: Request,
        length: int,
        has_length: bool,
        has_chunked: bool,
        upgrade: bytes,
        connection: bytes,
    ) -> bool:
        """Apply the checks h11 does not, and set up the response; emit the request
        or an error. Both paths call it with the framing facts they found in the head.
        """
        version = request.http_version
        if version != b"1.1" and version != b"1.0":
            # RFC 9110 section 15.6.6; h11 accepts any digit.digit.
            self._fail(505, "unsupported HTTP version")
            return False
        if has_chunked:
            if has_length:
                # RFC 9112 section 6.1: a smuggling signal, never a request to serve.
                self._fail(400, "both Content-Length and Transfer-Encoding")
                return False
            if version == b"1.0":
                # RFC 9112 section 6.1: HTTP/1.0 framing with Transfer-Encoding MUST be
                # treated as faulty; an HTTP/1.0 proxy in front would not dechunk it.
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
                return False
        cap = self._limits.max_body_bytes
        if cap is not None and length > cap:
            # Answered before any 100 Continue, so the client need not send the body.
            self._fail(413, "request body too large")
            return False
        method = request.method
        tokens = [t.strip() for t in connection.lower().split(b",")] if connection else []
        self._writer = ResponseWriter(
            head_request=method == b"HEAD",
            http10=version == b"1.0",
            keep_alive=b"close" not in tokens,
        )
        self._continue_sent = False
        self._connect = method == b"CONNECT"
        self._chunked = has_chunked
        self._body_bytes = 0
        if (
            upgrade
            and upgrade.lower() == b"websocket"
            and method == b"GET"
            and version == b"1.1"
            and not has_chunked
            and length == 0
            and b"upgrade" in tokens
        ):
            # RFC 6455 section 4.1 and RFC 9110 section 7.8: an upgrade needs
            # "Connection: upgrade" and HTTP/1.1. Anything else (h2c included, B14) is
            # served as a plain request; h11 drops the switch proposal when the
            # response is not a 101.
            self._upgrade = request
        else:
            self._events.append(request)
        return True

    def _pump(self, fed: bytes, before: bytes) -> None:
        """Turn h11's events into ours after ``fed`` went into h11.

        ``before`` holds the last bytes of the stream fed before ``fed`` (chunked only).
        """
        conn = self._h11
        assert conn is not None  # only called on the h11 path
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc))
                return
            if type(event) is h11.Data:
                # h11 hands out bytearray slices of its buffer; ASGI wants bytes.
                if not self._deliver(bytes(event.data)):
                    return
            elif type(event) is h11.EndOfMessage:
                self._end_message(conn, fed, before)
                return
            else:
                # NEED_DATA. The Request was taken in _start_h11; PAUSED and
                # ConnectionClosed only come after the end of message, and h11 is
                # not asked for events again after that.
                return

    def _end_message(self, conn: h11.Connection, fed: bytes, before: bytes) -> None:
        leftover = conn.trailing_data[0]
        if self._chunked:
            # The message ended inside ``fed``, just before ``leftover``: its last
            # four bytes must be the CRLF CRLF that ends the trailer section.
            stop = len(fed) - len(leftover)
            ending = (before + fed[stop - 4 if stop > 4 else 0 : stop])[-4:]
            if ending != b"\r\n\r\n":
                self._fail(400, "bare LF at the end of a chunked body")
                return
        self._finish_message(leftover)

    def _finish_message(self, leftover: bytes) -> None:
        """The request is complete; ``leftover`` is what the peer sent after it."""
        if self._discarding:
            self._discarding = False
            self._head = bytearray(leftover)
            self._next_cycle()
        elif self._upgrade is not None:
            self.state = CoreState.SWITCHED
            self._events.append(UpgradeRequest(self._upgrade, leftover))
        else:
            self.state = CoreState.DONE
            if leftover:
                self._head = bytearray(leftover)
            self._events.append(END_OF_MESSAGE)

    def _fail(self, status: int, reason: str) -> None:
        """The peer broke the protocol: report it (unless the response is out) and stop."""
        if self._discarding:
            # The response is complete: nothing more may be written, so just close.
            self._close()
            return
        self.state = CoreState.ERROR
        self._must_close = True
        self._head = bytearray()
        self._events.append(ProtocolError(status, reason))

    def _close(self) -> None:
        self.state = CoreState.ERROR
        self._must_close = True
        self._head = bytearray()
        self._events.append(ConnectionClosed())

    # -- sending -------------------------------------------------------------------------

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """True when the client sent ``Expect: 100-continue`` and waits for the 100."""
        # After a ProtocolError h11 may still think so, but no 100 must go out then.
        # Without h11 there was no Expect header (request.py leaves those to h11).
        conn = self._h11
        return (
            conn is not None
            and self.state is CoreState.BODY
            and not self._continue_sent
            and self._writer.state is ResponseState.IDLE
            and conn.they_are_waiting_for_100_continue
        )

    @property
    def request_complete(self) -> bool:
        """True once the whole current request, body included, has been received."""
        return self.state is not CoreState.BODY

    def send_continue(self) -> None:
        """Send ``100 Continue``; call only while :attr:`they_are_waiting_for_100_continue`.

        Raises:
            LocalProtocolError: if a response was already sent.
        """
        if self._writer.state is not ResponseState.IDLE or self._continue_sent:
            self._must_close = True
            raise LocalProtocolError("100 Continue after the response began")
        self._continue_sent = True
        self._out.append(_CONTINUE)

    def send_response(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        defaults: DefaultHeaders = NO_DEFAULTS,
        close: bool = False,
        body: bytes | None = None,
    ) -> None:
        """Send the response head (serialised by :class:`ResponseWriter`, not h11).

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
        if self._connect and 200 <= status < 300:
            # RFC 9110 section 9.3.6: a 2xx to CONNECT turns the connection into a
            # tunnel, which ASGI cannot express.
            self._must_close = True
            raise LocalProtocolError("a 2xx response to CONNECT would open a tunnel")
        # A client still holding back its body may never send it: say the connection
        # closes (RFC 9110 section 10.1.1) so neither side waits for the other.
        if self.they_are_waiting_for_100_continue:
            close = True
        writer = self._writer
        try:
            if body is None:
                out = writer.head(status, headers, close=close, defaults=defaults)
            else:
                out = writer.whole(status, headers, body, close=close, defaults=defaults)
        except ResponseError as exc:
            self._must_close = True
            raise LocalProtocolError(str(exc)) from None
        self._out.append(out)

    def send_body(self, data: bytes) -> None:
        """Send part of the response body (dropped for HEAD, 204 and 304).

        Raises:
            LocalProtocolError: if the body runs past the declared Content-Length or
                no response head was sent; the connection must then be closed.
        """
        try:
            self._out += self._writer.body(data)
        except ResponseError as exc:
            self._must_close = True
            raise LocalProtocolError(str(exc)) from None

    def frame_file(self, count: int) -> tuple[bytes, bytes] | None:
        """Frame ``count`` body bytes that the adapter sends itself (zero-copy files).

        Write the first returned value, then the bytes, then the second; None means the
        bytes must not be sent at all (HEAD, 204, 304, or nothing to send).

        Raises:
            LocalProtocolError: as :meth:`send_body`.
        """
        try:
            return self._writer.file(count)
        except ResponseError as exc:
            self._must_close = True
            raise LocalProtocolError(str(exc)) from None

    def send_end(self) -> None:
        """End the response.

        Raises:
            LocalProtocolError: if the body was shorter than its Content-Length; the
                connection must then be closed.
        """
        try:
            out = self._writer.end()
        except ResponseError as exc:
            self._must_close = True
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
        writer = self._writer
        return self._must_close or (writer.state is ResponseState.DONE and not writer.keep_alive)

    def response_complete(self) -> bool:
        """True once :meth:`send_end` went out for the current request."""
        return self._writer.state is ResponseState.DONE

    def wants_read_paused(self) -> bool:
        """True when the adapter should stop reading: pipelined bytes are piling up.

        Reading may resume after :meth:`start_next_cycle`.
        """
        # Only DONE lets ``_head`` grow past the limit; HEAD fails with 431 first.
        return len(self._head) > self._limits.max_header_bytes

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
        if self.state is CoreState.BODY:
            # The app answered without reading the whole body. h11 has already parsed
            # every complete event, so discarding starts with the next read. The
            # client is not waiting for a 100 here: send_response closes in that case.
            self._discarding = True
            self._discarded = 0
            return
        self._next_cycle()

    def _next_cycle(self) -> None:
        # The per-request fields (writer, 100-continue, CONNECT, chunked) are set by
        # _check_request for the next request. Until then the finished writer stays:
        # DONE, it refuses any send_* (there is no request to answer).
        self._h11 = None
        self._upgrade = None
        self.state = CoreState.HEAD
        self._scanned = 0
        head = self._head
        if head:
            self._scan_head(head)
        if self._eof and self.state is CoreState.HEAD:
            # The peer has gone and no complete request is left.
            self._close()


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
