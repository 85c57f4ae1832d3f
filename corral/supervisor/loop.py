"""The master's loop: the only code that forks, reaps, signals and kills.

It turns what it observes (signals, worker pipe bytes, child exits, the clock) into
events for :class:`~corral.supervisor.state.Supervisor` and carries out the actions
that come back. Signal handlers only put the signal number on a
``queue.SimpleQueue``; the wakeup-fd pipe makes ``select`` return. Nothing logs,
forks or reaps inside a handler.

Error handling: a failed fork becomes ``SpawnFailed``; signalling a process that is
already gone is ignored (it will be reaped); anything unexpected propagates to
:func:`corral.main.serve`, which logs it and exits with ``ExitCode.INTERNAL``.

Resource handling: every worker pipe is registered with the selector and closed when
its worker is reaped; listening sockets are closed (unix socket files removed) by the
caller after :meth:`Master.run` returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import final

from corral.config import Config, ConfigError, LoadedConfig
from corral.lifecycle import ExitCode, WorkerMessage
from corral.logs import reopen_log_files
from corral.supervisor.sockets import Listener
from corral.supervisor.state import (
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
    SpawnFailed,
    Spawned,
    Supervisor,
    SupervisorSettings,
    Tick,
    WorkerHeartbeat,
    WorkerReady,
    WorkerRecycleRequested,
)
from corral.supervisor.systemd import Notifier
from corral.workers.types import ASGIApp
from corral.workers.worker import WorkerContext, run_worker

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

_MESSAGES = {m.value[0]: m for m in WorkerMessage}


def settings_for(config: Config) -> SupervisorSettings:
    return SupervisorSettings(
        workers=config.workers,
        graceful_timeout_s=config.graceful_timeout,
        worker_timeout_s=config.worker_timeout or None,
        ready_timeout_s=max(60.0, config.graceful_timeout),
    )


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
    ) -> None:
        self.config = loaded.config
        self.listeners = listeners
        self._reload_config = reload_config
        self._app = app
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._pipes: dict[int, int] = {}  # pid -> read end of its pipe
        self._wake_r, self._wake_w = os.pipe()
        self._notifier = Notifier()
        self._next_watchdog = 0.0
        self._exit_code: int | None = None
        self.supervisor = Supervisor(settings_for(self.config), now=time.monotonic())

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.put_nowait(signum)  # nothing else: no logging, no allocation to speak of

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self._execute(self.supervisor.start())
            while self._exit_code is None:
                self._wait()
                self._execute(self.supervisor.handle(Tick(time.monotonic())))
                for event in self._gather():
                    if self._exit_code is not None:
                        break
                    self._execute(self.supervisor.handle(event))
                self._watchdog()
        finally:
            self._restore_signals()
            self._notifier.close()
            for fd in self._pipes.values():
                os.close(fd)
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self._exit_code

    def _wait(self) -> None:
        now = time.monotonic()
        timeout = MAX_SLEEP_S
        deadline = self.supervisor.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        if self._notifier.watchdog_interval_s is not None:
            timeout = min(timeout, max(0.0, self._next_watchdog - now))
        if not self._signals.empty():
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
        for pid, fd in list(self._pipes.items()):
            events.extend(self._read_pipe(pid, fd))
        events.extend(self._reap())
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
                events.append(WorkerRecycleRequested(pid, "max requests reached"))
        if not data:
            self._close_pipe(pid)
        return events

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
            if os.WIFSIGNALED(status):
                events.append(ChildExited(pid, None, os.WTERMSIG(status)))
            else:
                events.append(ChildExited(pid, os.waitstatus_to_exitcode(status), None))
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
        return ReloadRequested("SIGHUP", loaded.config.workers)

    def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval_s
        if interval is None:
            return
        now = time.monotonic()
        if now >= self._next_watchdog:
            self._notifier.notify("WATCHDOG=1")
            self._next_watchdog = now + interval

    # -- actions ------------------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
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
                logger.warning("USR2 (re-exec in place) is not supported yet; ignored")
            elif isinstance(action, Exit):
                self._exit_code = action.code
                return

    def _spawn(self, action: Spawn) -> Event:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            return SpawnFailed(action.slot, action.generation, str(exc))
        if pid == 0:  # the child: never returns
            code = ExitCode.INTERNAL
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
                )
                code = run_worker(self.config, [li.sock for li in self.listeners], ctx)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._pipes[pid] = read_fd
        self._selector.register(read_fd, selectors.EVENT_READ, pid)
        return Spawned(action.slot, pid, action.generation)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def exit_code_name(code: int) -> str:
    try:
        return ExitCode(code).name
    except ValueError:
        return str(code)
