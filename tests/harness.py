"""Running a real corral server as a subprocess, for end-to-end tests.

The server runs ``python -m corral`` in its own session (so its whole process group can
be killed, workers included, whatever happens to the test), on port 0, and reports its
address in its log. Every wait is a bounded poll scaled by ``TIME_FACTOR``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Multiplies every timeout in the tests (slow CI machines set CORRAL_TEST_TIME_FACTOR).
TIME_FACTOR = float(os.environ.get("CORRAL_TEST_TIME_FACTOR", "1"))

#: Set (to coverage's serialized settings) in the test process and every Python it
#: starts when the suite runs under ``coverage run`` with ``patch = ["subprocess"]``
#: (pyproject.toml): then each server, and each worker it forks, measures itself.
COVERAGE_ENV = "COVERAGE_PROCESS_CONFIG"

#: How long ``kill()`` lets a measured server stop by itself (SIGQUIT, the fast stop: the
#: master QUITs its workers, SIGKILLs them after 1 s, reaps them and exits) so that every
#: process writes its coverage data, before the SIGKILL that ends every test's server.
#: Not scaled by TIME_FACTOR: it only bounds how long a lost measurement can cost.
COVERAGE_STOP_S = 3.0

_LISTENING = re.compile(r"listening on (https?://[^\s\"]+|unix:[^\s\"]+)")
_READY = re.compile(r"worker (\d+) \(slot (\d+), generation (\d+)\) READY")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true, or fail after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + timeout * TIME_FACTOR
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * TIME_FACTOR:.1f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Server:
    """A corral server subprocess. Use as a context manager, or call ``kill()``."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | str = ROOT,
        bind_port: bool = True,
        wait_ready: bool = True,
        workers: int | None = None,
        wrap: tuple[str, ...] = (),
    ) -> None:
        # ``wrap`` runs the server under another program (systemd-socket-activate,
        # unshare); that program's pid is then ``pid``.
        if wrap and Path(wrap[0]).name == "systemd-socket-activate" and COVERAGE_ENV in os.environ:
            # It hands the program a clean environment plus its -E variables only.
            wrap = (wrap[0], "-E", COVERAGE_ENV, *wrap[1:])
        self._wrapper = Path(wrap[0]).name if wrap else ""
        argv = [*wrap, sys.executable, "-m", "corral", *args]
        if bind_port and not any(
            a.startswith(("--port", "--bind", "-b", "--uds", "--fd")) for a in args
        ):
            argv += ["--port", "0"]
        if "--app-dir" not in args:
            argv += ["--app-dir", str(ROOT)]
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        # --loop auto would pick uvloop and --http auto httptools wherever they are
        # installed (the test extra has both): the suite runs on asyncio and h11 unless a
        # test asks otherwise (tests/e2e/test_loops.py, tests/e2e/test_parsers.py).
        full_env.setdefault("CORRAL_LOOP", "asyncio")
        full_env.setdefault("CORRAL_HTTP", "h11")
        full_env.update(env or {})
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""
        self.host = ""
        self.port = 0
        if wait_ready:
            self.wait_ready(workers)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(
        self, pattern: str | re.Pattern[str], timeout: float = 10, start: int = 0
    ) -> re.Match[str]:
        """Wait for a log line matching ``pattern`` (from line ``start`` on)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout * TIME_FACTOR
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    waited = timeout * TIME_FACTOR
                    raise AssertionError(
                        f"no log line matching {regex.pattern!r} within {waited:.1f}s;"
                        f" output:\n{chr(10).join(self.lines)}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_ready(self, workers: int | None = None, timeout: float = 15) -> None:
        match = self.wait_for_line(_LISTENING, timeout)
        self.url = match.group(1)
        if self.url.startswith(("http://", "https://")):
            hostport = self.url.split("://", 1)[1]
            host, _, port = hostport.rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)
        self.wait_for_line(r"generation \d+ READY", timeout)

    def worker_pids(self, generation: int | None = None) -> set[int]:
        """PIDs of workers that reported READY (optionally of one generation)."""
        pids = set()
        for line in self.lines:
            match = _READY.search(line)
            if match and (generation is None or int(match.group(3)) == generation):
                pids.add(int(match.group(1)))
        return pids

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 15) -> int:
        """Wait for the master to exit; return its exit code."""
        try:
            return self.proc.wait(timeout * TIME_FACTOR)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server did not exit within {timeout * TIME_FACTOR:.1f}s;\n{self.output}"
            ) from None

    def connect(self, timeout: float = 5) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout * TIME_FACTOR)
        return sock

    def kill(self) -> None:
        """Kill the whole process group (master and workers). Safe to call twice.

        Under coverage the master is first asked for a fast stop (SIGQUIT) and given
        ``COVERAGE_STOP_S`` to take it, so that it and its workers save their data
        (workers leave through ``os._exit``, which coverage's ``_exit`` patch saves on; the
        master through ``sys.exit``, which its atexit hook saves on). The SIGKILL of the
        group follows either way, so nothing is left behind; without coverage it comes at
        once, as fast as before.
        """
        if COVERAGE_ENV in os.environ and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._master_pid(), signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(COVERAGE_STOP_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()

    def _master_pid(self) -> int:
        """The corral master's pid: ``pid``, unless a wrapper forked it rather than exec'd it.

        ``unshare --fork`` stays as the parent of the master and forwards no signal, so
        while ``pid`` is still the wrapper its single child is the master. The other
        wrappers (systemd-socket-activate, setpriv) exec the server, after which ``pid`` is
        the master (whose command line the master may have retitled: only the wrapper's
        own name is trusted).
        """
        if not self._wrapper:
            return self.pid
        try:
            argv0 = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")[0]
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:  # gone already, or no /proc: signal what we started
            return self.pid
        if Path(os.fsdecode(argv0)).name == self._wrapper and len(children) == 1:
            return int(children[0])
        return self.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # Gone between the kill and the read: the read itself can fail with
        # ESRCH once the process is reaped after the file was opened.
        return False
    return True


def http_request(sock: socket.socket, raw: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes and read until the peer closes (or ``timeout``)."""
    sock.settimeout(timeout * TIME_FACTOR)
    sock.sendall(raw)
    chunks = []
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def read_response(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (content-length or chunked) from a keep-alive socket."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    sock.settimeout(timeout * TIME_FACTOR)
    status = 0
    headers: dict[str, str] = {}
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, headers, body


@contextlib.contextmanager
def server(*args: str, **kwargs: object) -> Iterator[Server]:
    srv = Server(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield srv
    finally:
        srv.kill()


# -- connection-level helpers shared by tests/e2e/test_accept.py and benchmarks/fairness.py --

#: A WebSocket upgrade request (any path of tests.apps_hostile:load is its WebSocket echo).
WS_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def refused(srv: Server) -> bool:
    """Whether a new connection is refused (one that gets through is closed at once)."""
    try:
        sock = socket.create_connection((srv.host, srv.port), timeout=1)
    except ConnectionRefusedError:
        return True
    sock.close()
    return False


def websocket_greeting_pid(sock: socket.socket) -> int:
    """Finish the upgrade sent on ``sock`` and read the app's ``pid N`` greeting."""
    sock.settimeout(10 * TIME_FACTOR)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    while len(rest) < 2 or len(rest) < 2 + rest[1]:
        rest += sock.recv(4096)
    text = rest[2 : 2 + rest[1]].decode()
    assert text.startswith("pid "), text
    return int(text.split()[1])


def open_sockets(pid: int) -> int:
    """The sockets ``pid`` holds (other descriptors, like the /dev/null libuv opens at its
    first connection, do not count)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def jain(shares: list[int]) -> float:
    """Jain's fairness index: 1.0 when every share is equal, 1/n when one takes all."""
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares))
