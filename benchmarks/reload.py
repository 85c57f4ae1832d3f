"""Measure what a reload or a dead worker costs: failed requests and seconds.

    .venv/bin/python benchmarks/reload.py                 # 4 workers, 4 clients, 5 repeats
    .venv/bin/python benchmarks/reload.py --workers 2 --repeat 10

Each scenario starts ``python -m corral tests.apps:tagged`` (it answers at once with its
pid) on port 0, puts it under a steady load (half of the client threads on keep-alive
connections, half on a fresh connection per request; see tests/supervisor/load.py for
what counts as a failure and as a retry), and measures:

- HUP: seconds from the signal until the new generation is READY and until the last old
  worker has exited; failed and retried requests over the whole swap;
- USR2: the same for a re-exec of the master in place (same pid);
- SIGKILL: seconds from killing one worker until its replacement is READY and until a
  request is answered by it (measured without load, so the figure is the respawn path).

Times are taken in this process when the master's log line arrives, so they include
the pipe from the server, a few milliseconds at most. Figures are medians and maxima
over ``--repeat`` runs. The respawn figure includes the crash backoff of the first
failure of a slot (0.5 s, see corral/supervisor/policy.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import Server, pid_alive, read_response, wait_until  # noqa: E402
from tests.supervisor.load import Load  # noqa: E402

READY = r"worker (\d+) \(slot {slot}, generation \d+\) READY"


def roll(signum: int, workers: int, threads: int) -> dict[str, float]:
    """One HUP or USR2 under load; returns the figures of that run."""
    with Server("tests.apps:tagged", "-w", str(workers), "--no-access-log") as srv:
        old = srv.worker_pids(1)
        with Load(srv.host, srv.port, threads=threads) as load:
            load.wait_for(200)
            mark = len(srv.lines)
            started = time.monotonic()
            srv.signal(signum)
            srv.wait_for_line("generation 2 READY", timeout=60, start=mark)
            ready_s = time.monotonic() - started
            wait_until(lambda: not any(pid_alive(p) for p in old), 60, "old workers to exit")
            replaced_s = time.monotonic() - started
            load.wait_for(200)
            result = load.stop()
        srv.signal(signal.SIGTERM)
        srv.wait()
    return {
        "ready_s": ready_s,
        "replaced_s": replaced_s,
        "requests": float(result.ok),
        "failed": float(len(result.failures)),
        "retried": float(result.retried),
    }


def respawn(workers: int) -> dict[str, float]:
    """SIGKILL one worker; seconds until its replacement is READY and answers."""
    with Server("tests.apps:tagged", "-w", str(workers), "--no-access-log") as srv:
        victim = min(srv.worker_pids(1))
        slot = int(srv.wait_for_line(rf"worker {victim} \(slot (\d+)").group(1))
        mark = len(srv.lines)
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        match = srv.wait_for_line(READY.format(slot=slot), timeout=30, start=mark)
        ready_s = time.monotonic() - started
        new = int(match.group(1))
        # With several workers any of them may answer: ask until the new one does.
        while True:
            with srv.connect() as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                if int(read_response(sock)[1]["x-pid"]) == new:
                    break
        serving_s = time.monotonic() - started
        srv.signal(signal.SIGTERM)
        srv.wait()
    return {"ready_s": ready_s, "serving_s": serving_s}


def summarize(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs]
    if key in ("failed", "retried", "requests"):
        return f"{sum(values):.0f} total"
    return f"{statistics.median(values):.3f} median, {max(values):.3f} max"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    for name, signum in (("HUP reload", signal.SIGHUP), ("USR2 re-exec", signal.SIGUSR2)):
        runs = [roll(signum, args.workers, args.threads) for _ in range(args.repeat)]
        rows += [
            (name, "new generation READY (s)", summarize(runs, "ready_s")),
            (name, "all old workers exited (s)", summarize(runs, "replaced_s")),
            (name, "requests served", summarize(runs, "requests")),
            (name, "failed requests", summarize(runs, "failed")),
            (name, "retried (closed idle keep-alive)", summarize(runs, "retried")),
        ]
    runs = [respawn(args.workers) for _ in range(args.repeat)]
    rows += [
        ("SIGKILL a worker", "replacement READY (s)", summarize(runs, "ready_s")),
        ("SIGKILL a worker", "replacement answering (s)", summarize(runs, "serving_s")),
    ]

    print(
        f"workers={args.workers} client threads={args.threads} repeats={args.repeat}"
        f" python={sys.version.split()[0]}"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in [("scenario", "figure", "value"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
