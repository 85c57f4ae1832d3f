"""The request events of the HTTP core, and reading a checked head with h11's grammar.

Theory of operation
-------------------
h11 parses HTTP/1.1 in two layers: a grammar (``h11._abnf``: the request line and
header field of RFC 9112 sections 3 and 5 as regular expressions) and a state machine
around it (``h11.Connection``: event bookkeeping, keep-alive, 100-continue, protocol
switches, body framing). For a plain request the state machine costs several times
what the grammar does, and the core (``http.py``) already does its bookkeeping itself,
because it runs every head through ``check_head`` and ``_check_request`` anyway.

So :func:`parse_head` reads a head that passed ``check_head`` the way h11 would, and
returns the :class:`Request` h11 would have produced, or ``None`` when the head needs
h11's judgement:

* The request line is matched with h11's own expression (``h11._abnf.request_line``).
* A header line is split at its first colon. The name must be a token (RFC 9110
  section 5.6.2: h11's ``field_name``), checked by deleting every tchar and seeing
  nothing left. The value needs no check of its own: ``check_head`` has proved the head
  holds only VCHAR, SP, HTAB and obs-text, and h11's ``field_value`` with the OWS
  around it matches every such string, capturing it with leading and trailing SP and
  HTAB removed, which is what ``bytes.strip(b" \t")`` returns. Running h11's field
  expression on each line instead costs some 0.7 us a header in the regex engine,
  for no difference in outcome; the differential test below holds the two equal.

It returns ``None`` (and the core hands the head to a real ``h11.Connection``, which
accepts it or produces h11's own error) whenever anything is unusual:

* a request line h11's expression does not match, or a header line without a colon
  or with a name that is not a token (h11 then reports the bad line);
* an HTTP version other than 1.0 and 1.1 (answered 505 on the h11 path);
* on HTTP/1.1 no Host or several; on HTTP/1.0 several (RFC 9112 section 3.2);
* Transfer-Encoding (chunked bodies are h11's to read);
* ``Expect`` (h11 tracks the client waiting for ``100 Continue``);
* more than one Content-Length, or one that is not 1 to 20 digits (h11 folds
  ``5, 5`` to ``5`` and rejects the rest).

Every rule but the first is in :func:`frame`, where the second head reader
(``httptools_head.py``, for ``--http httptools``) ends too.

The rule that keeps the two paths from ever disagreeing: the fast path may only say
"this is exactly the request h11 would produce", never "this is an error". Every
rejection, and so every error message and status, still comes from h11.
``tests/protocol/test_request.py`` checks this differentially: every head of the raw
corpus and thousands of generated ones go through both, and whenever the fast path
answers, h11 must accept the head and agree on method, target, version and headers.

The request-line grammar is imported, not copied (through ``private.py``, which holds
every use of a dependency's private API). If a future h11 moves it, :data:`FAST_PATH`
is false and every head goes through ``h11.Connection``, slower but just as correct.
:data:`PARSE_HEAD_TALLY` counts the heads read here, so a test can tell the fast path
from that fallback.

``Request`` and ``Data`` are slotted dataclasses that are not frozen: a frozen one
assigns each field through ``object.__setattr__``, and these are made per request.
Treat them as read-only all the same.

What this file must not know: sockets, clocks, ASGI, the response.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import h11

# h11's grammar: a private name, so its absence is survivable (FAST_PATH).
from corral.protocol.private import H11_REQUEST_LINE

Headers = list[tuple[bytes, bytes]]

#: Whether heads may be read without ``h11.Connection`` (h11's grammar was found).
FAST_PATH: Final = bool(H11_REQUEST_LINE)

_Match = Callable[[bytes], "re.Match[bytes] | None"]
# The expression h11's reader compiles, applied the way it applies it (fullmatch).
_REQUEST_LINE: Final[_Match] = re.compile(H11_REQUEST_LINE.encode("ascii")).fullmatch

# RFC 9110 section 5.6.2: tchar. A name is a token when deleting these leaves nothing.
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Header names the fast path must look at (all other names are just carried along).
_FRAMING: Final = frozenset(
    [b"content-length", b"host", b"connection", b"upgrade", b"transfer-encoding", b"expect"]
)

#: h11's bound on Content-Length digits (``h11._headers.CONTENT_LENGTH_MAX_DIGITS``):
#: beyond it h11 refuses the request, so the fast path leaves such heads to h11.
MAX_LENGTH_DIGITS: Final = 20


@final
@dataclass(slots=True)
class Request:
    """A request head: method, target and version as sent, header names lower-cased.

    ``headers`` keeps the order and repetition of the head (RFC 9110 section 5.3).
    """

    method: bytes
    target: bytes
    http_version: bytes
    headers: Headers

    @classmethod
    def from_h11(cls, request: h11.Request) -> Request:
        """The same request, from an event h11 parsed."""
        return cls(request.method, request.target, request.http_version, list(request.headers))


@final
@dataclass(slots=True)
class Data:
    """Part of a request body (always ``bytes``, never h11's ``bytearray``)."""

    data: bytes


@final
@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request body is complete (trailers, if any, are not kept)."""


#: The one instance the core emits; events carry no state, so it is shared.
END_OF_MESSAGE: Final = EndOfMessage()


@final
class ParsedHead:
    """What :func:`parse_head` found: the request and the facts the core frames it by."""

    __slots__ = ("connection", "length", "request", "upgrade")

    def __init__(self, request: Request, length: int, connection: bytes, upgrade: bytes) -> None:
        self.request = request
        #: The Content-Length, 0 without one.
        self.length = length
        #: Every Connection value joined with commas (empty without one).
        self.connection = connection
        #: The Upgrade value (empty without one).
        self.upgrade = upgrade


@final
class Tally:
    """How many heads a fast path read itself, in this process: for tests and debugging.

    One slot incremented per head, no call: nothing measurable on the hot path.
    """

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads = 0


#: Heads :func:`parse_head` read (every other head went to ``h11.Connection``).
PARSE_HEAD_TALLY: Final = Tally()


def parse_head(head: bytes, end: int) -> ParsedHead | None:
    """Read ``head[:end]``, a head that passed ``check_head``, as h11 would.

    ``end`` is the offset just past the blank line that ends the head. Returns
    ``None`` when h11 must decide (see the module docstring); never raises.
    """
    if not FAST_PATH:  # pragma: no cover - only with an h11 that moved its grammar
        return None
    # check_head proved every line ends in CRLF and no CR or LF stands alone, so this
    # split gives exactly the lines h11's ReceiveBuffer.maybe_extract_lines would.
    # (A name cannot hold a colon: the first colon of a line ends a valid name.)
    lines = head[: end - 4].split(b"\r\n")
    match = _REQUEST_LINE(lines[0])
    if match is None:
        return None
    headers: Headers = []
    append = headers.append
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            return None
        append((name.lower(), value.strip(b" \t")))  # OWS (RFC 9110 section 5.6.3)
    method, target, version = match.group("method", "target", "http_version")
    parsed = frame(method, target, version, headers)
    if parsed is not None:
        PARSE_HEAD_TALLY.heads += 1
    return parsed


def frame(method: bytes, target: bytes, version: bytes, headers: Headers) -> ParsedHead | None:
    """The request a head reader found, with its framing facts, or ``None`` for h11.

    ``headers`` must be exactly h11's: names lower-cased, values stripped of OWS. Both
    head readers (:func:`parse_head`, and ``httptools_head`` with ``--http httptools``)
    end here, so the rules for what h11 must decide are written once.
    """
    if version != b"1.1" and version != b"1.0":
        return None
    hosts, length, lengths, chunked, expect, connection, upgrade = framing(headers)
    # Transfer-Encoding and Expect are h11's to handle; so is any doubtful length
    # (bytes.isdigit() is ASCII-only: exactly h11's [0-9]+).
    if chunked or expect or lengths > 1:
        return None
    if lengths and (not length.isdigit() or len(length) > MAX_LENGTH_DIGITS):
        return None
    if hosts != 1 and (hosts or version == b"1.1"):
        return None
    return ParsedHead(
        Request(method, target, version, headers), int(length) if length else 0, connection, upgrade
    )


def framing(headers: Headers) -> tuple[int, bytes, int, bool, bool, bytes, bytes]:
    """The framing facts of a head, read once, for both paths (names lower-cased).

    Returns ``(hosts, length, lengths, chunked, expect, connection, upgrade)``: how many
    Host fields; the (last) Content-Length value and how many there were; whether a
    Transfer-Encoding field and an Expect field are present; every Connection value
    joined with commas; the Upgrade value. The plain path (:func:`frame`) leaves any
    doubt to h11; the h11 path reads the same facts after h11 has checked them. A
    plain tuple: this runs once per request.
    """
    hosts = lengths = 0
    length = connection = upgrade = b""
    chunked = expect = False
    for name, value in headers:
        if name in _FRAMING:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                lengths += 1
                length = value
            elif name == b"connection":
                connection += b"," + value
            elif name == b"upgrade":
                upgrade = value
            elif name == b"transfer-encoding":
                chunked = True
            else:
                expect = True
    return hosts, length, lengths, chunked, expect, connection, upgrade
