"""The deadlines of a connection: what each means, and the write-stall rule they share.

Deadlines are not timers: each connection records one ``deadline`` (loop time) and,
for HTTP/1.1, its :class:`Deadline` reason; the worker's sweep (every
:data:`~corral.workers.server.SWEEP_INTERVAL_S`) calls ``deadline_passed`` on the
connections whose deadline passed. No timer is armed or cancelled per request.

The deadlines (all named, all configurable):

* ``IDLE``: no request in progress. Between requests it is ``--timeout-keep-alive``;
  before the first byte of a new connection it is ``--timeout-header``, so a socket that
  never sends anything is closed even with keep-alive set high. Closes silently.
* ``HEADER``: from the first byte of a request head to its end, absolute, so a client
  trickling one byte a second cannot hold the connection (slowloris). Answers 408.
* ``BODY``: silence while the app waits in ``receive()`` for request body. Answers 408
  (or cuts the response if it already started); the app gets ``http.disconnect``.
* ``WRITE``: the transport paused writing because the client does not read. Measured
  as "no progress" (:func:`write_stalled`): while the write buffer keeps shrinking the
  deadline moves on. Also armed by every close, since ``transport.close()`` waits for
  the buffer to drain. An upgraded (WebSocket) connection has this deadline only.
* ``LINGER``: after an error response (400, 408, 413, 431, 503, 500) the write side is
  shut and input is read and dropped for :data:`LINGER_S`, so a client still uploading
  sees the answer: closing with unread input sends a RST, which may make the client's
  TCP stack discard the response (nginx's ``lingering_close``).

Invariant (HTTP/1.1): while ``write_paused`` is true the deadline is ``WRITE`` (nothing
else may replace it), so a stalled client is always cut after ``--timeout-write``.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final

#: No deadline.
INF: Final = float("inf")

#: How long a draining worker keeps an idle keep-alive connection open for a request
#: that may already be on its way (see ``HTTPConnection.shutdown``). Clients under load
#: send their next request within milliseconds; idle ones are not kept waiting long.
DRAIN_IDLE_GRACE_S: Final = 1.0

#: Seconds an error response waits, reading and dropping input, before the close. Long
#: enough for the client to see the response and stop sending; short enough that a
#: client that keeps sending cannot hold the connection.
LINGER_S: Final = 2.0


class Deadline(enum.Enum):
    """Why an HTTP/1.1 connection's ``deadline`` is set (see the module docstring)."""

    NONE = "none"
    IDLE = "idle"
    HEADER = "header"
    BODY = "body"
    WRITE = "write"
    LINGER = "linger"


def write_stalled(transport: asyncio.WriteTransport, mark: int) -> int | None:
    """The WRITE deadline passed with ``mark`` bytes unsent when it was armed: return
    the new mark if the peer is slow but moving (re-arm the deadline from it), or None
    if it took nothing since (cut the connection)."""
    size = transport.get_write_buffer_size()
    return size if 0 < size < mark else None
