"""Containers: corral as PID 1, and the files in deploy/container.

Docker cannot run here, so the image is not built: the Dockerfile and the Kubernetes
example are checked by reading them, and their command line (ENTRYPOINT + CMD, with the
test app) runs as PID 1 of a new PID namespace (``unshare --pid --fork --mount-proc``),
which is what a container runtime gives it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corral.supervisor.loop import SHUTDOWN_MARGIN_S
from corral.workers.worker import CANCEL_WAIT_S
from tests.e2e.test_startup import LOOPS
from tests.harness import ROOT, TIME_FACTOR, Server, read_response, wait_until

CONTAINER = ROOT / "deploy" / "container"
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")


def instructions(path: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined."""
    result = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def image_command(app: str) -> list[str]:
    """ENTRYPOINT + CMD of the image, with ``app`` for the example app."""
    steps = dict(final_stage(CONTAINER / "Dockerfile"))
    argv = json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])
    assert argv[0] == "corral"
    return [app if ":" in arg and not arg[0].isdigit() else arg for arg in argv[1:]]


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def unshare_works() -> str | None:
    """None if ``unshare --pid --fork --mount-proc`` runs here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    proc = subprocess.run([*UNSHARE, "sh", "-c", "echo $$"], capture_output=True, text=True)
    if proc.returncode != 0 or proc.stdout.strip() != "1":
        return f"unshare --pid cannot run here (needs root or user namespaces): {proc.stderr}"
    return None


needs_pid_namespace = pytest.mark.skipif(unshare_works() is not None, reason=str(unshare_works()))


def host_pid_of_child(pid: int) -> int:
    """The host pid of unshare's only child (corral, PID 1 inside)."""
    children: list[str] = []

    def found() -> bool:
        nonlocal children
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        return bool(children)

    wait_until(found, 10, "unshare's child")
    return int(children[0])


def get_json(srv: Server, target: str, timeout: float = 10) -> object:
    with srv.connect() as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, _, body = read_response(sock, timeout=timeout)
    assert status == 200, body
    return json.loads(body)


# -- the files ------------------------------------------------------------------------------------


def test_dockerfile_by_reading():
    """Exec-form ENTRYPOINT and CMD, a non-root numeric USER, STOPSIGNAL SIGTERM, the port."""
    steps = final_stage(CONTAINER / "Dockerfile")
    keywords = [keyword for keyword, _ in steps]
    values = dict(steps)
    for keyword in ("ENTRYPOINT", "CMD"):
        assert keywords.count(keyword) == 1
        assert isinstance(json.loads(values[keyword]), list), f"{keyword} must be exec form"
    user = values["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert values["STOPSIGNAL"] == "SIGTERM"
    argv = image_command("app:app")
    assert option(argv, "--bind") == f"0.0.0.0:{values['EXPOSE']}"


def test_image_command_is_valid_config():
    """The image's command line and the Kubernetes args are accepted by corral itself."""
    k8s_args = json.loads(re.search(r"args: (\[.*\])", (CONTAINER / "k8s.yaml").read_text())[1])
    for argv in (image_command("tests.apps:hello"), ["tests.apps:hello", *k8s_args]):
        proc = subprocess.run(
            [sys.executable, "-m", "corral", *argv, "--print-config"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr


def test_kubernetes_grace_period_fits_the_drain():
    """terminationGracePeriodSeconds covers preStop's sleep plus corral's whole drain."""
    text = (CONTAINER / "k8s.yaml").read_text()
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text)[1])
    pre_stop = int(re.search(r'command: \["sleep", "(\d+)"\]', text)[1])
    args = json.loads(re.search(r"args: (\[.*\])", text)[1])
    graceful = float(option(args, "--graceful-timeout"))
    assert grace > pre_stop + graceful + SHUTDOWN_MARGIN_S + CANCEL_WAIT_S
    assert pre_stop > 0  # endpoints must be gone before corral stops accepting
    assert "runAsNonRoot: true" in text
    assert (
        re.search(r"runAsUser: (\d+)", text)[1]
        == dict(final_stage(CONTAINER / "Dockerfile"))["USER"].split(":")[0]
    )


# -- PID 1 -----------------------------------------------------------------------------------------


def pid1_server(app: str, env: dict[str, str] | None = None) -> Server:
    argv = image_command(app)
    argv[argv.index("--bind") + 1] = "127.0.0.1:0"
    return Server(*argv, wrap=UNSHARE, env=env)


@needs_pid_namespace
@pytest.mark.parametrize("loop", LOOPS)
def test_pid1_reaps_orphans_and_stops_gracefully(loop):
    """As PID 1: an orphan of the app's subprocess is reparented to corral and reaped
    when it exits; TERM drains an in-flight request and the exit code is 0. With either
    event loop: the image's command line leaves --loop at auto (the loop is set through
    the environment, so that command line stays as it is)."""
    with pid1_server("tests.apps_deploy:orphans", env={"CORRAL_LOOP": loop}) as srv:
        srv.wait_for_line(r"corral master 1 serving")
        corral = host_pid_of_child(srv.pid)
        spawned = get_json(srv, "/spawn")
        assert isinstance(spawned, dict)
        orphan = spawned["pid"]

        def adopted() -> bool:
            # The shell has exited, but its background child may not have exec'd sleep
            # yet (running, R): wait until it sleeps, with corral as its parent.
            return get_json(srv, f"/state?pid={orphan}") == {"state": "S", "ppid": 1}

        wait_until(adopted, 10, "the orphan to sleep as a child of PID 1")
        get_json(srv, f"/kill?pid={orphan}")

        def reaped() -> bool:
            return get_json(srv, f"/state?pid={orphan}") is None  # not even a zombie

        wait_until(reaped, 10, "the orphan to be reaped by PID 1")

        outcome: list[object] = []
        thread = threading.Thread(target=lambda: outcome.append(get_json(srv, "/?sleep=1")))
        thread.start()
        srv.wait_for_line("orphans: sleeping")
        os.kill(corral, signal.SIGTERM)
        srv.wait_for_line("SIGTERM: graceful stop")
        thread.join(10 * TIME_FACTOR)
        assert outcome == [{"slept": 1.0}]
        assert srv.wait() == 0  # unshare exits with PID 1's code


@needs_pid_namespace
def test_pid1_exit_code_is_meaningful():
    """As PID 1, a lifespan startup failure still exits with its own code (4)."""
    argv = image_command("tests.apps:failing_startup")
    argv[argv.index("--bind") + 1] = "127.0.0.1:0"
    proc = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "corral", *argv, "--app-dir", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=30 * TIME_FACTOR,
        cwd=ROOT,
        start_new_session=True,
    )
    assert proc.returncode == 4, proc.stderr
    assert "database unreachable" in proc.stderr
