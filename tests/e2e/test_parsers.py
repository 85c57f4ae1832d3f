"""``--http h11`` and ``--http httptools`` answer every request alike, over real sockets.

The head readers are compared differentially in tests/protocol (test_request.py, and the
corpus and hardening tests run with each). Here two real servers, one per reader, get
the same bytes: every case of the request corpus (smuggling attempts, bad framing,
pipelines, upgrades, 100-continue) and a few heads the two readers treat differently
inside (where llhttp declines and h11 reads). The app answers with what it read, so
a request read differently, or accepted by one and refused by the other, shows up as
different bytes on the wire.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import TIME_FACTOR, Server

CORPUS = Path(__file__).resolve().parent.parent / "corpus"

EXTRA = [
    # A browser's head: the common case for a real site.
    b"GET /items/42?q=x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n"
    b"Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n"
    b"Cookie: a=b; c=d\r\nX-Padded:  \t v \t \r\nX-Empty:\r\n\r\n",
    # A method llhttp does not know: h11 reads it on both servers.
    b"PURGE-ALL /cache HTTP/1.1\r\nHost: x\r\n\r\n",
    # llhttp takes these request lines; h11 refuses them, on both servers.
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / RTSP/1.0\r\nHost: x\r\n\r\n",
    # A Content-Length past 2**64 - 1: llhttp declines, h11 reads it (and the body is
    # cut short by the client's EOF).
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
    # Pipelined plain requests with bodies, then one h11 must read (chunked).
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
]

_DATE = re.compile(rb"(?im)^date: [^\r]*\r\n")


def exchange(server: Server, raw: bytes) -> bytes:
    """Send ``raw``, close the sending side, and return everything the server wrote."""
    with socket.create_connection((server.host, server.port), timeout=5 * TIME_FACTOR) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    return _DATE.sub(b"", b"".join(received))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    """One server per head reader, the same app and options otherwise."""
    args = ("tests.apps:request_echo", "--log-level", "debug")
    with Server(*args, "--http", "h11") as h11, Server(*args, "--http", "httptools") as llhttp:
        h11.wait_for_line("request heads are read with h11's grammar")
        llhttp.wait_for_line("request heads are read with httptools")
        yield h11, llhttp


CASES = [case.read_bytes() for case in sorted(CORPUS.glob("*.http"))] + EXTRA


def test_every_case_is_answered_alike(servers: tuple[Server, Server]) -> None:
    """Each case gives the same bytes from both servers; most are served by the app."""
    h11, llhttp = servers
    served = 0
    for raw in CASES:
        expected = exchange(h11, raw)
        assert exchange(llhttp, raw) == expected, raw
        served += expected.count(b'{"method": ')
    # Not vacuous: the app read and answered the corpus's requests, not just errors.
    assert served >= 30


def test_auto_reads_heads_with_httptools_when_installed() -> None:
    """``--http auto`` (the default) picks httptools, which the test extra installs."""
    with Server(
        "tests.apps:request_echo", "--log-level", "debug", env={"CORRAL_HTTP": "auto"}
    ) as srv:
        srv.wait_for_line("request heads are read with httptools")
        response = exchange(srv, b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'"path": "/x"' in response
