"""request.py's fast reading of a head, checked against h11 itself (differentially).

The rule under test: whenever a head reader answers, h11 accepts the same head and
reads the same request from it; every head it declines goes to h11, which decides. The
tests run once per reader of ``--http`` (``parse_head``, and httptools' through
``HttptoolsHeadReader``; see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import h11
import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.protocol.http import (
    MAX_DISCARD_BYTES,
    ConnectionClosed,
    HTTPLimits,
    ProtocolError,
    check_head,
)
from corral.protocol.httptools_head import HttptoolsHeadReader
from corral.protocol.request import (
    END_OF_MESSAGE,
    FAST_PATH,
    MAX_LENGTH_DIGITS,
    Data,
    ParsedHead,
    Request,
)
from tests.protocol import helpers
from tests.protocol.helpers import READERS, new_core

pytestmark = pytest.mark.usefixtures("head_reader")

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def h11_reads(head: bytes) -> Request | None:
    """The request h11 reads from ``head``, or None if it refuses it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    return Request.from_h11(event)


def fast(head: bytes) -> ParsedHead | None:
    """What the reader under test reads from a whole head."""
    return helpers.READ_HEAD(head, len(head))


def assert_agrees(head: bytes) -> ParsedHead | None:
    """If the fast path reads ``head``, h11 reads the same request from it."""
    parsed = fast(head)
    if parsed is None:
        return None
    theirs = h11_reads(head)
    assert theirs is not None, f"the fast path accepted a head h11 refuses: {head!r}"
    assert parsed.request == theirs
    lengths = [int(v) for n, v in theirs.headers if n == b"content-length"]
    assert parsed.length == (lengths[0] if lengths else 0)
    return parsed


def test_h11_grammar_found() -> None:
    """The installed h11 still has the grammar module, so the fast path is on."""
    assert FAST_PATH


def test_plain_get() -> None:
    """A plain GET is read with lower-cased names, values as sent."""
    parsed = assert_agrees(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Thing:  v 1 \r\n\r\n")
    assert parsed is not None
    assert parsed.request == Request(
        b"GET", b"/a?b=c", b"1.1", [(b"host", b"x"), (b"x-thing", b"v 1")]
    )
    assert (parsed.length, parsed.connection, parsed.upgrade) == (0, b"", b"")


def test_framing_facts() -> None:
    """Content-Length, every Connection value and the Upgrade value are collected."""
    parsed = assert_agrees(
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 12\r\n"
        b"connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert parsed is not None
    assert parsed.length == 12
    assert parsed.connection == b",keep-alive,Upgrade"
    assert parsed.upgrade == b"websocket"


def test_http10_without_host() -> None:
    """HTTP/1.0 needs no Host (RFC 9112 section 3.2 binds 1.1 only)."""
    assert assert_agrees(b"GET / HTTP/1.0\r\n\r\n") is not None


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",  # 505 on the h11 path
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",  # bad request line
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",  # two Hosts
        b"GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",  # bad header line
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n"
        % (b"1" * (MAX_LENGTH_DIGITS + 1)),
        # h11 refuses these. llhttp refuses the first three too (an error: declined);
        # it reads the last two, which the rebuilt request line then declines.
        b"GET /\ta HTTP/1.1\r\nHost: x\r\n\r\n",  # HTAB inside the target
        b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",  # a space after the version
        b"GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n",  # obs-text in the target
        b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / RTSP/1.0\r\nHost: x\r\n\r\n",
    ],
)
def test_left_to_h11(head: bytes) -> None:
    """Heads that need h11's judgement are declined, never refused here."""
    assert fast(head) is None


def test_longest_length_read_here(head_reader: str) -> None:
    """A Content-Length of h11's maximum digits is read by parse_head; llhttp stops at
    2**64 - 1 and declines more, which h11 then reads."""
    digits = b"9" * MAX_LENGTH_DIGITS
    parsed = assert_agrees(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n" % digits)
    if head_reader == "httptools":
        assert parsed is None
        digits = b"%d" % (2**64 - 1)
        parsed = assert_agrees(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n" % digits)
    assert parsed is not None
    assert parsed.length == int(digits)


def test_corpus_heads_agree() -> None:
    """Every head in the raw corpus that passes check_head reads the same both ways."""
    read = 0
    for case in sorted(CORPUS.glob("*.http")):
        raw = case.read_bytes().lstrip(b"\r\n")
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            continue
        head = raw[: end + 4]
        if check_head(head) is None and assert_agrees(head) is not None:
            read += 1
    assert read >= 20  # the corpus is mostly plain requests: most take the fast path


# -- generated heads -------------------------------------------------------------------------

_TOKENS = st.sampled_from([b"GET", b"POST", b"HEAD", b"CONNECT", b"X-Y", b"g e", b"", b"G\x80"])
_TARGETS = st.sampled_from(
    [b"/", b"/a?b", b"*", b"http://h/p", b"h:443", b"/\x80", b"/ x", b"", b"/%20"]
)
_VERSIONS = st.sampled_from([b"1.1", b"1.0", b"2.0", b"0.9", b"1.x", b"11"])
_NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Expect",
        b"Connection",
        b"Upgrade",
        b"X-A",
        b"x_b",
        b"Bad Name",
        b"",
        b"N\x80",
        b"Host ",
    ]
)
_VALUES = st.sampled_from(
    [
        b"",
        b"x",
        b" x ",
        b"\tx\t",
        b"a b",
        b"a  \t b",
        b"0",
        b"12",
        b"007",
        b"5, 5",
        b"5,6",
        b"-1",
        b"chunked",
        b"100-continue",
        b"upgrade",
        b"websocket",
        b"\x80\xff",
        b"1" * 21,
        b"v\x00",
        b"v\x0b",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    method=_TOKENS,
    target=_TARGETS,
    version=_VERSIONS,
    headers=st.lists(st.tuples(_NAMES, st.sampled_from([b":", b": ", b" :"]), _VALUES), max_size=6),
)
def test_generated_heads_agree(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes, bytes]]
) -> None:
    """Generated heads, valid and not, never make the fast path disagree with h11."""
    head = b"%s %s HTTP/%s\r\n" % (method, target, version)
    head += b"".join(n + sep + v + b"\r\n" for n, sep, v in headers) + b"\r\n"
    if check_head(head) is None:  # the core never calls parse_head otherwise
        assert_agrees(head)


_PLAIN_METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"])
_PLAIN_TARGETS = st.sampled_from(
    [b"/", b"/a/b?c=d&e", b"/%7E~!$&'()*+,;=:@", b"http://h:8/p?q", b"*", b"/{x}|^`"]
)
_PLAIN_NAMES = st.sampled_from(
    [b"Accept", b"user-agent", b"X-Forwarded-For", b"Cookie", b"x_y", b"!#$%&'*+-.^_`|~"]
)
_PLAIN_VALUES = st.sampled_from(
    [b"", b"x", b" \tpadded\t ", b"a b\tc", b"\x80\xff obs-text", b"q=0.9, */*", b'"quoted"']
)


@settings(max_examples=1000, deadline=None)
@given(
    method=_PLAIN_METHODS,
    target=_PLAIN_TARGETS,
    version=st.sampled_from([b"1.1", b"1.0"]),
    length=st.one_of(st.none(), st.integers(0, 10**6)),
    connection=st.sampled_from([b"", b"close", b"keep-alive", b"Upgrade"]),
    headers=st.lists(st.tuples(_PLAIN_NAMES, _PLAIN_VALUES), max_size=8),
)
def test_plain_heads_are_read(
    method: bytes,
    target: bytes,
    version: bytes,
    length: int | None,
    connection: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Each reader answers every plain head itself (the fast path is really taken), and
    answers it as h11 does."""
    lines = [b"Host: example.com", *(n + b":" + v for n, v in headers)]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    if connection:
        lines.append(b"Connection: " + connection)
    head = b"%s %s HTTP/%s\r\n" % (method, target, version)
    head += b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    assert check_head(head) is None
    parsed = assert_agrees(head)
    assert parsed is not None, head
    assert parsed.length == (length or 0)


def test_the_readers_differ() -> None:
    """The readers are really two: llhttp knows a fixed list of methods, h11 any token.

    (A head the httptools reader declines for that reason is still served, by h11.)
    """
    head = b"PURGE-ALL / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert READERS["h11"](head, len(head)) is not None
    assert READERS["httptools"](head, len(head)) is None
    assert h11_reads(head) is not None


def test_a_kept_llhttp_parser_never_decides() -> None:
    """A head that a kept parser refuses is read again by a new one, and answered.

    Which parsers are kept is llhttp's own call (below), so no known head leaves a kept
    parser refusing the next; one in llhttp's closed state stands in for any such case.
    """
    reader = HttptoolsHeadReader()
    first = b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n"
    second = b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    closed = httptools.HttpRequestParser(reader)
    closed.feed_data(first)
    with pytest.raises(httptools.HttpParserError):
        closed.feed_data(second)  # what makes the stand-in a refusing parser
    closed = httptools.HttpRequestParser(reader)
    closed.feed_data(first)
    reader._parser = closed
    parsed = reader.read(second, len(second))
    assert parsed is not None
    assert parsed.request.target == b"/2"


@pytest.mark.parametrize(
    ("head", "kept"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        # h11 ignores Proxy-Connection; llhttp reads it as Connection.
        (b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", False),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", False),
    ],
)
def test_the_parser_is_kept_where_llhttp_expects_another_head(head: bytes, kept: bool) -> None:
    """Only a whole bodyless message that llhttp itself would follow with another."""
    reader = HttptoolsHeadReader()
    assert reader.read(head, len(head)) is not None
    assert (reader._parser is not None) is kept


def test_the_llhttp_build_is_as_strict_as_assumed() -> None:
    """What httptools_head.py relies on in the llhttp that httptools builds; a release
    built otherwise (lenient flags, an older llhttp) fails here, not in production."""
    got: list[tuple[bytes, bytes]] = []

    class Callbacks:
        def on_header(self, name: bytes, value: bytes) -> None:
            got.append((name, value))

    def refused(head: bytes) -> bool:
        try:
            httptools.HttpRequestParser(Callbacks()).feed_data(head)
        except httptools.HttpParserUpgrade:
            return False
        except httptools.HttpParserError:
            return True
        return False

    # The reader catches the upgrade "error" before the real ones.
    assert not issubclass(httptools.HttpParserUpgrade, httptools.HttpParserError)
    # Names are strict tokens: no space inside or before the colon, none empty.
    assert refused(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
    assert refused(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
    assert refused(b"GET / HTTP/1.1\r\n: x\r\n\r\n")
    # Targets are VCHAR: HTAB and obs-text stop llhttp as they stop h11.
    assert refused(b"GET /\ta HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused(b"GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n")
    # An empty value is reported (h11 keeps it), not dropped.
    assert not refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n")
    assert (b"X-Empty", b"") in got


# -- the core on the fast path -----------------------------------------------------------------


def test_core_counts_a_length_body_across_reads() -> None:
    """A Content-Length body read without h11 arrives whole, then the pipelined head."""
    core = new_core()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    assert core._reader._h11 is None
    events = core.events_received()
    assert isinstance(events[0], Request)
    assert events[1:] == [Data(b"ab")]
    core.receive_data(b"cdeGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert core.events_received() == [Data(b"cde"), END_OF_MESSAGE]
    assert core.events_received() == []  # the pipelined head waits for the response


def test_core_length_body_cut_short() -> None:
    """EOF inside a Content-Length body read without h11 is a 400, as h11 reports it."""
    core = new_core()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    core.events_received()
    core.receive_eof()
    (error,) = core.events_received()
    assert isinstance(error, ProtocolError)
    assert error.status == 400
    assert "received 2 bytes, expected 5" in error.reason


def test_core_length_body_after_eof() -> None:
    """A pipelined request whose body the peer never finished sending is a 400."""
    core = new_core()
    core.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\n")
    core.receive_data(b"Content-Length: 9\r\n\r\nabc")
    core.receive_eof()
    assert [type(e) for e in core.events_received()] == [Request, type(END_OF_MESSAGE)]
    core.send_response(204, [])
    core.send_end()
    core.data_to_send()
    core.start_next_cycle()
    events = core.events_received()
    assert [type(e) for e in events] == [Request, Data, ProtocolError]
    assert isinstance(events[-1], ProtocolError)
    assert events[-1].status == 400


def test_core_declared_length_over_the_cap() -> None:
    """The fast path applies the body cap to the declared length (413, no body read)."""
    core = new_core(HTTPLimits(max_body_bytes=10))
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
    (error,) = core.events_received()
    assert isinstance(error, ProtocolError)
    assert error.status == 413


def test_core_chunked_body_cut_short() -> None:
    """EOF inside a chunked body (read by h11) is a 400 too."""
    core = new_core()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    assert core._reader._h11 is not None
    assert [type(e) for e in core.events_received()] == [Request, Data]
    core.receive_eof()
    (error,) = core.events_received()
    assert isinstance(error, ProtocolError)
    assert error.status == 400


def test_core_discard_overflow_in_the_last_read() -> None:
    """An unread body whose last read passes the discard bound closes the connection."""
    size = MAX_DISCARD_BYTES + 10
    core = new_core()
    core.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    core.events_received()
    core.send_response(204, [])
    core.send_end()
    core.data_to_send()
    core.start_next_cycle()  # the app did not read the body: it is discarded
    core.receive_data(b"x" * size)
    assert [type(e) for e in core.events_received()] == [ConnectionClosed]
