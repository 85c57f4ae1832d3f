#!/usr/bin/env python3
"""Benchmark corral against the peer servers that are installed, side by side.

One command::

    python3 benchmarks/run.py                 # all servers, 1 worker, ~8 minutes
    python3 benchmarks/run.py --workers 2     # the same with 2 workers
    python3 benchmarks/run.py --quick         # a ~2 minute smoke run

The peers live in their own virtualenv, ``benchmarks/.venv``, created on first use from
``benchmarks/requirements.txt`` plus an editable install of corral. A server that does
not install, does not start or fails the correctness checks is reported as not
available and skipped; the run goes on.

Method (README.md beside this file says what each figure means):

* The server is pinned to CPU 0 and the load generator (wrk, wsclient.py) to CPU 1 with
  ``taskset``, so the two never compete for a core.
* Every server serves the same app (``benchmarks/apps.py``). Each repeat starts each
  server afresh, in turn, and measures: start-up to first response, idle RSS/PSS per
  worker, hello, 64 KiB POST echo, 16 x 1 KiB stream, WebSocket echo, then a HUP reload
  under load (servers whose master reloads on HUP).
* Server CPU is utime + stime from ``/proc/PID/stat`` summed over the server's process
  tree (master and workers), read before and after each load.
* Figures are medians over ``--repeat`` runs with the spread (the larger distance from the
  median to the min or max, in per cent). Ratios are to uvicorn ``--http h11`` measured in
  the same run.

Safety: traffic goes to 127.0.0.1 only; every load is bounded in time; only processes
this script started are signalled, by PID, and none is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
VENV = BENCH / ".venv"
VBIN = VENV / "bin"
VPY = VBIN / "python"
REQUIREMENTS = BENCH / "requirements.txt"
HOST = "127.0.0.1"
APP = "benchmarks.apps:app"
BULKY_APP = "benchmarks.apps:make_bulky_app"

#: wrk connections for the HTTP loads, and WebSocket connections for the WS load.
HTTP_CONNECTIONS = 64
WS_CONNECTIONS = 32
#: Body of the POST echo load.
ECHO_BYTES = 64 * 1024
#: A server that has not answered its first request in this time did not start.
STARTUP_TIMEOUT_S = 20.0
#: How long a server gets to exit after SIGTERM before it and its children are killed.
STOP_TIMEOUT_S = 10.0
#: wrk's own per-request timeout; slower responses count as socket timeouts.
WRK_TIMEOUT = "4s"
#: When SIGHUP is sent during the reload-under-load test, after the load starts.
HUP_AFTER_S = 1.0
#: Seconds of hello load before the second PSS reading of the --preload table.
PRELOAD_LOAD_S = 3
#: Above this median share of the server's core taken by others, the report warns.
NOISY_OTHERS_PCT = 15.0
#: The server that ratios are computed against.
BASELINE = "uvicorn-h11"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How to start one server; ``argv(port, workers, app)`` gives its command line."""

    name: str
    label: str
    module: str
    argv: Callable[[int, int, str], list[str]]
    #: Whether the server has a master that reloads its workers on SIGHUP, by workers.
    hup: Callable[[int], bool]
    is_corral: bool = False


def _corral(loop: str, http: str) -> Callable[[int, int, str], list[str]]:
    def argv(port: int, workers: int, app: str) -> list[str]:
        flags = (
            f"--bind {HOST}:{port} --no-access-log --workers {workers} --loop {loop} --http {http}"
        )
        return [str(VBIN / "corral"), app, *flags.split()]

    return argv


def _uvicorn(http: str, loop: str) -> Callable[[int, int, str], list[str]]:
    def argv(port: int, workers: int, app: str) -> list[str]:
        flags = (
            f"--host {HOST} --port {port} --http {http} --loop {loop} --no-access-log "
            f"--log-level warning --workers {workers}"
        )
        return [str(VBIN / "uvicorn"), app, *flags.split()]

    return argv


def _gunicorn(loop: str) -> Callable[[int, int, str], list[str]]:
    def argv(port: int, workers: int, app: str) -> list[str]:
        flags = f"-k asgi --asgi-loop {loop} -w {workers} -b {HOST}:{port} --log-level warning"
        return [str(VBIN / "gunicorn"), *flags.split(), app]

    return argv


def _hypercorn(worker_class: str) -> Callable[[int, int, str], list[str]]:
    def argv(port: int, workers: int, app: str) -> list[str]:
        flags = f"-b {HOST}:{port} -w {workers} -k {worker_class}"
        return [str(VBIN / "hypercorn"), *flags.split(), app]

    return argv


def _granian(port: int, workers: int, app: str) -> list[str]:
    flags = f"--interface asgi --host {HOST} --port {port} --workers {workers} --log-level warning"
    return [str(VBIN / "granian"), *flags.split(), app]


def _always(workers: int) -> bool:
    return True


def _with_supervisor(workers: int) -> bool:
    # uvicorn runs a supervisor (and handles HUP) only with --workers > 1.
    return workers > 1


SERVERS = {
    s.name: s
    for s in [
        Server(
            "corral",
            "corral --loop asyncio --http h11",
            "corral",
            _corral("asyncio", "h11"),
            _always,
            True,
        ),
        # The speedups extra, as --loop auto and --http auto choose it when installed.
        Server(
            "corral-speedups",
            "corral --loop uvloop --http httptools",
            "corral",
            _corral("uvloop", "httptools"),
            _always,
            True,
        ),
        Server(
            "uvicorn-h11",
            "uvicorn --http h11 --loop asyncio",
            "uvicorn",
            _uvicorn("h11", "asyncio"),
            _with_supervisor,
        ),
        Server(
            "uvicorn-httptools",
            "uvicorn --http httptools --loop uvloop",
            "uvicorn",
            _uvicorn("httptools", "uvloop"),
            _with_supervisor,
        ),
        # gunicorn's pure-Python parser (gunicorn_h1c is not installed) on either loop:
        # the first is the pure-Python peer, the second faces corral-speedups.
        Server(
            "gunicorn-asgi",
            "gunicorn -k asgi --asgi-loop asyncio",
            "gunicorn",
            _gunicorn("asyncio"),
            _always,
        ),
        Server(
            "gunicorn-asgi-uvloop",
            "gunicorn -k asgi --asgi-loop uvloop",
            "gunicorn",
            _gunicorn("uvloop"),
            _always,
        ),
        Server("hypercorn", "hypercorn -k asyncio", "hypercorn", _hypercorn("asyncio"), _always),
        Server("granian", "granian --interface asgi", "granian", _granian, _always),
        # Not in the default list; pass --servers to add them.
        Server(
            "corral-uvloop",
            "corral --loop uvloop --http h11",
            "corral",
            _corral("uvloop", "h11"),
            _always,
            True,
        ),
        Server(
            "uvicorn-h11-uvloop",
            "uvicorn --http h11 --loop uvloop",
            "uvicorn",
            _uvicorn("h11", "uvloop"),
            _with_supervisor,
        ),
        Server(
            "hypercorn-uvloop", "hypercorn -k uvloop", "hypercorn", _hypercorn("uvloop"), _always
        ),
    ]
}
#: Everything but the variants added for curiosity (--servers adds them).
DEFAULT_SERVERS = [
    n for n in SERVERS if n not in ("corral-uvloop", "uvicorn-h11-uvloop", "hypercorn-uvloop")
]


# -- the virtualenv ---------------------------------------------------------------------------


def use_venv(path: Path) -> str | None:
    """Benchmark in the venv at ``path`` (``--venv``); say what is wrong with it, if anything.

    A venv is made with the interpreter running this script, so one made by another
    Python (a different ``--venv`` is needed for each) is refused.
    """
    global VENV, VBIN, VPY
    VENV = path.resolve()
    VBIN = VENV / "bin"
    VPY = VBIN / "python"
    config = VENV / "pyvenv.cfg"
    if config.exists():
        ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
        for line in config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                theirs = ".".join(value.strip().split(".")[:2])
                if theirs != ours:
                    return f"{VENV} was made by Python {theirs}, not {ours}: pass another --venv"
    return None


def ensure_venv(log: Callable[[str], None]) -> None:
    """Create the venv (``--venv``) and install the peers, unless requirements.txt is
    unchanged.

    A requirement that fails to install is skipped (its server is then not available);
    the others are still installed.
    """
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if VPY.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return
    if not VPY.exists():
        log(f"creating {VENV} with Python {sys.version.split()[0]}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VPY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    log("installing the peers (pip install -r benchmarks/requirements.txt, -e .)")
    if subprocess.run([*pip, "-r", str(REQUIREMENTS)]).returncode != 0:
        for line in REQUIREMENTS.read_text().splitlines():
            requirement = line.split("#", 1)[0].strip()
            if requirement and subprocess.run([*pip, requirement]).returncode != 0:
                log(f"  could not install {requirement}: its server will be skipped")
    if subprocess.run([*pip, "-e", str(ROOT)]).returncode != 0:
        log("  could not install corral into the benchmark venv")
    stamp.write_text(digest + "\n")


def venv_versions() -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for n in ['corral','uvicorn','httptools','uvloop','gunicorn','hypercorn','granian',"
        "'h11','wsproto','websockets']:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(VPY), "-c", code], capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else {}


# -- /proc ------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime in ticks, start time) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is 4, utime 14, stime 15, starttime 22.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry))
    if _stat(root) is None:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_s(root: int) -> float:
    total = 0
    for pid in process_tree(root):
        info = _stat(pid)
        if info is not None:
            total += info[1]
    return total / CLK_TCK


def core_busy_s(cpu: str | None) -> float:
    """User + nice + system time of one CPU (all processes), from /proc/stat."""
    if cpu is None:
        return 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            fields = line.split()
            return (int(fields[1]) + int(fields[2]) + int(fields[3])) / CLK_TCK
    return 0.0


def tree_wait_s(root: int) -> float:
    """Seconds the server's threads spent runnable but waiting for a CPU (schedstat).

    This is the contention figure: other processes on the server's core (tests, CI, a
    second benchmark) show up here, and then throughput is not the server's own.
    """
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def worker_pids(root: int) -> list[int]:
    """The processes that serve requests: the leaves of the tree, less helper processes."""
    pids = process_tree(root)
    if len(pids) <= 1:
        return pids
    parents = {info[0] for pid in pids if (info := _stat(pid)) is not None}
    return [
        pid
        for pid in pids
        if pid not in parents
        and "resource_tracker" not in _cmdline(pid)
        and "semaphore_tracker" not in _cmdline(pid)
    ]


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from /proc/PID/status and smaps_rollup."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


# -- running a server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_request(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one raw request with ``Connection: close``; return (status, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 4 + size


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    return http_request(
        port, f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode(), timeout
    )


class NotAvailable(Exception):
    """The server cannot be measured (not installed, does not start, fails the checks)."""


@dataclass
class Running:
    server: Server
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_ms: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log, led by the last exception line if any."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in text if re.match(r"^\w*(Error|Exception)\b", line)]
        head = [f"last error: {errors[-1]}"] if errors else []
        return "\n".join(head + text[-lines:])


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    server_cpus: str | None
    gen_cpus: str | None
    log: Callable[[str], None]
    lua_echo: Path = field(init=False)

    def __post_init__(self) -> None:
        self.lua_echo = self.tmp / "echo.lua"
        self.lua_echo.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = string.rep("x", {ECHO_BYTES})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )

    def pin(self, cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus] if cpus is not None else []


def start(ctx: Context, server: Server, workers: int, app: str, extra: list[str]) -> Running:
    """Start ``server`` and wait for its first good response.

    Raises:
        NotAvailable: if it exits or does not answer within STARTUP_TIMEOUT_S.
    """
    port = free_port()
    env = dict(os.environ)
    path = [str(ROOT)]
    if server.is_corral and ctx.args.corral_src:
        path.insert(0, str(Path(ctx.args.corral_src).resolve()))
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.pop("PYTHONASYNCIODEBUG", None)
    for name in list(env):
        if name.startswith(("CORRAL_", "UVICORN_", "GRANIAN_", "GUNICORN_")):
            del env[name]
    log_path = ctx.tmp / f"{server.name}-{port}.log"
    argv = ctx.pin(ctx.server_cpus) + server.argv(port, workers, app) + extra
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(server, proc, port, log_path, 0.0)
    try:
        running.startup_ms = _first_response_ms(running, started)
    except BaseException:
        # Not started (or interrupted): leave nothing behind.
        stop(running)
        raise
    return running


def _first_response_ms(running: Running, started: float) -> float:
    """Poll ``GET /`` until it answers 200; milliseconds since ``started``.

    Raises:
        NotAvailable: if the server exits or does not answer within STARTUP_TIMEOUT_S.
    """
    deadline = started + STARTUP_TIMEOUT_S
    while True:
        if running.proc.poll() is not None:
            raise NotAvailable(f"exited with {running.proc.returncode}: {running.log_tail(5)}")
        try:
            status, _ = get(running.port, "/", timeout=2.0)
        except OSError:
            status = 0
        if status == 200:
            return (time.perf_counter() - started) * 1000
        if time.perf_counter() > deadline:
            raise NotAvailable(
                f"no response within {STARTUP_TIMEOUT_S:.0f} s: {running.log_tail(4)}"
            )
        time.sleep(0.005)


def stop(running: Running) -> None:
    """SIGTERM the server, wait, then SIGKILL whatever is left of its process tree.

    Resource handling: only PIDs seen in the server's own tree are signalled, and each is
    checked against its start time first, so a recycled PID is never hit.
    """
    snapshot = {pid: info[2] for pid in process_tree(running.pid) if (info := _stat(pid))}
    with contextlib.suppress(ProcessLookupError):
        os.kill(running.pid, signal.SIGTERM)
    try:
        running.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
        running.proc.wait()
    # Orphans (re-parented to init once the master is gone) still show in the snapshot.
    deadline = time.monotonic() + 2.0
    while True:
        left = [pid for pid, t in snapshot.items() if (info := _stat(pid)) and info[2] == t]
        left = [pid for pid in left if pid != running.pid]
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
        time.sleep(0.05)


def wait_for_workers(running: Running, workers: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(running.pid)
        if len(pids) >= workers or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


# -- loads ------------------------------------------------------------------------------------

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(text: str) -> dict[str, float]:
    def latency(q: str) -> float:
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")

    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output: {text[-300:]!r}")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": float(m.group(1)),
        "rps": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "socket_errors": float(sum(int(g) for g in sock.groups())) if sock else 0.0,
        **{
            f"err_{kind}": float(sock.group(i + 1)) if sock else 0.0
            for i, kind in enumerate(("connect", "read", "write", "timeout"))
        },
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def measured(ctx: Context, running: Running, out: dict[str, float]) -> Iterator[None]:
    """Record the server's CPU, its core's other use and the generator's CPU around a load."""
    pid = running.pid
    cpu0, wait0, gen0 = tree_cpu_s(pid), tree_wait_s(pid), _children_cpu_s()
    core0 = core_busy_s(ctx.server_cpus)
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    cpu = tree_cpu_s(pid) - cpu0
    out["server_cpu_s"] = cpu
    out["server_cpu_pct"] = 100.0 * cpu / wall
    out["wait_pct"] = 100.0 * (tree_wait_s(pid) - wait0) / wall
    if ctx.server_cpus is not None:
        other = core_busy_s(ctx.server_cpus) - core0 - cpu
        out["other_cpu_pct"] = max(0.0, 100.0 * other / wall)
    out["gen_cpu_pct"] = 100.0 * (_children_cpu_s() - gen0) / wall


def wrk_flags(duration: float) -> list[str]:
    return f"-t1 -c{HTTP_CONNECTIONS} -d{duration:g}s --latency --timeout {WRK_TIMEOUT}".split()


def run_wrk(
    ctx: Context, running: Running, path: str, duration: float, script: Path | None = None
) -> dict[str, float]:
    argv = [*ctx.pin(ctx.gen_cpus), ctx.args.wrk, *wrk_flags(duration)]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"http://{HOST}:{running.port}{path}")
    out: dict[str, float] = {}
    with measured(ctx, running, out):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr.strip()[-300:]}")
    out.update(parse_wrk(proc.stdout))
    if out["server_cpu_s"] > 0:
        out["per_cpu_s"] = out["requests"] / out["server_cpu_s"]
    return out


def run_ws(ctx: Context, running: Running, duration: float, connections: int) -> dict[str, Any]:
    port = running.port
    flags = f"--host {HOST} --port {port} --connections {connections} --duration {duration:g}"
    argv = [*ctx.pin(ctx.gen_cpus), str(VPY), str(BENCH / "wsclient.py"), *flags.split()]
    out: dict[str, Any] = {}
    with measured(ctx, running, out):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    try:
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        out.update(connected=0, messages=0, msgs_per_s=0.0, errors=connections)
    if out.get("messages") and out["server_cpu_s"] > 0:
        out["per_cpu_s"] = out["messages"] / out["server_cpu_s"]
    return out


def check(ctx: Context, running: Running) -> tuple[list[str], bool]:
    """Check every endpoint once: (HTTP problems, WebSocket works)."""
    problems = []
    try:
        status, body = get(running.port, "/")
        if status != 200 or body != b"hello, world\n":
            problems.append(f"GET / gave {status} {body[:40]!r}")
        payload = os.urandom(ECHO_BYTES)
        status, body = http_request(
            running.port,
            f"POST /echo HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
            f"Content-Length: {ECHO_BYTES}\r\n\r\n".encode()
            + payload,
        )
        if status != 200 or body != payload:
            problems.append(f"POST /echo gave {status} and {len(body)} bytes")
        status, body = get(running.port, "/stream")
        if status != 200 or len(body) != 16 * 1024:
            problems.append(f"GET /stream gave {status} and {len(body)} bytes")
    except OSError as exc:
        problems.append(f"request failed: {exc}")
    ws = run_ws(ctx, running, 0.3, 1)
    return problems, bool(ws.get("connected")) and bool(ws.get("messages")) and not ws["errors"]


def hup_under_load(ctx: Context, running: Running, duration: float) -> dict[str, float]:
    """wrk on / for ``duration``; SIGHUP to the master after HUP_AFTER_S."""
    url = f"http://{HOST}:{running.port}/"
    argv = [*ctx.pin(ctx.gen_cpus), ctx.args.wrk, *wrk_flags(duration), url]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        time.sleep(HUP_AFTER_S)
        os.kill(running.pid, signal.SIGHUP)
        stdout, _ = wrk.communicate(timeout=duration + 60)
    out = parse_wrk(stdout)
    out["failed"] = out["non2xx"] + out["socket_errors"]
    # Afterwards the server must still answer (the new generation took over).
    deadline = time.monotonic() + 15.0
    alive = 0.0
    while time.monotonic() < deadline and running.proc.poll() is None:
        with contextlib.suppress(OSError):
            if get(running.port, "/", timeout=2.0)[0] == 200:
                alive = 1.0
                break
        time.sleep(0.05)
    out["alive_after"] = alive
    return out


# -- one round --------------------------------------------------------------------------------


def start_and_probe(ctx: Context, server: Server, workers: int) -> tuple[Running, dict[str, Any]]:
    """Start ``server``; measure start-up and idle memory; check every endpoint.

    Raises:
        NotAvailable: if the server does not start or fails the HTTP checks (it is
            stopped first).
    """
    running = start(ctx, server, workers, APP, [])
    result: dict[str, Any] = {"startup_ms": running.startup_ms}
    try:
        pids = wait_for_workers(running, workers)
        time.sleep(0.3)  # let the workers settle after their first request
        mem = [memory_kib(pid) for pid in pids]
        result["workers_seen"] = len(pids)
        if mem:
            result["rss_mib"] = statistics.median(m[0] for m in mem) / 1024
            result["pss_mib"] = statistics.median(m[1] for m in mem) / 1024
        result["tree_pss_mib"] = sum(memory_kib(p)[1] for p in process_tree(running.pid)) / 1024
        problems, ws_ok = check(ctx, running)
        if problems:
            raise NotAvailable("; ".join(problems) + f"\n{running.log_tail(5)}")
        if not ws_ok:
            result["ws_na"] = (
                "n/a (no WebSocket yet)" if server.is_corral else "n/a (WebSocket check failed)"
            )
        run_wrk(ctx, running, "/", ctx.args.warmup)
    except BaseException:
        stop(running)
        raise
    return running, result


def run_load(ctx: Context, running: Running, load: str, result: dict[str, Any]) -> None:
    """Run one load (hello, echo, stream, ws) against a started server into ``result``."""
    duration = ctx.args.duration
    if load == "hello":
        result["hello"] = run_wrk(ctx, running, "/", duration)
    elif load == "echo":
        result["echo"] = run_wrk(ctx, running, "/echo", duration, ctx.lua_echo)
    elif load == "stream":
        result["stream"] = run_wrk(ctx, running, "/stream", duration)
    elif "ws_na" not in result:
        result["ws"] = run_ws(ctx, running, duration, WS_CONNECTIONS)


LOADS = ("hello", "echo", "stream", "ws")


def one_round(
    ctx: Context, names: list[str], unavailable: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Start every server, run each load across them in turn, HUP them, stop them.

    All servers are up at once (idle ones cost nothing), and each load runs on every
    server back to back, so a busy spell of the machine hits them alike. Servers that
    do not start are added to ``unavailable``.
    """
    log, workers = ctx.log, ctx.args.workers
    running: dict[str, Running] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            try:
                running[name], results[name] = start_and_probe(ctx, SERVERS[name], workers)
            except NotAvailable as exc:
                unavailable[name] = "not available: " + " ".join(str(exc).split())[:300]
                log(f"  {unavailable[name]}")
                continue
            log(f"  {name} started in {results[name]['startup_ms']:.0f} ms")
        for load in LOADS:
            for name, server in running.items():
                try:
                    run_load(ctx, server, load, results[name])
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[name].setdefault("errors", []).append(f"{load}: {exc}")
        for name, server in running.items():
            result = results[name]
            loads = [result[k] for k in LOADS if k in result]
            if loads:
                result["wait_pct_max"] = max(load["wait_pct"] for load in loads)
                result["other_cpu_pct_max"] = max(load.get("other_cpu_pct", 0.0) for load in loads)
            if SERVERS[name].hup(workers):
                try:
                    result["hup"] = hup_under_load(ctx, server, ctx.args.hup_duration)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    result.setdefault("errors", []).append(f"HUP: {exc}")
            if server.proc.poll() is not None:
                result["died"] = f"exited with {server.proc.returncode} during the run"
            log(f"  {name}: {_brief(result)}")
    finally:
        for server in running.values():
            stop(server)
    return results


def preload_memory(ctx: Context, workers: int) -> list[dict[str, Any]]:
    """corral's PSS per worker with and without --preload, on the tiny and the bulky app."""
    rows: list[dict[str, Any]] = []
    server = SERVERS["corral"]
    for app, label in ((APP, "hello app"), (BULKY_APP, "bulky app (~40 MiB heap)")):
        for preload in (False, True):
            extra = (["--factory"] if app == BULKY_APP else []) + (["--preload"] if preload else [])
            try:
                running = start(ctx, server, workers, app, extra)
            except NotAvailable as exc:
                rows.append({"app": label, "preload": preload, "error": str(exc)[:200]})
                continue
            try:
                pids = wait_for_workers(running, workers)
                # Every worker must have imported the app (without --preload they do so
                # after fork); a request to each is not guaranteed, so give them time.
                time.sleep(1.5)
                worker_mem = [memory_kib(pid) for pid in pids]
                master = memory_kib(running.pid)
                row = {
                    "app": label,
                    "preload": preload,
                    "workers": len(pids),
                    "worker_pss_mib": statistics.mean(m[1] for m in worker_mem) / 1024,
                    "worker_rss_mib": statistics.mean(m[0] for m in worker_mem) / 1024,
                    "master_pss_mib": master[1] / 1024,
                    "total_pss_mib": (master[1] + sum(m[1] for m in worker_mem)) / 1024,
                }
                # Serving dirties copy-on-write pages (reference counts, the GC's
                # bookkeeping): measure again after a short load.
                run_wrk(ctx, running, "/", PRELOAD_LOAD_S)
                loaded = [memory_kib(pid) for pid in worker_pids(running.pid)]
                if loaded:
                    row["loaded_pss_mib"] = statistics.mean(m[1] for m in loaded) / 1024
                rows.append(row)
            finally:
                stop(running)
    return rows


# -- the report -------------------------------------------------------------------------------


def _get(result: dict[str, Any], path: str) -> float | None:
    node: Any = result
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


@dataclass
class Stat:
    median: float
    spread_pct: float
    n: int


def summarise(rounds: list[dict[str, Any]], path: str) -> Stat | None:
    values = [v for r in rounds if (v := _get(r, path)) is not None and v == v]
    if not values:
        return None
    med = statistics.median(values)
    spread = max(max(values) - med, med - min(values))
    return Stat(med, 100.0 * spread / med if med else 0.0, len(values))


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def cell(stat: Stat | None, digits: int = 0, spread: bool = True) -> str:
    if stat is None:
        return "—"
    text = _num(stat.median, digits)
    if spread and stat.n > 1:
        text += f" ±{stat.spread_pct:.0f}%"
    return text


def ratio(stat: Stat | None, base: Stat | None) -> str:
    if stat is None or base is None or not base.median:
        return "—"
    return f"{stat.median / base.median:.2f}x"


THROUGHPUT = [
    ("hello req/s", "hello.rps", 0),
    ("p50 ms", "hello.p50_ms", 2),
    ("p99 ms", "hello.p99_ms", 2),
    ("64 KiB echo req/s", "echo.rps", 0),
    ("16x1 KiB stream req/s", "stream.rps", 0),
    ("WS echo msg/s", "ws.msgs_per_s", 0),
]
EFFICIENCY = [
    ("hello CPU %", "hello.server_cpu_pct", 0),
    ("hello req/CPU-s", "hello.per_cpu_s", 0),
    ("echo CPU %", "echo.server_cpu_pct", 0),
    ("echo req/CPU-s", "echo.per_cpu_s", 0),
    ("stream CPU %", "stream.server_cpu_pct", 0),
    ("stream req/CPU-s", "stream.per_cpu_s", 0),
    ("WS CPU %", "ws.server_cpu_pct", 0),
    ("WS msg/CPU-s", "ws.per_cpu_s", 0),
    ("others on core % (worst)", "other_cpu_pct_max", 0),
    ("CPU wait % (worst)", "wait_pct_max", 0),
]
RESOURCES = [
    ("idle RSS/worker MiB", "rss_mib", 1),
    ("idle PSS/worker MiB", "pss_mib", 1),
    ("tree PSS MiB", "tree_pss_mib", 1),
    ("startup ms", "startup_ms", 0),
]
RATIOS = [
    ("hello req/s", "hello.rps"),
    ("p99 (lower is better)", "hello.p99_ms"),
    ("echo req/s", "echo.rps"),
    ("stream req/s", "stream.rps"),
    ("WS msg/s", "ws.msgs_per_s"),
    ("hello req/CPU-s", "hello.per_cpu_s"),
    ("echo req/CPU-s", "echo.per_cpu_s"),
    ("stream req/CPU-s", "stream.per_cpu_s"),
    ("WS msg/CPU-s", "ws.per_cpu_s"),
    ("RSS/worker (lower is better)", "rss_mib"),
    ("startup (lower is better)", "startup_ms"),
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_info() -> dict[str, str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": subprocess.run(
            [str(VPY), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "wrk": wrk[0].split(" Copyright")[0] if wrk else "?",
    }


def export_revision(rev: str, into: Path) -> Path:
    """``git archive`` corral/ at ``rev`` into ``into``; record the full commit hash."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "corral"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / ".commit").write_text(commit + "\n")
    return into


def byte_compile(src: Path) -> None:
    """Compile corral's modules (and the app) to bytecode in ``src``, as ``pip install``
    does for the peers in site-packages.

    Without it every start of corral compiles its source again (an exported revision
    has no ``__pycache__``, and PYTHONDONTWRITEBYTECODE may be set), which the start-up
    column would charge to corral alone.
    """
    targets = [str(src / "corral"), str(BENCH / "apps.py")]
    subprocess.run([str(VPY), "-m", "compileall", "-q", *targets], check=False)


def corral_source(args: argparse.Namespace) -> str:
    if args.corral_rev:
        commit = (Path(args.corral_src) / ".commit").read_text().strip()
        # Name the last commit that changed corral/, not a later one that did not.
        last = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", commit, "--", "corral"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return (
            f"corral/ as of {commit[:10]} (last change to corral/: {last[:90]}), "
            "exported with git archive"
        )
    src = Path(args.corral_src).resolve() if args.corral_src else ROOT
    git = ["git", "-C", str(ROOT)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "corral"], capture_output=True, text=True
    ).stdout.strip()
    where = "the working tree" if src == ROOT else f"`{src}`"
    state = " (corral/ has uncommitted changes)" if dirty and src == ROOT else ""
    return f"{where}; repository HEAD {rev.stdout.strip()}{state}"


def render(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, Any]]],
    unavailable: dict[str, str],
    preload: list[dict[str, Any]],
    versions: dict[str, str],
    elapsed_s: float,
    pinned: bool,
) -> str:
    info = machine_info()
    names = [n for n in args.servers if results.get(n)]
    stats = {n: {path: summarise(results[n], path) for _, path in _all_metrics()} for n in names}
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    workers = args.workers
    out = [
        f"## {workers} worker{'s' if workers > 1 else ''}"
        + (" (quick smoke run)" if args.quick else ""),
        "",
        f"Run on {now}, `{' '.join(['python3', 'benchmarks/run.py', *sys.argv[1:]])}`, "
        f"{elapsed_s / 60:.1f} minutes.",
        "",
        f"- Machine: {info['cpu']}, {info['memory']}, {info['kernel']}; Python {info['python']}; "
        f"{info['wrk']}.",
        "- Pinning: "
        + ("server on CPU 0, load generator on CPU 1 (taskset)." if pinned else "none (<2 CPUs)."),
        f"- Loads: wrk -t1 -c{HTTP_CONNECTIONS} -d{args.duration:g}s --latency; "
        f"WebSocket: {WS_CONNECTIONS} connections ping-pong, 32-byte text messages, "
        f"{args.duration:g} s. Median of {args.repeat} run{'s' if args.repeat > 1 else ''}, "
        "± is the spread (largest distance from the median to min or max).",
        f"- corral source: {corral_source(args)}.",
        f"- Load average (1 min) at the start and end: {args.load_before} and "
        f"{os.getloadavg()[0]:.2f} (other processes on this machine add noise).",
        "- Servers: " + "; ".join(f"{n} = `{SERVERS[n].label}`" for n in args.servers) + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        "",
    ]
    others = [
        v for n in names for r in results[n] if (v := _get(r, "other_cpu_pct_max")) is not None
    ]
    if others and statistics.median(others) > NOISY_OTHERS_PCT:
        out += [
            f"> **A shared machine.** Other processes took {statistics.median(others):.0f}% "
            "of the server's core during a typical load of this run (median of the worst "
            "load per round). Throughput and latency are therefore lower and noisier than "
            "the servers can do: compare the req/CPU-s columns and their ratios.",
            "",
        ]
    if names:
        out += ["### Throughput and latency", ""]
        rows = [[f"**{n}**" if SERVERS[n].is_corral else n] for n in names]
        for row, n in zip(rows, names, strict=True):
            for _, path, digits in THROUGHPUT:
                stat = stats[n][path]
                if path.startswith("ws.") and stat is None:
                    row.append(next((r["ws_na"] for r in results[n] if "ws_na" in r), "—"))
                else:
                    row.append(cell(stat, digits))
        out += [*_table(["server"] + [t for t, _, _ in THROUGHPUT], rows), ""]

        out += ["### Server CPU (% of one core) and work per server-CPU-second", ""]
        rows = [[n] + [cell(stats[n][p], d, spread=False) for _, p, d in EFFICIENCY] for n in names]
        out += [*_table(["server"] + [t for t, _, _ in EFFICIENCY], rows), ""]
        gen = []
        for n in names:
            values = [_get(r, f"{k}.gen_cpu_pct") for r in results[n] for k in ("hello", "ws")]
            gen.append(max((v for v in values if v is not None), default=0.0))
        out += [
            f"Load generator CPU peaked at {max(gen, default=0):.0f}% of its core "
            "(near 100% means the figure is bounded by the client, not the server). "
            "*Others on core* is CPU time other processes took on the server's core during "
            "the load; *CPU wait* is the time the server's threads were runnable but not "
            "running (schedstat; with 2 workers on one core it includes waiting for each "
            "other). When others took a noticeable share, req/s is not the server's own and "
            "the per-CPU-second columns are the ones to compare.",
            "",
        ]

        out += ["### Memory, start-up and HUP reload under load", ""]
        rows = []
        for n in names:
            row = [n] + [cell(stats[n][p], d) for _, p, d in RESOURCES]
            seen = [r.get("workers_seen") for r in results[n]]
            row.append(str(seen[0]) if seen else "—")
            hups = [r["hup"] for r in results[n] if "hup" in r]
            if hups:
                failed = [int(h["failed"]) for h in hups]
                total = statistics.median(h["requests"] for h in hups)
                dead = sum(1 for h in hups if not h["alive_after"])
                text = f"{statistics.median(failed):.0f} of {total:,.0f} (max {max(failed)})"
                kinds = [
                    f"{kind} {sum(h.get(key, 0) for h in hups):.0f}"
                    for kind, key in (
                        ("non-2xx", "non2xx"),
                        ("connect", "err_connect"),
                        ("read", "err_read"),
                        ("write", "err_write"),
                        ("timeout", "err_timeout"),
                    )
                    if sum(h.get(key, 0) for h in hups)
                ]
                if kinds:
                    text += "; all runs: " + ", ".join(kinds)
                row.append(text + (f", server dead after {dead} HUP(s)" if dead else ""))
            else:
                row.append("n/a (no master that reloads on HUP)")
            rows.append(row)
        header = ["server"] + [t for t, _, _ in RESOURCES]
        out += [*_table([*header, "worker procs", "HUP: failed requests"], rows), ""]
        out += [
            f"HUP: wrk -c{HTTP_CONNECTIONS} -d{args.hup_duration:g}s on `/`, SIGHUP to the master "
            f"{HUP_AFTER_S:g} s in; failed = non-2xx responses + socket errors "
            "(connect, read, write, timeout).",
            "",
        ]

        if BASELINE in stats:
            out += [f"### Ratios to {BASELINE} (same run; >1 is more, <1 is less)", ""]
            base = stats[BASELINE]
            rows = [[n] + [ratio(stats[n][p], base[p]) for _, p in RATIOS] for n in names]
            out += [*_table(["server"] + [t for t, _ in RATIOS], rows), ""]
        else:
            out += [f"(No ratios: the baseline {BASELINE} was not measured.)", ""]

    if preload:
        out += [
            f"### corral --preload: PSS per worker ({preload[0].get('workers', '?')} workers)",
            "",
        ]
        rows = []
        for entry in preload:
            if "error" in entry:
                rows.append(
                    [entry["app"], "yes" if entry["preload"] else "no", entry["error"], "", "", ""]
                )
                continue
            loaded = entry.get("loaded_pss_mib")
            rows.append(
                [
                    entry["app"],
                    "yes" if entry["preload"] else "no",
                    f"{entry['worker_pss_mib']:.1f}",
                    f"{loaded:.1f}" if loaded is not None else "—",
                    f"{entry['worker_rss_mib']:.1f}",
                    f"{entry['total_pss_mib']:.1f}",
                ]
            )
        header = [
            "app",
            "--preload",
            "PSS/worker MiB",
            f"after {PRELOAD_LOAD_S} s of load",
            "RSS/worker MiB",
            "total PSS MiB (idle)",
        ]
        out += [*_table(header, rows), ""]
        out += [
            "PSS charges each shared page to its sharers in proportion, so it is the memory a "
            "worker really costs; measured idle, after start-up.",
            "",
        ]

    stalled = [n for n in names if _stalled(stats[n])]
    if stalled:
        out += ["### Stalls", ""]
        for n in stalled:
            cpu, p50 = stats[n]["hello.server_cpu_pct"], stats[n]["hello.p50_ms"]
            assert cpu is not None
            assert p50 is not None
            out.append(
                f"- {n} sat idle under the hello load ({cpu.median:.0f}% CPU) with a median "
                f"latency of {p50.median:.0f} ms. About 40 ms is the usual signature of "
                "Nagle's algorithm meeting delayed ACKs (a response written in several "
                "pieces on a connection without TCP_NODELAY). Its hello figures, and the "
                "ratios against them, measure that stall rather than its speed."
            )
        out.append("")
    if unavailable:
        out += ["### Not available", ""]
        out += [f"- {n}: {reason}" for n, reason in unavailable.items()] + [""]
    died = [f"- {n}: {r['died']}" for n in names for r in results[n] if "died" in r]
    died += [f"- {n}: {e}" for n in names for r in results[n] for e in r.get("errors", [])]
    if died:
        out += ["### Problems during the run", "", *died, ""]

    out += ["<details><summary>Raw results (JSON, one line per server and run)</summary>", ""]
    out += ["```json"]
    for n in names:
        for i, r in enumerate(results[n]):
            out.append(json.dumps({"server": n, "run": i + 1, **_rounded(r)}, default=str))
    out += [json.dumps({"preload": _rounded(row)}) for row in preload]
    out += ["```", "", "</details>", ""]
    return "\n".join(out)


def _stalled(stat: dict[str, Stat | None]) -> bool:
    """Idle under load with a latency near delayed-ACK's 40 ms: a stall, not slowness."""
    cpu, p50 = stat["hello.server_cpu_pct"], stat["hello.p50_ms"]
    return cpu is not None and p50 is not None and cpu.median < 50 and p50.median >= 30


def _rounded(value: Any) -> Any:
    """``value`` with floats cut to 6 significant digits, for the raw JSON lines."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _all_metrics() -> list[tuple[str, str]]:
    return [(t, p) for t, p, _ in THROUGHPUT + EFFICIENCY + RESOURCES] + list(RATIOS)


def write_results(path: Path, section: str, workers: int) -> None:
    """Replace this worker count's section of ``path``, keeping the others."""
    begin, end = f"<!-- begin workers={workers} -->", f"<!-- end workers={workers} -->"
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        text = (
            "# Benchmark results\n\n"
            "Written by `python3 benchmarks/run.py` (see README.md beside this file for what "
            "each figure means). Each section is replaced by the next run with the same "
            "`--workers`.\n\n"
        )
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        # Keep sections in worker order.
        marks = [
            (int(m.group(1)), m.start()) for m in re.finditer(r"<!-- begin workers=(\d+) -->", text)
        ]
        later = [pos for w, pos in marks if w > workers]
        at = min(later) if later else len(text)
        text = text[:at].rstrip("\n") + "\n\n" + block + "\n\n" + text[at:].lstrip("\n")
    path.write_text(text.rstrip("\n") + "\n")


# -- profiling --------------------------------------------------------------------------------


def profile(ctx: Context) -> None:
    """py-spy the corral worker under one load (``--profile-load``) and print the top
    frames."""
    pyspy = VBIN / "py-spy"
    if not pyspy.exists():
        raise SystemExit("py-spy is not installed in benchmarks/.venv")
    running = start(ctx, SERVERS[ctx.args.profile_server], 1, APP, [])
    try:
        worker = wait_for_workers(running, 1)[0]
        raw = ctx.tmp / "profile.txt"
        which = ctx.args.profile_load
        warm: dict[str, Any] = {}
        run_load(ctx, running, which, warm)  # warm-up, also checks the load works
        spy = subprocess.Popen(
            [
                str(pyspy),
                "record",
                "--pid",
                str(worker),
                "--rate",
                "250",
                "--format",
                "raw",
                "--duration",
                f"{ctx.args.duration:g}",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        result: dict[str, Any] = {}
        run_load(ctx, running, which, result)
        load = result.get(which, {})
        _, err = spy.communicate(timeout=ctx.args.duration + 60)
        if spy.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        rate = load.get("rps", load.get("msgs_per_s", 0.0))
        print(f"{which} under py-spy: {rate:,.0f}/s (profiler running)")
        print_profile(raw.read_text(), ctx.args.profile_top)
        if ctx.args.profile_out:
            shutil.copy(raw, ctx.args.profile_out)
            print(f"collapsed stacks written to {ctx.args.profile_out}")
    finally:
        stop(running)


def print_profile(collapsed: str, top: int) -> None:
    """Summarise py-spy's collapsed stacks: by package, by function, by line."""
    own_line: dict[str, int] = {}
    own_func: dict[str, int] = {}
    total_func: dict[str, int] = {}
    package: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [f.replace(str(ROOT) + "/", "") for f in stack.split(";")]
        leaf = frames[-1]
        own_line[leaf] = own_line.get(leaf, 0) + count
        funcs = [_function(f) for f in frames]
        own_func[funcs[-1]] = own_func.get(funcs[-1], 0) + count
        for func in set(funcs):
            total_func[func] = total_func.get(func, 0) + count
        where = _package(leaf)
        package[where] = package.get(where, 0) + count

    def show(title: str, table: dict[str, int], n: int) -> None:
        print(f"\n{title}:")
        for key, count in sorted(table.items(), key=lambda kv: -kv[1])[:n]:
            print(f"  {100 * count / samples:5.1f}%  {key}")

    print(f"\n{samples} samples (idle time in the selector excluded)")
    show("self time by package", package, 10)
    show(f"self time by function (top {top})", own_func, top)
    # Frames on every stack (the event loop, the CLI) say nothing: leave them out.
    inclusive = {k: v for k, v in total_func.items() if v < 0.97 * samples}
    show(f"inclusive time by function (top {top})", inclusive, top)
    show(f"self time by line (top {top})", own_line, top)


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``."""
    return re.sub(r":\d+\)$", ")", frame)


def _package(frame: str) -> str:
    match = re.search(r"\((.*):\d+\)$", frame)
    path = match.group(1) if match else frame
    for name in ("corral/protocol", "corral/workers", "corral", "h11", "wsproto", "asyncio"):
        if f"{name}/" in path or path.startswith(name + "/"):
            return name
    if "apps.py" in path:
        return "the app (benchmarks/apps.py)"
    return "other (" + path.rsplit("/", 1)[-1] + ")"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark corral against its peers (see benchmarks/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="~2 minute smoke run")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--repeat", type=int, help="runs per server (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, help="seconds per load (default 4; 2 --quick)")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from: {', '.join(SERVERS)}",
    )
    parser.add_argument("--out", default=str(BENCH / "RESULTS.md"), help="markdown file to update")
    parser.add_argument(
        "--corral-src",
        help="directory holding a corral package to benchmark instead of the working tree",
    )
    parser.add_argument(
        "--corral-rev",
        help="benchmark corral as committed at this git revision (exported with git archive)",
    )
    parser.add_argument(
        "--venv",
        default=str(VENV),
        help="the venv of the peers, made with the Python running this script "
        "(default benchmarks/.venv; one per Python version)",
    )
    parser.add_argument("--no-preload", action="store_true", help="skip the --preload PSS table")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    parser.add_argument(
        "--profile", action="store_true", help="profile corral's hello path with py-spy instead"
    )
    parser.add_argument(
        "--profile-load", choices=LOADS, default="hello", help="the load --profile runs"
    )
    parser.add_argument(
        "--profile-server",
        choices=[n for n, s in SERVERS.items() if s.is_corral],
        default="corral",
        help="which corral --profile runs",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--profile-out", help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    # wrk takes whole seconds only.
    args.duration = args.duration or (2 if args.quick else 4)
    args.warmup = 1
    args.hup_duration = 3 if args.quick else 5
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    if not 0 < args.duration <= 60 or not 0 < args.repeat <= 20:
        parser.error("--duration must be in [1, 60] and --repeat in [1, 20]")
    if not Path(args.wrk).exists():
        parser.error("wrk not found (apt-get install wrk)")
    problem = use_venv(Path(args.venv))
    if problem:
        parser.error(problem)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", flush=True)

    ensure_venv(log)
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    if os.getloadavg()[0] > 0.5:
        log(f"load average {args.load_before}: other processes are busy, figures will be noisy")
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        ctx = Context(args, Path(tmp), "0" if pinned else None, "1" if pinned else None, log)
        if args.corral_rev:
            args.corral_src = str(export_revision(args.corral_rev, Path(tmp) / "corral-src"))
        byte_compile(Path(args.corral_src) if args.corral_src else ROOT)
        if args.profile:
            profile(ctx)
            return 0
        versions = venv_versions()
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in args.servers}
        unavailable: dict[str, str] = {}
        for name in args.servers:
            server = SERVERS[name]
            if server.module not in versions or not Path(server.argv(0, 1, APP)[0]).exists():
                unavailable[name] = f"not available ({server.module} is not installed)"
        names = [n for n in args.servers if n not in unavailable]
        for rep in range(args.repeat):
            # Rotate the order so that no server always runs first or last.
            shift = rep % len(names) if names else 0
            order = [n for n in names[shift:] + names[:shift] if n not in unavailable]
            log(f"run {rep + 1}/{args.repeat}: {', '.join(order)}")
            for name, result in one_round(ctx, order, unavailable).items():
                results[name].append(result)
        for name in unavailable:
            results[name] = []
        preload = []
        if "corral" in args.servers and "corral" not in unavailable and not args.no_preload:
            log("corral --preload memory")
            preload = preload_memory(ctx, max(2, args.workers))
        section = render(
            args, results, unavailable, preload, versions, time.monotonic() - began, pinned
        )
    write_results(Path(args.out), section, args.workers)
    log(f"wrote {args.out}")
    return 0


def _brief(result: dict[str, Any]) -> str:
    parts = [f"startup {result['startup_ms']:.0f} ms"]
    for key, label in (("hello", "hello"), ("echo", "echo"), ("stream", "stream")):
        if key in result:
            parts.append(
                f"{label} {result[key]['rps']:,.0f}/s ({result[key]['server_cpu_pct']:.0f}% CPU)"
            )
    if "ws" in result:
        parts.append(f"ws {result['ws'].get('msgs_per_s', 0):,.0f} msg/s")
    if "hup" in result:
        parts.append(f"HUP failed {result['hup']['failed']:.0f}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
