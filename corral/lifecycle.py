"""The contract between the master and its workers, and the process exit codes.

Both sides import this module and nothing else of each other: the master never reaches
into worker internals, and a worker knows the master only through one pipe and a few
signals.

Worker -> master: one byte per message on a pipe the master created before forking.
Single bytes are written atomically, so the master never sees half a message, and the
master can read whatever is there without framing.

Master -> worker: signals (see ``WorkerSignal``). They are the only channel that still
works when the worker's event loop is stuck.
"""

from __future__ import annotations

import enum
import signal


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


class WorkerMessage(bytes, enum.Enum):
    """One-byte messages a worker writes to its pipe."""

    #: The app is imported, lifespan startup is complete and the worker is serving.
    READY = b"R"
    #: Sent from inside the event loop every heartbeat interval: a blocked loop goes silent.
    HEARTBEAT = b"H"
    #: The worker reached --max-requests and asks to be replaced (it keeps serving meanwhile).
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
