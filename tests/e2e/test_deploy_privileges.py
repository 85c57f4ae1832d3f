"""--user, --group, --umask: the master binds as root, the workers serve as someone else."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import stat
import subprocess

import pytest

from tests.e2e.test_startup import run_to_exit
from tests.harness import Server, read_response

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

NOBODY = pwd.getpwnam("nobody") if "nobody" in {p.pw_name for p in pwd.getpwall()} else None


def nobody_can_read(path: str) -> bool:
    """Whether 'nobody' can read ``path`` (test -r, run as nobody)."""
    assert NOBODY is not None
    proc = subprocess.run(
        ["test", "-r", path], user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[]
    )
    return proc.returncode == 0


def preload_if_needed() -> tuple[str, ...]:
    """--preload when nobody cannot read the interpreter's own modules (a Python under a
    mode-700 /root, as in some CI images): the app and the modules it imports are then
    loaded by the master, and the workers need to read nothing."""
    return () if nobody_can_read(json.__file__) else ("--preload",)


def proc_ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    result = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                result[key] = [int(v) for v in value.split()]
    return result


def get(sock: socket.socket) -> dict[str, object]:
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200
    return json.loads(body)


@root_only
@pytest.mark.skipif(NOBODY is None, reason="no user 'nobody'")
def test_bind_as_root_serve_as_nobody(tmp_path):
    """Root binds TCP and a mode-600 root-owned unix socket; the workers run as nobody."""
    assert NOBODY is not None
    path = tmp_path / "s.sock"
    args = ("--bind", "127.0.0.1:0", "--bind", f"unix:{path}", "--uds-mode", "600")
    extra = ("--user", "nobody", "--umask", "027", "-w", "2", *preload_if_needed())
    with Server("tests.apps_deploy:whoami", *args, *extra) as srv:
        srv.wait_for_line(f"listening on unix:{path}")
        info = get(srv.connect())
        assert (info["uid"], info["euid"], info["gid"]) == (NOBODY.pw_uid,) * 2 + (NOBODY.pw_gid,)
        assert info["umask"] == 0o027
        for pid in srv.worker_pids():
            ids = proc_ids(pid)
            assert ids["Uid"] == [NOBODY.pw_uid] * 4, ids  # real, effective, saved, fs
            assert ids["Gid"] == [NOBODY.pw_gid] * 4, ids
            assert 0 not in ids["Groups"], ids  # root's supplementary groups are gone
        assert proc_ids(srv.pid)["Uid"][0] == 0  # the master stays root
        # The socket file belongs to root and only root may connect: the workers, as
        # nobody, still accept on the descriptor they inherited.
        assert os.stat(path).st_uid == 0
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        unix = socket.socket(socket.AF_UNIX)
        unix.settimeout(5)
        unix.connect(str(path))
        assert get(unix)["uid"] == NOBODY.pw_uid
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not path.exists()  # removed by the master (root), not the workers


@root_only
@pytest.mark.skipif(NOBODY is None, reason="no user 'nobody'")
def test_group_only():
    """--group alone (here numeric) changes the group and leaves the user."""
    with Server("tests.apps_deploy:whoami", "--group", "65534", *preload_if_needed()) as srv:
        info = get(srv.connect())
    assert info["uid"] == 0
    assert info["gid"] == info["groups"][0] == 65534


def test_unknown_user_exit_2():
    """An unknown user is one line and exit code 2, before anything is bound."""
    proc = run_to_exit("tests.apps:hello", "--port", "0", "--user", "no-such-user-here")
    assert proc.returncode == 2
    assert "no user named 'no-such-user-here'" in proc.stderr
    assert "listening on" not in proc.stderr


def test_invalid_umask_exit_2():
    """A umask that is not octal is a usage error."""
    proc = run_to_exit("tests.apps:hello", "--port", "0", "--umask", "999")
    assert proc.returncode == 2
    assert "invalid value for umask" in proc.stderr
