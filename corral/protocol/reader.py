"""The request side of the HTTP/1.1 core: bytes in, requests and body events out.

Theory of operation
-------------------
:class:`RequestReader` turns the bytes of one connection into :class:`Request`,
:class:`Data`, :class:`EndOfMessage`, :class:`UpgradeRequest`, :class:`ProtocolError`
and :class:`ConnectionClosed` events (``http.py`` explains the checks every head passes
and the two ways a checked head is read). It also prepares, for every request it
emits, the :class:`~corral.protocol.response.ResponseWriter` that will answer it,
because how a response may be framed (HEAD, HTTP/1.0, ``Connection: close``, CONNECT)
is decided by the request head. It never writes a byte.

States and transitions are data (:data:`TRANSITIONS`, checked by :meth:`_to`: a move
that is not in the table is a bug and raises ``LocalProtocolError``):

``HEAD``        waiting for (the rest of) a request head; bytes collect in ``_head``.
``BODY``        the head was read; the body is counted here (``_h11`` is None, bytes
                still due in ``_remaining``) or parsed by h11.
``DISCARDING``  the response is complete but the body is not: the rest is read and
                dropped, up to :data:`MAX_DISCARD_BYTES`, so the connection can be reused.
``DONE``        the whole request is in; the response may still be in progress. Bytes
                that arrive now belong to pipelined requests and collect in ``_head``.
``SWITCHED``    a WebSocket upgrade was handed over: this object is finished.
``ERROR``       the connection is over: a ``ProtocolError`` or ``ConnectionClosed`` was
                reported.

Invariants: ``_head`` is empty in ``BODY`` and ``DISCARDING``; in ``HEAD`` it never
holds a complete head (a complete head is read at once) nor more than
``max_header_bytes``; after ``SWITCHED`` or ``ERROR`` nothing is parsed again.

What this file must not know: the response's bytes, ASGI, sockets, timers, logging.
"""

from __future__ import annotations

import enum
from typing import Final, final

import h11

from corral.protocol.events import (
    ConnectionClosed,
    Event,
    HeadReader,
    HTTPLimits,
    LocalProtocolError,
    ProtocolError,
    UpgradeRequest,
)
from corral.protocol.head import check_head, has_control_bytes
from corral.protocol.request import (
    END_OF_MESSAGE,
    Data,
    Request,
    framing,
)
from corral.protocol.response import ResponseWriter

#: How much of an unread request body we read and throw away after the response so
#: the connection can be reused. Past this it is cheaper to close the connection
#: than to keep reading a body nobody wants (uvicorn reads all of it).
MAX_DISCARD_BYTES: Final = 1024 * 1024


class CoreState(enum.Enum):
    """Where the reader is (see the module docstring)."""

    # Members are singletons compared by identity, so identity is a correct hash; Enum's
    # own __hash__ is Python code, and the checked moves look states up in the table
    # on every request.
    __hash__ = object.__hash__

    HEAD = "head"
    BODY = "body"
    DISCARDING = "discarding"
    DONE = "done"
    SWITCHED = "switched"
    ERROR = "error"


# Module aliases of the states: on Python 3.11 an Enum member looked up on its class
# (``CoreState.BODY``) costs ten times a global, and the reader compares states on
# every read.
_HEAD: Final = CoreState.HEAD
_BODY: Final = CoreState.BODY
_DISCARDING: Final = CoreState.DISCARDING
_DONE: Final = CoreState.DONE
_SWITCHED: Final = CoreState.SWITCHED
_ERROR: Final = CoreState.ERROR

#: Every move the reader may make. ERROR is reachable from every state that still reads.
TRANSITIONS: Final[dict[CoreState, frozenset[CoreState]]] = {
    _HEAD: frozenset({_BODY, _ERROR}),
    _BODY: frozenset({_DONE, _SWITCHED, _DISCARDING, _ERROR}),
    _DISCARDING: frozenset({_HEAD, _ERROR}),
    _DONE: frozenset({_HEAD, _ERROR}),
    _SWITCHED: frozenset(),
    _ERROR: frozenset(),
}


@final
class RequestReader:
    """The reading half of one HTTP/1.1 server connection (see the module docstring)."""

    __slots__ = (
        "_body_bytes",
        "_chunked",
        "_discarded",
        "_eof",
        "_h11",
        "_head",
        "_limits",
        "_read_head",
        "_remaining",
        "_scanned",
        "_tail",
        "_upgrade",
        "events",
        "state",
        "writer",
    )

    def __init__(self, limits: HTTPLimits, read_head: HeadReader) -> None:
        self._limits = limits
        # How plain heads are read without h11 (--http); either way h11 reads the rest.
        self._read_head = read_head
        # The h11 connection reading the current request, or None when request.py read
        # its head and the body (if any) is a Content-Length counted here.
        self._h11: h11.Connection | None = None
        # Body bytes still to come of a Content-Length request read without h11.
        self._remaining = 0
        self.state = _HEAD
        # HEAD: the partial head. DONE: pipelined bytes. Otherwise empty.
        self._head = bytearray()
        # How much of ``_head`` has been searched for the end of the head, so a head
        # trickled in byte by byte costs O(n) rather than O(n^2) to scan.
        self._scanned = 0
        #: Events produced and not yet taken (the core hands them out).
        self.events: list[Event] = []
        # A WebSocket upgrade request waiting for its end of message.
        self._upgrade: Request | None = None
        # The request is chunked: its raw end is checked, and ``_tail`` keeps the last
        # four bytes fed to h11 before the current chunk for that check.
        self._chunked = False
        self._tail = b""
        # Request body bytes received, against ``max_body_bytes``; and dropped ones.
        self._body_bytes = 0
        self._discarded = 0
        # The peer closed its sending side; serve what is complete, then close.
        self._eof = False
        #: The response to the current request, made when its head was read. Until the
        #: first request it is a finished writer, which refuses to send anything.
        self.writer = ResponseWriter(head_request=False, http10=False, keep_alive=True)

    def _to(self, new: CoreState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"reader: {self.state.value} -> {new.value}")
        self.state = new

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer (never raises for bad input: see ``_fail``)."""
        if not data:
            return
        state = self.state
        if state is _BODY or state is _DISCARDING:
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
        elif state is _HEAD:
            head = self._head
            if head:
                head += data
                self._scan_head(head)
            else:
                # The usual case, a whole head in one read: scan it without a copy.
                self._scan_head(data)
        elif state is _DONE:
            # Pipelined bytes: parsed once the response is complete. The adapter
            # stops reading when wants_read_paused() says so.
            self._head += data
        # In SWITCHED the bytes belong to the WebSocket core, in ERROR to nobody.

    def receive_eof(self) -> None:
        """The peer will send nothing more (see ``HTTPCore.receive_eof``)."""
        if self._eof:
            return
        self._eof = True
        state = self.state
        if state is _BODY or state is _DISCARDING:
            conn = self._h11
            if conn is None:
                self._length_cut_short()
                return
            conn.receive_data(b"")
            # h11 raises for a body cut short: a ProtocolError, or a quiet close if
            # the response is already out.
            self._pump(b"", b"")
        elif state is _HEAD:
            self._close()

    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and has not sent its body yet."""
        # After a ProtocolError h11 may still think so, but no 100 must go out then.
        # Without h11 there was no Expect header (request.py leaves those to h11).
        conn = self._h11
        return conn is not None and self.state is _BODY and conn.they_are_waiting_for_100_continue

    def wants_read_paused(self) -> bool:
        """Pipelined bytes wait past ``max_header_bytes``: stop reading until the next
        cycle (only DONE lets ``_head`` grow past the limit; HEAD fails with 431 first)."""
        return len(self._head) > self._limits.max_header_bytes

    # -- heads ---------------------------------------------------------------------------

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
            elif has_control_bytes(buf, start):
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
        self._to(_BODY)
        if not length:
            self._finish_message(raw[end:])
            return
        self._receive_length(raw[end:])
        if self._eof and self.state is _BODY:
            self._length_cut_short()  # the peer is gone: the rest never comes

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
        self._to(_BODY)
        try:
            request = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc))
            return
        # A complete head always parses to a Request or raises: h11 needs no more bytes.
        assert isinstance(request, h11.Request)
        headers = list(request.headers)
        # h11 has checked the framing headers (digits, consistency, "chunked" only).
        _, length_text, lengths, chunked, _, connection, upgrade = framing(headers)
        length = int(length_text) if length_text else 0
        ours = Request(request.method, request.target, request.http_version, headers)
        if self._check_request(ours, length, lengths > 0, chunked, upgrade, connection):
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
        self.writer = ResponseWriter(
            head_request=method == b"HEAD",
            http10=version == b"1.0",
            keep_alive=b"close" not in tokens,
            connect=method == b"CONNECT",
        )
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
            self.events.append(request)
        return True

    # -- bodies --------------------------------------------------------------------------

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
        if self.state is _DISCARDING:
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
        self.events.append(Data(data))
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
        if self.state is _DISCARDING:
            self._head = bytearray(leftover)
            self.next_cycle()
        elif self._upgrade is not None:
            self._to(_SWITCHED)
            self.events.append(UpgradeRequest(self._upgrade, leftover))
        else:
            self._to(_DONE)
            if leftover:
                self._head = bytearray(leftover)
            self.events.append(END_OF_MESSAGE)

    # -- endings -------------------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        """The peer broke the protocol: report it (unless the response is out) and stop."""
        if self.state is _DISCARDING:
            # The response is complete: nothing more may be written, so just close.
            self._close()
            return
        self._to(_ERROR)
        self._head = bytearray()
        self.events.append(ProtocolError(status, reason))

    def _close(self) -> None:
        self._to(_ERROR)
        self._head = bytearray()
        self.events.append(ConnectionClosed())

    def discard_rest(self) -> None:
        """The response is complete before the body: read the rest and drop it. h11 has
        already parsed every complete event, so discarding starts with the next read."""
        self._to(_DISCARDING)
        self._discarded = 0

    def next_cycle(self) -> None:
        """Read the next request: parse what was pipelined, or wait for it."""
        # The per-request fields (writer, chunked) are set by _check_request for the next
        # request. Until then the finished writer stays: DONE, it refuses any send.
        self._h11 = None
        self._upgrade = None
        self._to(_HEAD)
        self._scanned = 0
        head = self._head
        if head:
            self._scan_head(head)
        if self._eof and self.state is _HEAD:
            # The peer has gone and no complete request is left.
            self._close()
