"""Client frames read without wsproto, checked against wsproto itself (differentially).

The core reads complete, unfragmented, masked text and binary frames itself when
wsproto is between messages, and hands everything else to wsproto. Fed one byte at a
time no frame is ever complete in one read, so every byte goes through wsproto: that
is the reference. Fed in larger reads, the same bytes must give the same events and
the same bytes back (Pongs, Closes).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.protocol.websocket import BytesMessage, CloseReceived, TextMessage, WebSocketLimits
from tests.protocol.ws_helpers import MASK, frame, opened

LIMITS = WebSocketLimits(max_message_size=4096)


def run(stream: bytes, cut: list[int], limits: WebSocketLimits = LIMITS) -> tuple[list, list]:
    """Feed ``stream`` to an open core in reads ending at the offsets in ``cut``; return
    the server's events and what a wsproto client made of the bytes sent back.

    After each read the app is caught up (it took the messages and waits for more), so
    a failure held for its answers happens then, as it would in the adapter.

    wsproto words a UTF-8 failure with the offset within the read it was decoding,
    which moves with the read boundaries: reasons of 1007 are left out of the
    comparison, the code stays in.
    """
    pair = opened(limits)
    events: list = []
    start = 0
    for end in [*sorted(set(cut)), len(stream)]:
        if end > start:
            events += pair.feed(stream[start:end])
            pair.server.mark_caught_up()
            events += pair.server.events_received()
            start = end
    events = [
        CloseReceived(1007, "") if isinstance(e, CloseReceived) and e.code == 1007 else e
        for e in events
    ]
    replies = [
        (type(e).__name__, getattr(e, "code", None), getattr(e, "payload", None))
        for e in pair.to_client()
    ]
    return events, replies


def reference(stream: bytes, limits: WebSocketLimits = LIMITS) -> tuple[list, list]:
    return run(stream, list(range(1, len(stream))), limits)


def test_simple_frames_are_read_whole() -> None:
    """Text and binary frames in one read become messages, in order."""
    stream = frame(1, "héllo".encode()) + frame(2, b"\x00\xff") + frame(1, b"")
    events, _ = run(stream, [])
    assert events == [TextMessage("héllo"), BytesMessage(b"\x00\xff"), TextMessage("")]
    assert reference(stream)[0] == events


@pytest.mark.parametrize("size", [125, 126, 1023, 1024, 4096])
def test_payload_sizes_unmask_alike(size: int) -> None:
    """Both unmasking methods (short and long payloads) give the original bytes."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    events, _ = run(frame(2, payload), [])
    assert events == [BytesMessage(payload)]


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (frame(1, b"text", masked=False), 1002),  # a client must mask (section 5.1)
        (struct.pack("!BBH", 0x81, 0xFE, 5) + MASK + b"hello", 1002),  # non-minimal length
        (frame(1, b"\xff\xfe"), 1007),  # not UTF-8
        (frame(2, b"x" * 4097), 1009),  # over --ws-max-size
        (frame(0, b"x"), 1002),  # a continuation with no message
    ],
)
def test_frames_left_to_wsproto_fail_as_wsproto_fails_them(stream: bytes, code: int) -> None:
    """A frame the fast path declines, after a good one, is judged by wsproto."""
    whole = frame(1, b"first") + stream
    events, sent = run(whole, [])
    assert events[0] == TextMessage("first")
    assert isinstance(events[-1], CloseReceived)
    assert events[-1].code == code
    assert (events, sent) == reference(whole)


def test_fragments_and_pings_mix_with_whole_frames() -> None:
    """A fragmented message with a ping inside, between whole frames, reads the same."""
    stream = (
        frame(1, b"a")
        + frame(1, b"frag", fin=False)
        + frame(9, b"ping")
        + frame(0, b"ment")
        + frame(2, b"b")
    )
    events, sent = run(stream, [])
    assert [e for e in events if not isinstance(e, CloseReceived)] == [
        TextMessage("a"),
        TextMessage("fragment"),
        BytesMessage(b"b"),
    ]
    assert (events, sent) == reference(stream)


_frames = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 8, 9, 10, 3]),  # opcodes, with a reserved one
        st.binary(max_size=300) | st.sampled_from([b"\xff", "é".encode(), b"x" * 5000]),
        st.booleans(),  # fin
        st.booleans() | st.just(True),  # masked (mostly)
        st.booleans() | st.just(False),  # rsv1 (rarely)
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(frames=_frames, cut=st.lists(st.integers(min_value=1, max_value=12000), max_size=6))
def test_any_frames_any_reads_match_wsproto(frames: list, cut: list[int]) -> None:
    """Valid and invalid frame sequences, cut anywhere, read as wsproto reads them."""
    stream = b"".join(
        frame(op, payload, fin=fin, masked=masked, rsv1=rsv1)
        for op, payload, fin, masked, rsv1 in frames
    )
    assert run(stream, cut) == reference(stream)


def test_deflate_connections_use_wsproto() -> None:
    """With permessage-deflate on, frames keep going through wsproto (and still work)."""
    pair = opened(deflate=True)
    assert pair.server._deflate is not None
    assert pair.feed(frame(1, b"plain")) == [TextMessage("plain")]
