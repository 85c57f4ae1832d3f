"""Tests of the sans-I/O HTTP/1.1 core: pure, synchronous, a real h11 client on the other end."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.protocol.http import (
    DEFAULT_MAX_HEADER_BYTES,
    MAX_DISCARD_BYTES,
    REASONS,
    TRANSITIONS,
    CoreState,
    Event,
    HTTPLimits,
    LocalProtocolError,
    ProtocolError,
    UpgradeRequest,
    check_head,
    simple_response,
)
from corral.protocol.request import EndOfMessage
from tests.protocol.helpers import (
    HOST,
    ConnectionPair,
    assert_rejected,
    header,
    new_core,
    request_bytes,
    response_of,
    serve,
    summarize,
)

# Every test here runs with each head reader of --http (conftest.py).
pytestmark = pytest.mark.usefixtures("head_reader")

GET = request_bytes()
CHUNKED = [*HOST, (b"transfer-encoding", b"chunked")]
WEBSOCKET = [
    *HOST,
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def post(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A POST with a Content-Length body."""
    pairs = [*HOST, (b"content-length", b"%d" % len(body)), *(headers or [])]
    return request_bytes(b"POST", b"/", pairs, body)


def chunked(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A POST with a raw (already chunk-encoded) body."""
    return request_bytes(b"POST", b"/", [*CHUNKED, *(headers or [])], body)


# -- the basics -------------------------------------------------------------------------------


def test_simple_get() -> None:
    """A GET yields request and end; the response reaches the client intact."""
    pair = ConnectionPair()
    assert pair.request() == [("request", b"GET", b"/"), ("end",)]
    status, headers, body = response_of(pair.respond(200, body=b"hello"))
    assert (status, body) == (200, b"hello")
    assert header(headers, b"content-length") == b"5"
    assert not pair.server.close_expected()


def test_post_content_length_body() -> None:
    """A Content-Length body arrives as data before the end of message."""
    pair = ConnectionPair()
    events = pair.request(b"POST", b"/upload", body=b"payload")
    assert events == [("request", b"POST", b"/upload"), ("data", b"payload"), ("end",)]


def test_chunked_body() -> None:
    """A chunked body is de-chunked, trailers and all."""
    pair = ConnectionPair()
    raw = chunked(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n")
    assert pair.feed(raw) == [("request", b"POST", b"/"), ("data", b"abcde"), ("end",)]
    assert pair.server.state is CoreState.DONE


def test_body_split_across_reads() -> None:
    """Body bytes fed after the head come out as data as they arrive."""
    pair = ConnectionPair()
    assert pair.feed(post(b"hello")[:-3]) == [("request", b"POST", b"/"), ("data", b"he")]
    assert not pair.server.request_complete
    assert pair.feed(b"llo") == [("data", b"llo"), ("end",)]
    assert pair.server.request_complete


def test_keep_alive_reuse() -> None:
    """After a complete exchange the same core serves the next request."""
    pair = ConnectionPair()
    for target in (b"/1", b"/2", b"/3"):
        assert pair.request(target=target) == [("request", b"GET", target), ("end",)]
        assert response_of(pair.respond())[0] == 200
        assert pair.server.response_complete()
        assert pair.next_cycle() == []


def test_response_without_content_length_is_chunked() -> None:
    """A body of unknown length is sent chunked to an HTTP/1.1 client."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(200, [])
    pair.server.send_body(b"abc")
    pair.server.send_body(b"")
    pair.server.send_end()
    sent = b"".join(pair.server.data_to_send())
    assert b"\r\ntransfer-encoding: chunked\r\n" in sent.lower()
    assert sent.endswith(b"3\r\nabc\r\n0\r\n\r\n")


def test_data_to_send_is_empty_between_sends() -> None:
    """data_to_send() returns an empty list when nothing is pending."""
    pair = ConnectionPair()
    pair.request()
    pair.respond()
    assert pair.server.data_to_send() == []


def test_http10_closes() -> None:
    """An HTTP/1.0 request gets a response that closes the connection."""
    pair = ConnectionPair()
    assert pair.feed(b"GET / HTTP/1.0\r\n\r\n") == [("request", b"GET", b"/"), ("end",)]
    pair.server.send_response(200, [(b"content-length", b"2")])
    pair.server.send_body(b"ok")
    pair.server.send_end()
    assert b"\r\nconnection: close\r\n" in b"".join(pair.server.data_to_send()).lower()
    assert pair.server.close_expected()


def test_http10_body_of_unknown_length_closes() -> None:
    """To HTTP/1.0 a body of unknown length is framed by the close, not chunked."""
    pair = ConnectionPair()
    pair.feed(b"GET / HTTP/1.0\r\n\r\n")
    pair.server.send_response(200, [])
    pair.server.send_body(b"abc")
    pair.server.send_end()
    sent = b"".join(pair.server.data_to_send())
    assert b"transfer-encoding" not in sent
    assert sent.endswith(b"\r\n\r\nabc")
    assert pair.server.close_expected()


def test_connection_close() -> None:
    """Connection: close from the client makes the core expect a close after the response."""
    pair = ConnectionPair()
    pair.request(headers=[*HOST, (b"connection", b"close")])
    _, headers, _ = response_of(pair.respond())
    assert header(headers, b"connection") == b"close"
    assert pair.server.close_expected()
    pair.server.start_next_cycle()  # a no-op once a close is expected
    assert pair.server.events_received() == []


def test_leading_crlf_ignored() -> None:
    """Empty lines before the request line are skipped (RFC 9112 section 2.2)."""
    pair = ConnectionPair()
    assert pair.feed(b"\r\n\r\n" + GET) == [("request", b"GET", b"/"), ("end",)]


def test_leading_crlf_split_across_reads() -> None:
    """A CR and its LF arriving apart before the request line are still skipped."""
    pair = ConnectionPair()
    assert pair.feed(b"\r") == []
    assert pair.feed(b"\n\r\n") == []
    assert pair.feed(GET) == [("request", b"GET", b"/"), ("end",)]


def test_byte_at_a_time() -> None:
    """A pipelined stream fed one byte at a time yields the same requests in order."""
    raw = post(b"hello") + chunked(b"2\r\nhi\r\n0\r\n\r\n") + GET
    byte_by_byte = serve(raw, piece=1)
    assert byte_by_byte == serve(raw)
    assert byte_by_byte.requests == [
        ("POST", "/", b"hello"),
        ("POST", "/", b"hi"),
        ("GET", "/", b""),
    ]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_split_gives_same_outcome(sizes: list[int]) -> None:
    """However the stream is cut into reads, the requests served are the same."""
    raw = b"\r\n" + post(b"hello") + chunked(b"2\r\nhi\r\n0\r\nx: y\r\n\r\n") + GET
    core = new_core()
    events: list[Event] = []
    start = 0
    for size in [*sizes, len(raw)]:
        core.receive_data(raw[start : start + size])
        start += size
        while batch := core.events_received():
            events += batch
            if isinstance(batch[-1], EndOfMessage):
                core.send_response(204, [])
                core.send_end()
                core.data_to_send()
                core.start_next_cycle()
    assert summarize(events) == summarize(serve_events(raw))


def serve_events(raw: bytes) -> list[Event]:
    """All core events for ``raw`` fed at once, answering each request with a 204."""
    core = new_core()
    core.receive_data(raw)
    events: list[Event] = []
    while batch := core.events_received():
        events += batch
        core.send_response(204, [])
        core.send_end()
        core.start_next_cycle()
    return events


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_garbage_never_raises(data: bytes, size: int) -> None:
    """Arbitrary bytes never raise out of receive_data or receive_eof (bad input is an event)."""
    core = new_core(HTTPLimits(max_header_bytes=128, max_body_bytes=64))
    for start in range(0, len(data), size):
        core.receive_data(data[start : start + size])
    core.receive_eof()
    for event in core.events_received():
        if isinstance(event, ProtocolError):
            assert event.status in (400, 413, 431, 501, 505)


# -- pipelining -------------------------------------------------------------------------------


def test_pipelining_three_in_one_read() -> None:
    """Three pipelined requests come out one per cycle, in order."""
    pair = ConnectionPair()
    raw = request_bytes(target=b"/1") + request_bytes(target=b"/2") + request_bytes(target=b"/3")
    assert pair.feed(raw) == [("request", b"GET", b"/1"), ("end",)]
    # The second head is not even looked at before the first response is complete.
    assert pair.server.events_received() == []
    pair.respond()
    assert pair.next_cycle() == [("request", b"GET", b"/2"), ("end",)]
    pair.respond()
    assert pair.next_cycle() == [("request", b"GET", b"/3"), ("end",)]
    pair.respond()
    assert pair.next_cycle() == []


def test_pipelined_bytes_after_body_kept() -> None:
    """Bytes that arrive after a complete request wait for the next cycle."""
    pair = ConnectionPair()
    assert pair.feed(post(b"abc")) == [("request", b"POST", b"/"), ("data", b"abc"), ("end",)]
    assert pair.feed(GET[:10]) == []
    assert pair.feed(GET[10:]) == []
    pair.respond()
    assert pair.next_cycle() == [("request", b"GET", b"/"), ("end",)]


def test_pipelined_malformed_request_rejected_when_reached() -> None:
    """A bad second request is rejected only after the first response, not before."""
    pair = ConnectionPair()
    assert pair.feed(GET + b"GET / HTTP/1.1\nHost: x\n\n") == [("request", b"GET", b"/"), ("end",)]
    assert not pair.server.close_expected()
    assert response_of(pair.respond())[0] == 200
    pair.server.start_next_cycle()
    assert_rejected(summarize(pair.server.events_received()), pair.server, 400)


def test_pipelined_partial_head_waits() -> None:
    """A pipelined head cut short is completed by later reads."""
    pair = ConnectionPair()
    pair.feed(GET + GET[:5])
    pair.respond()
    assert pair.next_cycle() == []
    assert pair.feed(GET[5:]) == [("request", b"GET", b"/"), ("end",)]


def test_pipelining_after_connection_close_is_ignored() -> None:
    """B11: bytes after a Connection: close request are never parsed, not even as errors."""
    outcome = serve(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nInvalid\r\n\r\n")
    assert outcome.requests == [("GET", "/", b"")]
    assert (outcome.status, outcome.close) == (None, True)


def test_wants_read_paused_once_pipelined_bytes_exceed_limit() -> None:
    """Pipelined bytes past max_header_bytes ask the adapter to stop reading."""
    pair = ConnectionPair(HTTPLimits(max_header_bytes=100))
    pair.feed(GET)
    assert not pair.server.wants_read_paused()
    pair.feed(GET * 2)
    assert not pair.server.wants_read_paused()
    pair.feed(GET)
    assert pair.server.wants_read_paused()
    pair.respond()
    assert pair.next_cycle() == [("request", b"GET", b"/"), ("end",)]
    assert not pair.server.wants_read_paused()


def test_wants_read_paused_covers_upgrade_proposals() -> None:
    """Bytes pipelined after a request with a refused Upgrade are bounded too."""
    pair = ConnectionPair(HTTPLimits(max_header_bytes=100))
    pair.feed(request_bytes(headers=[*HOST, (b"upgrade", b"h2c"), (b"connection", b"upgrade")]))
    pair.feed(GET * 5)
    assert pair.server.wants_read_paused()


# -- 100-continue and body limits -------------------------------------------------------------

EXPECT = [(b"expect", b"100-continue")]


def test_100_continue() -> None:
    """The 100 goes out when asked for, then the body is read as usual."""
    pair = ConnectionPair()
    assert pair.feed(post(b"hello", EXPECT)[:-5]) == [("request", b"POST", b"/")]
    waiting = pair.server.they_are_waiting_for_100_continue
    assert waiting
    pair.server.send_continue()
    assert pair.server.data_to_send() == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert not pair.server.they_are_waiting_for_100_continue
    assert pair.feed(b"hello") == [("data", b"hello"), ("end",)]
    pair.respond()
    assert not pair.server.close_expected()


def test_send_continue_after_response_raises() -> None:
    """A 100 after the final response is a caller error."""
    pair = ConnectionPair()
    pair.request()
    pair.respond()
    with pytest.raises(LocalProtocolError):
        pair.server.send_continue()
    assert pair.server.close_expected()


def test_413_by_content_length_before_100() -> None:
    """A declared body over the cap is refused at once and no 100 is ever sent."""
    pair = ConnectionPair(HTTPLimits(max_body_bytes=4))
    events = pair.feed(post(b"hello", EXPECT)[:-5])
    assert_rejected(events, pair.server, 413)
    assert not pair.server.they_are_waiting_for_100_continue
    assert pair.server.data_to_send() == []


def test_body_at_cap_accepted() -> None:
    """A body of exactly max_body_bytes is accepted, chunked or not."""
    pair = ConnectionPair(HTTPLimits(max_body_bytes=5))
    assert pair.feed(post(b"hello"))[-1] == ("end",)
    pair.respond()
    pair.next_cycle()
    assert pair.feed(chunked(b"5\r\nhello\r\n0\r\n\r\n"))[-1] == ("end",)


def test_413_chunked_body_over_cap() -> None:
    """A chunked body is counted as it arrives and refused once past the cap."""
    pair = ConnectionPair(HTTPLimits(max_body_bytes=5))
    events = pair.feed(chunked(b"3\r\nabc\r\n"))
    assert events == [("request", b"POST", b"/"), ("data", b"abc")]
    assert_rejected(pair.feed(b"3\r\ndef\r\n"), pair.server, 413)


def test_waiting_for_100_and_answered_without_reading_closes() -> None:
    """A response sent while the client still waits for 100 says close, and the core closes."""
    pair = ConnectionPair()
    pair.feed(post(b"hello", EXPECT)[:-5])
    status, headers, _ = response_of(
        pair.respond(417, [(b"Connection", b"keep-alive"), (b"content-length", b"2")])
    )
    assert status == 417
    assert header(headers, b"connection") == b"close"
    assert pair.server.close_expected()


# -- unread bodies ----------------------------------------------------------------------------


def test_unread_body_discarded_then_connection_reused() -> None:
    """A body the app did not read is discarded after the response; the next request works."""
    pair = ConnectionPair()
    raw = post(b"0123456789")
    assert pair.feed(raw[:-6]) == [("request", b"POST", b"/"), ("data", b"0123")]
    pair.respond()
    assert not pair.server.request_complete
    assert pair.next_cycle() == []
    assert pair.feed(raw[-6:] + GET) == [("request", b"GET", b"/"), ("end",)]


def test_unread_chunked_body_discarded() -> None:
    """An unread chunked body is discarded up to its terminator, including its trailers."""
    pair = ConnectionPair()
    pair.feed(chunked(b"3\r\nabc\r\n"))
    pair.respond()
    pair.next_cycle()
    assert pair.feed(b"3\r\ndef\r\n0\r\nx: y\r\n\r\n") == []
    assert pair.server.state is CoreState.HEAD
    assert pair.feed(GET) == [("request", b"GET", b"/"), ("end",)]


def test_discard_beyond_limit_closes() -> None:
    """An unread body longer than MAX_DISCARD_BYTES closes the connection instead."""
    pair = ConnectionPair()
    size = MAX_DISCARD_BYTES + 10
    pair.feed(request_bytes(b"POST", b"/", [*HOST, (b"content-length", b"%d" % size)]))
    pair.respond()
    assert pair.next_cycle() == []
    assert pair.feed(b"x" * MAX_DISCARD_BYTES) == []
    assert not pair.server.close_expected()
    assert pair.feed(b"x") == [("closed",)]
    assert pair.server.close_expected()
    assert pair.feed(b"x" * 9 + GET) == []


def test_discard_of_malformed_chunked_body_closes_quietly() -> None:
    """Bad framing in a body being discarded closes without a second response."""
    pair = ConnectionPair()
    pair.feed(chunked(b"3\r\nabc\r\n"))
    pair.respond()
    pair.next_cycle()
    assert pair.feed(b"zz\r\n") == [("closed",)]
    assert pair.server.close_expected()


def test_eof_while_discarding_closes_quietly() -> None:
    """The client closing in the middle of a discarded body is a quiet close."""
    pair = ConnectionPair()
    pair.feed(post(b"0123456789")[:-5])
    pair.respond()
    pair.next_cycle()
    pair.server.receive_eof()
    assert summarize(pair.server.events_received()) == [("closed",)]


def test_discard_does_not_count_against_body_cap() -> None:
    """Discarded bytes are bounded by MAX_DISCARD_BYTES only, not by max_body_bytes."""
    pair = ConnectionPair(HTTPLimits(max_body_bytes=4))
    pair.feed(chunked(b"3\r\nabc\r\n"))
    pair.respond()
    pair.next_cycle()
    assert pair.feed(b"6\r\nabcdef\r\n0\r\n\r\n" + GET) == [("request", b"GET", b"/"), ("end",)]


def test_start_next_cycle_before_response_complete_raises() -> None:
    """Starting the next cycle while the response is still open is a caller error."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(200, [])
    with pytest.raises(LocalProtocolError):
        pair.server.start_next_cycle()


def test_a_whole_response_is_its_head_body_and_end_in_one() -> None:
    """send_response(..., body=) writes exactly what the three calls would, and ends it."""
    headers = [(b"content-length", b"5")]
    apart = ConnectionPair()
    apart.request()
    apart.server.send_response(200, headers)
    apart.server.send_body(b"hello")
    apart.server.send_end()
    whole = ConnectionPair()
    whole.request()
    whole.server.send_response(200, headers, body=b"hello")
    assert whole.server.data_to_send() == [b"".join(apart.server.data_to_send())]
    assert whole.server.response_complete()
    with pytest.raises(LocalProtocolError):
        whole.server.send_body(b"more")


def test_the_readers_moves_are_checked_against_its_table() -> None:
    """Every state has a row in TRANSITIONS, the final ones an empty one, and a move the
    table does not list raises instead of happening."""
    assert set(TRANSITIONS) == set(CoreState)
    assert not TRANSITIONS[CoreState.SWITCHED]
    assert not TRANSITIONS[CoreState.ERROR]
    pair = ConnectionPair()
    pair.feed(b"\x00garbage\r\n\r\n")  # a ProtocolError: the reader is in ERROR
    assert pair.server.state is CoreState.ERROR
    with pytest.raises(LocalProtocolError, match="error -> head"):
        pair.server._reader.next_cycle()
    assert pair.server.state is CoreState.ERROR


# -- the head: size limits --------------------------------------------------------------------


def padded_get(size: int) -> bytes:
    """A GET whose head is exactly ``size`` bytes long."""
    bare = request_bytes(headers=[*HOST, (b"x-pad", b"")])
    return request_bytes(headers=[*HOST, (b"x-pad", b"a" * (size - len(bare)))])


def test_431_oversize_head() -> None:
    """A complete head over max_header_bytes gets 431."""
    pair = ConnectionPair()
    assert_rejected(pair.feed(padded_get(DEFAULT_MAX_HEADER_BYTES + 1)), pair.server, 431)


def test_431_head_that_never_ends() -> None:
    """A head that keeps growing without its blank line gets 431 once past the limit."""
    pair = ConnectionPair(HTTPLimits(max_header_bytes=64))
    assert pair.feed(b"GET / HTTP/1.1\r\nx-long: " + b"a" * 40) == []
    assert_rejected(pair.feed(b"a" * 20), pair.server, 431)


def test_head_at_limit_accepted() -> None:
    """A head of exactly max_header_bytes, or just under, is accepted."""
    for size in (DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_BYTES - 1):
        pair = ConnectionPair()
        assert pair.feed(padded_get(size)) == [("request", b"GET", b"/"), ("end",)]


def test_head_limit_configurable() -> None:
    """max_header_bytes is honoured whatever its value."""
    assert_rejected(
        (pair := ConnectionPair(HTTPLimits(max_header_bytes=200))).feed(padded_get(201)),
        pair.server,
        431,
    )
    assert ConnectionPair(HTTPLimits(max_header_bytes=200)).feed(padded_get(200))[-1] == ("end",)


def test_head_trickled_byte_by_byte_at_limit() -> None:
    """A head trickled one byte at a time is measured like one sent at once."""
    for size, expected in ((300, ("end",)), (301, ("error", 431))):
        pair = ConnectionPair(HTTPLimits(max_header_bytes=300))
        events = []
        for byte in padded_get(size):
            events += pair.feed(bytes([byte]))
        assert events[-1] == expected


# -- the head: hardening ----------------------------------------------------------------------

# B1: Content-Length says the body is "0\r\n\r\n", chunked framing says it ends there.
SMUGGLED = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
)

REJECTED = [
    pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", 400, id="bare-lf-head"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400, id="bare-lf-last-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400, id="bare-lf-mid-head"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400, id="bare-cr"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, id="obs-fold-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n", 400, id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400, id="space-before-first-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400, id="nul-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400, id="soh-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", 400, id="del-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n", 400, id="vt-in-value"),
    pytest.param(b"GET /\x1b HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="esc-in-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, id="duplicate-host"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http-2.0"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, id="http-0.9"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="space-in-target"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, id="tls-handshake"),
    pytest.param(SMUGGLED, 400, id="cl-and-te"),
    pytest.param(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="te-in-http10"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        id="te-not-chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 1\r\n\r\nabc",
        400,
        id="conflicting-content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 1\r\n\r\nabc", 400, id="cl-list"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n",
        400,
        id="content-length-40-nines",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, id="negative-cl"
    ),
    pytest.param(chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, id="bad-chunk-footer"),
    pytest.param(chunked(b"1" * 21 + b"\r\n"), 400, id="chunk-size-21-hex-digits"),
    pytest.param(chunked(b"1;ext\nX\r\n"), 400, id="bare-lf-in-chunk-ext"),
    pytest.param(chunked(b"5\nhello\r\n0\r\n\r\n"), 400, id="bare-lf-after-chunk-size"),
    pytest.param(
        chunked(b"3\r\nabc\r\n0\r\n\nGET /admin HTTP/1.1\r\n"), 400, id="bare-lf-last-chunk"
    ),
    pytest.param(chunked(b"0\r\nX: y\n\n"), 400, id="bare-lf-ends-trailers"),
    pytest.param(chunked(b"0\r\nX: y\n\r\n"), 400, id="bare-lf-before-blank-line"),
    pytest.param(chunked(b"0\r\nX: y\r\n\n"), 400, id="bare-lf-blank-line"),
    pytest.param(chunked(b"1;" + b"e" * 17000), 431, id="chunk-extension-never-ends"),
    pytest.param(chunked(b"0\r\nX: " + b"t" * 17000), 431, id="trailer-never-ends"),
]


@pytest.mark.parametrize(("raw", "status"), REJECTED)
def test_rejected(raw: bytes, status: int) -> None:
    """Each malformed or ambiguous request is answered with its status and a close."""
    pair = ConnectionPair()
    assert_rejected(pair.feed(raw), pair.server, status)
    assert pair.server.state is CoreState.ERROR
    # Nothing after the error is parsed, however much more arrives.
    assert pair.feed(GET) == []
    pair.server.receive_eof()
    assert pair.server.events_received() == []


@pytest.mark.parametrize(("raw", "status"), REJECTED)
def test_rejected_byte_at_a_time(raw: bytes, status: int) -> None:
    """Feeding the same bytes one at a time gives the same answer."""
    pair = ConnectionPair()
    events = []
    for byte in raw:
        events += pair.feed(bytes([byte]))
    assert events[-1] == ("error", status)


def test_cl_and_te_never_serves_smuggled_request() -> None:
    """B1: the request hidden behind CL+TE is never served."""
    outcome = serve(SMUGGLED, eof=True)
    assert (outcome.requests, outcome.status, outcome.close) == ([], 400, True)


def test_identical_duplicate_content_length_accepted() -> None:
    """B2: a repeated Content-Length with the same value is one Content-Length."""
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    assert ConnectionPair().feed(raw) == [("request", b"POST", b"/"), ("data", b"abc"), ("end",)]


def test_tab_in_header_value_accepted() -> None:
    """HTAB is allowed inside a field value (RFC 9110 section 5.5) and obs-text too."""
    raw = request_bytes(headers=[*HOST, (b"x", b"a\tb\xe9")])
    assert ConnectionPair().feed(raw) == [("request", b"GET", b"/"), ("end",)]


def test_early_bare_lf_rejected_before_the_head_ends() -> None:
    """A head ending in bare LFs is refused at once, not left to the header timeout."""
    pair = ConnectionPair()
    assert_rejected(pair.feed(b"GET / HTTP/1.1\nHost: x\n\n"), pair.server, 400)


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare LF line ending"),
        (b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", "bare CR in request head"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", "obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost: x\x1f\r\n\r\n", "control character in request head"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\n", None),
    ],
)
def test_check_head(head: bytes, problem: str | None) -> None:
    """check_head names the first problem in a head, or None; bytes after ``end`` are ignored."""
    end = head.index(b"\r\n\r\n") + 4 if b"\r\n\r\n" in head else None
    assert check_head(head, end) == problem
    assert check_head(bytearray(head[:end])) == problem


# -- response framing -------------------------------------------------------------------------


def test_head_response_drops_body_keeps_length() -> None:
    """B25: a body sent for HEAD is dropped; Content-Length stays; the connection is reusable."""
    pair = ConnectionPair()
    pair.request(b"HEAD")
    events = pair.respond(200, [(b"content-length", b"10")], body=b"0123456789")
    status, headers, body = response_of(events)
    assert (status, body, header(headers, b"content-length")) == (200, b"", b"10")
    assert not pair.server.close_expected()
    assert pair.next_cycle() == []
    assert pair.request() == [("request", b"GET", b"/"), ("end",)]


def test_204_strips_framing_and_body() -> None:
    """B25: a 204 loses Content-Length, Transfer-Encoding and any body."""
    pair = ConnectionPair()
    pair.request()
    framing = [(b"Content-Length", b"4"), (b"transfer-encoding", b"chunked"), (b"x", b"1")]
    status, headers, body = response_of(pair.respond(204, framing, body=b"body"))
    assert (status, body, headers) == (204, b"", [(b"x", b"1")])
    assert not pair.server.close_expected()
    assert pair.next_cycle() == []


def test_304_keeps_length_drops_body() -> None:
    """A 304 may say the length a 200 would have had, but carries no body."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(304, [(b"content-length", b"4")])
    pair.server.send_body(b"body")
    pair.server.send_end()
    sent = b"".join(pair.server.data_to_send())
    assert sent.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert sent.endswith(b"content-length: 4\r\n\r\n")
    assert not pair.server.close_expected()


def test_body_longer_than_content_length_raises_and_closes() -> None:
    """B25: a body past its Content-Length raises, nothing of it is sent, the connection closes."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(200, [(b"content-length", b"2")])
    with pytest.raises(LocalProtocolError):
        pair.server.send_body(b"abc")
    assert pair.server.close_expected()
    assert b"abc" not in b"".join(pair.server.data_to_send())


def test_body_shorter_than_content_length_raises_on_end() -> None:
    """A body short of its Content-Length raises at send_end and the connection closes."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(200, [(b"content-length", b"5")])
    pair.server.send_body(b"abc")
    with pytest.raises(LocalProtocolError):
        pair.server.send_end()
    assert pair.server.close_expected()


def test_invalid_response_header_raises_and_closes() -> None:
    """B9: a header value with CR LF raises instead of splitting the response."""
    pair = ConnectionPair()
    pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(200, [(b"x-evil", b"a\r\nX-Injected: 1")])
    assert pair.server.close_expected()
    assert pair.server.data_to_send() == []


def test_informational_status_via_send_response_raises() -> None:
    """Only final statuses go through send_response."""
    pair = ConnectionPair()
    pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(101, [])


def test_body_before_head_raises() -> None:
    """send_body before send_response is a caller error."""
    pair = ConnectionPair()
    pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.send_body(b"x")


def test_connect_2xx_raises_other_answers_work() -> None:
    """A 2xx to CONNECT would open a tunnel and raises; a 405 is an ordinary response."""
    pair = ConnectionPair()
    assert pair.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") == [
        ("request", b"CONNECT", b"example.com:443"),
        ("end",),
    ]
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(200, [])
    assert pair.server.close_expected()
    pair = ConnectionPair()
    pair.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert response_of(pair.respond(405))[0] == 405
    assert not pair.server.close_expected()
    assert pair.next_cycle() == []


# -- upgrades ---------------------------------------------------------------------------------


def test_websocket_upgrade_handed_over_with_trailing_bytes() -> None:
    """A WebSocket upgrade becomes an UpgradeRequest carrying the bytes after its head."""
    pair = ConnectionPair()
    raw = request_bytes(target=b"/chat", headers=WEBSOCKET) + b"\x81\x85frame"
    pair.server.receive_data(raw)
    events = pair.server.events_received()
    assert len(events) == 1
    assert isinstance(events[0], UpgradeRequest)
    assert events[0].request.target == b"/chat"
    assert events[0].trailing == b"\x81\x85frame"
    assert pair.server.state is CoreState.SWITCHED
    # The bytes that follow belong to the WebSocket core now.
    assert pair.feed(b"more") == []
    pair.server.receive_eof()
    assert pair.server.events_received() == []


def test_websocket_upgrade_with_connection_token_list() -> None:
    """Connection: keep-alive, Upgrade still asks for the upgrade."""
    headers = [(n, b"keep-alive, Upgrade" if n == b"connection" else v) for n, v in WEBSOCKET]
    assert ConnectionPair().feed(request_bytes(headers=headers)) == [("upgrade", b"/", b"")]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            request_bytes(headers=[h for h in WEBSOCKET if h[0] != b"connection"]),
            id="no-connection-upgrade",
        ),
        pytest.param(
            request_bytes(
                headers=[(n, b"keep-alive" if n == b"connection" else v) for n, v in WEBSOCKET]
            ),
            id="connection-without-upgrade-token",
        ),
        pytest.param(request_bytes(headers=WEBSOCKET, version=b"1.0"), id="http10"),
        pytest.param(request_bytes(b"POST", headers=WEBSOCKET), id="post"),
    ],
)
def test_upgrade_not_requested_properly_is_a_plain_request(raw: bytes) -> None:
    """An Upgrade header without Connection: upgrade, GET and HTTP/1.1 is ignored (RFC 9110 7.8)."""
    pair = ConnectionPair()
    assert pair.feed(raw) == [("request", raw.split(b" ")[0], b"/"), ("end",)]


def test_h2c_upgrade_with_body_served_as_plain_request() -> None:
    """B14: an h2c upgrade with a chunked body is served whole; the connection stays usable."""
    pair = ConnectionPair()
    headers = [
        *CHUNKED,
        (b"connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"h2c"),
        (b"http2-settings", b"AAMAAABkAAQAAP__"),
    ]
    raw = request_bytes(b"POST", b"/", headers, b"5\r\nhello\r\n0\r\n\r\n") + GET
    assert pair.feed(raw) == [("request", b"POST", b"/"), ("data", b"hello"), ("end",)]
    assert response_of(pair.respond())[0] == 200
    assert not pair.server.close_expected()
    assert pair.next_cycle() == [("request", b"GET", b"/"), ("end",)]


def test_websocket_upgrade_with_body_is_a_plain_request() -> None:
    """An upgrade request with a body is not handed over; its body is read as usual."""
    pair = ConnectionPair()
    raw = request_bytes(headers=[*WEBSOCKET, (b"content-length", b"2")], body=b"hi")
    assert pair.feed(raw) == [("request", b"GET", b"/"), ("data", b"hi"), ("end",)]


# -- end of stream ----------------------------------------------------------------------------


def test_eof_between_requests() -> None:
    """EOF with no request in progress is a plain close."""
    pair = ConnectionPair()
    assert pair.feed(b"", eof=True) == [("closed",)]
    assert pair.server.close_expected()


def test_eof_mid_head() -> None:
    """EOF in the middle of a head abandons it: a close, not an error response."""
    pair = ConnectionPair()
    assert pair.feed(GET[:10], eof=True) == [("closed",)]
    pair.server.receive_eof()
    assert pair.server.events_received() == []


def test_eof_mid_body() -> None:
    """EOF in the middle of a body is a 400 (the request is incomplete)."""
    pair = ConnectionPair()
    events = pair.feed(post(b"hello")[:-2], eof=True)
    assert events[0] == ("request", b"POST", b"/")
    assert_rejected(events, pair.server, 400)


def test_eof_after_complete_request_closes_after_response() -> None:
    """A half-closed client still gets its response; then the connection closes."""
    pair = ConnectionPair()
    assert pair.feed(GET, eof=True) == [("request", b"GET", b"/"), ("end",)]
    assert not pair.server.close_expected()
    assert response_of(pair.respond())[0] == 200
    assert pair.next_cycle() == [("closed",)]
    assert pair.server.close_expected()


@pytest.mark.parametrize(
    ("second", "last"),
    [
        pytest.param(GET, ("closed",), id="complete"),
        pytest.param(post(b"abcdef")[:-2], ("error", 400), id="short-body"),
        pytest.param(GET[:-2], ("closed",), id="partial-head"),
    ],
)
def test_eof_while_responding_with_pipelined_request(second: bytes, last: tuple[object]) -> None:
    """EOF during a response: a complete pipelined request is still served, then the end."""
    pair = ConnectionPair()
    assert pair.feed(GET + second, eof=True) == [("request", b"GET", b"/"), ("end",)]
    pair.respond()
    events = pair.next_cycle()
    if second == GET:
        assert events == [("request", b"GET", b"/"), ("end",)]
        pair.respond()
        events = pair.next_cycle()
    assert events[-1] == last
    assert pair.server.close_expected()


def test_eof_after_pipelined_requests_serves_them_all() -> None:
    """Every complete pipelined request sent before EOF is served, then the core closes."""
    outcome = serve(request_bytes(target=b"/1") + post(b"abc") + GET[:5], eof=True)
    assert outcome.requests == [("GET", "/1", b""), ("POST", "/", b"abc")]
    assert (outcome.status, outcome.close) == (None, True)


def test_eof_after_pipelined_head_with_short_body() -> None:
    """A pipelined request whose body was cut by EOF is a 400 once it is reached."""
    outcome = serve(GET + post(b"abcdef")[:-2], eof=True)
    assert outcome.requests == [("GET", "/", b"")]
    assert (outcome.status, outcome.close) == (400, True)


def test_empty_data_is_ignored() -> None:
    """receive_data(b"") is not an end of stream."""
    pair = ConnectionPair()
    pair.feed(post(b"abc")[:-1])
    assert pair.feed(b"") == []
    assert pair.feed(b"c") == [("data", b"c"), ("end",)]


# -- errors written by hand -------------------------------------------------------------------


def test_simple_response_parses_with_h11() -> None:
    """simple_response is a valid, closing HTTP/1.1 response with its extra headers."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=b"GET", target=b"/", headers=HOST))
    client.send(h11.EndOfMessage())
    client.receive_data(simple_response(431, b"too big\n", [(b"server", b"corral")]))
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert (response.status_code, response.reason) == (431, REASONS[431])
    assert (b"server", b"corral") in list(response.headers)
    assert (b"connection", b"close") in list(response.headers)
    data = client.next_event()
    assert isinstance(data, h11.Data)
    assert data.data == b"too big\n"
    assert isinstance(client.next_event(), h11.EndOfMessage)
    assert client.our_state is h11.MUST_CLOSE


def test_simple_response_unknown_status_has_empty_reason() -> None:
    """A status without a standard phrase still serialises."""
    assert simple_response(599, b"").startswith(b"HTTP/1.1 599 \r\n")


def test_frame_file_past_content_length_closes() -> None:
    """Out-of-band file bytes count against Content-Length like body bytes."""
    pair = ConnectionPair()
    pair.request()
    pair.server.send_response(200, [(b"content-length", b"2")])
    assert pair.server.frame_file(2) == (b"", b"")
    with pytest.raises(LocalProtocolError):
        pair.server.frame_file(1)
    assert pair.server.close_expected()
