"""HTTP/1.1 end to end: the ASGI scope, request and response framing, errors, keep-alive.

Every test talks to a real ``python -m corral`` over real sockets. Responses are parsed
with an h11 client (:class:`Reader`), which fails loudly on any framing mistake, such
as a body sent after a HEAD response.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest

from tests.harness import TIME_FACTOR, Server, wait_until

APP = "tests.apps_http:app"


# -- client helpers (also used by test_http_limits.py) ---------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None


class Reader:
    """Reads successive responses from one socket, keeping bytes that follow each one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self, method: str = "GET") -> Response:
        """One response to a ``method`` request. Raises h11.RemoteProtocolError if cut."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        if self.buffer:  # (b"" would mean end of stream to h11)
            conn.receive_data(self.buffer)
            self.buffer = b""
        response = Response(0, [])
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.InformationalResponse):
                response.informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response.status = event.status_code
                response.headers = [(k.decode(), v.decode()) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                response.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.buffer = conn.trailing_data[0]
                return response
            else:
                raise AssertionError(f"connection closed before a response: {event!r}")


def request_bytes(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body is not None and not any(n.lower() == "transfer-encoding" for n, _ in headers or []):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Client:
    """A raw keep-alive connection to ``srv``."""

    def __init__(self, srv: Server, timeout: float = 5) -> None:
        self.sock = srv.connect(timeout)
        self.sock.settimeout(timeout * TIME_FACTOR)
        self.reader = Reader(self.sock)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> Response:
        self.sock.sendall(request_bytes(method, target, headers, body))
        return self.reader.read(method)

    def read(self, method: str = "GET") -> Response:
        return self.reader.read(method)

    def read_until_closed(self) -> tuple[bytes, str]:
        """Everything until the server closes; says whether it was a FIN or a RST."""
        chunks = [self.reader.buffer]
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return b"".join(chunks), "rst"
            if not data:
                return b"".join(chunks), "fin"
            chunks.append(data)


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def errors_logged(srv: Server, start: int = 0) -> list[str]:
    return [line for line in srv.lines[start:] if " ERROR " in line or "Traceback" in line]


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    with Server(APP, "-w", "1") as server:
        yield server


# -- the scope -------------------------------------------------------------------------------


def test_scope_has_every_key(srv: Server) -> None:
    """path is percent-decoded, raw_path and query_string are as sent, headers keep order."""
    with Client(srv) as client:
        client.send(
            b"GET /scope/a%20b%2Fc%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: test\r\n"
            b"X-Dup: 1\r\nUser-Agent: t\r\nX-DUP: 2\r\n\r\n"
        )
        response = client.read()
        scope = json.loads(response.body)
        port = client.sock.getsockname()[1]
    assert response.status == 200
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/a b/cé"
    assert scope["raw_path"] == "/scope/a%20b%2Fc%C3%A9"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        ["host", "test"],
        ["x-dup", "1"],
        ["user-agent", "t"],
        ["x-dup", "2"],
    ]
    assert scope["client"] == ["127.0.0.1", port]
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert scope["state"] == ["shared", "started"]


def test_scope_http_10_and_absolute_form(srv: Server) -> None:
    """HTTP/1.0 is reported as "1.0"; an absolute-form target is served by its path."""
    with Client(srv) as client:
        client.send(b"GET /scope HTTP/1.0\r\n\r\n")
        scope = json.loads(client.read().body)
    assert scope["http_version"] == "1.0"
    with Client(srv) as client:
        client.send(b"GET http://example.com/scope/x?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        scope = json.loads(client.read().body)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/scope/x",
        "/scope/x",
        "q=1",
    )


def test_scope_on_a_unix_socket(tmp_path: Path) -> None:
    """server is [path, None] (spec 2.2) and client is None."""
    path = str(tmp_path / "s.sock")
    with Server(APP, "-w", "1", "--uds", path) as server:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(5 * TIME_FACTOR)
            sock.connect(path)
            sock.sendall(request_bytes("GET", "/scope"))
            scope = json.loads(Reader(sock).read().body)
        server.wait_for_line(r'unix "GET /scope" 200 ')
    assert scope["server"] == [path, None]
    assert scope["client"] is None


def test_root_path() -> None:
    """--root-path is the scope's root_path, and path includes it (ASGI spec)."""
    with Server(APP, "-w", "1", "--root-path", "/api") as server, Client(server) as client:
        scope = json.loads(client.request("GET", "/scope/x").body)
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope/x"
    assert scope["raw_path"] == "/scope/x"


# -- request bodies --------------------------------------------------------------------------


def test_request_body_content_length_and_chunked(srv: Server) -> None:
    """Both framings reach the app de-chunked; a 2 MiB body streams through."""
    with Client(srv) as client:
        assert client.request("POST", "/echo", body=b"hello body").body == b"hello body"
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        assert client.read().body == b"abcdefg"
        big = bytes(range(256)) * 8192
        client.send(request_bytes("POST", "/echo", body=big))
        response = client.read()
    assert response.body == big


def test_100_continue_only_when_the_app_reads(srv: Server) -> None:
    """100 Continue goes out when the app calls receive(), never if it answers first."""
    with Client(srv) as client:
        sent = time.monotonic()
        client.send(
            b"POST /late-receive?s=0.3 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Content-Length: 4\r\n\r\n"
        )
        informational = client.sock.recv(100)
        # The 100 followed the app's call to receive() (0.3 s later), not the head.
        assert time.monotonic() - sent >= 0.25
        assert informational.startswith(b"HTTP/1.1 100 ")
        client.send(b"body")
        client.reader.buffer = informational
        response = client.read("POST")
    assert response.informational == [100]
    assert response.body == b"body"
    with Client(srv) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        response = client.read("POST")
        assert response.informational == []
        assert response.status == 200
        # The body was never asked for, so the connection cannot be reused.
        assert client.read_until_closed() == (b"", "fin")


# -- response framing ------------------------------------------------------------------------


def test_transfer_encoding_from_the_app_is_ignored(srv: Server) -> None:
    with Client(srv) as client:
        response = client.request("GET", "/app-framing")
        assert response.header("transfer-encoding") is None
        assert response.header("content-length") == "4"
        assert response.body == b"body"
        assert client.request().status == 200  # the framing held: the connection is reusable


def test_chunked_when_no_content_length(srv: Server) -> None:
    with Client(srv) as client:
        response = client.request("GET", "/stream?n=3")
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert response.body == b"chunk0;chunk1;chunk2;"


def test_head_keeps_headers_drops_body_and_connection_is_reusable(srv: Server) -> None:
    """B25: HEAD gets the GET headers (Content-Length 10) and no body byte."""
    with Client(srv) as client:
        client.send(request_bytes("HEAD", "/head-body") + request_bytes("GET", "/head-body"))
        head = client.read("HEAD")
        get = client.read("GET")
    assert head.status == 200
    assert head.header("content-length") == "10"
    assert head.body == b""
    assert get.body == b"0123456789"


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_have_no_body(srv: Server, code: int) -> None:
    """B25: the app's body is dropped, no Transfer-Encoding, the connection is reused."""
    with Client(srv) as client:
        client.send(request_bytes("GET", f"/status?code={code}") + request_bytes("GET", "/"))
        response = client.read()
        after = client.read()
    assert response.status == code
    assert response.body == b""
    assert response.header("transfer-encoding") is None
    if code == 204:
        assert response.header("content-length") is None  # RFC 9110 section 8.6
    assert after.body == b"hello"


def test_body_longer_than_content_length_in_later_message_cuts(srv: Server) -> None:
    """B25: send raises, the connection closes, the pipelined request is never answered."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(request_bytes("GET", "/too-long") + request_bytes("GET", "/"))
        data, _ = client.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 5" in head
    assert body == b"abc"  # the next request was not answered, nor the excess sent
    srv.wait_for_line("too-long: send raised RuntimeError", start=start)
    srv.wait_for_line("ERROR exception in ASGI application", start=start)


def test_body_longer_than_content_length_in_first_message_is_500(srv: Server) -> None:
    """The head is still held at the first body message, so the client gets a clean 500."""
    start = len(srv.lines)
    with Client(srv) as client:
        response = client.request("GET", "/too-long?first=1")
        assert response.status == 500
        assert response.header("connection") == "close"
        assert client.read_until_closed() == (b"", "fin")
    srv.wait_for_line("too-long: send raised RuntimeError", start=start)
    srv.wait_for_line("ERROR exception in ASGI application", start=start)


def test_body_shorter_than_content_length_is_500(srv: Server) -> None:
    start = len(srv.lines)
    with Client(srv) as client:
        assert client.request("GET", "/too-short").status == 500
    srv.wait_for_line("ERROR exception in ASGI application", start=start)


# -- application errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "logged"),
    [
        ("/raise-before", "exception in ASGI application"),
        ("/raise-after-start", "exception in ASGI application"),
        ("/return-early", "ASGI application returned without completing the response"),
    ],
)
def test_failure_before_the_body_is_a_clean_500(srv: Server, route: str, logged: str) -> None:
    """B26 and held heads: an exception or an early return before any body -> 500."""
    start = len(srv.lines)
    with Client(srv) as client:
        response = client.request("GET", route)
        assert response.status == 500
        assert response.header("content-length") == str(len(response.body))
        assert response.header("connection") == "close"
        assert response.header("server") == "corral"
        assert b"raised" not in response.body  # no exception details for the client
        assert client.read_until_closed() == (b"", "fin")
    srv.wait_for_line(f"ERROR {logged}", start=start)
    srv.wait_for_line(rf'"GET {route}" 500 ', start=start)


@pytest.mark.parametrize("route", ["/raise-mid-body", "/return-mid"])
def test_failure_after_the_body_started_cuts_the_connection(srv: Server, route: str) -> None:
    """B26: the chunked body is never terminated, so the client cannot mistake it."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(request_bytes("GET", route))
        data, _ = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")
    srv.wait_for_line("ERROR ", start=start)
    srv.wait_for_line(rf'"GET {route}" 200 7 ', start=start)  # the cut response is logged


def test_response_splitting_is_refused(srv: Server) -> None:
    """B9: a CR LF from the path in a header makes send raise; the client gets a 500."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(b"GET /reflect/a%0d%0aX-Evil:%201 HTTP/1.1\r\nHost: t\r\n\r\n")
        data, _ = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 500 ")
    assert b"x-evil" not in data.lower()
    srv.wait_for_line("reflect: send raised RuntimeError", start=start)
    srv.wait_for_line("ERROR exception in ASGI application", start=start)


@pytest.mark.parametrize("name", ["bad name", "bad:name", "bad[name"])
def test_invalid_response_header_name_is_500(srv: Server, name: str) -> None:
    from urllib.parse import quote

    start = len(srv.lines)
    with Client(srv) as client:
        response = client.request("GET", f"/bad-header-name?name={quote(name)}")
    assert response.status == 500
    assert all(k != name for k, _ in response.headers)
    srv.wait_for_line("ERROR exception in ASGI application", start=start)


def test_client_leaving_mid_stream_is_not_an_error(srv: Server) -> None:
    """B22: send raises an OSError subclass, receive() says http.disconnect, no ERROR log."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(request_bytes("GET", "/forever"))
        assert client.sock.recv(100).startswith(b"HTTP/1.1 200 ")
        reset(client.sock)
    srv.wait_for_line(
        "forever: send raised ClientDisconnected oserror=True receive=http.disconnect", start=start
    )
    with Client(srv) as client:
        assert client.request().status == 200  # the worker is fine
    assert errors_logged(srv, start) == []


def test_long_poll_learns_that_the_client_closed(srv: Server) -> None:
    """After the body, receive() returns http.disconnect once the client closes."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(request_bytes("POST", "/long-poll", body=b"hi"))
    srv.wait_for_line("long-poll: http.disconnect after body=b'hi'", start=start, timeout=3)
    assert errors_logged(srv, start) == []


def test_half_closed_client_still_gets_its_response(srv: Server) -> None:
    """A client that shuts its sending side after the request (nc -N) is answered."""
    with Client(srv) as client:
        client.send(request_bytes("POST", "/echo", body=b"half") + request_bytes("GET", "/"))
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read("POST").body == b"half"
        assert client.read().body == b"hello"  # the pipelined one too
        assert client.read_until_closed() == (b"", "fin")


# -- default headers -------------------------------------------------------------------------


def test_date_and_server_headers(srv: Server) -> None:
    with Client(srv) as client:
        response = client.request()
    assert response.header("server") == "corral"
    with Client(srv) as client:
        assert client.request("GET", "/custom-server").header("server") == "app"  # no duplicate
    date = response.header("date")
    assert date is not None
    assert date.endswith(" GMT")
    sent = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(sent - time.time()) < 5


def test_headers_switchable_and_extra_defaults() -> None:
    """--no-server-header, --no-date-header, --header; the app's own header wins."""
    args = ["--no-server-header", "--no-date-header", "--header", "X-Frame-Options: DENY"]
    with Server(APP, "-w", "1", *args) as server, Client(server) as client:
        plain = client.request()
        custom = client.request("GET", "/custom-server")
    assert plain.header("server") is None
    assert plain.header("date") is None
    assert plain.header("x-frame-options") == "DENY"
    assert custom.header("server") == "app"
    assert custom.header("x-frame-options") == "app"


# -- keep-alive and pipelining ---------------------------------------------------------------


def test_pipelined_requests_answered_in_order(srv: Server) -> None:
    with Client(srv) as client:
        client.send(
            request_bytes("GET", "/sleep?s=0.2")
            + request_bytes("POST", "/echo", body=b"second")
            + request_bytes("GET", "/stream?n=2")
        )
        assert client.read().body == b"slept"
        assert client.read().body == b"second"
        assert client.read().body == b"chunk0;chunk1;"


def test_many_pipelined_requests(srv: Server) -> None:
    """More pipelined bytes than the head limit: reading pauses, nothing is lost."""
    count = 600  # about 30 KiB of requests, more than the 16 KiB of buffered pipeline
    with Client(srv) as client:
        client.send(b"".join(request_bytes("GET", f"/?n={i}") for i in range(count)))
        bodies = [client.read().body for _ in range(count)]
    assert bodies == [b"hello"] * count


def test_connection_close_is_honoured(srv: Server) -> None:
    with Client(srv) as client:
        response = client.request("GET", "/", headers=[("Connection", "close")])
        assert response.header("connection") == "close"
        assert client.read_until_closed() == (b"", "fin")


def test_nothing_after_connection_close_is_processed(srv: Server) -> None:
    """B11: one 200 with connection: close, then FIN; the trailing junk gets no 400."""
    with Client(srv) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nInvalid\r\n\r\n")
        data, how = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.count(b"HTTP/1.1") == 1
    assert how == "fin"


def test_http_10_response_closes(srv: Server) -> None:
    with Client(srv) as client:
        client.send(b"GET /stream?n=2 HTTP/1.0\r\n\r\n")
        data, how = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"chunk0;chunk1;")  # close-delimited, not chunked
    assert how == "fin"


def test_keep_alive_survives_slow_pipelined_handlers() -> None:
    """B12: keep-alive 1 s, two pipelined 1.5 s requests: both answered, then a FIN."""
    with Server(APP, "-w", "1", "--timeout-keep-alive", "1") as server, Client(server) as client:
        client.send(request_bytes("GET", "/sleep?s=1.5") + request_bytes("GET", "/sleep?s=1.5"))
        assert client.read().body == b"slept"
        assert client.read().body == b"slept"
        # Idle for most of the keep-alive time, then one more request is served.
        time.sleep(0.6)
        assert client.request().status == 200
        started = time.monotonic()
        assert client.read_until_closed() == (b"", "fin")
        assert 0.8 <= time.monotonic() - started <= 2.0 * TIME_FACTOR


def test_connections_reset_after_one_request_are_released(srv: Server) -> None:
    """B13: RST after a request frees everything; the worker keeps serving."""
    with Client(srv) as client:
        pid = int(client.request().header("x-pid") or 0)

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    baseline = open_fds()
    for _ in range(50):
        client = Client(srv)
        assert client.request().status == 200
        reset(client.sock)
    for _ in range(20):  # and reset while the app is still working
        client = Client(srv)
        client.send(request_bytes("GET", "/sleep?s=0.05"))
        reset(client.sock)
    wait_until(lambda: open_fds() <= baseline, 5, "the worker's descriptors back to baseline")
    with Client(srv) as client:
        assert client.request().status == 200


def minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10, minflt


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_request_buffers_do_not_page_fault_under_load(loop: str) -> None:
    """32 connections with a 64 KiB echo in flight at once, ten times over: the worker
    reuses its heap instead of giving it back between bursts and faulting it in again
    (glibc's defaults cost 10-30 page faults per request here)."""
    body = b"x" * 65536
    request = request_bytes("POST", "/echo", None, body)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Server(APP, "-w", "1", "--loop", loop, "--no-access-log"))
        clients = [stack.enter_context(Client(server)) for _ in range(32)]
        pid = int(clients[0].request().header("x-pid") or 0)

        def burst() -> None:
            for client in clients:
                client.send(request)
            for client in clients:
                assert client.read("POST").body == body

        for _ in range(5):
            burst()  # the heap grows to what this load needs
        before = minor_faults(pid)
        for _ in range(10):
            burst()
        faults = minor_faults(pid) - before
    assert faults < 2 * 32 * 10, f"{faults} page faults for 320 requests"


def test_keep_alive_latency_shows_tcp_nodelay(srv: Server) -> None:
    """Streamed responses are several small writes: with Nagle each would wait ~40 ms."""
    with Client(srv) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(200):
            started = time.perf_counter()
            assert client.request("GET", "/stream?n=3").status == 200
            times.append(time.perf_counter() - started)
    assert statistics.median(times) < 0.020 * TIME_FACTOR


# -- the access log --------------------------------------------------------------------------


def test_access_log_line_written_when_the_response_completes(srv: Server) -> None:
    with Client(srv) as client:
        start = len(srv.lines)
        port = client.sock.getsockname()[1]
        assert client.request("GET", "/sleep?s=0.2").status == 200
    match = srv.wait_for_line(
        rf'127\.0\.0\.1:{port} "GET /sleep\?s=0\.2" 200 5 (\d+\.\d)ms', start=start
    )
    assert float(match.group(1)) >= 200  # timed to the end of the response


def test_access_log_cannot_be_injected(srv: Server) -> None:
    """B10 (CVE-2020-7694): no raw ESC, CR or LF from the request reaches the log."""
    start = len(srv.lines)
    with Client(srv) as client:
        client.send(b"GET /%1b[31mred%0d%0afake-line HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read().status == 200
    with Client(srv) as client:  # raw control bytes are a 400 and logged escaped too
        client.send(b"GET /\x1b[31mred HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read_until_closed()[0].startswith(b"HTTP/1.1 400 ")
    srv.wait_for_line(r'"GET /%1b\[31mred%0d%0afake-line" 200', start=start)
    srv.wait_for_line(r'" 400 \d+ ', start=start)
    lines = srv.lines[start:]
    assert not any("\x1b" in line or "\r" in line for line in lines)
    assert not any(line.startswith("fake-line") for line in lines)


def test_access_log_json_escapes_every_field() -> None:
    with Server(APP, "-w", "1", "--log-format", "json") as server, Client(server) as client:
        client.send(b"GET /%1b%0a?q=%0d HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read().status == 200
        match = server.wait_for_line(r'^\{.*"corral.access"')
    record = json.loads(match.string)
    assert record["request"] == "GET /%1b%0a?q=%0d"
    assert record["status"] == 200
    assert record["bytes"] == 5
    assert record["client"].startswith("127.0.0.1:")
    assert re.fullmatch(r"[\x20-\x7e]*", match.string)
