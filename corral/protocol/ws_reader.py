"""The peer's side of an open WebSocket connection: frames in, messages out.

Theory of operation
-------------------
:class:`MessageReader` reads what the client sends once the handshake is done and turns
it into the core's events (``ws_events.py``): whole messages, Pongs, and at most one
:class:`Ending`. :class:`~corral.protocol.websocket.WebSocketCore` owns it, feeds it the
bytes it reads in OPEN and CLOSING, and applies the ending to its state. The split
follows h11's readers beside its state machine: the reader knows frames and the peer's
side of the closing handshake; the core knows its states, the timers and what to send.

Rules:

* Frames are parsed by wsproto, with sizes and fragment counts bounded from frame
  headers by :class:`~corral.protocol.ws_limits.MessageGuard` and inflation by
  :class:`~corral.protocol.ws_deflate.BoundedDeflate`. One kind of frame skips it
  (``ws_frames.py``): whole, unfragmented text and binary client frames, read while
  wsproto is between messages (``private.between_messages``), without
  permessage-deflate, and only before our own Close (the core turns ``fast_path`` off
  then: wsproto alone reads the rest of the closing handshake). ``simple_frames``
  counts them.
* wsproto yields a message in pieces as its bytes arrive (RFC 6455 section 5.4); they
  are joined here, and a message that arrived whole costs no join. Every delivered
  message makes an answer owed (``owed``, the core's FAILING rule) until the core
  clears it.
* Control frames are answered here, in the order read. Every Ping gets a Pong echoing
  its payload (section 5.5.2), during our own closing handshake too: section 5.5.2
  excuses only an endpoint that has *received* a Close. (Section 5.5.3 would allow
  answering only the last of several; Autobahn 2.10 fails that.) A Pong matching
  ``awaited_pong``, the core's keepalive, clears it.
* A Close from the peer is echoed at once with its code (section 5.5.1; not its reason,
  which is for its own logs), and the input ends. A frame wsproto or an extension
  refuses leaves wsproto OPEN: the input ends with ``fail`` set, and the core sends the
  Close that fails the connection (section 7.1.7), now or once the answers owed are
  out. A failure after our own Close ends with 1006: a second Close is not allowed
  (section 5.5.1) and none came from the peer. wsproto yields nothing after any of
  these, and the core feeds the reader nothing more.

What this file must not know: the core's states, timers, the handshake, the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from wsproto import events as wsevents
from wsproto.connection import ConnectionState

from corral.protocol.private import between_messages
from corral.protocol.ws_events import BytesMessage, Event, PongReceived, TextMessage
from corral.protocol.ws_frames import FIN_PONG, queue_frame, read_simple_frames

if TYPE_CHECKING:
    from wsproto.connection import Connection

    from corral.protocol.ws_deflate import BoundedDeflate
    from corral.protocol.ws_limits import MessageGuard, WebSocketLimits

__all__ = ["Ending", "MessageReader"]


@final
@dataclass(frozen=True, slots=True)
class Ending:
    """The input is over: what :meth:`MessageReader.receive` read last.

    ``fail`` means the peer's input was bad and no Close has gone out yet: the core
    must send one with ``code`` and ``reason`` (or hold it, FAILING). Otherwise every
    Close owed is queued and the connection ends with ``code`` (1006 for none).
    """

    code: int
    reason: str
    fail: bool


@final
class MessageReader:
    """Reads one connection's frames into messages; see the module docstring.

    Made with the core, started by :meth:`start` when the handshake is accepted.

    Attributes:
        fast_path: Frames may be read without wsproto (see the module docstring).
        owed: A message was delivered since the core last cleared this.
        awaited_pong: The payload of the keepalive Ping awaiting its Pong, else None.
        simple_frames: Messages read on the fast path: for tests and debugging.
    """

    __slots__ = (
        "_byte_parts",
        "_conn",
        "_deflate",
        "_guard",
        "_limit",
        "_text_parts",
        "awaited_pong",
        "fast_path",
        "owed",
        "simple_frames",
    )

    def __init__(self, limits: WebSocketLimits) -> None:
        self._limit = limits.max_message_size
        # Set by start(): the frame-level connection, and the extensions in use.
        self._conn: Connection | None = None
        self._guard: MessageGuard | None = None
        self._deflate: BoundedDeflate | None = None
        # Fragments of the message being reassembled; one list per kind for typing.
        self._text_parts: list[str] = []
        self._byte_parts: list[bytes] = []
        self.fast_path = False
        self.owed = False
        self.awaited_pong: bytes | None = None
        self.simple_frames = 0

    def start(self, conn: Connection, guard: MessageGuard, deflate: BoundedDeflate | None) -> None:
        """Read from ``conn`` from now on, with the extensions accept() negotiated."""
        self._conn = conn
        self._guard = guard
        self._deflate = deflate
        # Compressed frames need wsproto's extension hooks (RFC 7692).
        self.fast_path = deflate is None

    def receive(self, data: bytes, events: list[Event], out: list[bytes]) -> Ending | None:
        """Read ``data``: messages and Pongs go to ``events``, answers to ``out``.

        Returns:
            None while the input goes on, else how it ended; after that call nothing
            more (wsproto would read nothing more).
        """
        conn = self._conn
        assert conn is not None  # started by accept(), the only way into OPEN
        if self.fast_path and between_messages(conn):
            # The fast path (ws_frames.py): whole simple frames, wsproto skipped.
            before = len(events)
            used = read_simple_frames(data, self._limit, events)
            if used:
                self.simple_frames += len(events) - before
                self.owed = True
                if used == len(data):
                    return None
                data = data[used:]
        conn.receive_data(data)
        for event in conn.events():
            # Most common first. wsproto yields a message in pieces as its bytes
            # arrive; an unfragmented message that arrived whole costs no join.
            if isinstance(event, wsevents.TextMessage):
                text_parts = self._text_parts
                if not event.message_finished:
                    if event.data:
                        text_parts.append(event.data)
                elif text_parts:
                    text_parts.append(event.data)
                    events.append(TextMessage("".join(text_parts)))
                    text_parts.clear()
                    self.owed = True
                else:
                    events.append(TextMessage(event.data))
                    self.owed = True
            elif isinstance(event, wsevents.BytesMessage):
                # wsproto types the data bytes | bytearray but yields bytes, for which
                # bytes() is the identity, not a copy.
                data = bytes(event.data)
                byte_parts = self._byte_parts
                if not event.message_finished:
                    if data:
                        byte_parts.append(data)
                elif byte_parts:
                    byte_parts.append(data)
                    events.append(BytesMessage(b"".join(byte_parts)))
                    byte_parts.clear()
                    self.owed = True
                else:
                    events.append(BytesMessage(data))
                    self.owed = True
            elif isinstance(event, wsevents.Ping):
                # RFC 6455 section 5.5.2: a Pong echoes the Ping's payload.
                queue_frame(out, FIN_PONG, event.payload)
            elif isinstance(event, wsevents.Pong):
                if event.payload == self.awaited_pong:
                    self.awaited_pong = None
                events.append(PongReceived(event.payload))
            else:
                assert isinstance(event, wsevents.CloseConnection)
                # wsproto yields nothing after a Close or a parse failure.
                return self._on_close(conn, event, out)
        return None

    def drop_message(self) -> None:
        """Forget a half-reassembled message: the connection is over."""
        self._text_parts.clear()
        self._byte_parts.clear()

    def _on_close(
        self, conn: Connection, event: wsevents.CloseConnection, out: list[bytes]
    ) -> Ending:
        """A Close frame arrived, or wsproto (or an extension) failed a frame."""
        code = int(event.code)
        reason = event.reason or ""
        their_state = conn.state
        if their_state is ConnectionState.REMOTE_CLOSING:
            # The peer began the closing handshake: echo its code (section 5.5.1).
            # wsproto sends no code for 1005.
            out.append(conn.send(wsevents.CloseConnection(code=event.code)))
        elif their_state is ConnectionState.OPEN:
            # A parse failure leaves wsproto OPEN, so the core can still send the
            # Close that fails the connection (section 7.1.7).
            return Ending(code, self._failure_reason(reason), fail=True)
        elif their_state is ConnectionState.LOCAL_CLOSING:
            # A failure after our own Close: no second Close, none from the peer.
            code, reason = 1006, ""
        # Otherwise CLOSED: the peer answered our Close and the handshake is complete.
        return Ending(code, reason, fail=False)

    def _failure_reason(self, reason: str) -> str:
        # wsproto says only "error in extension" when the guard or inflater refused.
        for extension in (self._guard, self._deflate):
            if extension is not None and extension.failure is not None:
                return extension.failure
        return reason
