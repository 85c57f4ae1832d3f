"""Deadlines and limits end to end: slowloris, stalled bodies, big heads, admission.

Timeouts are set short with CLI flags; the worker checks deadlines every 0.25 s, so
every bound below allows that much slack on top of the timeout.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time

import pytest

from tests.e2e.test_http import Client, request_bytes
from tests.harness import TIME_FACTOR, Server

APP = "tests.apps_http:app"

#: Deadline granularity: the worker's sweep interval, plus scheduling noise.
SLACK_S = 0.6 * TIME_FACTOR


def closed_within(client: Client, seconds: float) -> tuple[bytes, str, float]:
    """Wait for the server to close; return what it sent, FIN or RST, and when."""
    started = time.monotonic()
    client.sock.settimeout(seconds * TIME_FACTOR)
    data, how = client.read_until_closed()
    return data, how, time.monotonic() - started


# -- B6: slowloris and silent connections ------------------------------------------------------


def test_slowloris_is_cut_at_the_header_deadline() -> None:
    """B6: one byte every 0.3 s never extends the header deadline (1 s, from the first byte)."""
    with Server(APP, "-w", "1", "--timeout-header", "1") as server, Client(server) as client:
        started = time.monotonic()
        client.send(b"GET / HTTP/1.1\r\n")
        trickle = b"X-Slow: " + b"a" * 100
        received = b""
        for byte in trickle:
            readable, _, _ = select.select([client.sock], [], [], 0.3)
            if readable:
                received, _ = client.read_until_closed()
                break
            try:
                client.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 ")
    assert 0.9 <= elapsed <= 1.0 + SLACK_S
    server.wait_for_line("header timeout")


def test_connection_that_never_sends_is_closed() -> None:
    """B6: a silent new connection is closed (quietly) after the header timeout."""
    args = ["--timeout-header", "0.5", "--timeout-keep-alive", "30"]
    with Server(APP, "-w", "1", *args) as server, Client(server) as client:
        data, how, elapsed = closed_within(client, 5)
    assert (data, how) == (b"", "fin")
    assert 0.4 <= elapsed <= 0.5 + SLACK_S


def test_keep_alive_idle_timeout() -> None:
    with Server(APP, "-w", "1", "--timeout-keep-alive", "0.5") as server, Client(server) as client:
        assert client.request().status == 200
        data, how, elapsed = closed_within(client, 5)
    assert (data, how) == (b"", "fin")
    assert 0.4 <= elapsed <= 0.5 + SLACK_S


# -- B7: request bodies ------------------------------------------------------------------------


def test_stalled_body_gets_408_and_the_app_sees_disconnect() -> None:
    """B7: Content-Length 100000, 10 bytes, then silence -> 408 after --timeout-body."""
    with Server(APP, "-w", "1", "--timeout-body", "1") as server, Client(server) as client:
        client.send(
            b"POST /wait-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n0123456789"
        )
        data, _how, elapsed = closed_within(client, 5)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert 0.9 <= elapsed <= 1.0 + SLACK_S
        server.wait_for_line("APP wait-body: disconnect")
        server.wait_for_line("body timeout")


def test_body_deadline_is_idle_time_not_total_time() -> None:
    """A body that keeps coming (a piece every 0.4 s, 1.6 s in all) is not cut at 1 s."""
    with Server(APP, "-w", "1", "--timeout-body", "1") as server, Client(server) as client:
        client.send(b"POST /wait-body HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n")
        for _ in range(4):
            time.sleep(0.4)  # the scenario: a slow but steady client
            client.send(b"x" * 10)
        response = client.read("POST")
    assert response.status == 200
    assert response.body == b"40"


def test_max_body_size() -> None:
    """A declared body over --max-body-size is 413 before any 100 Continue; so is a chunked one."""
    with Server(APP, "-w", "1", "--max-body-size", "100") as server:
        with Client(server) as client:
            client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 101\r\n\r\n"
            )
            data, _ = client.read_until_closed()
            assert data.startswith(b"HTTP/1.1 413 ")
        with Client(server) as client:
            client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"40\r\n"
                + b"x" * 64
                + b"\r\n"
                + b"40\r\n"
                + b"x" * 64
                + b"\r\n"
            )
            data, _ = client.read_until_closed()
            assert data.startswith(b"HTTP/1.1 413 ")
        with Client(server) as client:
            assert client.request("POST", "/echo", body=b"x" * 100).status == 200


# -- B8: request heads -------------------------------------------------------------------------


def _head_of_size(size: int) -> bytes:
    """A GET whose head (request line to the blank line) is exactly ``size`` bytes."""
    base = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n"
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(base)))


def test_huge_header_is_431() -> None:
    """B8: a 20 KiB header -> 431 and close, with a log line that says why."""
    with Server(APP, "-w", "1") as server, Client(server) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20480 + b"\r\n\r\n")
        data, _ = client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 431 ")
        server.wait_for_line(r"bad request from 127\.0\.0\.1: .*(431)")


def test_many_small_headers_are_rejected() -> None:
    """B8: 10,000 tiny headers never reach the app."""
    with Server(APP, "-w", "1") as server, Client(server) as client:
        client.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        # The server may answer and close before we finish sending.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sock.sendall(b"".join(b"h%d: v\r\n" % i for i in range(10000)) + b"\r\n")
        data, _ = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(("size", "status"), [(16384, 200), (16385, 431)])
def test_head_size_limit_boundary(size: int, status: int) -> None:
    """B8: a head of exactly --max-header-size bytes is served; one byte more is 431."""
    with Server(APP, "-w", "1") as server, Client(server) as client:
        head = _head_of_size(size)
        assert len(head) == size
        client.send(head)
        if status == 200:
            assert client.read().status == 200
        else:
            assert client.read_until_closed()[0].startswith(b"HTTP/1.1 431 ")


# -- B23: --limit-concurrency ------------------------------------------------------------------


def test_limit_concurrency_counts_requests_not_connections() -> None:
    """B23: idle keep-alive connections never cause a 503; a second request in flight does."""
    with Server(APP, "-w", "1", "--limit-concurrency", "1") as server:
        with Client(server) as idle, Client(server) as other:
            assert idle.request().status == 200  # now idle, kept alive
            assert other.request().status == 200
            start = len(server.lines)
            with Client(server) as busy, Client(server) as refused:
                busy.send(request_bytes("GET", "/sleep?s=1"))
                server.wait_for_line("APP sleep: started", start=start)
                refused.send(request_bytes("GET", "/"))
                response = refused.read()
                assert response.status == 503
                assert response.header("retry-after") == "1"
                assert response.header("content-length") == str(len(response.body))
                assert refused.read_until_closed() == (b"", "fin")
                assert busy.read().body == b"slept"
            # The slot is free again, for the idle connection too.
            assert idle.request().status == 200
        server.wait_for_line(r'"GET /" 503 ', start=start)


# -- write stalls ------------------------------------------------------------------------------


def test_client_that_stops_reading_is_cut_after_the_write_timeout() -> None:
    """--timeout-write: a response nobody reads is aborted; the app's send raises."""
    with Server(APP, "-w", "1", "--timeout-write", "1") as server:
        client = Client(server)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            start = len(server.lines)
            client.send(request_bytes("GET", "/big?n=20000000"))
            server.wait_for_line("stopped reading the response", start=start, timeout=10)
            server.wait_for_line("APP big: send raised ClientDisconnected", start=start)
        finally:
            client.sock.close()


def test_error_response_survives_an_unread_upload() -> None:
    """A 413 while the client is still uploading reaches it: the server reads and drops
    the rest for a while (a close with unread input would send RST, and the client's
    stack could discard the 413 with it)."""
    with Server(APP, "-w", "1", "--max-body-size", "1000") as server:
        for _ in range(5):
            with Client(server) as client:
                client.send(request_bytes("POST", "/echo", body=b"x" * 2_000_000))
                data, how = client.read_until_closed()
            assert data.startswith(b"HTTP/1.1 413 ")
            assert how == "fin"
