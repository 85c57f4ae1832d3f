"""ResponseWriter: heads, framing and keep-alive, checked against an h11 client."""

from __future__ import annotations

import h11
import pytest

from corral.protocol import response
from corral.protocol.response import (
    DefaultHeaders,
    ResponseError,
    ResponseState,
    ResponseWriter,
    header_from_text,
)


def writer(method: bytes = b"GET", version: bytes = b"1.1", keep_alive: bool = True):
    return ResponseWriter(
        head_request=method == b"HEAD", http10=version == b"1.0", keep_alive=keep_alive
    )


def client_reads(raw: bytes, method: str = "GET") -> tuple[h11.Response, bytes]:
    """Parse ``raw`` with a real h11 client: the writer's output must satisfy it."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            assert isinstance(event, h11.EndOfMessage)
            return response, body


def full(w: ResponseWriter, status: int, headers, *chunks: bytes, close: bool = False) -> bytes:
    out = [w.head(status, headers, close=close)]
    for chunk in chunks:
        out += w.body(chunk)
    out.append(w.end())
    return b"".join(out)


def test_chunked_when_no_length():
    """No Content-Length to HTTP/1.1: chunked, parsed back intact, keep-alive."""
    w = writer()
    raw = full(w, 200, [(b"x-a", b"1")], b"ab", b"", b"cde")
    response, body = client_reads(raw)
    assert body == b"abcde"
    assert (b"transfer-encoding", b"chunked") in list(response.headers)
    assert w.keep_alive
    assert w.state is ResponseState.DONE


def test_content_length_framing():
    """A Content-Length frames the body exactly."""
    raw = full(writer(), 200, [(b"content-length", b"3")], b"a", b"bc")
    assert client_reads(raw)[1] == b"abc"


def test_too_much_and_too_little_body():
    """A body longer or shorter than its Content-Length raises and ends keep-alive."""
    w = writer()
    w.head(200, [(b"content-length", b"1")], close=False)
    with pytest.raises(ResponseError, match="Too much"):
        w.body(b"ab")
    assert not w.keep_alive
    w = writer()
    w.head(200, [(b"content-length", b"5")], close=False)
    w.body(b"ab")
    with pytest.raises(ResponseError, match="Too little"):
        w.end()
    assert not w.keep_alive


@pytest.mark.parametrize(
    ("method", "status", "headers", "kept", "dropped"),
    [
        (b"HEAD", 200, [(b"content-length", b"10")], [b"content-length"], []),
        (b"HEAD", 200, [], [b"transfer-encoding"], []),
        (b"GET", 204, [(b"content-length", b"10")], [], [b"content-length"]),
        (b"GET", 304, [(b"content-length", b"10")], [b"content-length"], [b"transfer-encoding"]),
    ],
)
def test_no_body_responses(method, status, headers, kept, dropped):
    """HEAD, 204 and 304 carry no body; framing headers follow RFC 9110."""
    w = writer(method)
    raw = full(w, status, headers, b"ignored body")
    assert raw.endswith(b"\r\n\r\n")
    head = raw.lower()
    for name in kept:
        assert b"\r\n" + name + b":" in head
    for name in dropped:
        assert b"\r\n" + name + b":" not in head
    assert client_reads(raw, method.decode())[1] == b""
    assert w.keep_alive


def test_http10_is_close_delimited():
    """HTTP/1.0 without a length: no chunking, Connection: close, no keep-alive."""
    w = writer(version=b"1.0")
    raw = full(w, 200, [], b"abc")
    assert raw.endswith(b"\r\n\r\nabc")
    assert b"connection: close" in raw
    assert b"transfer-encoding" not in raw
    assert not w.keep_alive


@pytest.mark.parametrize(
    ("keep_alive", "close", "headers"),
    [
        (False, False, []),
        (True, True, []),
        (True, False, [(b"Connection", b"Keep-Alive, Close")]),
    ],
)
def test_connection_close(keep_alive, close, headers):
    """Client close, forced close, or the app's own close all end keep-alive, once."""
    w = writer(keep_alive=keep_alive)
    raw = full(w, 200, [(b"content-length", b"0"), *headers], close=close)
    assert raw.lower().count(b"connection:") == 1
    assert b"connection: close\r\n" in raw
    assert not w.keep_alive


def test_app_connection_header_without_close_is_dropped():
    """The app's Connection header never contradicts the server's framing."""
    raw = full(writer(), 200, [(b"content-length", b"0"), (b"connection", b"keep-alive")])
    assert b"connection" not in raw.lower()


def test_app_transfer_encoding_is_ignored():
    """The server frames the body; the app's Transfer-Encoding is dropped."""
    raw = full(writer(), 200, [(b"transfer-encoding", b"gzip")], b"x")
    assert b"gzip" not in raw
    assert client_reads(raw)[1] == b"x"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil\r\nset-cookie", b"1")],
        [(b"bad name", b"1")],
        [(b"", b"1")],
        [(b"x", b"a\r\nInjected: 1")],
        [(b"x", b"nul\x00")],
        [("x", b"1")],
        [(b"x", "1")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"1"), (b"content-length", b"2")],
    ],
)
def test_invalid_heads_raise(headers):
    """Response splitting and bad framing headers raise before anything is written."""
    w = writer()
    with pytest.raises(ResponseError):
        w.head(200, headers, close=False)
    assert w.state is ResponseState.IDLE


@pytest.mark.parametrize("value", [b"a\r\nInjected: 1", b"nul\x00", "text"])
def test_a_name_seen_before_still_has_its_value_checked(value: object) -> None:
    """Names that passed once are remembered; their values are checked every time."""
    writer().head(200, [(b"x-seen", b"fine")], close=False)
    w = writer()
    with pytest.raises(ResponseError):
        w.head(200, [(b"x-seen", value)], close=False)
    assert w.state is ResponseState.IDLE


def test_remembered_names_are_bounded() -> None:
    """Many distinct names (an app echoing client input) do not grow the memory."""
    for i in range(2 * response._MAX_NAMES):
        writer().head(200, [(b"x-%d" % i, b"1")], close=False)
    assert len(response._NAMES) <= response._MAX_NAMES


def test_identical_duplicate_content_length_is_fine():
    """Two equal Content-Length headers are one length."""
    raw = full(writer(), 200, [(b"content-length", b"1"), (b"content-length", b"1")], b"x")
    assert client_reads(raw)[1] == b"x"


@pytest.mark.parametrize("status", [100, 101, 199, 1000])
def test_non_final_status_refused(status):
    """Only final statuses (200-999) can be a response."""
    with pytest.raises(ResponseError, match="final"):
        writer().head(status, [], close=False)


def test_misuse_raises():
    """Two heads, a body before the head, an end outside the response: all raise."""
    w = writer()
    with pytest.raises(ResponseError):
        w.body(b"x")
    with pytest.raises(ResponseError):
        w.end()
    w.head(200, [], close=False)
    with pytest.raises(ResponseError):
        w.head(200, [], close=False)
    w.end()
    with pytest.raises(ResponseError):
        w.body(b"x")


def test_unknown_status_has_empty_reason():
    """A status with no registered phrase still makes a valid status line."""
    raw = full(writer(), 599, [(b"content-length", b"0")])
    assert raw.startswith(b"HTTP/1.1 599 \r\n")
    assert client_reads(raw)[0].status_code == 599


def test_file_framing():
    """Out-of-band bytes are chunk-framed, counted against a length, or not sent at all."""
    w = writer()
    w.head(200, [], close=False)
    assert w.file(5) == (b"5\r\n", b"\r\n")
    assert w.file(0) is None
    w = writer()
    w.head(200, [(b"content-length", b"4")], close=False)
    assert w.file(4) == (b"", b"")
    with pytest.raises(ResponseError, match="Too much"):
        w.file(1)
    w = writer(b"HEAD")
    w.head(200, [(b"content-length", b"4")], close=False)
    assert w.file(4) is None
    with pytest.raises(ResponseError):
        writer().file(1)


def test_file_framing_close_delimited():
    """To HTTP/1.0 without a length, out-of-band bytes go out bare."""
    w = writer(version=b"1.0")
    w.head(200, [], close=False)
    assert w.file(3) == (b"", b"")


# -- the server's default headers -------------------------------------------------------------

DEFAULTS = [(b"date", b"Fri, 04 Dec 2026 13:00:00 GMT"), (b"server", b"corral")]


def test_defaults_follow_the_app_headers() -> None:
    """Date and Server are appended, rendered once, after the app's own headers."""
    defaults = DefaultHeaders(DEFAULTS)
    raw = writer().head(200, [(b"content-length", b"0")], close=False, defaults=defaults)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n" + defaults.block)
    response, _ = client_reads(raw)
    assert dict(response.headers)[b"server"] == b"corral"


def test_app_value_of_a_default_wins() -> None:
    """A Server (any case) set by the app replaces the default; Date is still added."""
    defaults = DefaultHeaders(DEFAULTS)
    headers = [(b"Server", b"mine"), (b"SERVER", b"again"), (b"content-length", b"0")]
    raw = writer().head(200, headers, close=False, defaults=defaults)
    response, _ = client_reads(raw)
    values = [(n, v) for n, v in response.headers if n in (b"server", b"date")]
    assert values == [(b"server", b"mine"), (b"server", b"again"), DEFAULTS[0]]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ((b"x", "v"), "must be bytes"),
        ((b"bad name", b"v"), "invalid header name"),
        ((b"x", b"a\r\nb"), "invalid value"),
    ],
)
def test_invalid_default_header(pair: tuple[bytes, bytes], message: str) -> None:
    """A default header is checked by the same rules as the app's, once, up front."""
    with pytest.raises(ResponseError, match=message):
        DefaultHeaders([pair])


def test_header_from_text() -> None:
    """--header text becomes a lower-cased, stripped, checked pair."""
    assert header_from_text(" X-Frame-Options :  DENY\t") == (b"x-frame-options", b"DENY")
    assert header_from_text("X-Empty:") == (b"x-empty", b"")


@pytest.mark.parametrize(
    ("text", "message"),
    [("no colon", "no colon"), ("X: \u20ac", "not Latin-1"), ("Bad Name: v", "invalid header")],
)
def test_header_from_text_refuses(text: str, message: str) -> None:
    """Text that could not go out as a header is refused with the reason."""
    with pytest.raises(ResponseError, match=message):
        header_from_text(text)


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("status", [200, 204, 304, 404])
@pytest.mark.parametrize("length", [None, b"0", b"3", b"5"])
@pytest.mark.parametrize("body", [b"", b"abc"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_whole_is_head_body_end_in_one(
    method: bytes, version: bytes, status: int, length: bytes | None, body: bytes, keep_alive: bool
) -> None:
    """whole() writes what head(), body() and end() write, and fails where they fail."""
    headers = [(b"content-type", b"text/plain")]
    if length is not None:
        headers.append((b"content-length", length))
    parts = writer(method, version, keep_alive)
    try:
        expected = parts.head(status, headers, close=False)
        expected += b"".join(parts.body(body))
        expected += parts.end()
    except ResponseError as exc:
        one = writer(method, version, keep_alive)
        with pytest.raises(ResponseError, match=str(exc)):
            one.whole(status, headers, body, close=False)
        assert not one.keep_alive
        return
    one = writer(method, version, keep_alive)
    assert one.whole(status, headers, body, close=False) == expected
    assert one.state is ResponseState.DONE
    assert one.keep_alive == parts.keep_alive
    if method == b"GET" and version == b"1.1":
        assert client_reads(expected)[1] == (b"" if status in (204, 304) else body)
