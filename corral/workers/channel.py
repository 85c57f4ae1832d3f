"""The seams between the ASGI objects (request cycle, WebSocket session) and what carries them.

A :class:`~corral.workers.cycle.RequestCycle` runs one ASGI HTTP request. Everything it
needs from below goes through a :class:`RequestChannel`: writing the response (head,
body, end, a file, an informational response), waiting until the peer can take more,
reading the request body with backpressure, and the ways a response ends (complete,
refused with an error status, cut). HTTP/1.1 implements the channel once per
connection (``connection.py``); HTTP/2 implements it once per stream. The cycle imports
neither, so the same cycle runs on both.

The worker's shared state (``server.py``) sees connections only as
:class:`ServedConnection`: what the sweep, the drain and the access log need.

Ordering rules (the cycle keeps them; a channel may assume them):

- ``send_response`` comes first and once; ``send_body``/``send_file`` after it, then
  ``send_end`` once (``send_response`` with ``body`` given is all three at once).
- A ``LocalProtocolError`` from ``send_response``, ``send_body``, ``send_end`` or
  ``send_file`` means the response cannot be sent as asked. If it came from the first
  ``send_response``, nothing has been written: ``discard_unsent()`` then ``send_error``
  answers 500 instead. Later it can only be ``cut``.
- ``response_finished`` after the last byte; ``cycle_finished`` when the app's task
  ends, whatever happened.
"""

from __future__ import annotations

import asyncio
from typing import IO, Protocol

#: Header lists as the channel takes them (the cycle passes the app's list unchanged).
Headers = list[tuple[bytes, bytes]]


class Exchange(Protocol):
    """One request and its response as the access log sees them (a RequestCycle)."""

    method: bytes
    target: bytes
    status: int
    bytes_sent: int
    #: ``time.perf_counter()`` when the request arrived.
    started_at: float


class RequestChannel(Protocol):
    """What one request cycle may do with the connection or stream under it."""

    loop: asyncio.AbstractEventLoop
    #: The transport will not take more now; ``wait_writable`` waits until it does.
    write_paused: bool

    # -- the response ----------------------------------------------------------------------

    def send_response(self, status: int, headers: Headers, body: bytes | None = None) -> None:
        """Frame the response head; with ``body``, also that whole body and the end.

        Raises:
            LocalProtocolError: an invalid header, or a body that does not match the
                Content-Length given; nothing is written then.
        """

    def send_body(self, data: bytes) -> None:
        """Frame a piece of the body (raises LocalProtocolError past Content-Length)."""

    def send_end(self) -> None:
        """Frame the end of the response (raises LocalProtocolError if the body is short)."""

    async def send_file(self, file: IO[bytes], offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` as body, by sendfile where the
        transport allows. Framing errors raise LocalProtocolError before any byte goes."""

    def expects_continue(self) -> bool:
        """The client waits for ``100 Continue`` before it sends the body."""

    def send_continue(self) -> None:
        """Write ``100 Continue`` now (call only before the response head)."""

    def flush(self) -> None:
        """Write what is framed, now."""

    def flush_soon(self) -> None:
        """Write what is framed at the end of this loop turn (streamed chunks coalesce)."""

    def discard_unsent(self) -> None:
        """Drop what is framed and not written (a response head that failed)."""

    async def wait_writable(self) -> None:
        """Return when the peer takes more data again, or the connection is gone."""

    # -- the request body ------------------------------------------------------------------

    def wait_for_body(self) -> None:
        """The app waits in ``receive()``: read on, and start the body-idle deadline."""

    def body_wait_over(self) -> None:
        """The app got what it waited for: its own time is not the client's silence."""

    def pause_reading_for_body(self) -> None:
        """The app has unread body over the high-water mark: stop reading."""

    def resume_reading_for_body(self) -> None:
        """The app took the body it had: read again."""

    # -- endings ---------------------------------------------------------------------------

    def send_error(self, status: int, cycle: Exchange | None = None) -> None:
        """Answer with a plain error response instead (only if nothing was written)."""

    def cut(self, cycle: Exchange) -> None:
        """End a response that cannot be completed so that it cannot look complete."""

    def response_finished(self, cycle: Exchange) -> None:
        """The last byte of the response is framed and flushed."""

    def cycle_finished(self, completed: bool) -> None:
        """The app's task is over; ``completed``: its response was whole (and
        ``response_finished`` came first), else it failed or was cut."""


class ServedConnection(Protocol):
    """A connection as the worker's shared state sees it (sweep, drain, access log)."""

    #: ``(host, port)`` of the peer, or None (a unix socket).
    client: tuple[str, int] | None
    #: When the connection's current deadline passes (loop time; infinity: none).
    deadline: float

    @property
    def websocket(self) -> object:
        """The WebSocket session this connection carries, or None (plain HTTP)."""

    def deadline_passed(self) -> None:
        """Act on the deadline that passed (close, 408, cut)."""

    def shutdown(self) -> None:
        """The worker drains: finish the current exchange, then close."""

    def abort(self) -> None:
        """Close now, dropping whatever is unsent."""


class MessageChannel(Protocol):
    """What a WebSocket session needs from the connection (or stream) under it: a byte
    pipe with flow control. HTTP/1.1 gives it the whole connection after the 101
    (``upgraded.py``); HTTP/2 will give it one extended-CONNECT stream (RFC 8441)."""

    loop: asyncio.AbstractEventLoop
    #: The peer does not take more now; ``wait_writable`` waits until it does.
    write_paused: bool

    def write(self, data: bytes) -> None:
        """Send ``data`` (whole frames; call only while not ``closing()``)."""

    def write_buffer_size(self) -> int:
        """Bytes written and not yet taken by the peer."""

    def pause_reading(self) -> None:
        """Stop delivering input (the app has too many messages unread)."""

    def resume_reading(self) -> None:
        """Deliver input again (a no-op once closing)."""

    def closing(self) -> bool:
        """The connection is closing or closed: nothing more can be written."""

    def close(self) -> None:
        """Close once the pending bytes are out; a peer that stops reading them is cut
        after ``--timeout-write``."""

    async def wait_writable(self) -> None:
        """Return when the peer takes more data again, or the connection is gone."""
