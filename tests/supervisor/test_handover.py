"""The re-exec hand-over pieces of the loop and sockets, and other loop helpers, in-process.

The whole USR2 path runs end to end in tests/e2e/test_signals.py; these pin the parts
that decide what survives it: which sockets are reused or closed, which workers are
adopted or dropped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from corral.config import Config, parse_bind
from corral.supervisor.handover import INHERITED_WORKERS_ENV, inherited_workers
from corral.supervisor.loop import SHUTDOWN_MARGIN_S, resident_mib, settings_for
from corral.supervisor.sockets import (
    INHERITED_FDS_ENV,
    bind_all,
    export_listeners,
    inherited_listeners,
)


def test_listeners_survive_the_hand_over_and_keep_their_port() -> None:
    """A socket named in the environment is reused for the same address, port 0 included."""
    (listener,) = bind_all([parse_bind("127.0.0.1:0")], 16)
    port = listener.sock.getsockname()[1]
    exported = json.loads(export_listeners([listener]))
    assert os.get_inheritable(listener.sock.fileno())
    # The new program sees the same descriptor number; a dup stands in for it here.
    exported[0]["fd"] = os.dup(listener.sock.fileno())
    env = {INHERITED_FDS_ENV: json.dumps(exported)}
    inherited = inherited_listeners(env)
    assert env == {}
    (adopted,) = bind_all([parse_bind("127.0.0.1:0")], 16, inherited)
    try:
        assert adopted.sock.getsockname()[1] == port
        assert adopted.sock.fileno() == exported[0]["fd"]
    finally:
        adopted.close()
        listener.close()


def test_inherited_sockets_no_longer_configured_are_closed(tmp_path: Path) -> None:
    """An inherited unix socket the new config drops is closed and its file removed."""
    path = tmp_path / "old.sock"
    (old,) = bind_all([parse_bind(f"unix:{path}")], 16)
    entry = {"fd": os.dup(old.sock.fileno()), "spec": f"unix:{path}", "path": str(path)}
    old.sock.close()  # the previous program is gone; only the inherited copy is left
    inherited = inherited_listeners({INHERITED_FDS_ENV: json.dumps([entry])})
    (fresh,) = bind_all([parse_bind("127.0.0.1:0")], 16, inherited)
    fresh.close()
    assert inherited[f"unix:{path}"].sock.fileno() == -1
    assert not path.exists()


def test_a_malformed_hand_over_is_ignored() -> None:
    """Garbage in the variables adopts nothing (and is removed from the environment)."""
    env = {INHERITED_FDS_ENV: "[{", INHERITED_WORKERS_ENV: '[{"pid": "x"}]'}
    assert inherited_listeners(env) == {}
    assert inherited_workers(env) == []
    assert env == {}


def test_only_live_children_are_adopted() -> None:
    """A live child is adopted with its pipe; a stranger and an exited child are not."""
    live = subprocess.Popen(["sleep", "30"])
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    # Wait (bounded) until the forked child is a zombie: exited, not reaped.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{dead}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    pipes = [os.pipe() for _ in range(3)]
    entries = [
        {"pid": live.pid, "fd": pipes[0][0], "slot": 0, "generation": 2, "ready": True},
        {"pid": os.getpid(), "fd": pipes[1][0], "slot": 1, "generation": 2, "ready": True},
        {"pid": dead, "fd": pipes[2][0], "slot": 2, "generation": 2, "ready": True},
    ]
    try:
        for r, _ in pipes:
            os.set_inheritable(r, True)
        (adopted,) = inherited_workers({INHERITED_WORKERS_ENV: json.dumps(entries)})
        assert adopted.worker.pid == live.pid
        assert adopted.worker.ready
        assert adopted.pipe_fd == pipes[0][0]
        assert not os.get_inheritable(adopted.pipe_fd)
        assert not os.get_blocking(adopted.pipe_fd)
        for r, _ in pipes[1:]:
            try:
                os.fstat(r)
            except OSError:
                continue
            raise AssertionError("the pipe of a worker not adopted must be closed")
        try:
            os.waitpid(dead, os.WNOHANG)
        except ChildProcessError:
            pass  # reaped by inherited_workers, as it should be
        else:
            raise AssertionError("the exited child was not reaped")
    finally:
        live.kill()
        live.wait()
        os.close(pipes[0][0])
        for _, w in pipes:
            os.close(w)


def test_resident_memory_is_read_from_proc() -> None:
    """Our own RSS is a few MiB at least; a pid that does not exist reads as None."""
    rss = resident_mib(os.getpid())
    assert rss is not None
    assert rss > 1
    assert resident_mib(2**22 + 1) is None


def test_settings_follow_the_config() -> None:
    """The master's SIGKILL comes SHUTDOWN_MARGIN_S after the worker's own drain deadline."""
    settings = settings_for(
        Config(workers=3, graceful_timeout=4, worker_timeout=0, max_worker_lifetime=600)
    )
    assert settings.workers == 3
    assert settings.graceful_timeout_s == 4 + SHUTDOWN_MARGIN_S
    assert settings.worker_timeout_s is None
    assert settings.max_worker_lifetime_s == 600
    assert settings.ready_timeout_s == 60


def test_unix_listener_owns_its_file_until_closed(tmp_path: Path) -> None:
    """The master that bound a unix socket removes its file on close (not on re-exec)."""
    path = tmp_path / "s.sock"
    (listener,) = bind_all([parse_bind(f"unix:{path}")], 16)
    assert listener.owned_path == str(path)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    listener.close()
    assert not path.exists()
