"""Chaos: SIGKILL a random worker every 2 s under steady load; who fails?

    .venv/bin/python benchmarks/chaos.py                        # 60 s, 4 workers
    .venv/bin/python benchmarks/chaos.py --workers 2 --every 0.5

It starts ``python -m corral tests.apps_hostile:load`` on port 0 and runs client
threads, half on keep-alive connections and half on a fresh connection per request,
each looping ``GET /slow?ms=20``: the app sends the head (with its pid in ``x-pid``)
and a first body byte at once and the rest 20 ms later, so most requests are in
flight at any moment and a client knows which worker serves it before the body ends.
Every ``--every`` seconds a random live, READY worker is SIGKILLed.

Each failed request is judged:

- *in flight on the killed worker*: its response head came from a worker that was
  then killed, and it failed after the kill; or, with no head, it started before a kill
  and failed within a second after it (on a keep-alive connection, one answered by the
  killed worker);
- *retried*: a request sent on a keep-alive connection whose worker had already been
  killed before the request started fails at once; like any careful client (RFC 9112
  section 9.3.1) it is retried once on a new connection and only counted;
- *unexplained*: anything else. There must be none.

"The server never stops answering" is measured as the longest time between two
successful responses (``max gap``).

A worker SIGKILLed from outside is replaced at once and not charged to the master's
crash budget or respawn backoff (corral/supervisor/state.py); before that rule, a kill
every 2 s spent the budget (more than 5 crashes within 60 s: exit code 6) at the 6th
kill. The budget and backoff are deliberately not options; ``--crash-budget N`` and
``--backoff-max S`` override them for a run, through a ``sitecustomize`` module put on
the master's PYTHONPATH, for experiments with the policy. ``run_chaos`` is also what
tests/e2e/test_hostile.py runs, for 9 s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import TIME_FACTOR, Server, wait_until  # noqa: E402
from tests.supervisor.load import live_children  # noqa: E402

APP = "tests.apps_hostile:load"

#: A request in flight on a killed worker fails as soon as the kernel resets its
#: connection: well within this after the kill.
FAIL_WINDOW_S = 1.0

_SITECUSTOMIZE = """\
import dataclasses
import os
import sys

# site runs before ``python -m`` puts the working directory first on sys.path: do it
# now, so the corral patched here is the one the server then runs.
sys.path.insert(0, os.getcwd())

import corral.supervisor.loop as _loop

_settings_for = _loop.settings_for


def _chaos_settings(config):
    settings = _settings_for(config)
    changes = {}
    if os.environ.get("CHAOS_CRASH_BUDGET"):
        changes["crash_budget"] = int(os.environ["CHAOS_CRASH_BUDGET"])
    if os.environ.get("CHAOS_BACKOFF_MAX"):
        changes["backoff_max_s"] = float(os.environ["CHAOS_BACKOFF_MAX"])
        changes["backoff_base_s"] = min(settings.backoff_base_s, changes["backoff_max_s"])
    return dataclasses.replace(settings, **changes)


_loop.settings_for = _chaos_settings
"""


@dataclass
class Attempt:
    """One request as a client saw it."""

    started: float
    ended: float
    ok: bool
    #: The worker that served it, if known (head received, or keep-alive connection).
    pid: int | None
    #: Sent on a keep-alive connection that had been answered before.
    reused: bool
    #: The response head arrived (so ``pid`` is the worker that answered it).
    head: bool = False
    error: str = ""


@dataclass
class ChaosResult:
    duration_s: float
    every_s: float
    kills: list[tuple[float, int]]
    attempts: list[Attempt]
    #: Seconds the killer waited for the pool to be back at full strength.
    waited_s: float
    exit_code: int | None
    stopped_at: float | None
    in_flight: list[Attempt] = field(default_factory=list)
    retried: list[Attempt] = field(default_factory=list)
    unexplained: list[Attempt] = field(default_factory=list)
    after_exit: list[Attempt] = field(default_factory=list)
    #: Kills skipped because no worker was live and READY (all were in respawn backoff).
    skipped: int = 0
    #: Respawn delays the master chose (its "next worker for slot N in S s" lines).
    backoffs: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(a.ok for a in self.attempts)

    @property
    def max_gap_s(self) -> float:
        ends = sorted(a.ended for a in self.attempts if a.ok)
        return max((b - a for a, b in itertools.pairwise(ends)), default=float("inf"))

    def judge(self, exited_at: float | None = None) -> None:
        """Sort every failure into in_flight, retried or unexplained (module docstring);
        failures from ``exited_at`` on (the master was stopping) go to ``after_exit``."""
        for attempt in self.attempts:
            if attempt.ok:
                continue
            if exited_at is not None and attempt.ended >= exited_at:
                self.after_exit.append(attempt)
            elif self._in_flight(attempt):
                self.in_flight.append(attempt)
            elif attempt.reused and self._stale(attempt):
                self.retried.append(attempt)
            else:
                self.unexplained.append(attempt)

    def _in_flight(self, a: Attempt) -> bool:
        if a.head:
            # The killed worker itself answered the head (a SIGKILL takes a moment to
            # land, so the request may even have started just after os.kill()).
            return any(a.pid == pid and at <= a.ended for at, pid in self.kills)
        return any(
            a.started < at <= a.ended <= at + FAIL_WINDOW_S and a.pid in (None, pid)
            for at, pid in self.kills
        )

    def _stale(self, a: Attempt) -> bool:
        return any(at <= a.started and a.pid == pid for at, pid in self.kills)


class _Clients:
    """Client threads looping ``GET /slow?ms=20`` until stopped."""

    def __init__(self, srv: Server, threads: int) -> None:
        self.srv = srv
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30 * TIME_FACTOR)

    def _run(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        conn_pid: int | None = None
        retry = False
        while not self._stopping.is_set() or retry:
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.srv.host, self.srv.port, timeout=30 * TIME_FACTOR
                )
                conn_pid = None
            reused = conn_pid is not None
            attempt = Attempt(time.monotonic(), 0.0, False, conn_pid, reused)
            try:
                headers = {} if keep_alive else {"Connection": "close"}
                conn.request("GET", "/slow?ms=20", headers=headers)
                response = conn.getresponse()
                attempt.pid = int(response.getheader("x-pid") or 0) or None
                attempt.head = True
                body = response.read()
                attempt.ok = response.status == 200 and body == b"<>"
                if not attempt.ok:
                    attempt.error = f"status {response.status}, body {body!r}"
            except (OSError, http.client.HTTPException) as exc:
                attempt.error = f"{type(exc).__name__}: {exc}"
            attempt.ended = time.monotonic()
            with self._lock:
                self.attempts.append(attempt)
            # A stale keep-alive connection gets one retry on a fresh connection.
            retry = not attempt.ok and reused and not retry
            if attempt.ok and keep_alive:
                conn_pid = attempt.pid
            else:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def _ready_live(srv: Server) -> set[int]:
    return srv.worker_pids() & live_children(srv.pid)


@contextlib.contextmanager
def _policy_override(crash_budget: int | None, backoff_max: float | None) -> Iterator[dict]:
    if crash_budget is None and backoff_max is None:
        yield {}
        return
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text(_SITECUSTOMIZE)
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p)
        env = {"PYTHONPATH": path}
        if crash_budget is not None:
            env["CHAOS_CRASH_BUDGET"] = str(crash_budget)
        if backoff_max is not None:
            env["CHAOS_BACKOFF_MAX"] = str(backoff_max)
        yield env


def run_chaos(
    *,
    duration_s: float,
    every_s: float = 2.0,
    workers: int = 2,
    threads: int = 4,
    wait_full: bool = False,
    crash_budget: int | None = None,
    backoff_max: float | None = None,
    progress: bool = False,
) -> ChaosResult:
    """Run the chaos described in the module docstring; return the judged result.

    With ``wait_full`` a kill waits (up to 30 s) until all ``workers`` are live and
    READY, so it never takes the last serving worker.
    """
    rng = random.Random()
    kills: list[tuple[float, int]] = []
    waited = 0.0
    skipped = 0
    stopped_at: float | None = None
    with (
        _policy_override(crash_budget, backoff_max) as env,
        Server(APP, "-w", str(workers), "--no-access-log", env=env) as srv,
    ):
        wait_until(lambda: len(_ready_live(srv)) == workers, 15, "all workers READY")
        clients = _Clients(srv, threads)
        try:
            started = time.monotonic()
            next_kill = started + every_s
            while time.monotonic() < started + duration_s:
                time.sleep(
                    max(
                        0.0,
                        min(next_kill, started + duration_s, time.monotonic() + 0.05)
                        - time.monotonic(),
                    )
                )
                if srv.proc.poll() is not None:
                    stopped_at = time.monotonic() - started
                    break
                if time.monotonic() < next_kill:
                    continue
                next_kill += every_s
                if wait_full:
                    before = time.monotonic()
                    wait_until(lambda: len(_ready_live(srv)) == workers, 30, "full strength")
                    waited += time.monotonic() - before
                candidates = sorted(_ready_live(srv))
                if not candidates:
                    skipped += 1
                    continue
                victim = rng.choice(candidates)
                kills.append((time.monotonic(), victim))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                if progress:
                    print(f"  {time.monotonic() - started:5.1f} s  killed {victim}", flush=True)
        finally:
            clients.stop()
        exit_code = srv.proc.poll()
        if exit_code is not None and stopped_at is None:
            stopped_at = time.monotonic() - started
        if progress and exit_code is not None:
            print(srv.output[-2000:])
    result = ChaosResult(
        duration_s, every_s, kills, clients.attempts, waited, exit_code, stopped_at
    )
    result.skipped = skipped
    result.backoffs = [
        float(m) for m in re.findall(r"next worker for slot \d+ in ([\d.]+)s", srv.output)
    ]
    # If the master stopped, the stop began with the kill that spent its crash budget:
    # what fails from then on is blamed on the stop, not on a kill.
    result.judge(kills[-1][0] if stopped_at is not None and kills else None)
    return result


def report(result: ChaosResult) -> str:
    lines = [
        f"- kills: {len(result.kills)}"
        f" (one every {result.every_s:g} s over {result.duration_s:.0f} s)",
        f"- requests answered: {result.ok}",
        f"- failed, in flight on the killed worker: {len(result.in_flight)}",
        f"- retried (stale keep-alive connection to a killed worker): {len(result.retried)}",
        f"- unexplained failures: {len(result.unexplained)}",
        f"- longest time without an answer: {result.max_gap_s:.3f} s",
    ]
    if result.backoffs:
        lines.append(
            f"- respawn backoffs chosen by the master: {len(result.backoffs)},"
            f" longest {max(result.backoffs):.1f} s"
        )
    if result.skipped:
        lines.append(f"- kills skipped, no worker live and READY: {result.skipped}")
    if result.waited_s:
        lines.append(f"- waited for full strength before kills: {result.waited_s:.1f} s")
    if result.exit_code is not None:
        lines.append(
            f"- the server EXITED with code {result.exit_code} at {result.stopped_at:.1f} s;"
            f" {len(result.after_exit)} requests failed from the kill that stopped it on"
        )
    first = result.attempts[0].started if result.attempts else 0.0
    lines += [
        f"  - unexplained: {a.error} (pid {a.pid}, {a.started - first:.3f}"
        f" to {a.ended - first:.3f} s)"
        for a in result.unexplained[:10]
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--wait-full", action="store_true", help="kill only at full strength")
    parser.add_argument("--crash-budget", type=int, help="override the master's crash budget")
    parser.add_argument("--backoff-max", type=float, help="override the respawn backoff cap")
    args = parser.parse_args()
    result = run_chaos(
        duration_s=args.duration,
        every_s=args.every,
        workers=args.workers,
        threads=args.threads,
        wait_full=args.wait_full,
        crash_budget=args.crash_budget,
        backoff_max=args.backoff_max,
        progress=True,
    )
    print(report(result))
    return 1 if result.unexplained or result.exit_code is not None else 0


if __name__ == "__main__":
    sys.exit(main())
