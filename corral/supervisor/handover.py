"""Re-exec in place (USR2): hand the sockets and the workers to a fresh copy of the master.

The master execs the command line it was started with; the pid does not change, so
systemd's MAINPID, a container's PID 1 and the pidfile stay right, and the workers stay
its children. Before the exec:

- the listening sockets and the read ends of the worker pipes are made inheritable and
  named in ``CORRAL_INHERITED_FDS`` (``sockets.export_listeners``) and
  ``CORRAL_INHERITED_WORKERS`` (pid, pipe, slot, generation, READY);
- the signals the master handles are blocked: one that arrives while the new program
  starts stays pending instead of killing it (an exec resets handlers, not the mask), and
  is delivered once the new master has installed its handlers and unblocked them.

The new master (``corral.main.serve``) adopts the sockets instead of binding them and
builds its state machine with the adopted workers: an ordinary reload from there on, so
a new generation that cannot start leaves the old workers serving. Nothing of the old
program's cleanup runs: unix socket files and the pidfile are left in place.

Error handling: if the exec fails, everything is put back and the caller carries on.
Malformed or stale hand-over data is dropped entry by entry (see ``inherited_workers``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from corral.supervisor.events import AdoptedWorker, WorkerInfo
from corral.supervisor.sockets import INHERITED_FDS_ENV, Listener, export_listeners

logger = logging.getLogger("corral.error")

#: Environment variable naming the workers a re-exec'd master adopts (JSON list).
INHERITED_WORKERS_ENV = "CORRAL_INHERITED_WORKERS"


@dataclass(frozen=True, slots=True)
class InheritedWorker:
    """A worker handed over by the master this process re-exec'd from."""

    worker: AdoptedWorker
    #: Read end of its pipe, still open in this process (-1 if it had none).
    pipe_fd: int


def reexec(
    listeners: list[Listener],
    workers: Mapping[int, WorkerInfo],
    pipes: Mapping[int, int],
    handled_signals: Iterable[int],
) -> OSError:
    """Exec the master's own command line, handing over ``listeners`` and ``workers``.

    ``pipes`` maps a worker pid to the read end of its pipe. Returns only if the exec
    failed, with the error, after making the pipes non-inheritable again and restoring
    the signal mask.
    """
    handed = []
    for pid, info in workers.items():
        entry = {"pid": pid, "fd": pipes.get(pid, -1), "slot": info.slot}
        ready = info.ready and not info.stopping
        handed.append({**entry, "generation": info.generation, "ready": ready})
    env = dict(os.environ)
    env[INHERITED_FDS_ENV] = export_listeners(listeners)
    env[INHERITED_WORKERS_ENV] = json.dumps(handed)
    # sys.orig_argv repeats the command exactly: python -m corral, the corral script, or a
    # program calling corral.run(), with the interpreter's own options.
    argv = [sys.executable, *sys.orig_argv[1:]]
    for fd in pipes.values():
        os.set_inheritable(fd, True)
    logger.info("re-executing %s with %d workers to adopt", " ".join(argv), len(handed))
    for handler in logging.getLogger().handlers + logger.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, handled_signals)
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for fd in pipes.values():
            os.set_inheritable(fd, False)
        return exc


def inherited_workers(environ: MutableMapping[str, str]) -> list[InheritedWorker]:
    """Pop the workers a previous master handed over and keep those that are our children.

    An entry that is malformed, names a process that is not our child, or names one that
    has already exited is dropped (an exited one is reaped here: nobody else knows it),
    and its pipe closed.
    """
    raw = environ.pop(INHERITED_WORKERS_ENV, "")
    if not raw:
        return []
    try:
        entries = json.loads(raw)
        records = [
            (int(e["pid"]), int(e["fd"]), int(e["slot"]), int(e["generation"]), bool(e["ready"]))
            for e in entries
        ]
    except (ValueError, KeyError, TypeError):
        logger.warning("ignoring a malformed %s", INHERITED_WORKERS_ENV)
        return []
    result: list[InheritedWorker] = []
    for pid, fd, slot, generation, ready in records:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # not our child: nothing to adopt
        if done:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            continue
        if fd >= 0:
            os.set_inheritable(fd, False)
            os.set_blocking(fd, False)
        # Without a pipe there is no heartbeat: such a worker can only be stopped.
        adopted = AdoptedWorker(pid, slot, generation, ready and fd >= 0)
        result.append(InheritedWorker(adopted, fd))
    return result
