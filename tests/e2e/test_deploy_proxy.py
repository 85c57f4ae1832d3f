"""Proxy headers end to end (research/protocol.md B24) and --root-path."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from tests.harness import TIME_FACTOR, Server, read_response


def dump(sock: socket.socket, *headers: str, path: str = "/p") -> dict[str, object]:
    """GET ``path`` with extra header lines on ``sock``; the scope the app saw."""
    extra = "".join(f"{line}\r\n" for line in headers)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: internal\r\n{extra}\r\n".encode())
        status, _, body = read_response(sock)
    assert status == 200
    return json.loads(body)


def unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5 * TIME_FACTOR)
    sock.connect(str(path))
    return sock


def header_names(scope: dict[str, object]) -> list[str]:
    return [name for name, _ in scope["headers"]]  # type: ignore[attr-defined]


def test_b24_trusted_tcp_untrusted_unix(tmp_path):
    """B24 on a real server: the trusted TCP proxy's chain gives the client; the same
    headers from an untrusted unix-socket peer are dropped; no header moves root_path."""
    path = tmp_path / "s.sock"
    args = ("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--root-path", "/app")
    binds = ("--bind", "127.0.0.1:0", "--bind", f"unix:{path}")
    spoof = ("X-Forwarded-Prefix: /evil", "Daphne-Root-Path: /evil", "Script-Name: /evil")
    with Server("tests.apps:scope_dump", *args, *binds) as srv:
        srv.wait_for_line(f"listening on unix:{path}")
        forwarded = (
            "X-Forwarded-For: 1.2.3.4, 9.9.9.9",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: shop.example",
        )
        scope = dump(srv.connect(), *forwarded, *spoof)
        assert scope["client"] == ["9.9.9.9", 0]
        assert scope["scheme"] == "https"
        assert ["host", "shop.example"] in scope["headers"]
        assert (scope["root_path"], scope["path"]) == ("/app", "/app/p")

        joined = dump(
            srv.connect(), "X-Forwarded-For: 8.8.8.8", "X-Forwarded-For: 7.7.7.7, 127.0.0.1"
        )
        assert joined["client"] == ["7.7.7.7", 0]  # "8.8.8.8, 7.7.7.7, 127.0.0.1"

        untrusted = dump(unix(path), *forwarded, *spoof)
        assert untrusted["client"] is None  # a unix peer has no address
        assert untrusted["scheme"] == "http"
        assert ["host", "internal"] in untrusted["headers"]
        names = header_names(untrusted)
        assert not {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"} & set(names)
        assert untrusted["root_path"] == "/app"


@pytest.mark.parametrize("allow", ["unix", "*"])
def test_unix_socket_proxy_trusted(tmp_path, allow):
    """A proxy on the unix socket is trusted through 'unix' or '*'."""
    path = tmp_path / "s.sock"
    args = ("--proxy-headers", "--forwarded-allow-ips", allow, "--bind", f"unix:{path}")
    with Server("tests.apps:scope_dump", *args):
        scope = dump(unix(path), "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https")
    assert scope["client"] == ["1.2.3.4", 0]
    assert scope["scheme"] == "https"


def test_rfc7239_forwarded():
    """--forwarded-headers forwarded: RFC 7239 is believed, X-Forwarded-For is dropped."""
    args = ("--proxy-headers", "--forwarded-headers", "forwarded")
    with Server("tests.apps:scope_dump", *args) as srv:
        scope = dump(
            srv.connect(),
            'Forwarded: for="[2001:db8::7]:4711";proto=https, for=127.0.0.1',
            "X-Forwarded-For: 6.6.6.6",
        )
    assert scope["client"] == ["2001:db8::7", 4711]
    assert scope["scheme"] == "https"
    assert "x-forwarded-for" not in header_names(scope)


def test_websocket_behind_tls_proxy():
    """A WebSocket through a trusted TLS-terminating proxy has scheme wss."""
    with (
        Server("tests.apps_deploy:ws_scope", "--proxy-headers") as srv,
        ws_connect(
            f"ws://127.0.0.1:{srv.port}/ws",
            additional_headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "1.2.3.4"},
            open_timeout=10 * TIME_FACTOR,
        ) as ws,
    ):
        data = json.loads(ws.recv(timeout=10 * TIME_FACTOR))
    assert data["scheme"] == "wss"
    assert data["client"] == ["1.2.3.4", 0]
    assert "tls" not in data["extensions"]


def test_without_proxy_headers_nothing_changes():
    """Off (the default): the peer is the client and the headers reach the app as sent."""
    with Server("tests.apps:scope_dump") as srv:
        scope = dump(srv.connect(), "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https")
    assert scope["client"][0] == "127.0.0.1"  # type: ignore[index]
    assert scope["scheme"] == "http"
    assert ["x-forwarded-for", "1.2.3.4"] in scope["headers"]
