"""The master's loop: the only code that forks, reaps, signals, kills and re-execs.

It turns what it observes (signals, worker pipe bytes, child exits, memory samples, the
clock) into events for :class:`~corral.supervisor.state.Supervisor` and carries out the
actions that come back. Signal handlers only put the signal number on a
``queue.SimpleQueue``; the wakeup-fd pipe makes ``select`` return. Nothing logs, forks
or reaps inside a handler. The ``--reload`` watcher's thread (``reloader.py``) is fed the
same way: it queues a reason and writes a byte to that pipe; the loop turns the reasons
into one ``ReloadRequested`` and re-reads ``--env-file`` before any new generation forks.

Re-exec (USR2) is in ``handover.py``: the listening sockets and the worker pipes survive
the exec, the new master adopts them, unblocks the signals the exec kept pending and
rolls the workers like a reload.

Error handling: a failed fork becomes ``SpawnFailed``; signalling a process that is
already gone is ignored (it will be reaped); a failed exec is logged and the master
carries on; anything unexpected propagates to :func:`corral.main.serve`, which logs it
and exits with ``ExitCode.INTERNAL``.

Resource handling: every worker pipe is registered with the selector and closed when
its worker is reaped. The listening sockets are closed (unix socket files removed) the
moment a stop begins: the master never accepts, and once the workers have taken what is
queued and closed their copies too, the kernel refuses new connections instead of
queueing them for nobody (under socket activation systemd keeps its own copy and goes on
queueing for the next start). The caller closes them again after :meth:`Master.run`
returns, which does nothing if they are closed already.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol, final

from corral.config import Config, ConfigError, LoadedConfig
from corral.lifecycle import LIMIT_SLACK, ExitCode, WorkerMessage
from corral.logs import reopen_log_files
from corral.supervisor.envfile import EnvFile
from corral.supervisor.events import (
    Action,
    ChildExited,
    Event,
    Exit,
    Kill,
    Log,
    Notify,
    ReExec,
    ReloadRequested,
    ReopenLogs,
    SendSignal,
    SignalReceived,
    Spawn,
    Spawned,
    SpawnFailed,
    Tick,
    WorkerHeartbeat,
    WorkerReady,
    WorkerRecycleRequested,
)
from corral.supervisor.handover import InheritedWorker, reexec
from corral.supervisor.policy import SupervisorSettings
from corral.supervisor.sockets import Listener
from corral.supervisor.state import State, Supervisor
from corral.supervisor.systemd import Notifier
from corral.workers.accept import LoadTable
from corral.workers.types import ASGIApp
from corral.workers.worker import WorkerContext, run_worker, set_process_title

logger = logging.getLogger("corral.error")

HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCHLD,
)

#: The longest the loop sleeps without a reason, so a lost wakeup costs at most this.
MAX_SLEEP_S = 1.0

#: How often worker memory is sampled when --max-worker-memory is set. Reading
#: /proc/PID/statm costs microseconds; a second is far below any leak's time scale.
MEMORY_SAMPLE_S = 1.0

#: Extra time after --graceful-timeout before the master SIGKILLs a stopping worker. At
#: the graceful timeout the worker cuts what is left itself, then cancels its tasks (up to
#: ``worker.CANCEL_WAIT_S``) and runs lifespan shutdown; SIGKILL should only ever hit a
#: worker that is stuck, not one that is finishing in order.
SHUTDOWN_MARGIN_S = 2.0

_MESSAGES = {m.value[0]: m for m in WorkerMessage}


def settings_for(config: Config) -> SupervisorSettings:
    """The state machine's settings; the crash budget and backoff keep their defaults.

    Those (5 crashes within 60 s stop the server with exit code 6; a slot waits 0.5 s,
    1 s, 2 s, ... up to 30 s after consecutive failures) are internal on purpose: they
    only decide how a broken deployment fails, and one well-chosen answer beats a knob.
    """
    return SupervisorSettings(
        workers=config.workers,
        graceful_timeout_s=config.graceful_timeout + SHUTDOWN_MARGIN_S,
        worker_timeout_s=config.worker_timeout or None,
        ready_timeout_s=config.ready_timeout,
        max_worker_lifetime_s=config.max_worker_lifetime,
    )


class Watcher(Protocol):
    """The development reloader as the master sees it (``corral.supervisor.reloader``)."""

    def start(self, request: Callable[[str], None]) -> None:
        """Start watching in a thread that calls ``request(reason)`` for each change."""

    def stop(self) -> None:
        """Stop the thread and wait for it; after this ``request`` is not called again."""


@final
class Master:
    """Runs one server until it exits; :meth:`run` returns the exit code."""

    def __init__(
        self,
        loaded: LoadedConfig,
        listeners: list[Listener],
        *,
        reload_config: Callable[[], LoadedConfig],
        app: ASGIApp | None = None,
        inherited: list[InheritedWorker] | None = None,
        watcher: Watcher | None = None,
        env_file: EnvFile | None = None,
    ) -> None:
        self.config = loaded.config
        self.listeners = listeners
        self._reload_config = reload_config
        self._app = app
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._pipes: dict[int, int] = {}  # pid -> read end of its pipe
        # Shared with every worker forked from here: their loads, for a fair accept.
        self._loads = LoadTable()
        self._load_index: dict[int, int] = {}  # pid -> its entry in _loads
        self._listening = True
        self._wake_r, self._wake_w = os.pipe()
        self._notifier = Notifier()
        self._next_sample = 0.0
        self._env_file = env_file
        # The reloader's thread queues reasons here. The lock orders its writes to the
        # wakeup pipe before the loop closes that pipe (or execs): nothing is written to
        # an fd number that may have been reused.
        self._watcher = watcher
        self._reload_requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._requests_lock = threading.Lock()
        self._accepting_requests = False
        inherited = inherited or []
        for record in inherited:
            if record.pipe_fd >= 0:
                self._add_pipe(record.worker.pid, record.pipe_fd)
        self.supervisor = Supervisor(
            settings_for(self.config),
            now=time.monotonic(),
            adopted=[record.worker for record in inherited],
        )

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.put_nowait(signum)  # nothing else: no logging, no allocation to speak of

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        # A master that re-exec'd itself blocked these across the exec; whatever arrived
        # in between is delivered now, to the handlers above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until the state machine says Exit; return its exit code."""
        self._install_signals()
        set_process_title(f"corral master [{self.config.app}]")
        try:
            self._start_watcher()
            code = self._execute(self.supervisor.start())
            while code is None:
                self._wait()
                code = self._execute(self.supervisor.handle(Tick(time.monotonic())))
                for event in self._gather():
                    if code is not None:
                        break
                    code = self._execute(self.supervisor.handle(event))
                self._watchdog()
        finally:
            self._stop_watcher()
            self._restore_signals()
            self._notifier.close()
            for fd in self._pipes.values():
                os.close(fd)
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return code

    def _wait(self) -> None:
        now = time.monotonic()
        timeout = MAX_SLEEP_S
        deadline = self.supervisor.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        due = self._notifier.next_due(stopping=self.supervisor.state is State.STOPPING)
        if due is not None:
            timeout = min(timeout, max(0.0, due - now))
        if self.config.max_worker_memory:
            timeout = min(timeout, max(0.0, self._next_sample - now))
        if not self._signals.empty() or not self._reload_requests.empty():
            timeout = 0.0
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass

    def _gather(self) -> list[Event]:
        events: list[Event] = []
        while not self._signals.empty():
            signum = self._signals.get_nowait()
            if signum == signal.SIGCHLD:
                continue  # reaped below, whatever the signal said
            if signum == signal.SIGHUP:
                events.append(self._reread_config())
            else:
                events.append(SignalReceived(signum))
        reasons: list[str] = []
        while not self._reload_requests.empty():
            reasons.append(self._reload_requests.get_nowait())
        if reasons:
            # Changes seen since the last iteration make one new generation.
            events.append(ReloadRequested("; ".join(dict.fromkeys(reasons))))
        if self._env_file is not None and any(isinstance(e, ReloadRequested) for e in events):
            # Before the new generation forks: its workers see the env file as it is now.
            self._env_file.reload(self.config.env_file)
        for pid, fd in list(self._pipes.items()):
            events.extend(self._read_pipe(pid, fd))
        events.extend(self._reap())
        events.extend(self._sample_memory())
        return events

    def _read_pipe(self, pid: int, fd: int) -> list[Event]:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return []
        events: list[Event] = []
        seen: set[WorkerMessage] = set()
        for byte in data:
            message = _MESSAGES.get(byte)
            if message is None or message in seen:
                continue
            seen.add(message)
            if message is WorkerMessage.READY:
                events.append(WorkerReady(pid))
            elif message is WorkerMessage.HEARTBEAT:
                events.append(WorkerHeartbeat(pid))
            else:
                # Sent early: the worker counts the requests it expects meanwhile.
                reason = "max requests reached, counting those expected while its successor starts"
                events.append(WorkerRecycleRequested(pid, reason))
        if not data:
            self._close_pipe(pid)
        return events

    def _add_pipe(self, pid: int, fd: int) -> None:
        self._pipes[pid] = fd
        self._selector.register(fd, selectors.EVENT_READ, pid)

    def _close_pipe(self, pid: int) -> None:
        fd = self._pipes.pop(pid, None)
        if fd is not None:
            self._selector.unregister(fd)
            os.close(fd)

    def _reap(self) -> list[Event]:
        """Reap every exited child, workers and (as PID 1) adopted orphans alike."""
        events: list[Event] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self._pipes:
                events.extend(self._read_pipe(pid, self._pipes[pid]))
                self._close_pipe(pid)
            index = self._load_index.pop(pid, None)
            if index is not None:
                self._loads.clear(index)
            if os.WIFSIGNALED(status):
                events.append(ChildExited(pid, None, os.WTERMSIG(status)))
            else:
                events.append(ChildExited(pid, os.waitstatus_to_exitcode(status), None))
        return events

    def _sample_memory(self) -> list[Event]:
        """Recycle requests for READY workers over --max-worker-memory (once a second).

        Over the limit, the replacement starts (the worker serves until its successor is
        READY); over the limit plus LIMIT_SLACK, the request says ``retire_now``, and a
        worker whose replacement a previous sample started is retired without waiting
        for its successor (state.py, "Limits keep their numbers").
        """
        limit_mib = self.config.max_worker_memory
        now = time.monotonic()
        if not limit_mib or now < self._next_sample:
            return []
        self._next_sample = now + MEMORY_SAMPLE_S
        events: list[Event] = []
        for pid, info in self.supervisor.workers().items():
            if not info.ready or info.stopping:
                continue
            rss_mib = resident_mib(pid)
            if rss_mib is not None and rss_mib > limit_mib:
                reason = f"resident memory {rss_mib:.0f} MiB over --max-worker-memory {limit_mib}"
                retire_now = rss_mib > limit_mib * (1 + LIMIT_SLACK)
                events.append(WorkerRecycleRequested(pid, reason, retire_now=retire_now))
        return events

    def _reread_config(self) -> Event:
        try:
            loaded = self._reload_config()
        except ConfigError as exc:
            logger.error("reload: the new configuration is invalid, keeping the old one: %s", exc)
            return ReloadRequested("SIGHUP (config unchanged: invalid)", None)
        if loaded.config.bind != self.config.bind:
            logger.warning("reload: bind addresses cannot change without a restart; ignored")
        self.config = loaded.config
        settings = settings_for(loaded.config)
        return ReloadRequested("SIGHUP", loaded.config.workers, settings)

    def _watchdog(self) -> None:
        """WATCHDOG=1 and, while stopping, EXTEND_TIMEOUT_USEC (see ``systemd.py``)."""
        stopping = self.supervisor.state is State.STOPPING
        self._notifier.tick(time.monotonic(), stopping=stopping)

    # -- actions ------------------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> int | None:
        """Carry out ``actions`` in order; return the exit code if one of them is Exit."""
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Spawn):
                pending[:0] = self.supervisor.handle(self._spawn(action))
            elif isinstance(action, SendSignal):
                _signal(action.pid, action.signum)
            elif isinstance(action, Kill):
                _signal(action.pid, signal.SIGKILL)
            elif isinstance(action, Notify):
                self._notifier.notify(action.message)
            elif isinstance(action, Log):
                logger.log(action.level, "%s", action.message)
            elif isinstance(action, ReopenLogs):
                reopen_log_files()
            elif isinstance(action, ReExec):
                self._reexec()
            elif isinstance(action, Exit):
                return action.code
        self._close_listeners_if_stopping()
        return None

    def _close_listeners_if_stopping(self) -> None:
        """Close the master's copies of the listening sockets once a stop has begun."""
        if self._listening and self.supervisor.state is State.STOPPING:
            self._listening = False
            for listener in self.listeners:
                listener.close()

    def _reexec(self) -> None:
        """Replace this program by a fresh copy of itself (same pid); return only on failure."""
        self._stop_watcher()  # no thread across the exec: the new program starts its own
        error = reexec(self.listeners, self.supervisor.workers(), self._pipes, HANDLED_SIGNALS)
        logger.error("re-exec failed (%s); this master carries on", error)
        self._start_watcher()
        self._notifier.notify("READY=1")

    # -- the reloader -------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        if self._watcher is not None:
            with self._requests_lock:
                self._accepting_requests = True
            self._watcher.start(self._request_reload)

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            with self._requests_lock:
                self._accepting_requests = False
            self._watcher.stop()

    def _request_reload(self, reason: str) -> None:
        """The reloader's callback, run in its thread: queue ``reason``, wake the loop."""
        with self._requests_lock:
            if not self._accepting_requests:
                return
            self._reload_requests.put_nowait(reason)
            with contextlib.suppress(BlockingIOError):  # full: the loop wakes anyway
                os.write(self._wake_w, b"\0")

    def _spawn(self, action: Spawn) -> Event:
        read_fd, write_fd = os.pipe()
        taken = set(self._load_index.values())
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        if index < self._loads.entries:
            self._loads.claim(index)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            return SpawnFailed(action.slot, action.generation, str(exc))
        if pid == 0:  # the child: never returns
            code: int = ExitCode.INTERNAL
            try:
                os.close(read_fd)
                for fd in (self._wake_r, self._wake_w, *self._pipes.values()):
                    os.close(fd)
                ctx = WorkerContext(
                    slot=action.slot,
                    generation=action.generation,
                    pipe_fd=write_fd,
                    master_pid=os.getppid(),
                    app=self._app,
                    load_table=self._loads,
                    table_index=index,
                )
                listening = [li.sock for li in self.listeners if li.sock.fileno() >= 0]
                code = run_worker(self.config, listening, ctx)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._add_pipe(pid, read_fd)
        self._load_index[pid] = index
        return Spawned(action.slot, pid, action.generation)


def resident_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (Linux /proc), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def exit_code_name(code: int) -> str:
    try:
        return ExitCode(code).name
    except ValueError:
        return str(code)
