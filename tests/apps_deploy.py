"""ASGI apps for the deployment tests (tests/e2e/test_deploy_*.py): ``tests.apps_deploy:NAME``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time


def _query(scope) -> dict[str, str]:
    text = scope["query_string"].decode()
    return dict(part.split("=", 1) for part in text.split("&") if "=" in part)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send, data: object) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


async def whoami(scope, receive, send):
    """The worker's identity: pid, uids, gids, umask, and any LISTEN_* variables."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    umask = os.umask(0)
    os.umask(umask)
    await _json(
        send,
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "umask": umask,
            "listen_env": {k: v for k, v in os.environ.items() if k.startswith("LISTEN_")},
        },
    )


#: The helpers /helper started (kept, so that no Popen is collected while it runs).
_helpers: list[subprocess.Popen[bytes]] = []


def _start_helper() -> int:
    """Start ``sleep 60`` the way os.system() or a plain fork and exec would: without
    closing descriptors, so it inherits every inheritable one the worker has."""
    helper = subprocess.Popen(
        ["sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,
    )
    _helpers.append(helper)
    return helper.pid


async def orphans(scope, receive, send):
    """/spawn leaves an orphan (a shell's background child); /helper starts a child
    that inherits the worker's inheritable descriptors; /kill?pid= ends either;
    /state?pid= says its state and parent, as this PID namespace sees them; ?sleep=S
    answers after S seconds."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    query = _query(scope)
    if "sleep" in query:
        print(f"orphans: sleeping in {os.getpid()}", file=sys.stderr, flush=True)
        await asyncio.sleep(float(query["sleep"]))
        await _json(send, {"slept": float(query["sleep"])})
    elif scope["path"] == "/spawn":
        # sh starts `sleep` in the background and exits at once: sleep's parent is gone,
        # so the kernel hands it to the namespace's init (corral's master as PID 1).
        shell = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            "sleep 60 >/dev/null 2>&1 </dev/null & echo $!",
            stdout=asyncio.subprocess.PIPE,
        )
        assert shell.stdout is not None
        pid = int(await shell.stdout.readline())
        # Wait for the shell to exit, not for EOF on its stdout as communicate() does:
        # uvloop ignores close_fds and leaves the shell a second copy of the pipe's write
        # end (besides fd 1), which `sleep` inherits, so EOF would come only when sleep
        # exits, 60 s later.
        await shell.wait()
        await _json(send, {"pid": pid, "worker": os.getpid()})
    elif scope["path"] == "/helper":
        await _json(send, {"pid": _start_helper()})
    elif scope["path"] == "/kill":
        os.kill(int(query["pid"]), 15)
        await _json(send, {"killed": int(query["pid"])})
    else:
        state = _process_state(int(query["pid"]))
        await _json(send, None if state is None else {"state": state[0], "ppid": state[1]})


def _wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


async def gated(scope, receive, send):
    """Lifespan startup waits until the file named by $CORRAL_TEST_GATE exists."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        print(f"gated: waiting in {os.getpid()}", file=sys.stderr, flush=True)
        await asyncio.to_thread(_wait_for_file, os.environ["CORRAL_TEST_GATE"])
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _json(send, {"pid": os.getpid()})


async def ws_scope(scope, receive, send):
    """A WebSocket that sends its scope's scheme, client and extensions, then closes."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] == "http":
        return await _json(send, {"scheme": scope["scheme"]})
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    data = {
        "scheme": scope["scheme"],
        "client": scope["client"],
        "extensions": scope.get("extensions", {}),
    }
    await send({"type": "websocket.send", "text": json.dumps(data)})
    await send({"type": "websocket.close", "code": 1000})
