"""The load table and the acceptor's rule, in one process.

The table is plain shared memory: tested without a loop. The acceptor runs on a real
event loop with real loopback sockets; two acceptors stand for two workers (each on its
own duplicate of the listening socket, which shares the kernel's queue like a fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from corral.workers.accept import LIVE_S, MARGIN, NOT_ACCEPTING, Acceptor, LoadTable


def test_the_least_load_counts_only_live_accepting_siblings() -> None:
    """Itself, a worker that is not accepting and one silent for over LIVE_S are left out."""
    table = LoadTable(entries=8)
    now = 1000.0
    for index in range(5):
        table.claim(index)
    assert table.high_water == 5
    table.publish(0, 7, now)  # the asking worker itself
    table.publish(1, 3, now - LIVE_S - 0.1)  # silent: its loop is blocked or it died
    table.publish(2, NOT_ACCEPTING, now)  # stopping
    table.publish(3, 5, now - LIVE_S / 2)
    table.publish(4, 6, now)
    assert table.least_other_load(0, now) == 5
    table.clear(3)
    assert table.least_other_load(0, now) == 6
    table.clear(4)
    assert table.least_other_load(0, now) is None


def test_entries_beyond_the_high_water_mark_are_not_read() -> None:
    """Only entries the master handed out count (stale memory beyond them does not)."""
    table = LoadTable(entries=4)
    table.claim(0)
    table.publish(3, 0, 50.0)
    assert table.least_other_load(0, 50.0) is None


class Worker:
    """An acceptor and the connections it made, standing for one worker process."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, table: LoadTable, index: int
    ) -> None:
        self.protocols: list[asyncio.Protocol] = []
        self.acceptor = Acceptor(
            loop, [sock], self._make, lambda: len(self.protocols), table=table, index=index
        )

    def _make(self) -> asyncio.Protocol:
        protocol = asyncio.Protocol()
        self.protocols.append(protocol)
        return protocol


@contextlib.contextmanager
def listening() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    try:
        yield sock
    finally:
        sock.close()


async def settle(until: Callable[[], bool], seconds: float = 5) -> None:
    """A bounded poll inside the loop (the connections are set up by loop callbacks)."""
    for _ in range(int(seconds / 0.005)):
        if until():
            return
        await asyncio.sleep(0.005)


def test_two_acceptors_on_one_queue_split_a_burst_within_the_margin() -> None:
    """30 queued connections, two acceptors woken together: neither takes them all; the
    split differs by at most MARGIN + 1 (the loop runs the first one's callback first)."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        table = LoadTable(entries=4)
        with listening() as sock, contextlib.ExitStack() as stack:
            workers = []
            for index in range(2):
                table.claim(index)
                dup = stack.enter_context(sock.dup())
                workers.append(Worker(loop, dup, table, index))
            clients = [
                stack.enter_context(socket.create_connection(sock.getsockname())) for _ in range(30)
            ]
            for worker in workers:
                worker.acceptor.start()
            await settle(lambda: sum(len(w.protocols) for w in workers) == len(clients))
            shares = [len(w.protocols) for w in workers]
            for worker in workers:
                worker.acceptor.stop(take_queued=0)
            return shares

    shares = asyncio.run(main())
    assert sum(shares) == 30
    assert max(shares) - min(shares) <= MARGIN + 1, shares


def test_a_silent_sibling_does_not_hold_the_others_back() -> None:
    """A sibling that last refreshed over LIVE_S ago (blocked loop, dead) is not waited for."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        table = LoadTable(entries=4)
        table.claim(0)
        table.claim(1)
        table.publish(1, 0, time.monotonic() - LIVE_S - 1)
        with listening() as sock, contextlib.ExitStack() as stack:
            worker = Worker(loop, stack.enter_context(sock.dup()), table, 0)
            for _ in range(10):
                stack.enter_context(socket.create_connection(sock.getsockname()))
            worker.acceptor.start()
            await settle(lambda: len(worker.protocols) == 10)
            worker.acceptor.stop(take_queued=0)
            return len(worker.protocols)

    assert asyncio.run(main()) == 10


@pytest.mark.parametrize("take", [0, 4])
def test_stop_takes_what_is_queued_then_closes_its_copy(take: int) -> None:
    """stop(take_queued=N) accepts up to N waiting connections, then closes the socket."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        table = LoadTable(entries=2)
        table.claim(0)
        with listening() as sock, contextlib.ExitStack() as stack:
            dup = stack.enter_context(sock.dup())
            worker = Worker(loop, dup, table, 0)
            worker.acceptor.start()
            worker.acceptor.pause()  # queued from here on
            for _ in range(6):
                stack.enter_context(socket.create_connection(sock.getsockname()))
            taken = worker.acceptor.stop(take_queued=take)
            await settle(lambda: len(worker.protocols) == taken)
            assert dup.fileno() == -1
            return taken, len(worker.protocols)

    assert asyncio.run(main()) == (take, take)
