"""A WebSocket ping-pong load client: N connections, one message in flight on each.

Each connection sends a small text message, waits for the echo, and sends the next,
for ``--duration`` seconds. The result is one JSON line on stdout::

    {"messages": 123456, "seconds": 5.0, "msgs_per_s": 24691.2, "p50_ms": 1.2,
     "p99_ms": 3.4, "errors": 0, "connected": 32}

It speaks RFC 6455 by hand rather than through a library, so that the client costs as
little CPU as possible and the server is what gets measured: frames are built once per
connection (a fixed mask key, which RFC 6455 section 5.3 asks to be unpredictable but no
server can check), and replies are parsed just far enough to find frame boundaries.
uvloop is used when importable. Loopback only: the host must be a 127.0.0.0/8 or ::1
address, and the run stops by itself after ``--duration`` plus a short close.

Usage: python wsclient.py --port 8000 [--host 127.0.0.1] [--path /ws]
       [--connections 32] [--duration 5] [--size 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import struct
import sys
import time
from typing import cast

#: How long to wait for all handshakes; a server that cannot accept 32 connections in
#: this time is reported as failed rather than waited for.
CONNECT_TIMEOUT_S = 10.0
#: How long to wait for the close handshake at the end before dropping the connections.
CLOSE_TIMEOUT_S = 2.0
MASK = b"\x37\xfa\x21\x3d"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (RFC 6455 section 5.2), masked with :data:`MASK`."""
    head = bytearray([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes(head) + MASK + masked


class PingPong(asyncio.Protocol):
    """One connection: handshake, then send / await echo / send again until stopped."""

    def __init__(self, host: str, port: int, path: str, payload: bytes, stats: Stats) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: "
            f"{base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.frame = masked_frame(0x1, payload)
        self.payload_len = len(payload)
        self.stats = stats
        self.buffer = bytearray()
        self.upgraded = False
        self.running = False
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        stream = cast("asyncio.Transport", transport)
        self.transport = stream
        stream.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running:
            self.stats.errors += 1
            self.running = False
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status_line + b" ":
                # Counted as an error by run() (connections that never upgraded).
                self.ready.set_result(False)
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.ready.set_result(True)
        # Walk the complete frames in the buffer (server frames are never masked).
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            n = buf[1] & 0x7F
            start = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = (buf[2] << 8) | buf[3]
                start = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                (n,) = struct.unpack_from("!Q", buf, 2)
                start = 10
            if len(buf) < start + n:
                return
            payload = bytes(buf[start : start + n])
            del buf[: start + n]
            self.frame_received(opcode, payload)

    def frame_received(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode in (0x1, 0x2, 0x0):
            if not self.running:
                return
            stats = self.stats
            if len(payload) != self.payload_len:
                stats.errors += 1
            now = time.perf_counter()
            stats.messages += 1
            stats.rtts.append(now - self.sent_at)
            if now < stats.stop_at:
                self.sent_at = now
                transport.write(self.frame)
            else:
                self.running = False
                transport.write(masked_frame(0x8, struct.pack("!H", 1000)))
        elif opcode == 0x9:  # ping: answer with a pong carrying the same data
            transport.write(masked_frame(0xA, payload))
        elif opcode == 0x8:  # the server closes: finish the handshake and go
            if self.running:
                self.stats.errors += 1
                self.running = False
            transport.close()

    def start(self) -> None:
        assert self.transport is not None
        self.running = True
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)


class Stats:
    def __init__(self) -> None:
        self.messages = 0
        self.errors = 0
        self.rtts: list[float] = []
        self.stop_at = float("inf")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(
    host: str, port: int, path: str, connections: int, duration_s: float, size: int
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stats = Stats()
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    conns: list[PingPong] = []
    for _ in range(connections):
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: PingPong(host, port, path, payload, stats), host, port
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, asyncio.TimeoutError):
            stats.errors += 1
            continue
        conns.append(proto)
    if conns:
        await asyncio.wait([c.ready for c in conns], timeout=CONNECT_TIMEOUT_S)
    live = [c for c in conns if c.ready.done() and c.ready.result()]
    stats.errors += connections - len(live)
    result: dict[str, object] = {"connected": len(live), "errors": stats.errors}
    if not live:
        for c in conns:
            if c.transport is not None:
                c.transport.abort()
        result.update(messages=0, seconds=0.0, msgs_per_s=0.0, p50_ms=None, p99_ms=None)
        return result
    started = time.perf_counter()
    stats.stop_at = started + duration_s
    for c in live:
        c.start()
    await asyncio.sleep(duration_s)
    # Every connection stops at its next echo; wait for the close handshakes.
    await asyncio.wait([c.closed for c in conns], timeout=CLOSE_TIMEOUT_S + 1.0)
    elapsed = min(time.perf_counter(), stats.stop_at) - started
    for c in conns:
        if c.transport is not None and not c.transport.is_closing():
            c.transport.abort()
    p50 = _percentile(stats.rtts, 0.50)
    p99 = _percentile(stats.rtts, 0.99)
    result.update(
        messages=stats.messages,
        seconds=round(elapsed, 3),
        msgs_per_s=round(stats.messages / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(p50 * 1000, 3) if p50 is not None else None,
        p99_ms=round(p99 * 1000, 3) if p99 is not None else None,
        errors=stats.errors,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (at most 120)")
    parser.add_argument("--size", type=int, default=32, help="message size in bytes")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    if not 0 < args.duration <= 120 or not 0 < args.connections <= 1024:
        parser.error("--duration must be in (0, 120] and --connections in (0, 1024]")
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    result = runner(
        run(args.host, args.port, args.path, args.connections, args.duration, args.size)
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["connected"] else 1


if __name__ == "__main__":
    sys.exit(main())
