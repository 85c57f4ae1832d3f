"""The vocabulary of the WebSocket core: its states, its events and its errors.

Theory of operation
-------------------
:class:`~corral.protocol.websocket.WebSocketCore` moves through the
:class:`WebSocketState` states (the diagram is in ``websocket.py``), reports what the
peer did as the frozen events below, in order, from ``events_received()``, and raises
:class:`LocalProtocolError` (or :class:`ConnectionClosed`) when its caller asks for
something the protocol or the state forbids. They live apart from the core, as h11
keeps its events in ``_events.py``, so that the frame reader (``ws_frames.py``) can make
messages without importing the state machine; ``websocket.py`` re-exports every name.

Rules: events are immutable values, so one instance may be shared (:data:`ABNORMAL`);
messages are complete (reassembled and, for text, decoded); exactly one
:class:`CloseReceived` ends each connection that got past the handshake check.

What this file must not know: frames, wsproto, the state machine's rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias, final

__all__ = [
    "ABNORMAL",
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "FAILING",
    "OPEN",
    "BytesMessage",
    "CloseReceived",
    "ConnectionClosed",
    "Event",
    "LocalProtocolError",
    "PongReceived",
    "TextMessage",
    "WebSocketState",
]


class LocalProtocolError(Exception):
    """The caller asked for something the protocol or the current state forbids."""


class ConnectionClosed(LocalProtocolError):
    """The connection is closing or closed; nothing more can be sent on it."""


class WebSocketState(enum.Enum):
    """Where the connection is; see the diagram in the module docstring."""

    CONNECTING = "connecting"
    OPEN = "open"
    FAILING = "failing"
    CLOSING = "closing"
    CLOSED = "closed"


CONNECTING: Final = WebSocketState.CONNECTING
OPEN: Final = WebSocketState.OPEN
FAILING: Final = WebSocketState.FAILING
CLOSING: Final = WebSocketState.CLOSING
CLOSED: Final = WebSocketState.CLOSED


@final
@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message from the peer, reassembled and decoded."""

    data: str


@final
@dataclass(frozen=True, slots=True)
class BytesMessage:
    """A complete binary message from the peer, reassembled."""

    data: bytes


@final
@dataclass(frozen=True, slots=True)
class PongReceived:
    """A Pong from the peer; keepalive bookkeeping has already used it."""

    data: bytes


@final
@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The connection is over; ``code`` is chosen as ``websocket.py``'s docstring says."""

    code: int
    reason: str


#: Everything :meth:`WebSocketCore.events_received` may return.
Event: TypeAlias = "TextMessage | BytesMessage | PongReceived | CloseReceived"

#: The end of a connection that closed without a Close frame (RFC 6455 section 7.1.5).
ABNORMAL: Final = CloseReceived(1006, "")
