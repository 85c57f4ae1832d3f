"""Every kind of exchange on each event loop corral can run (--loop)."""

from __future__ import annotations

import http.client

import pytest
from websockets.sync.client import connect

from tests.e2e.test_startup import LOOPS
from tests.harness import TIME_FACTOR, Server


@pytest.mark.parametrize("loop", LOOPS)
def test_http_and_websocket_on_each_loop(loop: str) -> None:
    """A keep-alive connection serves a plain GET, a 200 KiB upload echoed back and a
    16-chunk stream; a WebSocket echoes text and bytes; all on the chosen loop."""
    with Server("benchmarks.apps:app", "--loop", loop) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=5 * TIME_FACTOR)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello, world\n")
            upload = bytes(range(256)) * 800
            conn.request("POST", "/echo", body=upload)
            assert conn.getresponse().read() == upload
            conn.request("GET", "/stream")
            streamed = conn.getresponse()
            assert streamed.getheader("transfer-encoding") == "chunked"
            assert streamed.read() == (b"x" * 1023 + b"\n") * 16
        finally:
            conn.close()
        with connect(f"ws://{srv.host}:{srv.port}/ws", open_timeout=5 * TIME_FACTOR) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=5 * TIME_FACTOR) == "héllo"
            ws.send(b"\x00\xff" * 3000)
            assert ws.recv(timeout=5 * TIME_FACTOR) == b"\x00\xff" * 3000
