"""The contract between the master and its workers, and the process exit codes.

Both sides import this module and nothing else of each other: the master never reaches
into worker internals, and a worker knows the master only through one pipe and a few
signals.

Worker -> master: one byte per message on a pipe the master created before forking.
Single bytes are written atomically, so the master never sees half a message, and the
master can read whatever is there without framing.

Master -> worker: signals (see ``WorkerSignal``). They are the only channel that still
works when the worker's event loop is stuck.

Limits (--max-requests, --max-worker-lifetime, --max-worker-memory) are kept by both
sides with one rule: the successor is started early enough to be READY about when the
limit is reached, and a worker that gets :data:`LIMIT_SLACK` past its limit takes no new
work, whether its successor is READY or not. The worker applies it to its request count
(it knows its own boot time and request rate); the master to lifetime and memory.
"""

from __future__ import annotations

import enum
import math
import signal
from typing import final


class ExitCode(enum.IntEnum):
    """Exit codes of the master (and, where it says so, of a worker).

    They are part of the external contract: scripts and supervisors depend on them.
    """

    #: A clean stop (TERM, INT or QUIT handled and everything shut down).
    OK = 0
    #: Something unexpected went wrong in the master (a bug: the log says what).
    INTERNAL = 1
    #: Bad command line, bad config file or env value, or a pidfile held by a live process.
    USAGE = 2
    #: The application could not be imported (also a worker's exit code for it).
    APP_IMPORT = 3
    #: The ASGI lifespan startup failed (also a worker's exit code for it).
    LIFESPAN = 4
    #: A listening address could not be bound (in use, permission, bad fd).
    BIND = 5
    #: Workers kept crashing: the crash budget for the window was spent.
    CRASH_BUDGET = 6


#: Worker exit codes that mean "this will fail again the same way": at first start the
#: master stops the server with the same code instead of respawning in a loop.
FATAL_WORKER_EXITS = frozenset({ExitCode.APP_IMPORT, ExitCode.LIFESPAN})

#: How far past a limit a worker may go while its successor starts, as a fraction of the
#: limit: 10 %. The successor is started early, so this is only reached when it boots
#: slower than expected; it is the bound an operator can rely on ("--max-requests 1000
#: serves at most 1100", "--max-worker-lifetime 3600 retires by 3960 s").
LIMIT_SLACK = 0.1


class WorkerMessage(bytes, enum.Enum):
    """One-byte messages a worker writes to its pipe."""

    #: The app is imported, lifespan startup is complete and the worker is serving.
    READY = b"R"
    #: Sent from inside the event loop every heartbeat interval: a blocked loop goes silent.
    HEARTBEAT = b"H"
    #: The worker asks to be replaced for --max-requests. It asks early, when the requests
    #: it expects to serve while its successor boots would reach the limit, and keeps
    #: serving until RETIRE, up to the limit plus LIMIT_SLACK (then it takes no new work).
    RECYCLE = b"M"


class WorkerSignal:
    """What each signal means when the master (or a terminal) sends it to a worker."""

    #: Graceful stop: drain, WebSockets closed with 1001 (going away).
    STOP = signal.SIGTERM
    #: Graceful retirement on reload: drain, WebSockets closed with 1012 (service restart).
    RETIRE = signal.SIGHUP
    #: Immediate exit, no drain.
    QUIT = signal.SIGQUIT
    #: Reopen log files.
    REOPEN_LOGS = signal.SIGUSR1
    #: Dump every thread's stack to stderr (faulthandler), even with the loop blocked.
    DUMP_STACK = signal.SIGUSR2


class MasterSignal:
    """The signals the master acts on, by number: the state machine knows signals only as
    these numbers (it imports no ``signal``; see tests/test_layering.py)."""

    TERM = signal.SIGTERM
    INT = signal.SIGINT
    QUIT = signal.SIGQUIT
    HUP = signal.SIGHUP
    TTIN = signal.SIGTTIN
    TTOU = signal.SIGTTOU
    USR1 = signal.SIGUSR1
    USR2 = signal.SIGUSR2
    #: Not sent to the master: how a worker killed from outside (the OOM killer) died.
    KILL = signal.SIGKILL


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number that names no signal."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


#: The early RECYCLE (``RequestBudget``) predicts the requests served while the successor
#: starts from the worker's own boot time (creation to READY) times this, plus
#: RECYCLE_MARGIN_S. The factor covers what that measure misses: the fork, a successor
#: booting on a busier machine than its predecessor did; the margin the two pipe round
#: trips and the old worker's settle time after RETIRE (worker.DRAIN_SETTLE_S, 0.1 s).
RECYCLE_LEAD_FACTOR = 1.5
RECYCLE_MARGIN_S = 0.05

#: The request rate is measured over the last one to two of these (the window rolls on
#: every sweep): recent enough to follow a burst, long enough to smooth single requests.
RATE_WINDOW_S = 1.0


@final
class RequestBudget:
    """When a worker under --max-requests asks for its successor, and when it stops.

    ``limit`` is --max-requests plus this worker's jitter. RECYCLE goes out once the
    requests served plus those expected while the successor starts reach ``limit``; the
    expectation is the recent rate times ``lead_s`` (own boot time times
    RECYCLE_LEAD_FACTOR, plus RECYCLE_MARGIN_S). The rate is measured over at least
    ``min(lead_s, RATE_WINDOW_S)``, so the first few requests after READY, however close
    together, cannot make a worker that serves one request a minute ask at once.

    ``cap`` is ``limit`` plus LIMIT_SLACK of --max-requests, rounded up. When ``cap - 1``
    requests are served the worker stops accepting and each open connection's next
    response becomes its last: a lone keep-alive client gets exactly ``cap``, and no
    worker serves more than ``cap - 1`` plus one request per connection open at that
    moment (one that may be on the wire already) plus those pipelined behind it.

    Pure: the worker passes in its clock (``now``, monotonic seconds) and its count.
    """

    def __init__(self, limit: int, max_requests: int) -> None:
        self.limit = limit
        self.cap = limit + math.ceil(LIMIT_SLACK * max_requests)
        self.lead_s = RECYCLE_MARGIN_S
        self.recycle_sent = False
        self.capped = False
        # (time, requests served) at the start of the rate window, and at the next start.
        self._since = self._next = (0.0, 0)

    def start(self, now: float, boot_s: float) -> None:
        """The worker is READY at ``now``, ``boot_s`` after it was created. Call once."""
        self.lead_s = boot_s * RECYCLE_LEAD_FACTOR + RECYCLE_MARGIN_S
        self._since = self._next = (now, 0)

    def roll(self, now: float, served: int) -> None:
        """Move the rate window on; call regularly (the worker's sweep)."""
        if now - self._next[0] >= RATE_WINDOW_S:
            self._since, self._next = self._next, (now, served)

    def expected(self, now: float, served: int) -> float:
        """How many requests are expected while a successor starts, at the recent rate."""
        since, base = self._since
        window_s = max(now - since, min(self.lead_s, RATE_WINDOW_S))
        return (served - base) * self.lead_s / window_s

    def should_recycle(self, now: float, served: int) -> bool:
        """Whether to send RECYCLE now (true once); call after each completed request."""
        if self.recycle_sent or served + self.expected(now, served) < self.limit:
            return False
        self.recycle_sent = True
        return True

    def should_cap(self, served: int) -> bool:
        """Whether to stop taking new work now (true once); call after each request."""
        if self.capped or served < self.cap - 1:
            return False
        self.capped = True
        return True
