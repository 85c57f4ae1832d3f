"""The http.response.pathsend and zerocopysend extensions, served by sendfile."""

from __future__ import annotations

import json
import os

import pytest

from tests.harness import Server, read_response


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "blob.bin"
    path.write_bytes(os.urandom(1024 * 1024 + 7))
    return path


def get(sock, target: str, method: str = "GET"):
    sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_response(sock, timeout=10)


def test_pathsend_serves_the_file_and_keeps_the_connection(big_file):
    """A whole file goes out with its length; the connection serves the next request."""
    with Server("tests.apps_files:pathsend") as srv, srv.connect() as sock:
        for _ in range(2):
            status, headers, body = get(sock, f"/?path={big_file}")
            assert status == 200
            assert headers["content-length"] == str(big_file.stat().st_size)
            assert body == big_file.read_bytes()


def test_pathsend_extensions_advertised():
    """Every HTTP scope advertises both file extensions."""
    with Server("tests.apps_files:pathsend") as srv, srv.connect() as sock:
        status, _, body = get(sock, "/extensions")
        assert status == 200
        assert {"http.response.pathsend", "http.response.zerocopysend"} <= set(json.loads(body))


def test_pathsend_head_sends_no_body(big_file):
    """HEAD: the length is announced, no file byte is sent, and the connection is reused."""
    with Server("tests.apps_files:pathsend") as srv, srv.connect() as sock:
        sock.sendall(f"HEAD /?path={big_file} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert f"content-length: {big_file.stat().st_size}".encode() in head
        assert head.endswith(b"\r\n\r\n")
        assert get(sock, "/extensions")[0] == 200  # nothing stray was left on the wire


def test_pathsend_missing_file_is_500(tmp_path):
    """A path that cannot be opened is a clean 500: nothing was written yet."""
    with Server("tests.apps_files:pathsend") as srv, srv.connect() as sock:
        status, _, _ = get(sock, f"/?path={tmp_path / 'nope'}")
        assert status == 500
        srv.wait_for_line("No such file or directory")


def test_zerocopysend_mixes_with_body_chunked(big_file):
    """A slice of a file between two body chunks, chunk-framed, arrives intact."""
    data = big_file.read_bytes()
    with Server("tests.apps_files:zerocopy") as srv, srv.connect() as sock:
        status, headers, body = get(sock, f"/?path={big_file}&offset=1000&count=300000")
        assert status == 200
        assert headers["transfer-encoding"] == "chunked"
        assert body == b"<" + data[1000:301000] + b">"
