"""Sending a file's bytes on a transport: ``sendfile(2)`` when the loop can, else copies.

Used by the ``http.response.pathsend`` and ``http.response.zerocopysend`` extensions.
asyncio's ``loop.sendfile`` uses ``os.sendfile`` on plain sockets (the kernel copies
from the page cache to the socket; nothing passes through Python) and falls back to
reading and writing by itself on TLS. Loops without it (uvloop) get the same fallback
here, in bounded chunks that respect the transport's flow control.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import IO

from corral.workers.types import ClientDisconnected

#: Bytes read per step of the fallback: large enough to amortise the calls, small
#: enough that one step never holds much memory.
FALLBACK_CHUNK_BYTES = 256 * 1024


async def send_file(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    file: IO[bytes],
    offset: int,
    count: int,
    wait_writable: Callable[[], Awaitable[None]],
) -> None:
    """Send ``count`` bytes of ``file`` from ``offset``.

    Error handling: a peer that goes away mid-file raises :class:`ClientDisconnected`;
    a file shorter than ``count`` raises ``RuntimeError`` (the framing promised more).

    Resource handling: the file is not closed here; the caller owns it.
    """
    if count <= 0:
        return
    try:
        sent = await loop.sendfile(transport, file, offset, count)
    except (NotImplementedError, AttributeError):
        sent = await _copy(transport, file, offset, count, wait_writable)
    except (ConnectionError, RuntimeError) as exc:
        if transport.is_closing():
            raise ClientDisconnected("client disconnected during a file") from None
        raise RuntimeError(f"sending the file failed: {exc}") from None
    if sent != count:
        raise RuntimeError(f"the file ended after {sent} of {count} bytes")


async def _copy(
    transport: asyncio.Transport,
    file: IO[bytes],
    offset: int,
    count: int,
    wait: Callable[[], Awaitable[None]],
) -> int:
    fd = file.fileno()
    sent = 0
    while sent < count:
        data = os.pread(fd, min(FALLBACK_CHUNK_BYTES, count - sent), offset + sent)
        if not data:
            break
        if transport.is_closing():
            raise ClientDisconnected("client disconnected during a file")
        transport.write(data)
        sent += len(data)
        await wait()
    return sent
