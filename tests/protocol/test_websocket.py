"""Tests of the sans-I/O WebSocket core against a real wsproto client.

Pure and synchronous: bytes are carried by hand between ``WebSocketCore`` and a wsproto
``WSConnection(CLIENT)``; malformed frames are made by hand. Time is a number.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc
import zlib

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import events as ws
from wsproto.extensions import PerMessageDeflate

from corral.protocol.websocket import (
    CLOSED,
    CLOSING,
    CONNECTING,
    OPEN,
    BytesMessage,
    CloseReceived,
    ConnectionClosed,
    LocalProtocolError,
    PongReceived,
    TextMessage,
    WebSocketLimits,
)
from corral.protocol.ws_deflate import BoundedDeflate
from corral.protocol.ws_limits import MessageGuard
from tests.protocol.ws_helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WsPair,
    assert_failed,
    client_close,
    core_for,
    frame,
    frame_header,
    opened,
    parse_upgrade,
    raw_request,
    with_headers,
)

SMALL = WebSocketLimits(max_message_size=1000, max_fragments=4, max_outbound_buffer=10_000)


def deflated(data: bytes, *, final: bool = False) -> bytes:
    """Raw-deflate ``data`` as a permessage-deflate message body (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data)
    if final:
        return out + compressor.flush(zlib.Z_FINISH)
    return (out + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


# -- the opening handshake ---------------------------------------------------------------


def test_accept_sends_101_and_opens() -> None:
    """accept() answers 101 with a valid Sec-WebSocket-Accept and moves to OPEN."""
    pair = WsPair()
    assert pair.server.state is CONNECTING
    assert pair.server.next_deadline() is None
    events = pair.accept()
    assert isinstance(events[0], ws.AcceptConnection)
    assert pair.server.state is OPEN
    assert not pair.server.close_expected()
    assert pair.server.error_status_hint is None


def test_subprotocols_offered_and_chosen() -> None:
    """The client's subprotocols are exposed and the chosen one reaches the client."""
    pair = WsPair(subprotocols=["chat.v2", "chat.v1"])
    assert pair.server.subprotocols == ["chat.v2", "chat.v1"]
    accept = pair.accept("chat.v1", [(b"x-served-by", b"corral")])[0]
    assert isinstance(accept, ws.AcceptConnection)
    assert accept.subprotocol == "chat.v1"
    assert (b"x-served-by", b"corral") in accept.extra_headers


def test_subprotocol_list_ignores_empty_items() -> None:
    """Empty list items and spaces around tokens are dropped (RFC 9110 5.6.1)."""
    raw = raw_request(with_headers(add=((b"Sec-WebSocket-Protocol", b" a ,, b"),)))
    assert core_for(raw).subprotocols == ["a", "b"]


def test_accept_refuses_a_subprotocol_not_offered() -> None:
    """Choosing a subprotocol the client did not offer is the caller's error."""
    pair = WsPair(subprotocols=["a"])
    with pytest.raises(LocalProtocolError, match="not offered"):
        pair.server.accept("b")
    assert pair.server.state is CONNECTING


@pytest.mark.parametrize("name", [b"Sec-WebSocket-Protocol", b"upgrade", b"Connection"])
def test_accept_refuses_headers_it_sets_itself(name: bytes) -> None:
    """accept() refuses headers the handshake writes, sec-websocket-protocol first."""
    pair = WsPair()
    with pytest.raises(LocalProtocolError, match="itself"):
        pair.server.accept(None, [(name, b"x")])
    assert pair.server.state is CONNECTING
    assert isinstance(pair.accept()[0], ws.AcceptConnection)


def test_accept_with_a_splitting_header_can_still_reject() -> None:
    """A CR/LF header value raises before anything is sent; reject(500) still works."""
    pair = WsPair(deflate=True)
    with pytest.raises(LocalProtocolError, match="invalid response header"):
        pair.server.accept(None, [(b"x-evil", b"a\r\nx-injected: 1")])
    assert pair.server.data_to_send() == []
    pair.server.reject(500)
    reject = pair.to_client()[0]
    assert isinstance(reject, ws.RejectConnection)
    assert reject.status_code == 500


def test_accept_twice_is_misuse() -> None:
    """A second accept() is a LocalProtocolError, not a ConnectionClosed."""
    pair = opened()
    with pytest.raises(LocalProtocolError, match="state OPEN") as info:
        pair.server.accept()
    assert not isinstance(info.value, ConnectionClosed)


GOOD = raw_request()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (raw_request(method=b"POST"), 400),
        (raw_request(version=b"1.0"), 400),
        (raw_request(with_headers(drop=(b"Upgrade",))), 400),
        (raw_request(with_headers(drop=(b"Upgrade",), add=((b"Upgrade", b"h2c"),))), 400),
        (raw_request(with_headers(add=((b"Upgrade", b"websocket"),))), 400),
        (raw_request(with_headers(drop=(b"Connection",))), 400),
        (raw_request(with_headers(drop=(b"Connection",), add=((b"Connection", b"close"),))), 400),
        (raw_request(with_headers(drop=(b"Sec-WebSocket-Key",))), 400),
        (
            raw_request(with_headers(add=((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),))),
            400,
        ),
        (raw_request(with_headers(drop=(b"Sec-WebSocket-Version",))), 400),
        (raw_request(with_headers(add=((b"Sec-WebSocket-Version", b"13"),))), 400),
        (raw_request(with_headers(add=((b"Content-Length", b"5"),), drop=()), tail=b"hello"), 400),
        (raw_request(with_headers(add=((b"Transfer-Encoding", b"chunked"),))), 400),
        (raw_request(with_headers(drop=(b"Host",), add=((b"Host", b"xn--zz"),))), 400),
        (raw_request(with_headers(add=((b"Sec-WebSocket-Protocol", b"chat\xa0"),))), 400),
    ],
    ids=[
        "post",
        "http-1.0",
        "no-upgrade",
        "upgrade-h2c",
        "two-upgrades",
        "no-connection",
        "connection-close",
        "no-key",
        "two-keys",
        "no-version",
        "two-versions",
        "body",
        "chunked-body",
        "bad-idna-host",
        "non-ascii-subprotocol",
    ],
)
def test_bad_handshake_is_refused(raw: bytes, status: int) -> None:
    """RFC 6455 4.2.1: a malformed handshake is answered 400 and closed, app unseen."""
    core = core_for(raw)
    assert core.state is CLOSED
    assert core.close_expected()
    assert core.error_status_hint == status
    assert core.error_reason
    (response,) = core.data_to_send()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in response
    core.receive_data(frame(OP_TEXT, b"ignored"), 0.0)
    core.receive_eof()
    assert core.events_received() == []
    assert core.next_deadline() is None


@pytest.mark.parametrize(
    "key",
    [
        b"dGhlIHNhbXBsZSBub25jZQ",  # 22 characters, no padding
        b"dGhlIHNhbXBsZSBub25jZQ==xx",  # too long
        b"dGhlIHNhbXBsZSBub25jZ!==",  # not base64
        b"dGhlIHNhbXBsZSBub25jZR==",  # non-zero padding bits: not canonical
        b"dGhlIHNhbXBsZSBub25jZQAA",  # 24 characters but 18 bytes
    ],
)
def test_bad_key_is_refused(key: bytes) -> None:
    """Sec-WebSocket-Key must be the canonical base64 of 16 bytes (RFC 6455 4.1)."""
    raw = raw_request(
        with_headers(drop=(b"Sec-WebSocket-Key",), add=((b"Sec-WebSocket-Key", key),))
    )
    assert core_for(raw).error_status_hint == 400


def test_ordinary_headers_and_empty_body_are_fine() -> None:
    """Headers the handshake does not read, and Content-Length: 0, do not matter."""
    extra = ((b"User-Agent", b"test/1.0 (\xc3\xa9)"), (b"Content-Length", b"0"))
    core = core_for(raw_request(with_headers(add=extra)))
    assert core.state is CONNECTING
    core.accept()
    assert core.data_to_send()[0].startswith(b"HTTP/1.1 101 ")


def test_wrong_version_gets_426_with_our_version() -> None:
    """A version other than 13 is 426 naming version 13 (RFC 6455 4.4), before the key."""
    headers = with_headers(
        drop=(b"Sec-WebSocket-Version", b"Sec-WebSocket-Key"),
        add=((b"Sec-WebSocket-Version", b"8"),),
    )
    core = core_for(raw_request(headers))
    assert core.error_status_hint == 426
    (response,) = core.data_to_send()
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"sec-websocket-version: 13\r\n" in response
    assert b"upgrade: websocket\r\n" in response


@pytest.mark.parametrize("byte", [b"\x01", b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x7f", b"\x85"])
def test_control_bytes_in_any_header_are_refused(byte: bytes) -> None:
    """B19: control bytes h11 lets through, in any header value, are refused with 400."""
    raw = raw_request(with_headers(add=((b"User-Agent", b"agent" + byte + b"x"),)))
    assert core_for(raw).error_status_hint == 400


@pytest.mark.parametrize("byte", [b"\x0b", b"\x0c"])
def test_h11_already_refuses_vertical_tab_and_form_feed(byte: bytes) -> None:
    """B19: \\x0b and \\x0c never reach the core; h11 refuses the head."""
    raw = raw_request(with_headers(add=((b"Sec-WebSocket-Protocol", b"chat" + byte),)))
    with pytest.raises(h11.RemoteProtocolError):
        parse_upgrade(raw)


def test_early_frames_are_delivered_after_accept() -> None:
    """Frames sent with (or after) the request wait for accept(), then arrive in order."""
    pair = WsPair(early=frame(OP_TEXT, b"first"))
    assert pair.feed(frame(OP_TEXT, b"second")) == []
    pair.server.accept()
    assert pair.server.events_received() == [TextMessage("first"), TextMessage("second")]


def test_too_much_early_data_is_refused() -> None:
    """More than one maximum message before the 101 is refused with 400 and 1006."""
    pair = WsPair(SMALL)
    assert pair.feed(frame(OP_BINARY, b"x" * 990)) == []
    assert pair.feed(frame(OP_BINARY, b"y")) == [CloseReceived(1006, "")]
    assert pair.server.error_status_hint == 400
    assert pair.server.close_expected()
    with pytest.raises(ConnectionClosed):
        pair.server.accept()


def test_too_much_trailing_data_is_refused() -> None:
    """Trailing bytes past one maximum message are refused at construction."""
    pair = WsPair(SMALL, early=frame(OP_BINARY, b"z" * 1000))
    assert pair.server.error_status_hint == 400


def test_eof_before_accept_is_1006() -> None:
    """B15: the client leaving before the handshake completes reports 1006."""
    pair = WsPair()
    pair.server.receive_eof()
    assert pair.server.events_received() == [CloseReceived(1006, "")]
    assert pair.server.close_expected()
    with pytest.raises(ConnectionClosed):
        pair.server.accept()


def test_reject_403_closes_before_accept() -> None:
    """ASGI close-before-accept: reject(403) sends an empty 403 and ends the connection."""
    pair = WsPair()
    pair.server.reject(403)
    reject, data = pair.to_client()
    assert isinstance(reject, ws.RejectConnection)
    assert reject.status_code == 403
    assert (b"content-length", b"0") in reject.headers
    assert (b"connection", b"close") in reject.headers
    assert isinstance(data, ws.RejectData)
    assert data.body_finished
    assert pair.server.close_expected()
    assert pair.server.events_received() == []
    assert pair.server.next_deadline() is None


def test_reject_with_streamed_body() -> None:
    """websocket.http.response: a custom status and a chunked body in several parts."""
    pair = WsPair()
    pair.server.reject_start(
        451, [(b"content-type", b"text/plain"), (b"Connection", b"keep-alive")]
    )
    assert pair.server.state is CLOSING
    pair.feed(frame(OP_TEXT, b"ignored while rejecting"))
    pair.server.tick(pair.now + 1000)
    pair.server.reject_body(b"not ", more=True)
    pair.server.reject_body(b"here", more=False)
    events = pair.to_client()
    assert isinstance(events[0], ws.RejectConnection)
    assert events[0].status_code == 451
    assert (b"connection", b"close") in events[0].headers
    assert (b"connection", b"keep-alive") not in events[0].headers
    body = b"".join(e.data for e in events[1:] if isinstance(e, ws.RejectData))
    assert body == b"not here"
    assert pair.server.state is CLOSED
    assert pair.server.events_received() == []


def test_reject_keeps_the_callers_content_length() -> None:
    """reject() adds no Content-Length when the caller gave one."""
    pair = WsPair()
    pair.server.reject(401, [(b"Content-Length", b"5")], b"nope!")
    reject, *body = pair.to_client()
    assert isinstance(reject, ws.RejectConnection)
    assert [v for n, v in reject.headers if n == b"content-length"] == [b"5"]
    assert b"".join(e.data for e in body if isinstance(e, ws.RejectData)) == b"nope!"


def test_reject_body_longer_than_content_length() -> None:
    """A body that breaks its Content-Length raises and ends the connection."""
    pair = WsPair()
    pair.server.reject_start(400, [(b"content-length", b"2")])
    with pytest.raises(LocalProtocolError, match="rejection body"):
        pair.server.reject_body(b"too long")
    assert pair.server.close_expected()


def test_reject_with_bad_header_leaves_state() -> None:
    """h11 refusing the rejection's header raises before anything moves."""
    pair = WsPair()
    with pytest.raises(LocalProtocolError, match="rejection response"):
        pair.server.reject(400, [(b"x", b"a\r\nb: c")])
    assert pair.server.state is CONNECTING
    assert pair.server.data_to_send() == []


def test_reject_body_without_rejection() -> None:
    """reject_body() needs reject_start() first; after the end it is ConnectionClosed."""
    pair = WsPair()
    with pytest.raises(LocalProtocolError, match="state CONNECTING"):
        pair.server.reject_body(b"x")
    pair.server.reject(403)
    with pytest.raises(ConnectionClosed):
        pair.server.reject_body(b"x")
    with pytest.raises(ConnectionClosed):
        pair.server.reject(403)


def test_eof_while_rejecting() -> None:
    """The client leaving mid-rejection ends it with 1006."""
    pair = WsPair()
    pair.server.reject_start(500)
    pair.server.receive_eof()
    assert pair.server.events_received() == [CloseReceived(1006, "")]
    with pytest.raises(ConnectionClosed):
        pair.server.reject_body(b"late")


def test_outbound_check_while_rejecting() -> None:
    """A rejection to a client that stopped reading is dropped with 1006."""
    pair = WsPair(SMALL)
    pair.server.reject_start(500)
    assert pair.server.check_outbound_buffer(10_001)
    assert pair.server.events_received() == [CloseReceived(1006, "")]


# -- messages ----------------------------------------------------------------------------


def test_text_and_bytes_round_trip() -> None:
    """Messages both ways, including the 16-bit and 64-bit length encodings."""
    pair = opened()
    assert pair.send(ws.TextMessage(data="héllo"), ws.BytesMessage(data=b"\x00\x01")) == [
        TextMessage("héllo"),
        BytesMessage(b"\x00\x01"),
    ]
    for size in (0, 125, 126, 16 * 1024, 16 * 1024 + 1, 65535, 65536):
        pair.server.send_bytes(b"b" * size)
        pair.server.send_text("t" * size)
        received = pair.to_client()
        assert [len(e.data) for e in received if isinstance(e, ws.Message)] == [size, size]


def test_fragmented_messages_are_reassembled() -> None:
    """Fragments (with a ping between them) arrive as one message each."""
    pair = opened()
    events = pair.send(
        ws.TextMessage(data="ab", message_finished=False),
        ws.Ping(payload=b"p"),
        ws.TextMessage(data="", message_finished=False),
        ws.TextMessage(data="c", message_finished=True),
        ws.BytesMessage(data=b"1", message_finished=False),
        ws.BytesMessage(data=b"", message_finished=False),
        ws.BytesMessage(data=b"2", message_finished=True),
    )
    assert events == [TextMessage("abc"), BytesMessage(b"12")]


def test_message_split_across_reads() -> None:
    """A frame fed one byte at a time is still one message."""
    pair = opened()
    raw = frame(OP_TEXT, "ü".encode() * 50) + frame(OP_BINARY, b"z" * 300)
    events = [e for byte in raw for e in pair.feed(bytes([byte]))]
    assert events == [TextMessage("ü" * 50), BytesMessage(b"z" * 300)]


def test_sending_needs_an_open_connection() -> None:
    """Sending before accept is misuse; after the end it is ConnectionClosed."""
    pair = WsPair()
    with pytest.raises(LocalProtocolError, match="state CONNECTING"):
        pair.server.send_text("early")
    with pytest.raises(LocalProtocolError, match="reject"):
        pair.server.send_close(1000)
    pair.accept()
    pair.server.send_close(1000)
    server = pair.server
    with pytest.raises(ConnectionClosed):
        server.send_text("late")
    with pytest.raises(ConnectionClosed):
        server.send_bytes(b"late")
    with pytest.raises(ConnectionClosed):
        server.send_ping()
    with pytest.raises(ConnectionClosed):
        server.send_close(1000)


def test_lone_surrogate_text_is_refused() -> None:
    """Text that cannot be UTF-8 is the caller's error, and nothing is queued."""
    pair = opened()
    with pytest.raises(LocalProtocolError, match="UTF-8"):
        pair.server.send_text("\ud800")
    assert pair.server.data_to_send() == []


# -- ping and pong -----------------------------------------------------------------------


def test_every_ping_is_answered() -> None:
    """Each Ping gets its own Pong, in order (Autobahn 2.10 expects all of them)."""
    pair = opened()
    assert pair.send(ws.Ping(payload=b"one"), ws.Ping(payload=b"two")) == []
    assert pair.to_client() == [ws.Pong(payload=b"one"), ws.Pong(payload=b"two")]


def test_app_ping_gets_pong_event() -> None:
    """send_ping() reaches the client and its Pong comes back as PongReceived."""
    pair = opened()
    pair.server.send_ping(b"hi")
    (ping,) = pair.to_client()
    assert ping == ws.Ping(payload=b"hi")
    assert pair.send(ping.response()) == [PongReceived(b"hi")]


def test_ping_payload_limit() -> None:
    """A ping payload over 125 bytes is refused (RFC 6455 5.5)."""
    pair = opened()
    with pytest.raises(LocalProtocolError, match="125"):
        pair.server.send_ping(b"x" * 126)


# -- closing -----------------------------------------------------------------------------


def test_peer_close_is_reported_and_echoed() -> None:
    """B15: the client's 4001/"bye" reaches the app; the server echoes 4001 and closes."""
    pair = opened()
    close = pair.client.send(ws.CloseConnection(code=4001, reason="bye"))
    events = pair.feed(close + frame(OP_PING, b"after the close"))
    assert events == [CloseReceived(4001, "bye")]
    assert client_close(pair.to_client()).code == 4001
    assert pair.server.close_expected()
    assert pair.feed(frame(OP_TEXT, b"after close")) == []
    pair.server.receive_eof()
    assert pair.server.events_received() == []


def test_close_without_code_is_1005() -> None:
    """B15: a Close with no code is reported as 1005 and echoed with no code."""
    pair = opened()
    assert pair.feed(frame(OP_CLOSE)) == [CloseReceived(1005, "")]
    echoed = pair.server.data_to_send()
    assert echoed == [b"\x88\x00"]


def test_eof_without_close_is_1006() -> None:
    """B15: the TCP connection ending without a Close is 1006."""
    pair = opened()
    pair.server.receive_eof()
    assert pair.server.events_received() == [CloseReceived(1006, "")]
    assert pair.server.close_expected()


def test_server_close_handshake() -> None:
    """send_close(1008, "policy") reaches the client; its answer completes the handshake."""
    pair = opened()
    pair.server.send_close(1008, "policy")
    assert pair.server.state is CLOSING
    assert not pair.server.close_expected()
    close = client_close(pair.to_client())
    assert (close.code, close.reason) == (1008, "policy")
    assert pair.echo_close() == [CloseReceived(1000, "")]
    assert pair.server.close_expected()


def test_messages_after_our_close_still_arrive() -> None:
    """After our Close the peer's messages are still reported and its Pings answered
    (RFC 6455 5.5.2 excuses only an endpoint that has received a Close)."""
    pair = opened()
    pair.server.send_close(1001)
    pair.to_client()
    assert pair.feed(frame(OP_TEXT, b"late") + frame(OP_PING, b"p")) == [TextMessage("late")]
    assert pair.server.data_to_send() == [b"\x8a\x01p"]


def test_protocol_error_after_our_close_is_1006() -> None:
    """A bad frame during our closing handshake ends it with 1006 and no second Close."""
    pair = opened()
    pair.server.send_close(1000)
    pair.server.data_to_send()
    assert pair.feed(frame(OP_TEXT, b"x", masked=False)) == [CloseReceived(1006, "")]
    assert pair.server.data_to_send() == []
    assert pair.server.close_expected()


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_sendable_close_codes(code: int) -> None:
    """RFC 6455 7.4: these codes go out as they are (1012-1014 are IANA-registered;
    wsproto's own client refuses 1014, so the frame is checked byte by byte)."""
    pair = opened()
    pair.server.send_close(code)
    assert pair.server.data_to_send() == [b"\x88\x02" + code.to_bytes(2, "big")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_reserved_close_codes_are_never_sent(code: int) -> None:
    """B16 / wsproto#182: reserved and report-only codes raise instead of turning into 1000."""
    pair = opened()
    with pytest.raises(LocalProtocolError, match=str(code)):
        pair.server.send_close(code)
    assert pair.server.state is OPEN


def test_close_reason_is_cut_to_fit() -> None:
    """A long reason is cut to 123 bytes on a character boundary."""
    pair = opened()
    pair.server.send_close(1000, "é" * 100)
    assert client_close(pair.to_client()).reason == "é" * 61


def test_close_reason_must_encode() -> None:
    """A reason that cannot be UTF-8 raises and leaves the connection OPEN."""
    pair = opened()
    with pytest.raises(LocalProtocolError, match="reason"):
        pair.server.send_close(1000, "\udc80")
    assert pair.server.state is OPEN


def test_bad_close_frame_from_peer() -> None:
    """A Close with a report-only code (1005 on the wire) is a protocol error: 1002."""
    pair = opened()
    events = pair.feed(frame(OP_CLOSE, b"\x03\xed"))
    assert_failed(pair, events, 1002)


# -- protocol errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (frame(OP_TEXT, b"hi", masked=False), 1002),
        (frame(0x3, b"x"), 1002),
        (frame(OP_PING, b"x", fin=False), 1002),
        (frame(OP_PING, b"p" * 126), 1002),
        (frame(OP_CONTINUATION, b"x"), 1002),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
        (frame(OP_TEXT, b"x", rsv1=True), 1002),
        (frame(OP_TEXT, b"\xff\xfe"), 1007),
        (frame(OP_TEXT, b"\xe2\x82", fin=False) + frame(OP_CONTINUATION, b"\x28"), 1007),
    ],
    ids=[
        "unmasked",
        "bad-opcode",
        "fragmented-ping",
        "long-ping",
        "stray-continuation",
        "text-inside-text",
        "rsv1-without-deflate",
        "invalid-utf8",
        "invalid-utf8-across-fragments",
    ],
)
def test_protocol_errors_send_a_close_first(raw: bytes, code: int) -> None:
    """RFC 6455 7.1.7: bad frames get a Close with 1002 (1007 for UTF-8) before TCP closes."""
    pair = opened()
    events = pair.feed(raw)
    assert_failed(pair, events, code)
    assert pair.feed(frame(OP_TEXT, b"ignored")) == []


def test_message_before_a_bad_frame_is_delivered() -> None:
    """Events before the failure in the same read still reach the app, in order (the
    failure then waits for the app: tests/protocol/test_websocket_failing.py)."""
    pair = opened()
    assert pair.feed(frame(OP_TEXT, b"good") + frame(0x3)) == [TextMessage("good")]
    assert pair.server.mark_caught_up()
    assert_failed(pair, pair.server.events_received(), 1002)


# -- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_of_exactly_max_size_is_accepted(opcode: int) -> None:
    """A message of max_message_size bytes is delivered."""
    pair = opened(SMALL)
    (event,) = pair.feed(frame(opcode, b"m" * 1000))
    assert len(event.data) == 1000  # type: ignore[union-attr]


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_message_over_max_size_is_1009(opcode: int) -> None:
    """B17: one byte over the limit closes with 1009 "message too big"."""
    pair = opened(SMALL)
    events = pair.feed(frame(opcode, b"m" * 1001))
    assert_failed(pair, events, 1009)
    assert events[-1] == CloseReceived(1009, "message too big")


def test_fragmented_message_summing_to_max() -> None:
    """Fragments adding up to exactly the limit are one accepted message."""
    pair = opened(SMALL)
    raw = frame(OP_BINARY, b"a" * 400, fin=False) + frame(OP_CONTINUATION, b"b" * 600)
    assert pair.feed(raw) == [BytesMessage(b"a" * 400 + b"b" * 600)]


def test_fragmented_message_over_max_is_1009() -> None:
    """B17: fragments adding up to max+1 close with 1009."""
    pair = opened(SMALL)
    raw = frame(OP_TEXT, b"a" * 400, fin=False) + frame(OP_CONTINUATION, b"b" * 601)
    assert_failed(pair, pair.feed(raw), 1009)


def test_oversized_frame_is_refused_from_its_header() -> None:
    """A frame declaring 2**40 bytes is refused before any of its payload arrives."""
    pair = opened()
    events = pair.feed(frame_header(OP_BINARY, 2**40))
    assert_failed(pair, events, 1009)


def test_max_fragments_exactly_is_accepted() -> None:
    """A message of exactly max_fragments frames is delivered."""
    pair = opened(SMALL)
    raw = frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"b", fin=False)
    raw += frame(OP_CONTINUATION, b"c", fin=False) + frame(OP_CONTINUATION, b"d")
    assert pair.feed(raw) == [TextMessage("abcd")]


def test_too_many_fragments_is_1009() -> None:
    """One frame with payload more than max_fragments closes with 1009."""
    pair = opened(SMALL)
    raw = frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"b", fin=False) * 4
    events = pair.feed(raw)
    assert_failed(pair, events, 1009)
    assert events[-1] == CloseReceived(1009, "too many fragments")


def test_empty_fragments_are_not_counted() -> None:
    """Empty continuation frames keep nothing, so they do not count (Autobahn 9.3.1
    ends 65,536 fragments with an empty final one)."""
    pair = opened(SMALL)
    raw = frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"", fin=False) * 10
    raw += frame(OP_CONTINUATION, b"b", fin=False) * 3 + frame(OP_CONTINUATION, b"")
    assert pair.feed(raw) == [TextMessage("abbb")]


def test_endless_tiny_fragments_are_cut_off_with_bounded_memory() -> None:
    """B17: 100k one-byte continuation frames without FIN hit the default limit early."""
    pair = opened()
    chunk = frame(OP_CONTINUATION, b"x", fin=False) * 1000
    tracemalloc.start()
    try:
        events = pair.feed(frame(OP_BINARY, b"x", fin=False))
        sent = 0
        while not pair.server.close_expected() and sent < 100:
            events += pair.feed(chunk)
            sent += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent == 66  # 65,536 frames allowed; the 65,537th is refused
    assert_failed(pair, events, 1009)
    assert peak < 8 * 1024 * 1024


# -- permessage-deflate ------------------------------------------------------------------


def test_deflate_round_trip() -> None:
    """Compressed messages both ways; short ones go out uncompressed."""
    pair = opened(deflate=True)
    assert pair.server.data_to_send() == []
    text = "compress me " * 100
    assert pair.send(
        ws.TextMessage(data=text), ws.Ping(payload=b"p"), ws.BytesMessage(data=b"tiny")
    ) == [TextMessage(text), BytesMessage(b"tiny")]
    assert pair.to_client() == [ws.Pong(payload=b"p")]
    pair.server.send_text(text)
    pair.server.send_bytes(b"short")
    chunks = pair.server.data_to_send()
    assert chunks[0][0] == 0xC1  # FIN + RSV1 + TEXT: compressed
    assert len(chunks[0]) < len(text) // 4
    assert chunks[1][0] == 0x82  # too short to be worth compressing
    for chunk in chunks:
        pair.client.receive_data(chunk)
    received = [e.data for e in pair.client.events() if isinstance(e, ws.Message)]
    assert received == [text, b"short"]


def test_deflate_fragmented_inbound_message() -> None:
    """A compressed message split over frames inflates across them."""
    pair = opened(deflate=True)
    body = deflated(b"0123456789" * 50)
    raw = frame(OP_BINARY, body[:10], fin=False, rsv1=True) + frame(OP_CONTINUATION, body[10:])
    assert pair.feed(raw) == [BytesMessage(b"0123456789" * 50)]


def test_deflate_not_offered_or_disabled() -> None:
    """Without an offer, or with per_message_deflate off, nothing is negotiated."""
    for pair in (WsPair(), WsPair(WebSocketLimits(per_message_deflate=False), deflate=True)):
        accept = pair.accept()[0]
        assert isinstance(accept, ws.AcceptConnection)
        assert accept.extensions == []


def test_compression_bomb_is_cut_off() -> None:
    """B18: 64 MiB of zeros in ~64 KB closes 1009 having inflated little of it."""
    limits = WebSocketLimits(max_message_size=1024 * 1024)
    pair = opened(limits, deflate=True)
    bomb = frame(OP_BINARY, deflated(bytes(64 * 1024 * 1024)), rsv1=True)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        events = pair.feed(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(pair, events, 1009)
    assert peak < 16 * 1024 * 1024


def test_inflated_exactly_max_is_accepted() -> None:
    """B18: a message inflating to exactly max_message_size is delivered."""
    pair = opened(SMALL, deflate=True)
    assert pair.feed(frame(OP_BINARY, deflated(b"\0" * 1000), rsv1=True)) == [
        BytesMessage(b"\0" * 1000)
    ]


def test_inflated_max_plus_one_is_1009() -> None:
    """B18: one inflated byte over the limit closes with 1009."""
    pair = opened(SMALL, deflate=True)
    events = pair.feed(frame(OP_BINARY, deflated(b"\0" * 1001), rsv1=True))
    assert_failed(pair, events, 1009)
    assert events[-1] == CloseReceived(1009, "message too big")


def test_inflated_size_counts_across_fragments() -> None:
    """The inflated budget is per message, not per frame."""
    pair = opened(SMALL, deflate=True)
    body = deflated(b"\0" * 1001)
    raw = frame(OP_BINARY, body[:4], fin=False, rsv1=True) + frame(OP_CONTINUATION, body[4:])
    assert_failed(pair, pair.feed(raw), 1009)


def test_invalid_deflate_data_is_1007() -> None:
    """Bytes that are not DEFLATE close with 1007."""
    pair = opened(deflate=True)
    events = pair.feed(frame(OP_TEXT, b"\xff\xff\xff\xff", rsv1=True))
    assert_failed(pair, events, 1007)
    assert events[-1] == CloseReceived(1007, "invalid deflate data")


@pytest.mark.parametrize(
    "raw",
    [
        frame(OP_TEXT, b"x", fin=False) + frame(OP_CONTINUATION, b"y", rsv1=True),
        frame(OP_PING, b"x", rsv1=True),
    ],
    ids=["rsv1-on-continuation", "rsv1-on-ping"],
)
def test_misplaced_rsv1_is_1002(raw: bytes) -> None:
    """RFC 7692 6.1: RSV1 only on the first frame of a data message."""
    pair = opened(deflate=True)
    assert_failed(pair, pair.feed(raw), 1002)


def test_final_block_resets_the_inflater() -> None:
    """A message ending the DEFLATE stream (BFINAL) does not break the next one."""
    pair = opened(deflate=True)
    first = frame(OP_TEXT, deflated(b"one", final=True), rsv1=True)
    second = frame(OP_TEXT, deflated(b"two"), rsv1=True)
    assert pair.feed(first + second) == [TextMessage("one"), TextMessage("two")]


def test_uncompressed_message_on_deflate_connection() -> None:
    """Messages without RSV1 pass through untouched when deflate is on."""
    pair = opened(deflate=True)
    assert pair.feed(frame(OP_TEXT, b"plain")) == [TextMessage("plain")]


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", ""),
        ("permessage-deflate; client_max_window_bits", ""),
        ("permessage-deflate; client_max_window_bits=8", ""),
        ('permessage-deflate; server_max_window_bits="10"', "server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=15", "server_max_window_bits=15"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "client_no_context_takeover; server_no_context_takeover",
        ),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits=x", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; mystery", None),
        ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
    ],
)
def test_deflate_negotiation(offer: str, answer: str | None) -> None:
    """RFC 7692 7.1: valid offers are answered; any flaw declines the whole offer."""
    deflate = BoundedDeflate(100)
    assert deflate.accept(offer) == answer
    assert deflate.enabled() is (answer is not None)
    assert deflate.offer() is False


def test_guard_is_never_negotiated() -> None:
    """The message guard is always on and never offered or accepted."""
    guard = MessageGuard(WebSocketLimits())
    assert guard.enabled()
    assert guard.offer() is False
    assert guard.accept("corral") is None


def test_first_acceptable_offer_wins() -> None:
    """Of several offers the first acceptable one is answered; a flawed one changes nothing."""
    offers = b"permessage-deflate; server_no_context_takeover; mystery, permessage-deflate, x-other"
    core = core_for(raw_request(with_headers(add=((b"Sec-WebSocket-Extensions", offers),))))
    core.accept()
    (response,) = core.data_to_send()
    assert b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n" in response


def test_second_offer_after_acceptance_is_declined() -> None:
    """Once an offer is accepted, later offers are declined."""
    deflate = BoundedDeflate(100)
    assert deflate.accept("permessage-deflate; client_max_window_bits") == ""
    assert deflate.accept("permessage-deflate; server_no_context_takeover") is None


@pytest.mark.parametrize("flag", ["server_no_context_takeover", "client_no_context_takeover"])
def test_no_context_takeover(flag: str) -> None:
    """With a context reset negotiated, repeated messages still round-trip both ways."""
    pair = WsPair(deflate=PerMessageDeflate(**{flag: True}))
    pair.accept()
    text = "again and again " * 10
    sizes = []
    for _ in range(3):
        assert pair.send(ws.TextMessage(data=text)) == [TextMessage(text)]
        pair.server.send_text(text)
        (chunk,) = pair.server.data_to_send()
        sizes.append(len(chunk))
        pair.client.receive_data(chunk)
        assert [e.data for e in pair.client.events() if isinstance(e, ws.Message)] == [text]
    # With server context takeover the repeats shrink to back-references.
    if flag == "server_no_context_takeover":
        assert sizes[0] == sizes[1] == sizes[2]
    else:
        assert sizes[1] < sizes[0]


# -- timers ------------------------------------------------------------------------------


def test_keepalive_ping_and_pong() -> None:
    """An idle connection is pinged after ping_interval_s; the Pong clears the timeout."""
    pair = opened()
    assert pair.server.next_deadline() == -math.inf
    pair.server.tick(100.0)
    assert pair.server.next_deadline() == 120.0
    pair.server.tick(119.0)
    assert pair.server.data_to_send() == []
    pair.server.tick(120.0)
    (ping,) = pair.to_client()
    assert isinstance(ping, ws.Ping)
    assert pair.server.next_deadline() == 140.0
    pair.now = 125.0
    assert pair.send(ping.response()) == [PongReceived(ping.payload)]
    assert pair.server.next_deadline() == 145.0


def test_keepalive_timeout_is_1011() -> None:
    """No bytes for ping_timeout_s after a keepalive ping: Close 1011, then TCP close."""
    pair = opened()
    pair.server.tick(100.0)
    pair.server.tick(120.0)
    pair.to_client()
    pair.server.tick(139.9)
    assert pair.server.events_received() == []
    pair.server.tick(140.0)
    assert pair.server.events_received() == [CloseReceived(1011, "keepalive ping timeout")]
    assert client_close(pair.to_client()).code == 1011
    assert pair.server.close_expected()
    assert pair.server.next_deadline() is None


def test_inbound_bytes_count_as_liveness() -> None:
    """Data arriving while a ping is outstanding pushes the timeout back."""
    pair = opened()
    pair.server.tick(100.0)
    pair.server.tick(120.0)
    pair.now = 135.0
    pair.feed(frame(OP_TEXT, b"busy", fin=False))
    pair.server.tick(140.0)
    assert pair.server.state is OPEN
    assert pair.server.next_deadline() == 155.0


def test_unsolicited_pong_does_not_clear_the_ping() -> None:
    """A Pong with another payload (a heartbeat, RFC 6455 5.5.3) is only reported."""
    pair = opened()
    pair.server.tick(100.0)
    pair.server.tick(120.0)
    pair.now = 121.0
    assert pair.feed(frame(OP_PONG, b"other")) == [PongReceived(b"other")]
    assert pair.server.next_deadline() == 141.0


def test_timers_can_be_disabled() -> None:
    """With no ping interval and no close timeout nothing ever needs a tick."""
    pair = opened(WebSocketLimits(ping_interval_s=None, close_timeout_s=None))
    assert pair.server.next_deadline() is None
    pair.server.tick(1e9)
    assert pair.server.data_to_send() == []
    pair.server.send_close(1000)
    assert pair.server.next_deadline() is None
    pair.server.tick(2e9)
    assert pair.server.state is CLOSING


def test_ping_without_timeout_waits_for_pong() -> None:
    """With no ping timeout an outstanding ping never fails the connection."""
    pair = opened(WebSocketLimits(ping_timeout_s=None))
    pair.server.tick(100.0)
    pair.server.tick(120.0)
    assert pair.server.next_deadline() is None


def test_close_timeout() -> None:
    """A peer that never answers our Close is dropped after close_timeout_s with 1006."""
    pair = opened()
    pair.server.send_close(1000)
    assert pair.server.next_deadline() == -math.inf
    pair.server.tick(200.0)
    assert pair.server.next_deadline() == 210.0
    pair.server.tick(209.0)
    assert pair.server.state is CLOSING
    pair.server.tick(210.0)
    assert pair.server.events_received() == [CloseReceived(1006, "")]
    assert pair.server.close_expected()
    pair.server.tick(300.0)
    assert pair.server.events_received() == []


# -- flow control ------------------------------------------------------------------------


def test_outbound_buffer_limit_is_1008() -> None:
    """A peer that stops reading is failed with 1008 past max_outbound_buffer."""
    pair = opened(SMALL)
    assert not pair.server.check_outbound_buffer(10_000)
    assert pair.server.check_outbound_buffer(10_001)
    assert pair.server.events_received() == [CloseReceived(1008, "outbound buffer full")]
    assert client_close(pair.to_client()).code == 1008
    assert not pair.server.check_outbound_buffer(10_001)


def test_outbound_buffer_limit_while_closing() -> None:
    """During our closing handshake a stalled peer is simply dropped (1006)."""
    pair = opened(SMALL)
    pair.server.send_close(1000)
    assert pair.server.check_outbound_buffer(10_001)
    assert pair.server.events_received() == [CloseReceived(1006, "")]


def test_outbound_buffer_before_accept() -> None:
    """Before accept nothing has been sent, so there is nothing to fail."""
    assert not WsPair(SMALL).server.check_outbound_buffer(10**9)


# -- settings and boundaries -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_message_size": 0},
        {"max_fragments": 0},
        {"max_outbound_buffer": 0},
        {"ping_interval_s": 0.0},
        {"ping_timeout_s": -1.0},
        {"close_timeout_s": math.nan},
    ],
)
def test_limits_refuse_nonsense(kwargs: dict[str, float]) -> None:
    """Sizes below 1 and times that are not positive are refused at construction."""
    with pytest.raises(ValueError, match="must be"):
        WebSocketLimits(**kwargs)  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------

_MESSAGES = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None, database=None)
@given(
    messages=_MESSAGES,
    fragment_size=st.integers(min_value=1, max_value=120),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=25),
    deflate=st.booleans(),
)
def test_any_split_of_the_stream_gives_the_same_messages(
    messages: list[str | bytes], fragment_size: int, cuts: list[int], deflate: bool
) -> None:
    """However the bytes are cut into reads, the same messages come out, in order."""
    pair = opened(deflate=deflate)
    stream = b""
    for message in messages:
        pieces = [message[i : i + fragment_size] for i in range(0, len(message), fragment_size)]
        pieces = pieces or [message]
        kind = ws.TextMessage if isinstance(message, str) else ws.BytesMessage
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            stream += pair.client.send(kind(data=piece, message_finished=last))  # type: ignore[arg-type]
        stream += pair.client.send(ws.Ping(payload=b"between"))
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    events = []
    for start, end in itertools.pairwise(bounds):
        events += pair.feed(stream[start:end])
    expected = [TextMessage(m) if isinstance(m, str) else BytesMessage(m) for m in messages]
    assert events == expected
    assert pair.server.state is OPEN
