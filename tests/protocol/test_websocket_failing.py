"""What was valid is answered first: a failure held in FAILING while answers are owed.

A valid message and a bad frame often arrive together (Autobahn 3.2-3.4, 4.1.3-4.2.5,
5.15). The message is delivered; the Close that fails the connection must not overtake
the app's answer to it, so the core holds the failure until the caller reports the app
caught up, or ``answer_grace_s`` passes. Pure and synchronous, like test_websocket.py.
"""

from __future__ import annotations

import math

import pytest
from wsproto import events as ws

from corral.protocol.websocket import (
    CLOSED,
    FAILING,
    OPEN,
    BytesMessage,
    CloseReceived,
    ConnectionClosed,
    TextMessage,
    WebSocketLimits,
)
from corral.protocol.ws_limits import DEFAULT_ANSWER_GRACE_S
from tests.protocol.ws_helpers import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    WsPair,
    assert_failed,
    client_close,
    frame,
    opened,
)

# A valid message, whole (read by the core's fast path) or in two fragments (read by
# wsproto), then a frame with the reserved opcode 3: a protocol error, 1002.
WHOLE = frame(OP_TEXT, b"good")
FRAGMENTED = frame(OP_TEXT, b"go", fin=False) + frame(OP_CONTINUATION, b"od")
BAD = frame(0x3)


def held(good: bytes = WHOLE, bad: bytes = BAD, *, deflate: bool = False) -> WsPair:
    """An open pair that got ``good`` and ``bad`` in one read: the failure is held."""
    pair = opened(deflate=deflate)
    assert pair.feed(good + bad) == [TextMessage("good")]
    assert pair.server.state is FAILING
    return pair


@pytest.mark.parametrize(
    ("good", "deflate"),
    [(WHOLE, False), (FRAGMENTED, False), (WHOLE, True)],
    ids=["fast-path", "wsproto", "deflate"],
)
def test_answer_goes_out_before_the_close(good: bytes, deflate: bool) -> None:
    """The echo of a message that came with a bad frame precedes the 1002 Close."""
    pair = held(good, deflate=deflate)
    assert pair.server.data_to_send() == []  # nothing yet: the Close waits
    pair.server.send_text("good")
    assert pair.server.mark_caught_up()
    assert pair.server.state is CLOSED
    events = pair.to_client()
    assert isinstance(events[0], ws.TextMessage)
    assert events[0].data == "good"
    assert client_close(events).code == 1002
    assert pair.server.events_received() == [CloseReceived(1002, "Invalid opcode 0x3")]
    assert pair.server.close_expected()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(OP_TEXT, b"\xff"), 1007),  # not UTF-8
        (frame(OP_CONTINUATION, b"x"), 1002),  # nothing to continue (Autobahn 5.15)
        (frame(OP_TEXT, b"x", rsv1=True), 1002),  # RSV1 without deflate (Autobahn 3.2)
        (frame(OP_PING, b"p", fin=False), 1002),  # a fragmented control frame
    ],
)
def test_every_kind_of_bad_input_is_held_with_its_code(bad: bytes, code: int) -> None:
    """The same close codes as an immediate failure, only later."""
    pair = held(bad=bad)
    pair.server.send_text("good")
    pair.server.mark_caught_up()
    assert_failed(pair, pair.server.events_received(), code)


def test_owed_from_an_earlier_read() -> None:
    """A message from an earlier read the app has not caught up with is owed too."""
    pair = opened()
    assert pair.feed(frame(OP_BINARY, b"earlier")) == [BytesMessage(b"earlier")]
    assert pair.feed(BAD) == []
    assert pair.server.state is FAILING
    pair.server.send_bytes(b"earlier")
    assert pair.server.mark_caught_up()
    events = pair.to_client()
    assert isinstance(events[0], ws.BytesMessage)
    assert client_close(events).code == 1002


def test_nothing_owed_fails_at_once() -> None:
    """Once the app caught up, a bad frame alone fails the connection immediately."""
    pair = opened()
    pair.feed(WHOLE)
    assert not pair.server.mark_caught_up()
    assert_failed(pair, pair.feed(BAD), 1002)
    # A bad frame before any message: nothing was ever owed.
    fresh = opened()
    assert_failed(fresh, fresh.feed(BAD), 1002)


def test_zero_grace_fails_at_once() -> None:
    """answer_grace_s=0 turns holding off: the old, immediate failure."""
    pair = opened(WebSocketLimits(answer_grace_s=0))
    events = pair.feed(WHOLE + BAD)
    assert events[0] == TextMessage("good")
    assert_failed(pair, events, 1002)


def test_grace_bounds_a_slow_app() -> None:
    """An app that never catches up holds the connection answer_grace_s, no longer."""
    pair = held()
    deadline = pair.server.next_deadline()
    assert deadline == pair.now + DEFAULT_ANSWER_GRACE_S
    pair.server.tick(deadline - 0.001)
    assert pair.server.state is FAILING
    assert pair.server.data_to_send() == []
    pair.server.tick(deadline)
    assert_failed(pair, pair.server.events_received(), 1002)


def test_early_frames_start_the_grace_at_the_first_tick() -> None:
    """Frames before accept() fail inside it, which takes no time: a tick at once."""
    pair = WsPair(early=WHOLE + BAD)
    pair.accept()
    assert pair.server.events_received() == [TextMessage("good")]
    assert pair.server.state is FAILING
    assert pair.server.next_deadline() == -math.inf
    pair.server.tick(50.0)
    assert pair.server.next_deadline() == 50.0 + DEFAULT_ANSWER_GRACE_S
    pair.server.tick(50.0 + DEFAULT_ANSWER_GRACE_S)
    assert_failed(pair, pair.server.events_received(), 1002)


def test_input_is_ignored_and_only_messages_may_be_sent() -> None:
    """FAILING: bytes and even a Close from the peer are dropped; a ping is refused."""
    pair = held()
    assert pair.feed(frame(OP_TEXT, b"later") + frame(OP_PING, b"p")) == []
    assert pair.server.data_to_send() == []
    with pytest.raises(ConnectionClosed):
        pair.server.send_ping(b"x")
    pair.server.send_bytes(b"ok")
    assert isinstance(pair.to_client()[0], ws.BytesMessage)
    assert not pair.server.close_expected()


def test_app_close_sends_the_failure_code() -> None:
    """The app closing in FAILING (say, with 1000) still tells the peer 1002."""
    pair = held()
    pair.server.send_text("good")
    pair.server.send_close(1000)
    assert pair.server.state is CLOSED
    assert_failed(pair, pair.server.events_received(), 1002)


def test_eof_ends_the_hold_with_the_failure_code() -> None:
    """The peer's EOF reports the failure's code, not 1006, and queues its Close."""
    pair = held()
    pair.server.receive_eof()
    assert_failed(pair, pair.server.events_received(), 1002)


def test_full_outbound_buffer_ends_the_hold() -> None:
    """A peer that stopped reading ends the hold at once, with the failure's code."""
    pair = held()
    assert pair.server.check_outbound_buffer(10**9)
    assert_failed(pair, pair.server.events_received(), 1002)


def test_caught_up_on_an_open_connection_changes_nothing_else() -> None:
    """mark_caught_up() on OPEN only clears what is owed; it ends nothing."""
    pair = opened()
    assert not pair.server.mark_caught_up()
    assert pair.server.state is OPEN
    assert pair.server.events_received() == []
    assert pair.server.data_to_send() == []


def test_negative_grace_is_refused() -> None:
    """A grace below zero (or NaN) is a configuration error."""
    for value in (-1.0, math.nan):
        with pytest.raises(ValueError, match="answer_grace_s"):
            WebSocketLimits(answer_grace_s=value)
