"""Binding for deployment: --backlog, --uds-mode, IPv6, several addresses at once.

The stale-socket, removal-on-exit and port-in-use cases are in test_startup.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess

import pytest

from tests.e2e.test_startup import run_to_exit
from tests.harness import Server, read_response


def get_over(sock: socket.socket, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
def test_backlog_reaches_listen():
    """--backlog is the listen() backlog: ss shows it as the listening socket's Send-Q."""
    with Server("tests.apps:hello", "--backlog", "37") as srv:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{srv.port}"], capture_output=True, text=True, check=True
        ).stdout
        # State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
        assert re.search(r"LISTEN\s+\d+\s+37\s", out), out


def test_uds_mode(tmp_path):
    """--uds-mode sets the socket file's permission bits; the socket serves."""
    path = tmp_path / "s.sock"
    with Server("tests.apps:hello", "--bind", f"unix:{path}", "--uds-mode", "0o660") as srv:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        assert get_over(sock)[0] == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not path.exists()


def test_uds_mode_invalid():
    """A mode that is not octal is a usage error (exit 2) naming the option."""
    proc = run_to_exit("tests.apps:hello", "--uds", "/tmp/x.sock", "--uds-mode", "rw-rw----")
    assert proc.returncode == 2
    assert "invalid value for uds_mode" in proc.stderr


def test_ipv6_loopback():
    """[::1]:0 binds IPv6 only; the scope's server and client are ::1."""
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with Server("tests.apps:scope_dump", "--bind", "[::1]:0") as srv:
        assert srv.url.startswith("http://[::1]:")
        sock = socket.create_connection(("::1", srv.port), timeout=5)
        status, _, body = get_over(sock)
        scope = json.loads(body)
        assert status == 200
        assert scope["server"] == ["::1", srv.port]
        assert scope["client"][0] == "::1"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_several_addresses(tmp_path):
    """--bind is repeatable: TCP and a unix socket served by the same workers."""
    path = tmp_path / "s.sock"
    with Server("tests.apps:hello", "--bind", "127.0.0.1:0", "--bind", f"unix:{path}") as srv:
        srv.wait_for_line(f"listening on unix:{path}")
        assert get_over(srv.connect())[0] == 200
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        assert get_over(sock)[0] == 200
