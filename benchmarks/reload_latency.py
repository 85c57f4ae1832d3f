"""Seconds from a file save to the new response, for ``--reload`` (and its peers).

    .venv/bin/python benchmarks/reload_latency.py                   # corral, 20 saves
    .venv/bin/python benchmarks/reload_latency.py --poll            # corral --reload-poll
    .venv/bin/python benchmarks/reload_latency.py --server uvicorn  # a peer, same method

A tiny app (its response is a version string) is copied into a temporary directory and
served with development reload on a free port. Each round rewrites the file with the
next version and then requests ``/`` in a tight loop on fresh connections until the new
version answers; the figure is the time from the end of the write to that response.
Connections refused meanwhile are counted: a browser refreshing then would see an error
page. One warm-up save (not counted) proves the watcher is armed; rounds are ``--gap``
seconds apart so that each save is a reload of its own.

For corral the log also splits each round: the save until the master logs the reload
(the watcher noticed), and until the new worker is READY (forked, app imported).

Peers run from ``benchmarks/.venv`` (see benchmarks/README.md): ``uvicorn --reload``,
``granian --reload``, ``hypercorn --reload``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / ".venv" / "bin"

APP = """\
VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
"""

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(server: str, port: int, directory: Path, poll: bool) -> list[str]:
    if server == "corral":
        argv = [sys.executable, "-m", "corral", "app:app", "--reload", "--port", str(port)]
        argv += ["--app-dir", str(directory), "--reload-dir", str(directory)]
        return argv + (["--reload-poll"] if poll else [])
    if server == "uvicorn":
        argv = [str(PEERS / "uvicorn"), "app:app", "--reload", "--port", str(port)]
        return [*argv, "--reload-dir", str(directory)]
    if server == "granian":
        argv = [str(PEERS / "granian"), "--interface", "asgi", "--reload", "--port", str(port)]
        return [*argv, "--reload-paths", str(directory), "app:app"]
    return [str(PEERS / "hypercorn"), "--reload", "--bind", f"127.0.0.1:{port}", "app:app"]


def get(port: int) -> str | None:
    """The body of ``GET /``, or None if the connection was refused or cut."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except (ConnectionError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def log_time(line: str) -> float | None:
    match = _STAMP.match(line)
    if match is None:
        return None
    stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


class Run:
    """One server with reload, its output collected; ``save`` measures one round."""

    def __init__(self, server: str, poll: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="corral-reload-bench-"))
        (self.dir / "app.py").write_text(APP.format(version="v0"))
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            command(server, self.port, self.dir, poll),
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while get(self.port) != "v0":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit(f"{server} did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def save(self, version: str) -> tuple[float, int, float | None, float | None]:
        """Write ``version``; return (seconds to the new response, refused, noticed, ready)."""
        mark = len(self.lines)
        (self.dir / "app.py").write_text(APP.format(version=version))
        saved_at, started = time.time(), time.perf_counter()
        refused = 0
        while True:
            body = get(self.port)
            if body == version:
                took = time.perf_counter() - started
                break
            refused += body is None
            if time.perf_counter() - started > 30:
                raise SystemExit(f"{version} never answered:\n" + "\n".join(self.lines[mark:]))
        noticed = ready = None
        for line in self.lines[mark:]:
            at = log_time(line)
            if at is None:
                continue
            if noticed is None and "INFO reload (changed" in line:
                noticed = at - saved_at
            elif ready is None and re.search(r"worker \d+ \(slot 0, generation \d+\) READY", line):
                ready = at - saved_at
        return took, refused, noticed, ready

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", default="corral", choices=("corral", *_PEER_NAMES))
    parser.add_argument("--repeat", type=int, default=20, help="saves measured (default 20)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between saves")
    parser.add_argument("--poll", action="store_true", help="corral: --reload-poll")
    args = parser.parse_args()
    run = Run(args.server, args.poll)
    rounds = []
    try:
        run.save("warm-up")
        for i in range(args.repeat):
            time.sleep(args.gap)
            rounds.append(run.save(f"v{i + 1}" + "!" * (i % 3)))  # sizes differ too
    finally:
        run.close()
    took = sorted(r[0] for r in rounds)
    print(f"{args.server}{' --reload-poll' if args.poll else ''}: {len(took)} saves")
    print(f"  save -> new response   median {statistics.median(took):.3f} s", end="")
    print(f", min {took[0]:.3f}, max {took[-1]:.3f}")
    refused = [r[1] for r in rounds if r[1]]
    print(f"  refused connections    {sum(refused)}, in {len(refused)} of {len(rounds)} saves")
    for index, what in ((2, "save -> reload logged"), (3, "save -> new worker READY")):
        values = [r[index] for r in rounds if r[index] is not None]
        if values:
            print(f"  {what:<22} median {statistics.median(values):.3f} s")


_PEER_NAMES = ("uvicorn", "granian", "hypercorn")

if __name__ == "__main__":
    main()
