"""Accepting connections: one path on every event loop, fair between workers by construction.

Every worker accepts from the same listening sockets, which the master bound and every
worker inherited. Left alone, the kernel wakes all of them for each new connection and
whichever runs first takes it: on two cores, the worker resumed first can empty a
whole burst from the queue before its sibling is scheduled, and a long-lived connection
(WebSocket, SSE, long poll) stays where it landed for hours. asyncio makes it worse by
accepting up to its backlog argument per wakeup, and uvloop accepts in C where no
setting reaches.

So corral accepts itself, the same way on both loops: a reader callback on each
listening socket takes one connection at a time (``socket.accept``) and hands it to
``loop.connect_accepted_socket``. Before each accept the worker compares its *load*
(open connections, TLS handshakes included) with its siblings' in a :class:`LoadTable`,
a small shared-memory array the master maps before forking. The rule:

    a worker accepts only while its load <= the least load of its live siblings + MARGIN

A worker over that line stops watching the sockets and looks again every
:data:`REBALANCE_POLL_S` (and whenever one of its connections closes); its siblings,
woken by the same readiness, take the connections. The least-loaded worker always
passes the rule, so someone always accepts; while every worker's loop turns within
:data:`LIVE_S`, the spread between workers stays within MARGIN plus the accepts in
flight at one moment, whichever worker the scheduler runs first.

"Live" means the sibling said it accepts and refreshed its entry within
:data:`LIVE_S` (the worker's sweep refreshes it from inside its event loop). A sibling
whose loop is blocked, that is stopping, or that died is left out after at most LIVE_S:
it can hold the others back no longer than that.

The table is an anonymous shared mapping: it survives fork, not exec. After a USR2
re-exec the new master maps a new one for the workers it forks; the workers it adopted
go on balancing among themselves on the old one until the new generation retires them.
A worker beyond :data:`TABLE_ENTRIES` (a server grown that far with TTIN) accepts
without the rule.

Stopping (:meth:`Acceptor.stop`): the worker stops watching, marks itself as not
accepting, optionally accepts whatever is already queued (so a connection made before
a stop began is served, not reset), then closes its copies of the sockets. Once every
process has closed its copy, the kernel refuses new connections.

Error handling: EMFILE, ENFILE, ENOBUFS and ENOMEM pause accepting for
:data:`ACCEPT_RETRY_S` (asyncio's own back-off); a connection the peer aborted before it
was accepted is skipped; a connection whose TLS handshake fails or times out is closed
by the loop and forgotten.

Resource handling: every accepted socket belongs to its transport once
``connect_accepted_socket`` runs; the tasks that run it are referenced here until done.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import socket
import ssl
import time
from collections.abc import Callable
from typing import final

logger = logging.getLogger("corral.error")

#: How many connections one worker may hold over its least-loaded live sibling before it
#: leaves new ones to the others. Two absorbs the accepts racing at one moment without
#: letting a burst pile up on whoever woke first.
MARGIN = 2

#: How often a worker held back by the rule looks at the table again. Short, because the
#: connections it leaves wait for a sibling; it runs only while the worker is held back.
REBALANCE_POLL_S = 0.01

#: A sibling that has not refreshed its entry for this long is not waited for. The
#: sweep refreshes every 0.25 s, so four missed sweeps mean a blocked or dead loop.
LIVE_S = 1.0

#: Pause after the process ran out of file descriptors or memory (asyncio uses 1 s).
ACCEPT_RETRY_S = 1.0

#: Connections accepted per readiness callback. Each accept is preceded by the load
#: rule, so a larger batch only saves wakeups; it cannot make the split unfair.
ACCEPT_BATCH = 16

#: Worker entries in the table. An entry is 12 bytes; a worker beyond this many (a
#: server grown past it with TTIN) accepts without taking part in the balancing.
TABLE_ENTRIES = 1024

#: The load value that means "not accepting" (stopping, retiring, at --max-requests).
NOT_ACCEPTING = 0xFFFFFFFF

_RETRY_LATER = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The peer gave up between the handshake and the accept: nothing to serve.
_SKIP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


@final
class LoadTable:
    """Per-worker load and liveness, shared by the master and every worker it forks.

    Created by the master before the first fork (an anonymous shared mapping survives
    fork, not exec). Each worker writes only its own entry; the master clears the entry
    of a worker it reaps and hands the index to the next worker. Reads are unlocked:
    a value a moment old only shifts one accept by one connection.
    """

    def __init__(self, entries: int = TABLE_ENTRIES) -> None:
        self.entries = entries
        # Layout: a header of two unsigned ints (entries handed out so far, unused), the
        # stamps (monotonic seconds: CLOCK_MONOTONIC is one clock for every process), then
        # the loads.
        self._map = mmap.mmap(-1, 8 + entries * 12)
        view = memoryview(self._map)
        self._header = view[:8].cast("I")
        self._stamps = view[8 : 8 + entries * 8].cast("d")
        self._loads = view[8 + entries * 8 :].cast("I")
        for i in range(entries):
            self._loads[i] = NOT_ACCEPTING

    @property
    def high_water(self) -> int:
        """How many entries have been handed out so far; readers scan this far."""
        return int(self._header[0])

    def claim(self, index: int) -> None:
        """The master gives entry ``index`` to a worker it is about to fork."""
        self.clear(index)
        if index >= self._header[0]:
            self._header[0] = index + 1

    def publish(self, index: int, load: int, now: float) -> None:
        """Record a worker's ``load`` (or NOT_ACCEPTING) and that it is alive at ``now``."""
        self._loads[index] = load
        self._stamps[index] = now

    def clear(self, index: int) -> None:
        """Forget a worker (the master, when it reaps it)."""
        self._loads[index] = NOT_ACCEPTING
        self._stamps[index] = 0.0

    def least_other_load(self, index: int, now: float) -> int | None:
        """The least load of the live, accepting workers other than ``index``; None if
        there is none."""
        least: int | None = None
        loads, stamps = self._loads, self._stamps
        for i in range(self._header[0]):
            load = loads[i]
            if i == index or load == NOT_ACCEPTING or now - stamps[i] > LIVE_S:
                continue
            if least is None or load < least:
                least = load
        return least


@final
class Acceptor:
    """Accepts from a worker's listening sockets and starts a protocol for each connection.

    ``load`` says how many connections the worker holds; call :meth:`load_changed`
    whenever that number drops, and :meth:`refresh` from the worker's periodic sweep.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        load: Callable[[], int],
        *,
        table: LoadTable | None = None,
        index: int = -1,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self._loop = loop
        self._sockets = sockets
        self._factory = protocol_factory
        self._load = load
        self._table = table if table is not None and 0 <= index < table.entries else None
        self._index = index
        self._tls = tls
        self._handshake_timeout = handshake_timeout if tls is not None else None
        #: Connections accepted whose protocol does not exist yet (TLS handshakes).
        self._connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._watching = False
        self._held: asyncio.TimerHandle | None = None
        self._stopped = False

    # -- watching ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start accepting. Call once, from inside the running loop."""
        for sock in self._sockets:
            sock.setblocking(False)
        self._publish()
        self._watch()

    def _watch(self) -> None:
        if self._watching or self._stopped:
            return
        self._watching = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _unwatch(self) -> None:
        if not self._watching:
            return
        self._watching = False
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())

    # -- the load rule -------------------------------------------------------------------------

    def _current_load(self) -> int:
        return self._load() + self._connecting

    def _publish(self) -> None:
        if self._table is not None:
            load = NOT_ACCEPTING if self._stopped else self._current_load()
            self._table.publish(self._index, load, time.monotonic())

    def _fair(self) -> bool:
        """Whether this worker may take the next connection (see the module docstring)."""
        if self._table is None:
            return True
        least = self._table.least_other_load(self._index, time.monotonic())
        return least is None or self._current_load() <= least + MARGIN

    def _hold(self) -> None:
        """Leave the next connections to the siblings until this worker is back in line."""
        self._unwatch()
        if self._held is None:
            self._held = self._loop.call_later(REBALANCE_POLL_S, self._recheck)

    def _recheck(self) -> None:
        self._held = None
        if self._stopped:
            return
        if self._fair():
            self._watch()
        else:
            self._held = self._loop.call_later(REBALANCE_POLL_S, self._recheck)

    def load_changed(self) -> None:
        """A connection closed: publish the new load, and accept again if now in line."""
        self._publish()
        if self._held is not None and self._fair():
            self._held.cancel()
            self._held = None
            self._watch()

    def refresh(self) -> None:
        """Tell the siblings this worker is alive (from the sweep, inside the loop)."""
        self._publish()

    # -- accepting -----------------------------------------------------------------------------

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._fair():
                self._hold()
                return
            if not self._accept_one(sock):
                return

    def _accept_one(self, sock: socket.socket) -> bool:
        """Accept and start one connection; False when there is nothing (more) to take."""
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _SKIP:
                return True
            if exc.errno in _RETRY_LATER:
                logger.error(
                    "accept: out of system resources (%s); trying again in %.0f s",
                    exc.strerror,
                    ACCEPT_RETRY_S,
                )
                self._unwatch()
                self._loop.call_later(ACCEPT_RETRY_S, self._watch)
                return False
            raise
        self._start(conn)
        return True

    def _start(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        self._connecting += 1
        self._publish()
        task = self._loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            # The loop has closed the socket (a failed or timed-out TLS handshake, a peer
            # that reset meanwhile): the client is gone or was not speaking TLS.
            logger.debug("connection dropped before it was set up: %r", exc)
        finally:
            self._connecting -= 1
            self._publish()

    # -- stopping ------------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop accepting for good and tell the siblings not to wait for this worker.

        The sockets stay open (the master replaces this worker; its successor or a
        sibling takes what is queued). Idempotent.
        """
        self._stopped = True
        self._unwatch()
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._publish()

    def stop(self, *, take_queued: int) -> int:
        """Stop accepting and close this process's copies of the listening sockets.

        Args:
            take_queued: accept up to this many connections already waiting in the
                queues first (0: none). On a stop they would otherwise be reset when
                the last copy closes; on a reload the next generation takes them.

        Returns:
            How many queued connections were taken.
        """
        self.pause()
        taken = 0
        for sock in self._sockets:
            while taken < take_queued and self._accept_one(sock):
                taken += 1
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets = []
        return taken
