"""Soak: mixed HTTP and WebSocket load for a long time; do the workers leak?

    .venv/bin/python benchmarks/soak.py                    # 10 minutes, 2 workers
    .venv/bin/python benchmarks/soak.py --duration 60 --warmup 10

It starts ``python -m corral tests.apps_hostile:load`` on port 0 and runs, side by side:

- HTTP clients, half on keep-alive connections and half on a fresh connection per
  request, cycling through ``GET /``, ``POST /echo`` with bodies of 0 to 64 KiB, and
  ``GET /slow?ms=5`` (a streamed, chunked answer);
- WebSocket clients, each opening a connection, echoing 20 text and binary messages of
  up to 16 KiB, and closing it, over and over.

After ``--warmup`` seconds of that load, the load stops, every connection closes, and
each worker's resident memory (VmRSS) and open file descriptors (``/proc/PID/fd``) are
taken as the baseline. Then the load runs for ``--duration`` seconds, stops again, and
the same figures are taken once the workers have closed every connection. A worker
passes if its RSS grew by less than ``--max-rss-growth`` (5 %) and it has no more
descriptors than at the baseline; the run passes if, in addition, no request failed and
no worker was replaced.

The warm-up matters: a fresh worker's RSS climbs for a minute or two under this load
before it levels off (most likely glibc raising its mmap and trim thresholds once the
first large buffers are freed, and pymalloc's arenas reaching the load's high-water
mark), so a short warm-up charges that one-off climb to the run. The RSS samples taken
under load every 30 s, and their least-squares slope (KiB per minute), show a leak
apart from it.

The script prints a markdown summary (benchmarks/HOSTILE.md has a run) and exits 1 if
the run failed. ``run_soak`` is also what tests/e2e/test_hostile.py runs, for 15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.exceptions import WebSocketException  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from tests.harness import TIME_FACTOR, Server, wait_until  # noqa: E402

APP = "tests.apps_hostile:load"


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (VmRSS from /proc, Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Counts:
    """What the clients saw; shared by the client threads under ``lock``."""

    http_ok: int = 0
    ws_messages: int = 0
    ws_sessions: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


class MixedLoad:
    """HTTP and WebSocket client threads until :meth:`stop`. Use as a context manager."""

    def __init__(self, srv: Server, *, http_threads: int = 4, ws_threads: int = 2) -> None:
        self.srv = srv
        self.counts = Counts()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._http, args=(i % 2 == 0, i), daemon=True)
            for i in range(http_threads)
        ] + [threading.Thread(target=self._ws, args=(i,), daemon=True) for i in range(ws_threads)]

    def __enter__(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Counts:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30 * TIME_FACTOR)
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            self.counts.fail(f"{len(alive)} client thread(s) did not stop")
        return self.counts

    def _http(self, keep_alive: bool, seed: int) -> None:
        rng = random.Random(seed)
        srv = self.srv
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10 * TIME_FACTOR)
        try:
            while not self._stopping.is_set():
                headers = {} if keep_alive else {"Connection": "close"}
                kind = rng.randrange(3)
                try:
                    if kind == 0:
                        conn.request("GET", "/", headers=headers)
                        expected = b"ok"
                    elif kind == 1:
                        body = rng.randbytes(rng.choice((0, 10, 1000, 65536)))
                        conn.request("POST", "/echo", body=body, headers=headers)
                        expected = body
                    else:
                        conn.request("GET", "/slow?ms=5", headers=headers)
                        expected = b"<>"
                    response = conn.getresponse()
                    got = response.read()
                except OSError as exc:
                    self.counts.fail(f"HTTP {type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                if response.status != 200 or got != expected:
                    self.counts.fail(f"HTTP status {response.status}, {len(got)} bytes")
                else:
                    with self.counts.lock:
                        self.counts.http_ok += 1
                if not keep_alive:
                    conn.close()
        finally:
            conn.close()

    def _ws(self, seed: int) -> None:
        rng = random.Random(1000 + seed)
        uri = f"ws://{self.srv.host}:{self.srv.port}/ws"
        while not self._stopping.is_set():
            try:
                with ws_connect(uri, open_timeout=10, close_timeout=10) as ws:
                    greeting = ws.recv(timeout=10 * TIME_FACTOR)
                    if not str(greeting).startswith("pid "):
                        self.counts.fail(f"WebSocket greeting {greeting!r}")
                    for _ in range(20):
                        size = rng.choice((1, 100, 4096, 16384))
                        message: str | bytes = (
                            "x" * size if rng.random() < 0.5 else rng.randbytes(size)
                        )
                        ws.send(message)
                        if ws.recv(timeout=10 * TIME_FACTOR) != message:
                            self.counts.fail("WebSocket echo differs")
                        with self.counts.lock:
                            self.counts.ws_messages += 1
                with self.counts.lock:
                    self.counts.ws_sessions += 1
            except (OSError, WebSocketException, TimeoutError) as exc:
                self.counts.fail(f"WebSocket {type(exc).__name__}: {exc}")


@dataclass
class WorkerFigures:
    pid: int
    rss_before_kib: int
    rss_after_kib: int
    fds_before: int
    fds_after: int

    @property
    def rss_growth(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.rss_before_kib


def slope_kib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60 * cov / var if var else 0.0


@dataclass
class SoakResult:
    duration_s: float
    counts: Counts
    workers: list[WorkerFigures]
    replaced: bool
    #: (seconds into the main phase, {pid: rss KiB}) samples.
    samples: list[tuple[float, dict[int, int]]]

    def problems(self, max_rss_growth: float) -> list[str]:
        found = [f"failure: {what}" for what in self.counts.failures[:10]]
        if self.replaced:
            found.append("a worker was replaced during the run")
        for w in self.workers:
            if w.rss_growth >= max_rss_growth:
                found.append(f"worker {w.pid}: RSS grew {w.rss_growth:.1%}")
            if w.fds_after > w.fds_before:
                found.append(f"worker {w.pid}: {w.fds_before} -> {w.fds_after} fds")
        return found


def _settle(pids: list[int], timeout: float) -> dict[int, int]:
    """Wait until the workers' fd counts stop falling (every client connection closed)."""
    counts = {pid: fd_count(pid) for pid in pids}
    deadline = time.monotonic() + timeout * TIME_FACTOR
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = {pid: fd_count(pid) for pid in pids}
        if now != counts:
            counts, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
    return counts


def run_soak(
    *,
    duration_s: float,
    warmup_s: float,
    workers: int = 2,
    http_threads: int = 4,
    ws_threads: int = 2,
    sample_every_s: float = 30.0,
    progress: bool = False,
) -> SoakResult:
    """Run the soak described in the module docstring and return its figures."""
    with Server(APP, "-w", str(workers), "--no-access-log") as srv:
        pids = sorted(srv.worker_pids())
        wait_until(lambda: len(pids) == workers, 5, "the workers")
        with MixedLoad(srv, http_threads=http_threads, ws_threads=ws_threads) as warm:
            time.sleep(warmup_s)
        failures = list(warm.counts.failures)
        fds_before = _settle(pids, 15)
        rss_before = {pid: rss_kib(pid) for pid in pids}
        samples: list[tuple[float, dict[int, int]]] = [(0.0, dict(rss_before))]
        started = time.monotonic()
        with MixedLoad(srv, http_threads=http_threads, ws_threads=ws_threads) as load:
            next_sample = started + sample_every_s
            while (now := time.monotonic()) < started + duration_s:
                time.sleep(max(0.0, min(next_sample, started + duration_s) - now))
                if time.monotonic() >= next_sample:
                    samples.append(
                        (time.monotonic() - started, {pid: rss_kib(pid) for pid in pids})
                    )
                    next_sample += sample_every_s
                    if progress:
                        print(
                            f"  {samples[-1][0]:5.0f} s  RSS KiB {samples[-1][1]}"
                            f"  HTTP {load.counts.http_ok}  WS {load.counts.ws_messages}",
                            flush=True,
                        )
        counts = load.counts
        counts.failures[:0] = failures
        fds_after = _settle(pids, 30)
        rss_after = {pid: rss_kib(pid) for pid in pids}
        samples.append((time.monotonic() - started, dict(rss_after)))
        replaced = sorted(srv.worker_pids()) != pids
    figures = [
        WorkerFigures(pid, rss_before[pid], rss_after[pid], fds_before[pid], fds_after[pid])
        for pid in pids
    ]
    return SoakResult(duration_s, counts, figures, replaced, samples)


def report(result: SoakResult, max_rss_growth: float) -> str:
    c = result.counts
    lines = [
        f"Soak: {result.duration_s:.0f} s of mixed load after warm-up;"
        f" {c.http_ok} HTTP responses, {c.ws_sessions} WebSocket sessions,"
        f" {c.ws_messages} WebSocket echoes, {len(c.failures)} failures.",
        "",
        "| worker | RSS before (KiB) | RSS after (KiB) | growth | fds before | fds after |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w.pid} | {w.rss_before_kib} | {w.rss_after_kib} | {w.rss_growth:+.2%}"
        f" | {w.fds_before} | {w.fds_after} |"
        for w in result.workers
    ]
    # Under-load samples only: the first and last are taken idle.
    loaded = result.samples[1:-1]
    for w in result.workers:
        points = [(at, rss[w.pid]) for at, rss in loaded]
        if len(points) >= 2:
            lines.append(
                f"Worker {w.pid} under load: {min(v for _, v in points)} to"
                f" {max(v for _, v in points)} KiB, slope {slope_kib_per_min(points):+.1f}"
                " KiB/min."
            )
    lines += ["", "RSS samples (KiB) during the run:", ""]
    for at, rss in result.samples:
        lines.append(f"- {at:5.0f} s: " + ", ".join(f"{pid}: {kib}" for pid, kib in rss.items()))
    problems = result.problems(max_rss_growth)
    lines += ["", "Result: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--warmup", type=float, default=120, help="seconds (default 120)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--http-threads", type=int, default=4)
    parser.add_argument("--ws-threads", type=int, default=2)
    parser.add_argument("--max-rss-growth", type=float, default=0.05)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        result = run_soak(
            duration_s=args.duration,
            warmup_s=args.warmup,
            workers=args.workers,
            http_threads=args.http_threads,
            ws_threads=args.ws_threads,
            progress=True,
        )
        print(report(result, args.max_rss_growth))
        return 1 if result.problems(args.max_rss_growth) else 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
