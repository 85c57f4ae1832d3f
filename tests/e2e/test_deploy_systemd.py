"""systemd: the units in deploy/systemd, socket activation and sd_notify, for real.

The service's own command line (ExecStart=, Environment=) runs under
``systemd-socket-activate`` with the socket unit's FileDescriptorName=, and the test
plays the service manager's other half: a unix datagram socket as NOTIFY_SOCKET.
``systemd-analyze verify`` checks the unit files where it can run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.config.options import DEFAULTS
from corral.supervisor.loop import SHUTDOWN_MARGIN_S
from corral.workers.worker import CANCEL_WAIT_S
from tests.harness import ROOT, TIME_FACTOR, Server, read_response, wait_until

UNITS = ROOT / "deploy" / "systemd"
SERVICE = UNITS / "corral.service"
SOCKET = UNITS / "corral.socket"

needs_activate = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate"
)


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists, in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def unit_value(path: Path, section: str, key: str) -> str:
    values = [v for k, v in read_unit(path)[section] if k == key]
    assert values, f"{path.name}: no {key}= in [{section}]"
    return values[-1]


def service_command(app: str) -> list[str]:
    """ExecStart= of the service with our interpreter and ``app`` instead of the example's."""
    argv = shlex.split(unit_value(SERVICE, "Service", "ExecStart"))
    assert Path(argv[0]).name == "corral"
    return [arg if ":" not in arg or arg.startswith("-") else app for arg in argv[1:]]


def option_value(argv: list[str], flag: str, default: float) -> float:
    return float(argv[argv.index(flag) + 1]) if flag in argv else default


class Notifications:
    """The service manager's end of NOTIFY_SOCKET: a unix datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return False
        self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return True

    def drain(self) -> list[dict[str, str]]:
        """Everything received so far, without waiting."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                self.messages.append(
                    dict(line.split("=", 1) for line in data.decode().splitlines())
                )
        except BlockingIOError:
            pass
        return self.messages

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], what: str, start: int = 0
    ) -> dict[str, str]:
        """The first message from index ``start`` on that matches (bounded wait)."""
        deadline = time.monotonic() + 15 * TIME_FACTOR
        index = start
        while True:
            while index < len(self.messages):
                if predicate(self.messages[index]):
                    return self.messages[index]
                index += 1
            if not self._receive(deadline - time.monotonic()) and time.monotonic() > deadline:
                raise AssertionError(f"no {what} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    listener = Notifications(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


def has(key: str, value: str | None = None) -> Callable[[dict[str, str]], bool]:
    return lambda m: key in m and (value is None or m[key] == value)


def get_unix(path: Path, target: str = "/") -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20 * TIME_FACTOR)  # the first one waits while corral starts
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, _, body = read_response(sock, timeout=20)
    return status, body


# -- the unit files -------------------------------------------------------------------------------


def test_units_fit_together():
    """Notify type, HUP reload, mixed kill, a stop timeout above the whole drain, a sandbox."""
    service = dict(read_unit(SERVICE)["Service"])
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
    argv = service_command("app:app")
    graceful = option_value(argv, "--graceful-timeout", DEFAULTS.graceful_timeout)
    assert float(service["TimeoutStopSec"]) > graceful + SHUTDOWN_MARGIN_S + CANCEL_WAIT_S
    ready = option_value(argv, "--ready-timeout", DEFAULTS.ready_timeout)
    assert float(service["TimeoutStartSec"]) > ready
    assert {"2", "3", "5"} <= set(service["RestartPreventExitStatus"].split())
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
    }.items():
        assert service[key] == value, key
    unit = dict(read_unit(SERVICE)["Unit"])
    assert unit["Requires"] == SOCKET.name
    socket_section = read_unit(SOCKET)["Socket"]
    assert any(k == "ListenStream" for k, _ in socket_section)
    assert dict(socket_section)["FileDescriptorName"]


def test_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify finds nothing to say about either unit."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    check = subprocess.run(["systemd-analyze", "verify", str(probe)], capture_output=True)
    if check.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {check.stderr.decode()[:200]}")
    # The example's virtualenv does not exist here: point ExecStart at ours (verify
    # checks that the program exists).
    corral = Path(sys.executable).parent / "corral"
    text = SERVICE.read_text().replace("/srv/myproject/.venv/bin/corral", str(corral))
    (tmp_path / SERVICE.name).write_text(text)
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    proc = subprocess.run(
        ["systemd-analyze", "verify", SERVICE.name, SOCKET.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout + proc.stderr == ""


# -- socket activation and notifications ---------------------------------------------------------


@needs_activate
def test_service_command_under_socket_activation(tmp_path, notify):
    """The unit's command line, started by systemd-socket-activate on the first
    connection: serves the passed socket only, hides LISTEN_* from the workers, and
    speaks sd_notify through start, HUP, USR2 (re-exec keeps the socket) and TERM."""
    path = tmp_path / "app.sock"
    fdname = unit_value(SOCKET, "Socket", "FileDescriptorName")
    env = [v for k, v in read_unit(SERVICE)["Service"] if k == "Environment"]
    wrap = ["systemd-socket-activate", "--listen", str(path), f"--fdname={fdname}"]
    for assignment in [*env, f"NOTIFY_SOCKET={notify.address}"]:
        wrap += ["-E", assignment]
    argv = service_command("tests.apps_deploy:whoami")
    with Server(*argv, wrap=(*wrap, "--"), bind_port=False, wait_ready=False) as srv:
        srv.wait_for_line(f"Listening on {path}")
        # This first connection starts corral; it waits in the socket's queue meanwhile.
        status, body = get_unix(path)
        assert status == 200
        assert b'"listen_env": {}' in body  # cleared before the workers were forked
        srv.wait_for_line(rf"listening on unix:{re.escape(str(path))} \(systemd: {fdname}\)")
        assert len(re.findall("listening on", srv.output)) == 1  # nothing else bound
        ready = notify.wait_for(has("READY", "1"), "READY=1")
        assert ready["MAINPID"] == str(srv.pid)
        status_line = notify.wait_for(has("STATUS"), "STATUS")
        assert re.fullmatch(r"\d+/\d+ workers ready, generation 1", status_line["STATUS"])

        mark = len(notify.messages)
        before_us = time.monotonic_ns() // 1000
        srv.signal(signal.SIGHUP)
        reloading = notify.wait_for(has("RELOADING", "1"), "RELOADING=1", mark)
        assert before_us <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        notify.wait_for(has("READY", "1"), "READY=1 after the reload", mark)
        srv.wait_for_line("generation 2 READY")

        mark = len(notify.messages)
        lines = len(srv.lines)
        srv.signal(signal.SIGUSR2)  # re-exec: the activated socket is handed over
        notify.wait_for(has("READY", "1"), "READY=1 after the re-exec", mark)
        srv.wait_for_line(r"\(systemd: " + fdname + r"\)", start=lines)
        assert "listening on http" not in "\n".join(srv.lines[lines:])
        assert get_unix(path)[0] == 200

        mark = len(notify.messages)
        srv.signal(signal.SIGTERM)
        notify.wait_for(has("STOPPING", "1"), "STOPPING=1", mark)
        assert srv.wait() == 0
    assert path.exists()  # systemd's socket file: corral never removes it


def test_ready_only_when_first_generation_serves(tmp_path, notify):
    """READY=1 waits for every worker of the first generation (their lifespan gated)."""
    gate = tmp_path / "gate"
    env = {"NOTIFY_SOCKET": notify.address, "CORRAL_TEST_GATE": str(gate)}
    with Server("tests.apps_deploy:gated", "-w", "2", env=env, wait_ready=False) as srv:
        wait_until(lambda: srv.output.count("gated: waiting") == 2, 15, "both workers")
        notify.wait_for(has("STATUS", "0/2 workers ready, generation 1"), "STATUS 0/2")
        # Both workers are blocked in lifespan startup; the master has done all it does
        # before they report: no READY=1 may have been sent.
        assert not any("READY" in m for m in notify.drain())
        gate.touch()
        notify.wait_for(has("READY", "1"), "READY=1")
        srv.wait_ready()
        assert len(srv.worker_pids(1)) == 2


def test_watchdog_and_drain_extension():
    """WATCHDOG=1 every WATCHDOG_USEC/2 (abstract NOTIFY_SOCKET); while a TERM drains
    a slow request, EXTEND_TIMEOUT_USEC keeps systemd's stop timeout moving."""
    notify = Notifications(f"@corral-test-{uuid.uuid4().hex}")
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"}
    try:
        with Server("tests.apps:slow", "--graceful-timeout", "10", env=env) as srv:
            notify.wait_for(has("READY", "1"), "READY=1")
            first = notify.wait_for(has("WATCHDOG", "1"), "WATCHDOG=1")
            notify.wait_for(lambda m: "WATCHDOG" in m and m is not first, "a second WATCHDOG=1")
            sock = srv.connect(timeout=10)
            sock.sendall(b"GET /?seconds=1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
            srv.wait_for_line("slow: started")
            mark = len(notify.messages)
            srv.signal(signal.SIGTERM)
            notify.wait_for(has("STOPPING", "1"), "STOPPING=1", mark)
            extend = notify.wait_for(has("EXTEND_TIMEOUT_USEC"), "EXTEND_TIMEOUT_USEC", mark)
            assert int(extend["EXTEND_TIMEOUT_USEC"]) >= 1_000_000
            assert read_response(sock, timeout=10)[2] == b"slow done"
            sock.close()
            assert srv.wait() == 0
    finally:
        notify.close()


def test_listen_pid_of_another_process_is_ignored():
    """LISTEN_* meant for another pid: not used, not passed on, the usual bind happens."""
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "web"}
    with Server("tests.apps_deploy:whoami", env=env) as srv, srv.connect() as sock:
        assert srv.url.startswith("http://127.0.0.1:")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b'"listen_env": {}' in read_response(sock)[2]


@needs_activate
def test_activated_datagram_socket_is_exit_5(tmp_path):
    """A passed socket corral cannot serve (a datagram one) is a bind failure, exit 5."""
    path = tmp_path / "dgram.sock"
    wrap = ("systemd-socket-activate", "--datagram", "--listen", str(path), "--")
    with Server("tests.apps:hello", wrap=wrap, bind_port=False, wait_ready=False) as srv:
        srv.wait_for_line(f"Listening on {path}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"wake up", str(path))  # systemd-socket-activate starts corral
        assert srv.wait() == 5
        assert "cannot use systemd socket 3 (unknown): not a stream socket" in srv.output
    os.unlink(path)
