"""Serialising one HTTP/1.1 response: the head, the body framing and the keep-alive call.

Theory of operation
-------------------
Requests are read by h11's rules (``http.py``, ``request.py``), but h11 does not write
responses: with at most one h11 connection per request, h11 never needs to know what we
answered, and serialising through it (building an ``h11.Response``, normalising and
validating every header, driving its state machine) was a third of a worker's CPU
time per request. :class:`ResponseWriter` applies the same rules directly. The server's
own headers (Date, Server, ``--header``) are checked once and rendered as a block
(:class:`DefaultHeaders`) rather than checked on every response.

Framing (RFC 9112 section 6.3, the order h11 uses):

* no body on the wire for a HEAD request, 204 and 304 (RFC 9110 sections 9.3.2,
  15.3.5, 15.4.5); a 204 also loses Content-Length and Transfer-Encoding (RFC 9110
  section 8.6, RFC 9112 section 6.1), while HEAD and 304 keep the framing headers a
  GET or 200 would have had;
* a Content-Length from the app frames the body, and the body must match it: more
  raises at once, less raises at the end (either way the connection must close, as
  the peer can no longer find the end of the message);
* otherwise an HTTP/1.1 client gets ``Transfer-Encoding: chunked``, and an HTTP/1.0
  client a body delimited by closing the connection (RFC 9112 section 6.3 rule 8).

A Transfer-Encoding header from the app is dropped: the framing is the server's
(ASGI: "the server must ignore any Transfer-Encoding the app sets").

Keep-alive (RFC 9112 section 9.3): the connection persists after the response only if
the request was HTTP/1.1 without ``Connection: close``, the app did not send
``Connection: close``, the caller did not force a close, and the body was not
close-delimited. When it does not persist, the head says ``Connection: close``.

Header checks (RFC 9110 section 5): a field name is a token and a field value holds no
control characters, so an app cannot split the response (uvicorn #719/#728). Names and
values are bytes, as ASGI requires; a violation raises before anything is queued. A
name that passed is remembered (up to 512 of them), so the few names an app sends are
not checked again; every value is.

States: ``IDLE`` (nothing sent), ``BODY`` (head sent), ``DONE`` (the end sent).

What this file must not know: the request parser, sockets, clocks, ASGI.
"""

from __future__ import annotations

import enum
import re
from http import HTTPStatus
from typing import Final, final

#: Reason phrases, looked up once per status rather than built per response.
REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

# Whole status lines for the registered statuses.
_STATUS_LINES: Final = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, text) for code, text in REASONS.items()
}

# Header names an app sent that passed the token check, with their lower-case form.
# Apps send the same few names over and over; this skips re-checking them. It is
# bounded (names come from the app, but an app may echo a client's input).
_NAMES: dict[bytes, bytes] = {}
_MAX_NAMES: Final = 512

# RFC 9110 section 5.6.2: tchar.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
# RFC 9110 section 5.5: no CTL but HTAB (CR and LF above all) in a field value.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search

# Names the head loop must look at; any other header is copied through once checked.
_FRAMING_NAMES: Final = frozenset([b"content-length", b"transfer-encoding", b"connection"])

_CHUNKED_HEADER: Final = b"transfer-encoding: chunked\r\n"
_CLOSE_HEADER: Final = b"connection: close\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class ResponseError(Exception):
    """The response is invalid (bad header, wrong body length, sent twice)."""


def _check_header(name: object, value: object) -> None:
    """Raise :class:`ResponseError` unless ``name: value`` is a valid header field."""
    if type(name) is not bytes or type(value) is not bytes:
        raise ResponseError("header names and values must be bytes")
    if _TOKEN(name) is None:
        raise ResponseError(f"invalid header name {name!r}")
    if _BAD_VALUE(value) is not None:
        raise ResponseError(f"invalid value for header {name.decode()!r}")


def header_from_text(text: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` (``--header``) as a checked header pair, name lower-cased.

    Raises:
        ResponseError: no colon, or the pair is not a valid header (Latin-1 only).
    """
    name, sep, value = text.partition(":")
    if not sep:
        raise ResponseError("no colon")
    try:
        pair = (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
    except UnicodeEncodeError:
        raise ResponseError("not Latin-1") from None
    _check_header(*pair)
    return pair


@final
class DefaultHeaders:
    """Headers the server adds to every response unless the app set the same name
    (Date, Server, ``--header``), checked and rendered once rather than per response.

    Raises:
        ResponseError: (from the constructor) a header is not valid.
    """

    __slots__ = ("block", "names", "pairs", "watch")

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        for name, value in pairs:
            _check_header(name, value)
        self.pairs = pairs
        #: Lower-case names, every one of which the app may override.
        self.names = frozenset(name.lower() for name, _ in pairs)
        #: The names a response head must look at: framing plus these.
        self.watch = _FRAMING_NAMES | self.names
        #: All of them as header lines, ready to append.
        self.block = b"".join(name + b": " + value + b"\r\n" for name, value in pairs)


#: No server headers at all.
NO_DEFAULTS: Final = DefaultHeaders([])


# The interim response is the same every time: build it once.
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class Framing(enum.Enum):
    NONE = "none"  # no body on the wire
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"
    CLOSE = "close"  # the end of the body is the end of the connection


class ResponseState(enum.Enum):
    IDLE = "idle"
    BODY = "body"
    DONE = "done"


@final
class ResponseWriter:
    """Writes the response to one request. Bytes come back from each call.

    Call :meth:`head` once, :meth:`body` any number of times, then :meth:`end`
    (:meth:`continue_` before the head, at most once). After a :class:`ResponseError`
    from any of them, ``keep_alive`` is False.
    """

    __slots__ = (
        "_connect",
        "_framing",
        "_head_only",
        "_http10",
        "_remaining",
        "continue_sent",
        "keep_alive",
        "state",
    )

    def __init__(
        self, *, head_request: bool, http10: bool, keep_alive: bool, connect: bool = False
    ) -> None:
        self.state = ResponseState.IDLE
        #: Whether the connection may serve another request after this response.
        self.keep_alive = keep_alive and not http10
        self._head_only = head_request
        self._http10 = http10
        # The request is CONNECT: a 2xx answer would open a tunnel (RFC 9110 9.3.6).
        self._connect = connect
        self._framing = Framing.NONE
        self._remaining = 0
        #: ``100 Continue`` went out for this request.
        self.continue_sent = False

    def continue_(self) -> bytes:
        """The interim ``100 Continue`` (RFC 9110 section 15.2.1).

        Raises:
            ResponseError: the final response began, or a 100 was already sent.
        """
        if self.state is not ResponseState.IDLE or self.continue_sent:
            self.keep_alive = False
            raise ResponseError("100 Continue after the response began")
        self.continue_sent = True
        return _CONTINUE

    def head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        close: bool,
        defaults: DefaultHeaders = NO_DEFAULTS,
    ) -> bytes:
        """Serialise the status line and headers; ``close`` forces ``Connection: close``.

        ``defaults`` follow the app's headers, less any name the app set itself. A
        Transfer-Encoding from the app is dropped (the framing is the server's).

        Raises:
            ResponseError: a head was already sent, ``status`` is not a final status, or
                a header is not valid.
        """
        if self.state is not ResponseState.IDLE:
            raise ResponseError("the response head was already sent")
        if not 200 <= status <= 999:
            raise ResponseError(f"{status} is not a final status code")
        if self._connect and status < 300:
            # RFC 9110 section 9.3.6: a 2xx to CONNECT turns the connection into a
            # tunnel, which ASGI cannot express.
            self.keep_alive = False
            raise ResponseError("a 2xx response to CONNECT would open a tunnel")
        line = _STATUS_LINES.get(status)
        lines = [line if line is not None else b"HTTP/1.1 %d \r\n" % status]
        length: bytes | None = None
        closing = close or not self.keep_alive
        no_body = self._head_only or status == 204 or status == 304
        watch = defaults.watch
        given: set[bytes] | None = None  # default names the app set itself
        names = _NAMES
        for name, value in headers:
            lower = names.get(name) if type(name) is bytes else None
            if lower is None or type(value) is not bytes or _BAD_VALUE(value) is not None:
                _check_header(name, value)  # raises, unless only the name is new
                lower = name.lower()
                if len(names) < _MAX_NAMES:
                    names[name] = lower
            if lower in watch:
                if lower == b"content-length":
                    if not value.isdigit() or (length is not None and value != length):
                        raise ResponseError(f"invalid Content-Length {value!r}")
                    length = value
                    if status == 204:
                        continue
                elif lower == b"transfer-encoding":
                    continue
                elif lower == b"connection":
                    if b"close" in [t.strip() for t in value.lower().split(b",")]:
                        closing = True
                    continue  # rewritten below, so it always matches what we do
                elif given is None:
                    given = {lower}
                else:
                    given.add(lower)
            lines.append(name + b": " + value + b"\r\n")
        if given is None:
            lines.append(defaults.block)
        else:
            lines += [n + b": " + v + b"\r\n" for n, v in defaults.pairs if n.lower() not in given]
        if no_body:
            framing = Framing.NONE
            if length is None and status != 204 and status != 304 and not self._http10:
                lines.append(_CHUNKED_HEADER)  # HEAD: the headers a GET would get
        elif length is not None:
            framing = Framing.LENGTH
            self._remaining = int(length)
        elif self._http10:
            framing = Framing.CLOSE
            closing = True
        else:
            framing = Framing.CHUNKED
            lines.append(_CHUNKED_HEADER)
        if closing:
            self.keep_alive = False
            lines.append(_CLOSE_HEADER)
        lines.append(b"\r\n")
        self._framing = framing
        self.state = ResponseState.BODY
        return b"".join(lines)

    def whole(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        close: bool,
        defaults: DefaultHeaders = NO_DEFAULTS,
    ) -> bytes:
        """:meth:`head`, :meth:`body` and :meth:`end` in one call, for a body known whole
        (the usual ASGI answer: one body message). Returns the complete response.

        Raises:
            ResponseError: as :meth:`head`, or ``body`` does not match the
                Content-Length; nothing of the response may then be written.
        """
        head = self.head(status, headers, close=close, defaults=defaults)
        framing = self._framing
        if framing is Framing.LENGTH:
            if len(body) != self._remaining:
                self.keep_alive = False
                if len(body) > self._remaining:
                    raise ResponseError("Too much data for declared Content-Length")
                raise ResponseError("Too little data for declared Content-Length")
            self._remaining = 0
        elif framing is Framing.CHUNKED:
            body = b"%x\r\n%b\r\n%b" % (len(body), body, _LAST_CHUNK) if body else _LAST_CHUNK
        elif framing is Framing.NONE:
            body = b""
        self.state = ResponseState.DONE
        return head + body if body else head

    def body(self, data: bytes) -> list[bytes]:
        """Frame part of the body; an empty list when nothing goes on the wire.

        Raises:
            ResponseError: no head yet, the response ended, or the body ran past its
                Content-Length.
        """
        if self.state is not ResponseState.BODY:
            raise ResponseError("body sent outside the response")
        framing = self._framing
        if not data or framing is Framing.NONE:
            return []
        if framing is Framing.CHUNKED:
            return [b"%x\r\n" % len(data), data, b"\r\n"]
        if framing is Framing.LENGTH:
            self._remaining -= len(data)
            if self._remaining < 0:
                self.keep_alive = False
                raise ResponseError("Too much data for declared Content-Length")
        return [data]

    def file(self, count: int) -> tuple[bytes, bytes] | None:
        """Frame ``count`` body bytes the caller sends itself (a file, by sendfile).

        Returns the bytes to write before and after them, or None when nothing goes on
        the wire (a HEAD, 204 or 304 response, or ``count`` of 0).

        Raises:
            ResponseError: as :meth:`body`.
        """
        if self.state is not ResponseState.BODY:
            raise ResponseError("body sent outside the response")
        framing = self._framing
        if not count or framing is Framing.NONE:
            return None
        if framing is Framing.CHUNKED:
            return (b"%x\r\n" % count, b"\r\n")
        if framing is Framing.LENGTH:
            self._remaining -= count
            if self._remaining < 0:
                self.keep_alive = False
                raise ResponseError("Too much data for declared Content-Length")
        return (b"", b"")

    def end(self) -> bytes:
        """Finish the body.

        Raises:
            ResponseError: no head yet, or the body was shorter than its Content-Length.
        """
        if self.state is not ResponseState.BODY:
            raise ResponseError("end of a response that is not in progress")
        self.state = ResponseState.DONE
        if self._framing is Framing.CHUNKED:
            return _LAST_CHUNK
        if self._framing is Framing.LENGTH and self._remaining:
            self.keep_alive = False
            raise ResponseError("Too little data for declared Content-Length")
        return b""
