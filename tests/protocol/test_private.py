"""The private-API hooks (corral/protocol/private.py) still reach what they reach, and the
fast paths they open are taken.

Every hook has a silent fallback, so the rest of the suite passes whether or not a hook
works: these tests check each one against the installed dependency itself, and fail
when a release moves what the hook reads. The counters of the fast paths (request.py,
httptools_head.py, websocket.py) show that the inputs meant for a fast path take it,
and that the inputs for h11 or wsproto do not.
"""

from __future__ import annotations

import inspect
import re
import threading
from pathlib import Path

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws
from wsproto.connection import Connection
from wsproto.frame_protocol import Buffer, Header, Opcode

from corral.protocol import private
from corral.protocol.http import HTTPCore
from corral.protocol.httptools_head import HttptoolsHeadReader
from corral.protocol.private import H11_REQUEST_LINE, between_messages
from corral.protocol.request import FAST_PATH, PARSE_HEAD_TALLY, Request, parse_head
from corral.protocol.websocket import BytesMessage, PongReceived, TextMessage
from tests.protocol.helpers import new_core
from tests.protocol.ws_helpers import OP_BINARY, OP_CONTINUATION, OP_PING, OP_TEXT, frame, opened

# -- h11: the request-line grammar -------------------------------------------------------------

LINES_H11_READS = [
    b"GET / HTTP/1.1",
    b"GET /a/b?c=d&e=%20 HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"CONNECT example.com:443 HTTP/1.1",
    b"GET http://example.com/x HTTP/1.0",
    b"M-SEARCH * HTTP/1.1",
    b"GET / HTTP/2.0",  # the grammar takes any version; the reader answers 505
]
LINES_H11_REFUSES = [
    b"GET  / HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b"GET /a b HTTP/1.1",
    b"GET / HTTP/1",
    b"G(T / HTTP/1.1",
    b"GET / http/1.1",
]


def h11_request_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """What h11's own parser reads from a request with this line, or None if it refuses."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(line + b"\r\nHost: x\r\n\r\n")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    return event.method, event.target, event.http_version


def test_h11_grammar_is_found() -> None:
    """The hook found h11's expression, so parse_head is not running its fallback."""
    assert H11_REQUEST_LINE
    assert FAST_PATH


def test_h11_still_reads_with_this_grammar() -> None:
    """h11's reader compiles the very expression the hook hands out."""
    import h11._readers  # a test may look where corral does not

    assert h11._readers.request_line_re.pattern == H11_REQUEST_LINE.encode("ascii")


@pytest.mark.parametrize("line", LINES_H11_READS + LINES_H11_REFUSES)
def test_h11_grammar_matches_what_h11_parses(line: bytes) -> None:
    """The expression, applied as request.py applies it, reads what h11 reads, and
    refuses what h11 refuses."""
    match = re.compile(H11_REQUEST_LINE.encode("ascii")).fullmatch(line)
    theirs = h11_request_line(line)
    if line in LINES_H11_READS:
        assert match is not None
        assert match.group("method", "target", "http_version") == theirs
    else:
        assert match is None
        assert theirs is None


# -- wsproto: between messages -----------------------------------------------------------------


def handshaken() -> tuple[Connection, WSConnection]:
    """A wsproto server connection after a real handshake, and its client."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(ws.Request(host="example.com", target="/")))
    assert isinstance(next(server.events()), ws.Request)
    client.receive_data(server.send(ws.AcceptConnection()))
    assert isinstance(next(client.events()), ws.AcceptConnection)
    assert server.connection is not None
    return server.connection, client


def test_wsproto_internals_have_the_expected_types() -> None:
    """The attributes between_messages reads exist, with the types it assumes."""
    conn, _client = handshaken()
    decoder = conn._proto._frame_decoder
    assert isinstance(decoder.buffer, Buffer)
    assert len(decoder.buffer) == 0
    assert decoder.header is None
    assert conn._proto._message_decoder.opcode is None
    # A header whose payload has not come yet, and a fragmented message in progress.
    conn.receive_data(frame(OP_TEXT, b"hello", fin=False)[:-2])
    assert [e.data for e in conn.events() if isinstance(e, ws.TextMessage)] == ["hel"]
    assert isinstance(decoder.header, Header)
    conn.receive_data(frame(OP_TEXT, b"hello", fin=False)[-2:])
    assert [e.data for e in conn.events() if isinstance(e, ws.TextMessage)] == ["lo"]
    assert conn._proto._message_decoder.opcode is Opcode.TEXT
    assert decoder.header is None


def test_between_messages_on_a_real_connection() -> None:
    """True between messages; False with bytes buffered, mid-frame or mid-message."""
    conn, client = handshaken()
    assert between_messages(conn)
    message = client.send(ws.TextMessage(data="hello"))
    conn.receive_data(message[:1])  # not even a whole header: buffered
    assert list(conn.events()) == []
    assert not between_messages(conn)
    conn.receive_data(message[1:4])  # the header is read, the payload is not
    assert list(conn.events()) == []
    assert not between_messages(conn)
    conn.receive_data(message[4:])
    assert [e.data for e in conn.events() if isinstance(e, ws.TextMessage)] == ["hello"]
    assert between_messages(conn)
    conn.receive_data(client.send(ws.BytesMessage(data=b"ab", message_finished=False)))
    list(conn.events())
    assert not between_messages(conn)  # a fragmented message in progress
    conn.receive_data(client.send(ws.BytesMessage(data=b"cd", message_finished=True)))
    list(conn.events())
    assert between_messages(conn)


def test_between_messages_fallback() -> None:
    """Without wsproto's internals the answer is False: every frame goes to wsproto."""
    assert between_messages(object()) is False  # type: ignore[arg-type]  # the fallback's input


# -- watchfiles: RustNotify --------------------------------------------------------------------

#: The positional arguments supervisor/reloader.py passes, by the names watchfiles gives them.
RUST_NOTIFY_ARGS = (
    "watch_paths",
    "debug",
    "force_polling",
    "poll_delay_ms",
    "recursive",
    "ignore_permission_denied",
)


def test_rust_notify_has_the_signature_the_reloader_uses() -> None:
    """RustNotify(paths, debug, force_polling, poll_delay_ms, recursive,
    ignore_permission_denied), watch(debounce_ms, step_ms, timeout_ms, stop_event), close()."""
    from watchfiles._rust_notify import RustNotify

    assert private.RustNotify is RustNotify  # not the stand-in
    assert tuple(inspect.signature(RustNotify).parameters) == RUST_NOTIFY_ARGS
    watch = [p for p in inspect.signature(RustNotify.watch).parameters if p != "self"]
    assert watch == ["debounce_ms", "step_ms", "timeout_ms", "stop_event"]
    assert callable(RustNotify.close)


def test_the_reloader_uses_the_hook() -> None:
    """supervisor/reloader.py's RustNotify is the one the hook hands out."""
    from corral.supervisor import reloader

    assert reloader.RustNotify is private.rust_notify_class()


def test_rust_notify_watches_as_called(tmp_path: Path) -> None:
    """Called exactly as the reloader calls it, it reports a new file as (1, path)."""
    watcher = private.RustNotify([str(tmp_path)], False, False, 0, False, True)
    try:
        stop = threading.Event()
        assert watcher.watch(10, 5, 50, stop) == "timeout"
        (tmp_path / "app.py").write_text("x = 1\n")
        changes = watcher.watch(50, 10, 5000, stop)  # bounded: 5 s at most
        assert isinstance(changes, set)
        assert (1, str(tmp_path / "app.py")) in changes
    finally:
        watcher.close()


def test_rust_notify_stand_in() -> None:
    """Without RustNotify the stand-in refuses to start, which makes the reloader poll."""
    with pytest.raises(RuntimeError, match="RustNotify is gone"):
        private._EventsUnavailable([], False, False, 0, False, True)
    with pytest.raises(AttributeError):
        _ = private.NoSuchHook  # type: ignore[attr-defined]  # PEP 562 lookup of a missing name


# -- the fast paths are taken ------------------------------------------------------------------

PLAIN = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
FOR_H11 = [
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
]


def test_parse_head_counts_the_heads_it_reads() -> None:
    """A plain head moves the tally by one; heads for h11 leave it alone."""
    before = PARSE_HEAD_TALLY.heads
    assert parse_head(PLAIN, len(PLAIN)) is not None
    assert PARSE_HEAD_TALLY.heads == before + 1
    for head in FOR_H11:
        assert parse_head(head, len(head)) is None
    assert PARSE_HEAD_TALLY.heads == before + 1


def test_the_http_core_reads_plain_heads_on_the_fast_path() -> None:
    """Through the core: two pipelined plain heads are read by parse_head, a chunked
    request by h11."""
    core = new_core()
    before = PARSE_HEAD_TALLY.heads
    core.receive_data(PLAIN)
    assert isinstance(core.events_received()[0], Request)
    assert PARSE_HEAD_TALLY.heads == before + 1
    core = new_core()
    core.receive_data(FOR_H11[0] + b"0\r\n\r\n")
    assert isinstance(core.events_received()[0], Request)
    assert PARSE_HEAD_TALLY.heads == before + 1


def test_httptools_reader_counts_the_heads_it_reads() -> None:
    """Each head llhttp reads for the core moves ``heads_read``; heads for h11 do not,
    and neither does parse_head's tally."""
    reader = HttptoolsHeadReader()
    before = PARSE_HEAD_TALLY.heads
    http10 = b"GET / HTTP/1.0\r\n\r\n"
    assert reader.read(PLAIN, len(PLAIN)) is not None
    assert reader.read(http10, len(http10)) is not None
    assert reader.heads_read == 2
    for head in FOR_H11:
        assert reader.read(head, len(head)) is None
    assert reader.heads_read == 2
    core = HTTPCore(read_head=reader.read)
    core.receive_data(PLAIN)
    assert isinstance(core.events_received()[0], Request)
    assert reader.heads_read == 3
    assert PARSE_HEAD_TALLY.heads == before


def test_simple_frames_take_the_fast_path() -> None:
    """Whole unfragmented masked text and binary frames are read without wsproto, one
    count each, whether they come alone or several to a read."""
    pair = opened()
    assert pair.feed(frame(OP_TEXT, b"one")) == [TextMessage("one")]
    assert pair.server.simple_frames == 1
    two = frame(OP_BINARY, b"\x00" * 300) + frame(OP_TEXT, b"three")
    assert pair.feed(two) == [BytesMessage(b"\x00" * 300), TextMessage("three")]
    assert pair.server.simple_frames == 3


@pytest.mark.parametrize(
    "stream",
    [
        frame(OP_TEXT, b"fragm", fin=False) + frame(OP_CONTINUATION, b"ent"),  # fragmented
        frame(OP_PING, b"p"),  # a control frame
        frame(OP_TEXT, b"x" * 70000),  # a 64-bit length
        frame(OP_TEXT, b"unmasked", masked=False),  # wsproto fails it
        frame(OP_TEXT, b"\xff"),  # not UTF-8: wsproto fails it
    ],
    ids=["fragmented", "ping", "long", "unmasked", "bad-utf8"],
)
def test_other_frames_go_to_wsproto(stream: bytes) -> None:
    """Frames the fast path is not meant for leave the count alone."""
    pair = opened()
    pair.feed(stream)
    assert pair.server.simple_frames == 0


def test_the_fast_path_stops_where_wsproto_must_read() -> None:
    """A read with simple frames around a Ping: the first is counted, the rest (from the
    Ping on) goes through wsproto."""
    pair = opened()
    stream = frame(OP_TEXT, b"a") + frame(OP_PING, b"p") + frame(OP_TEXT, b"b")
    assert pair.feed(stream) == [TextMessage("a"), TextMessage("b")]
    assert pair.server.simple_frames == 1
    assert not any(isinstance(e, PongReceived) for e in pair.server.events_received())


def test_deflate_connections_skip_the_fast_path() -> None:
    """With permessage-deflate every frame goes through wsproto (it may be compressed)."""
    pair = opened(deflate=True)
    assert pair.feed(frame(OP_TEXT, b"plain")) == [TextMessage("plain")]
    assert pair.server.simple_frames == 0
