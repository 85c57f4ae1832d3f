"""How evenly corral's workers share new connections, and what the balanced accept costs.

    python3 benchmarks/fairness.py                      # 20 trials per row, about 2 minutes
    python3 benchmarks/fairness.py --trials 5           # quicker
    python3 benchmarks/fairness.py --hello-ab HEAD~1    # + hello throughput A/B (needs wrk)

Rows: 2 and 4 workers, on asyncio and on uvloop. Each trial starts nothing new: one
server per row, and in each trial

- 200 WebSocket connections are opened at once (all connected, then all upgraded); the
  app's first message names the worker's pid, so the share of each worker is counted.
  Reported: Jain's fairness index (1.0 = equal shares), the smallest share against the
  fair share, and how many trials met the goal (Jain >= 0.95 and no worker below half
  its fair share). The connections are closed before the next trial.
- 48 HTTP connections are queued while every worker is stopped (SIGSTOP), then the
  workers resume: does every worker get some? (Reported: trials where all did.)

Between trials the script waits until every worker has closed the previous trial's
connections (its open descriptors are back to what they were): a worker that still
counts them rightly takes fewer of the next ones.

Then the time from TERM to the first refused connection, with a 3 s request in flight
on 2 workers, over as many trials per loop (a new server each).

``--hello-ab REV`` then runs wrk on ``/`` (1 worker, asyncio, keep-alive) against corral
as committed at REV and against the working tree, in turn, ``--pairs`` times, and prints
the ratio of each pair (working tree / REV) and their median.

Traffic goes to 127.0.0.1 only; every server runs in its own session and is killed with
its process group at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import export_revision  # noqa: E402
from tests.harness import (  # noqa: E402
    WS_UPGRADE,
    Server,
    jain,
    open_sockets,
    read_response,
    refused,
    wait_until,
    websocket_greeting_pid,
)


def settle(pids: list[int], baseline: dict[int, int]) -> None:
    """Wait until every worker has closed the last trial's connections: a worker still
    counting them takes fewer of the next trial's, which is the rule, not unfairness."""
    wait_until(
        lambda: all(open_sockets(pid) <= baseline[pid] for pid in pids), 20, "the workers to settle"
    )


def websocket_trial(srv: Server, pids: list[int], count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(srv.connect()) for _ in range(count)]
        for sock in socks:
            sock.sendall(WS_UPGRADE)
        served = [websocket_greeting_pid(sock) for sock in socks]
    return [served.count(pid) for pid in pids]


def burst_trial(srv: Server, pids: list[int], count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            socks = [stack.enter_context(srv.connect()) for _ in range(count)]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        served = []
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            served.append(int(read_response(sock)[1]["x-pid"]))
    return [served.count(pid) for pid in pids]


def fairness(trials: int) -> list[str]:
    rows = [
        "| loop | workers | WS trials meeting the goal | Jain min / median"
        " | smallest share / fair share (worst) | 48-connection bursts reaching every worker |",
        "|---|---|---|---|---|---|",
    ]
    for loop in ("asyncio", "uvloop"):
        for workers in (2, 4):
            with Server(
                "tests.apps_hostile:load", "-w", str(workers), "--loop", loop, "--no-access-log"
            ) as srv:
                wait_until(
                    lambda srv=srv, n=workers: len(srv.worker_pids(1)) == n, 20, "the workers"
                )
                pids = sorted(srv.worker_pids(1))
                baseline = {pid: open_sockets(pid) for pid in pids}
                indexes, worst, met = [], 1.0, 0
                for _ in range(trials):
                    shares = websocket_trial(srv, pids, 200)
                    settle(pids, baseline)
                    index = jain(shares)
                    smallest = min(shares) / (200 / workers)
                    indexes.append(index)
                    worst = min(worst, smallest)
                    met += index >= 0.95 and smallest >= 0.5
                    print(f"{loop} {workers} workers: WS shares {shares}", flush=True)
                reached = 0
                for _ in range(trials):
                    shares = burst_trial(srv, pids, 48)
                    settle(pids, baseline)
                    reached += min(shares) > 0
                    print(f"{loop} {workers} workers: burst shares {shares}", flush=True)
            rows.append(
                f"| {loop} | {workers} | {met}/{trials} | {min(indexes):.4f} /"
                f" {statistics.median(indexes):.4f} | {worst:.2f} | {reached}/{trials} |"
            )
    return rows


@contextlib.contextmanager
def hello_server(src: Path) -> Iterator[Server]:
    # ``python -m corral`` imports corral from its working directory first; the app
    # comes from ROOT (the harness adds --app-dir ROOT).
    with Server(
        "benchmarks.apps:app", "-w", "1", "--loop", "asyncio", "--no-access-log", cwd=src
    ) as srv:
        yield srv


def wrk(srv: Server, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{srv.port}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no figure in wrk's output:\n{out}")
    return float(match.group(1))


def hello_ab(rev: str, pairs: int, seconds: int) -> list[str]:
    if shutil.which("wrk") is None:
        return ["(wrk is not installed: `apt-get install wrk`; no A/B)"]
    with tempfile.TemporaryDirectory() as tmp:
        base = export_revision(rev, Path(tmp) / "base")
        commit = (base / ".commit").read_text().strip()[:10]
        ratios = []
        for pair in range(pairs):
            # A B, then B A: a machine that drifts within a pair favours neither side.
            if pair % 2:
                with hello_server(ROOT) as srv:
                    after = wrk(srv, seconds)
                with hello_server(base) as srv:
                    before = wrk(srv, seconds)
            else:
                with hello_server(base) as srv:
                    before = wrk(srv, seconds)
                with hello_server(ROOT) as srv:
                    after = wrk(srv, seconds)
            ratios.append(after / before)
            print(f"hello: {commit} {before:.0f} req/s, working tree {after:.0f}", flush=True)
    listed = ", ".join(f"{r:.3f}" for r in ratios)
    return [
        f"hello, 1 worker, asyncio + h11, wrk -t1 -c16 -d{seconds}s, {pairs} pairs:"
        f" working tree / {commit} = {listed}; median {statistics.median(ratios):.3f}"
    ]


def refusal(trials: int) -> list[str]:
    """Milliseconds from TERM (a 3 s request in flight, 2 workers) to a refused connect."""
    rows = ["| loop | TERM to refusal, ms: median / max | trials |", "|---|---|---|"]
    for loop in ("asyncio", "uvloop"):
        took = []
        for _ in range(trials):
            with Server(
                "tests.apps:tagged", "-w", "2", "--loop", loop, "--graceful-timeout", "10"
            ) as srv:
                sock = srv.connect()
                sock.sendall(b"GET /slow?sleep=3 HTTP/1.1\r\nHost: t\r\n\r\n")
                srv.wait_for_line("tagged: sleeping /slow")
                started = time.monotonic()
                srv.signal(signal.SIGTERM)
                wait_until(lambda srv=srv: refused(srv), 10, "a refusal")
                took.append((time.monotonic() - started) * 1000)
                sock.close()
        rows.append(f"| {loop} | {statistics.median(took):.1f} / {max(took):.1f} | {len(took)} |")
        print(f"{loop}: refused after {[round(t, 1) for t in took]} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--hello-ab", metavar="REV")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    started = time.monotonic()
    lines = [*fairness(args.trials), "", *refusal(args.trials)]
    if args.hello_ab:
        lines += ["", *hello_ab(args.hello_ab, args.pairs, args.seconds)]
    print(f"\n({time.monotonic() - started:.0f} s)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
