"""In-process cost of one request on corral's hot path (no sockets, no wrk).

The real ``HTTPConnection`` + ``RequestCycle`` + ``HTTPCore`` on a transport whose
``write`` only counts, fed the same request N times. It reports microseconds per
request and, with ``--calls``, Python function calls per request (cProfile): the call
count is deterministic, so it holds up on a busy machine where timings do not.

    python3 benchmarks/hotpath.py                 # hello GET, best of 5
    python3 benchmarks/hotpath.py --echo          # 64 KiB POST echo
    python3 benchmarks/hotpath.py --calls         # function calls per request
    python3 benchmarks/hotpath.py --browser --http httptools   # a 12-line head, llhttp
    python3 benchmarks/hotpath.py --ws            # WebSocket echo of a 16-byte text message

This is a tool for A/B comparisons of the hot path while changing it; the
side-by-side figures against other servers come from ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.apps import app
from corral.config import Config
from corral.workers.connection import HTTPConnection
from corral.workers.server import WorkerServer

HELLO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
# What a browser sends: a dozen header lines, the usual head on a real site.
BROWSER = (
    b"GET /items/42?q=x HTTP/1.1\r\nHost: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\nCookie: a=b; c=d\r\n\r\n"
)
ECHO_BODY = b"x" * 65536
ECHO = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: 65536\r\n\r\n" + ECHO_BODY
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# One client text frame: FIN, text, masked (a zero key leaves the payload as it is).
WS_PAYLOAD = b"hello, websocket"
WS_FRAME = b"\x81" + bytes([0x80 | len(WS_PAYLOAD)]) + b"\x00\x00\x00\x00" + WS_PAYLOAD


class CountingTransport(asyncio.Transport):
    """Takes writes and counts bytes; never pauses."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.written = 0
        self.protocol = protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol  # a WebSocket upgrade hands the transport over

    def get_protocol(self) -> asyncio.Protocol:
        return self.protocol

    def write(self, data: Any) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _serve(n: int, request: bytes, chunk: int, http: str) -> float:
    loop = asyncio.get_running_loop()
    config = Config(app="x:y", access_log=False, http=http)
    options: dict[str, Any] = {}
    try:  # a revision from before the message channel wires WebSockets by hand (A/B)
        from corral.workers.websocket import make_websocket_starter  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        options["start_websocket"] = make_websocket_starter(config)
    server = WorkerServer(config, app, {}, loop, **options)
    conn = HTTPConnection(server)
    transport = CountingTransport(conn)
    conn.connection_made(transport)
    if request is WS_FRAME:
        conn.data_received(UPGRADE)
        for _ in range(10):  # the app accepts: the 101 goes out
            await asyncio.sleep(0)
        assert transport.written, "no 101"
        transport.written = 0
    pieces = [request[i : i + chunk] for i in range(0, len(request), chunk)]
    start = time.perf_counter()
    for _ in range(n):
        protocol = transport.protocol  # after an upgrade, the session's
        for piece in pieces:
            protocol.data_received(piece)
        # Let the app's task run to the end (two turns cover hello and echo).
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    per = len(ECHO_BODY) if request is ECHO else 2 + len(WS_PAYLOAD) if request is WS_FRAME else 13
    expected = n * per
    assert transport.written >= expected, (transport.written, expected)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--echo", action="store_true", help="64 KiB POST echo")
    parser.add_argument("--browser", action="store_true", help="GET with a browser's head")
    parser.add_argument("--ws", action="store_true", help="WebSocket echo, 16-byte text")
    parser.add_argument("--calls", action="store_true", help="count calls per request")
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    args = parser.parse_args()
    request = ECHO if args.echo else BROWSER if args.browser else WS_FRAME if args.ws else HELLO
    chunk = 65536  # how a socket read would cut it
    n = args.n // 10 if args.echo else args.n
    if args.calls:
        profile = cProfile.Profile()
        profile.enable()
        asyncio.run(_serve(n, request, chunk, args.http))
        profile.disable()
        stats = pstats.Stats(profile)
        print(f"{stats.total_calls / n:.1f} function calls per request")  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(25)
        return
    best = min(asyncio.run(_serve(n, request, chunk, args.http)) for _ in range(args.rounds))
    print(f"{best / n * 1e6:.2f} us per request (best of {args.rounds} rounds of {n})")


if __name__ == "__main__":
    main()
