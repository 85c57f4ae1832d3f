"""A small steady load for supervisor tests and benchmarks/reload.py.

Client threads loop GET requests until stopped, half of them on keep-alive connections
and half on a fresh connection per request, and count what a careful HTTP client would
see. A request that fails on a *reused* keep-alive connection before any response byte
arrived is retried once on a new connection, as RFC 9112 section 9.3.1 allows for
idempotent requests (the server may close an idle connection at any moment, and a
request can cross that close on the wire); such retries are counted separately. Any
other error, or a status other than 200, is a failure.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from dataclasses import dataclass, field

from tests.harness import TIME_FACTOR

#: Errors that mean "the server closed the connection before answering".
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class LoadResult:
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    #: (monotonic time, worker pid) of every response.
    answers: list[tuple[float, int]] = field(default_factory=list)

    @property
    def pids(self) -> set[int]:
        return {pid for _, pid in self.answers}


class Load:
    """``threads`` clients requesting ``path`` until :meth:`stop`. Use as a context manager."""

    def __init__(self, host: str, port: int, *, threads: int = 4, path: str = "/") -> None:
        self.host, self.port, self.path = host, port, path
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10 * TIME_FACTOR)
        return self.result

    def wait_for(self, answers: int, timeout: float = 10) -> None:
        """Wait until at least ``answers`` more responses have arrived."""
        with self._lock:
            goal = len(self.result.answers) + answers
        deadline = time.monotonic() + timeout * TIME_FACTOR
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.result.answers) >= goal:
                    return
                failures = list(self.result.failures)
            if failures:
                raise AssertionError(f"load failures: {failures[:5]}")
            time.sleep(0.01)
        raise AssertionError(f"fewer than {answers} answers in {timeout * TIME_FACTOR:.1f}s")

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10 * TIME_FACTOR)

    def _run(self, keep_alive: bool) -> None:
        conn = self._connect()
        reused = False
        while not self._stopping.is_set():
            headers = {} if keep_alive else {"Connection": "close"}
            try:
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except _CLOSED as exc:
                conn.close()
                conn = self._connect()
                if reused:
                    reused = False
                    with self._lock:
                        self.result.retried += 1
                    continue
                self._fail(f"{type(exc).__name__}: {exc}")
                continue
            except OSError as exc:
                conn.close()
                conn = self._connect()
                reused = False
                self._fail(f"{type(exc).__name__}: {exc}")
                continue
            if response.status != 200:
                self._fail(f"status {response.status}: {body[:100]!r}")
            else:
                pid = int(response.getheader("x-pid") or 0)
                with self._lock:
                    self.result.ok += 1
                    self.result.answers.append((time.monotonic(), pid))
            # http.client reopens by itself after a response that closed the connection.
            reused = keep_alive and not response.will_close
            if not keep_alive:
                conn.close()
        conn.close()

    def _fail(self, what: str) -> None:
        with self._lock:
            self.result.failures.append(what)


def live_children(pid: int) -> set[int]:
    """PIDs of the live (not zombie) children of ``pid``, from /proc (Linux)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry))
    return found
