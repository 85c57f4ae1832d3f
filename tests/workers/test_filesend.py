"""send_file on real loops and a real socket pair: sendfile(2) on asyncio, the bounded copy
on uvloop (which has no loop.sendfile), a file shorter than promised, a peer that left."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from corral.workers.filesend import FALLBACK_CHUNK_BYTES, send_file
from corral.workers.types import ClientDisconnected

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

#: More than two fallback chunks, and not a multiple of one.
SIZE = 2 * FALLBACK_CHUNK_BYTES + 12345


def run(loop_name: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def connected() -> tuple[asyncio.Transport, asyncio.Protocol, socket.socket]:
    """A transport on one end of a socket pair, and the other end to read from."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    return transport, protocol, theirs


async def read_all(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        if not chunk:
            break
        data += chunk
    return data


async def writable() -> None:
    """The flow-control wait send_file is given (the peer reads concurrently)."""


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256))
    return path


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_file_range_arrives_whole(loop_name: str, payload: Path) -> None:
    """offset and count are honoured, on both loops (uvloop takes the copying path)."""
    offset, count = 1000, SIZE - 2000

    async def main() -> bytes:
        transport, _, peer = await connected()
        with payload.open("rb") as file:
            reader = asyncio.ensure_future(read_all(peer, count))
            await send_file(asyncio.get_running_loop(), transport, file, offset, count, writable)
            data = await reader
        transport.close()
        peer.close()
        return data

    assert run(loop_name, main) == payload.read_bytes()[offset : offset + count]


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_file_shorter_than_promised_is_an_error(loop_name: str, payload: Path) -> None:
    """The framing promised count bytes: a file that ends first is a RuntimeError."""

    async def main() -> None:
        transport, _, peer = await connected()
        reader = asyncio.ensure_future(read_all(peer, SIZE))
        try:
            with payload.open("rb") as file, pytest.raises(RuntimeError, match="ended after"):
                await send_file(asyncio.get_running_loop(), transport, file, 0, SIZE + 10, writable)
        finally:
            transport.close()
            peer.close()
            await asyncio.wait([reader], timeout=10)

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_peer_gone_mid_file_is_a_disconnect(loop_name: str, payload: Path) -> None:
    """The transport closes under the copy: ClientDisconnected, an OSError, not a crash."""

    async def main() -> None:
        transport, _, peer = await connected()
        peer.close()
        transport.close()
        with payload.open("rb") as file, pytest.raises(ClientDisconnected):
            await send_file(asyncio.get_running_loop(), transport, file, 0, SIZE, writable)

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_nothing_to_send_is_no_call(loop_name: str, payload: Path) -> None:
    """count 0 returns at once (a zero-length pathsend)."""

    async def main() -> None:
        transport, _, peer = await connected()
        with payload.open("rb") as file:
            await send_file(asyncio.get_running_loop(), transport, file, 0, 0, writable)
        transport.close()
        peer.close()

    run(loop_name, main)
