"""The worker process: post-fork setup, app loading, lifespan, serving and draining.

The master forks and calls :func:`run_worker` in the child, which returns the exit
code. Nothing process-wide happens before the fork (gunicorn's pre-fork/post-fork
split): signal handlers, the event loop, the app import (without ``--preload``) and
lifespan all belong to the child.

Signals (see :class:`corral.lifecycle.WorkerSignal`): TERM and INT drain with
WebSocket close 1001; HUP drains with 1012 (the master is replacing this worker); a
second INT, or QUIT, stops at once; USR1 reopens log files; USR2 dumps every thread's
stack (faulthandler, so it works while the loop is blocked).

Accepting is ``accept.py``'s: the same path on asyncio and uvloop, balanced between the
workers by their open connections.

The drain: stop accepting and close this process's copies of the listening sockets. On a
stop (TERM, INT) the worker first takes the connections already waiting in the queue,
so none made before the stop began is reset when the last copy closes (the master has
closed its own by then, so new ones are refused once every worker has closed); on a
retirement (HUP) it leaves them to the next generation. Then it closes idle keep-alive
connections, answers in-flight requests with ``Connection: close``, closes WebSockets
with the drain's code, and waits until the last connection is gone or
``--graceful-timeout`` has passed. Whatever is left then is aborted and its tasks
cancelled; lifespan shutdown runs last and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib

# Imported here, not in _set_pdeathsig: that runs after --user, which may not be
# allowed to read the interpreter's files.
import ctypes
import faulthandler
import importlib
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import final

from corral.config import Config, ConfigError
from corral.lifecycle import ExitCode, RequestBudget, WorkerMessage, WorkerSignal
from corral.logs import reopen_log_files
from corral.workers.accept import Acceptor, LoadTable
from corral.workers.app import AppLoadError, load_app
from corral.workers.channel import ServedConnection
from corral.workers.connection import HTTPConnection
from corral.workers.devserver import ErrorPage, lifespan_error_page, load_or_error_page
from corral.workers.lifespan import Lifespan
from corral.workers.privileges import apply_identity, resolve_identity
from corral.workers.server import SWEEP_INTERVAL_S, WorkerServer
from corral.workers.tls import ServerTLS, load_server_tls
from corral.workers.types import ASGIApp

logger = logging.getLogger("corral.error")

#: Seconds between heartbeats: every sweep. The master starts a silent worker's successor
#: a second before --worker-timeout, and the age of the last beat when the loop blocks is
#: time lost from that second; one byte four times a second costs nothing.
HEARTBEAT_INTERVAL_S = SWEEP_INTERVAL_S

#: WebSocket close codes for a drain (RFC 6455 section 7.4.1; 1012 is IANA-registered).
CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012

#: How long a drain lets just-accepted connections deliver their first request before it
#: closes idle connections. Locally that takes microseconds; 100 ms also covers a busy
#: event loop and a client that connects and writes in two steps.
DRAIN_SETTLE_S = 0.1

#: How long cancelled tasks get to finish after the drain deadline, before lifespan
#: shutdown runs anyway. A task that ignores cancellation must not hold the exit.
CANCEL_WAIT_S = 1.0


@final
@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What the master tells a worker at fork time."""

    slot: int
    generation: int
    #: Write end of the pipe to the master, or -1 when running without one.
    pipe_fd: int = -1
    master_pid: int = 0
    #: The application when the master imported it (--preload).
    app: ASGIApp | None = None
    #: The master's table of worker loads (accept.py), and this worker's entry in it.
    load_table: LoadTable | None = None
    table_index: int = -1


def _set_pdeathsig() -> None:
    """Die with the master (Linux); elsewhere the sweep checks the parent pid."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _optional(module: str) -> ModuleType | None:
    """Import an optional extra (setproctitle, uvloop), or None if it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def set_process_title(text: str) -> None:
    """Show ``text`` in ps and top when setproctitle (the speedups extra) is installed."""
    module = _optional("setproctitle")
    if module is not None:
        module.setproctitle(text)


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The event loop ``--loop`` asks for (uvloop when installed and not refused)."""
    if choice in ("auto", "uvloop"):
        uvloop = _optional("uvloop")
        if uvloop is not None:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        if choice == "uvloop":
            logger.warning("--loop uvloop: uvloop is not installed; using asyncio")
    return asyncio.new_event_loop()


def run_worker(config: Config, listeners: list[socket.socket], ctx: WorkerContext) -> int:
    """Serve until told to stop; return the process exit code. Call in the child."""
    # The master's handlers only feed its own queue; the ones that mean something here
    # are installed on the event loop below.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    # TTIN/TTOU are for the master; sent to the whole process group they must not stop us.
    for signum in (signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # The listening sockets are inheritable in the master, which hands them over on a
    # USR2 re-exec. Here they must not reach the app's subprocesses (os.system,
    # close_fds=False, any subprocess under uvloop, which ignores close_fds): one that
    # outlives the server would keep the port bound, and the kernel would queue
    # connections that nobody accepts. The close-on-exec flag belongs to this process's
    # descriptors: the master's copies keep theirs.
    for listener in listeners:
        listener.set_inheritable(False)
    # TLS files are read first, with the master's rights (a key may be root's only);
    # then --user/--group/--umask, before anything of the app runs and before
    # PDEATHSIG, which a change of credentials clears.
    try:
        tls = load_server_tls(config)
        apply_identity(resolve_identity(config))
    except (ConfigError, OSError) as exc:
        logger.error("worker %d: %s", ctx.slot, exc)
        return ExitCode.USAGE
    if ctx.master_pid:
        _set_pdeathsig()
        if os.getppid() != ctx.master_pid:
            return ExitCode.OK  # the master died before PDEATHSIG was armed
    faulthandler.register(WorkerSignal.DUMP_STACK, all_threads=True)
    set_process_title(f"corral worker {ctx.slot} [{config.app}]")
    _tune_malloc()
    if ctx.pipe_fd >= 0:
        os.set_blocking(ctx.pipe_fd, False)
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    worker = Worker(config, listeners, ctx, loop, tls=tls)
    try:
        return loop.run_until_complete(worker.main())
    finally:
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


#: mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap (asyncio reads with ``recv(256 KiB)``).
_MMAP_THRESHOLD_BYTES = 1024 * 1024
#: Free memory at the top of the heap kept for the next requests, not given back.
_TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024


def _tune_malloc() -> None:
    """Stop glibc from giving request buffers back to the kernel only to fault them in again.

    A worker's buffers (socket reads, bodies, responses: about 200 KiB for a 64 KiB echo)
    come and go with the requests in flight. By default glibc maps every block over 128
    KiB on its own (asyncio's read buffers: ``mmap``, ``mremap``, ``munmap`` per read),
    and shrinks the heap whenever more than twice that is free at its top, so the heap
    shrinks and grows with the load and every regrowth page-faults: 11 to 15 faults
    per 64 KiB echo under 64 connections, on asyncio and uvloop alike. With reads up
    to 1 MiB taken from the heap and up to 8 MiB of free heap kept, it is one fault per
    twenty-odd requests and the echo load serves 1.3x to 1.6x as many (PROFILE.md).
    The cost: a worker may hold up to 8 MiB it is not using after a burst. Only on
    glibc; musl and macOS have no such thresholds.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return  # not glibc (musl's mallopt does nothing)
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)


@final
class Worker:
    """One worker's life: start, serve, drain."""

    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        ctx: WorkerContext,
        loop: asyncio.AbstractEventLoop,
        *,
        tls: ServerTLS | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.ctx = ctx
        self.loop = loop
        self.tls = tls
        self.server: WorkerServer | None = None
        self.acceptor: Acceptor | None = None
        self._stop = asyncio.Event()
        #: Set whenever the last connection closes; the drain waits on it.
        self._idle = asyncio.Event()
        self._stopping_code = 0  # WebSocket close code of the drain, once stopping
        self._force = False
        self._interrupted = False  # a SIGINT arrived (Ctrl-C reaches master and workers)
        self._last_heartbeat = 0.0
        self._recycle_after = 0
        #: --max-requests: when to ask for a successor and when to stop (lifecycle.py).
        self._budget: RequestBudget | None = None
        if config.max_requests:
            self._recycle_after = config.max_requests + random.randint(
                0, config.max_requests_jitter
            )
            self._budget = RequestBudget(self._recycle_after, config.max_requests)
        # The boot the early RECYCLE plans with runs from here to READY: the app import
        # and lifespan startup, most of it. The fork and the setup before the event loop
        # are missing, which RECYCLE_LEAD_FACTOR covers.
        self._created_s = time.monotonic()
        #: The next sweep (it re-arms itself); cancelled once the drain is over.
        self._sweeper: asyncio.TimerHandle | None = None

    def tell_master(self, message: WorkerMessage) -> None:
        if message is WorkerMessage.READY and self._budget is not None:
            boot_s = time.monotonic() - self._created_s
            self._budget.start(self.loop.time(), boot_s)
        if self.ctx.pipe_fd < 0:
            return
        # A full pipe means the master is not reading; a missed heartbeat is harmless.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.ctx.pipe_fd, message.value)

    async def main(self) -> int:
        config = self.config
        app = self.ctx.app
        if app is None and config.reload:
            # --reload: broken code is served as a 500 page, never an exit (devserver.py).
            app = load_or_error_page(config, self.ctx.slot)
        if app is None:
            try:
                app = load_app(config.app, factory=config.factory, app_dir=config.app_dir)
            except AppLoadError as exc:
                logger.error("cannot load the application: %s", exc)
                return ExitCode.APP_IMPORT
            except Exception:
                logger.exception("cannot load the application %s", config.app)
                return ExitCode.APP_IMPORT
        mode = "off" if isinstance(app, ErrorPage) else config.lifespan
        lifespan = Lifespan(app, mode, log_failures=not config.reload)
        self._install_signals()
        if not await lifespan.startup():
            if not config.reload:
                return ExitCode.LIFESPAN
            # The failed lifespan task (if still running) is cancelled by the drain.
            app = lifespan_error_page(lifespan, self.ctx.slot)
            lifespan = Lifespan(app, "off")
        if self._stop.is_set():
            await lifespan.shutdown()
            return ExitCode.OK
        server = self.server = WorkerServer(
            config,
            app,
            lifespan.state,
            self.loop,
            # Counted per request only when --max-requests asks for it.
            on_request=self._on_request if self._recycle_after else None,
            tls=self.tls,
        )
        tls = self.tls
        acceptor = self.acceptor = Acceptor(
            self.loop,
            self.listeners,
            lambda: HTTPConnection(server),
            lambda: len(server.connections),
            table=self.ctx.load_table,
            index=self.ctx.table_index,
            tls=None if tls is None else tls.context,
            # A TLS handshake gets the header deadline: a silent or slow client cannot
            # hold a connection before its first request any longer than after it.
            handshake_timeout=None if tls is None else config.timeout_header,
        )
        server.connections = _ConnectionSet(self._connection_closed)
        acceptor.start()
        self.tell_master(WorkerMessage.READY)
        self._last_heartbeat = self.loop.time()
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)
        await self._stop.wait()
        await self._stop_accepting(acceptor)
        await self._drain(server, keep=lifespan.task)
        if self._sweeper is not None:
            self._sweeper.cancel()
        await lifespan.shutdown()
        return ExitCode.OK

    def _install_signals(self) -> None:
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, self._handle_stop, CLOSE_GOING_AWAY)
        loop.add_signal_handler(signal.SIGINT, self._handle_int)
        loop.add_signal_handler(signal.SIGHUP, self._handle_stop, CLOSE_SERVICE_RESTART)
        loop.add_signal_handler(signal.SIGQUIT, self._handle_quit)
        loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    def _handle_stop(self, code: int) -> None:
        if not self._stopping_code:
            self._stopping_code = code
            self._stop.set()

    def _handle_int(self) -> None:
        # asyncio.Runner's rule: the first Ctrl-C drains, the second one forces. Counted
        # apart from TERM: a terminal's Ctrl-C reaches the worker and the master, whose
        # STOP (TERM) may come first; that is still one Ctrl-C.
        if self._interrupted:
            self._handle_quit()
        else:
            self._interrupted = True
            self._handle_stop(CLOSE_GOING_AWAY)

    def _handle_quit(self) -> None:
        self._force = True
        self._stopping_code = self._stopping_code or CLOSE_GOING_AWAY
        self._stop.set()
        if self.server is not None:
            for conn in list(self.server.connections):
                conn.abort()

    def _on_request(self) -> None:
        """After each completed response (only with --max-requests): the early RECYCLE
        and the hard cap (lifecycle.RequestBudget)."""
        budget, server = self._budget, self.server
        assert budget is not None
        assert server is not None
        served = server.requests
        if budget.should_recycle(self.loop.time(), served):
            logger.info(
                "worker %d served %d of %d requests and expects %.0f more while its"
                " successor starts; asking to be replaced",
                self.ctx.slot,
                served,
                budget.limit,
                budget.expected(self.loop.time(), served),
            )
            self.tell_master(WorkerMessage.RECYCLE)
        if budget.should_cap(served):
            logger.info(
                "worker %d served %d requests (the limit %d + 10%%): taking no new work"
                " until its successor is READY",
                self.ctx.slot,
                served,
                budget.limit,
            )
            self.pause_accepting()
            # Not now: this runs inside the response that just ended, whose head promised
            # keep-alive. Closing under the client would race its next request (a reset).
            # One loop turn later that connection is idle like the others, and gets the
            # drain's grace, in which a request on its way is answered with close.
            self.loop.call_soon(self._serve_last_responses)

    def _serve_last_responses(self) -> None:
        """The hard cap: make each connection's next response its last.

        The drain's treatment (``WorkerServer.begin_drain``) for HTTP connections only:
        responses carry ``Connection: close`` and idle keep-alive connections close
        after ``DRAIN_IDLE_GRACE_S``. Open WebSockets are left alone: they are no
        requests, and RETIRE closes them with 1012 once the successor is READY. A new
        upgrade is refused with 503 and ``Retry-After`` (the successor takes the retry).
        """
        server = self.server
        assert server is not None
        server.draining = True
        for conn in list(server.connections):
            if conn.websocket is None:
                conn.shutdown()

    def _sweep(self) -> None:
        server = self.server
        assert server is not None
        server.sweep()
        if self.acceptor is not None:
            self.acceptor.refresh()  # the siblings' proof that this loop turns
        now = self.loop.time()
        if self._budget is not None:
            self._budget.roll(now, server.requests)
        # Every sweep (HEARTBEAT_INTERVAL_S is the sweep's): no "interval passed" test,
        # which a timer firing a hair early would turn into a beat every other sweep.
        self._last_heartbeat = now
        self.tell_master(WorkerMessage.HEARTBEAT)
        if self.ctx.master_pid and os.getppid() != self.ctx.master_pid:
            logger.warning("the master is gone; stopping")
            self._handle_stop(CLOSE_GOING_AWAY)
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    async def _stop_accepting(self, acceptor: Acceptor) -> None:
        """Stop accepting and close this process's copies of the listening sockets.

        On a stop, the connections already queued are taken first (up to ``--backlog``,
        what one queue holds): made before the stop began, they are served, not reset
        when the last copy of the socket closes. On a retirement the next generation
        takes them. Then the connections just accepted get DRAIN_SETTLE_S to become
        protocols and deliver their first request (begin_drain would close them as
        idle otherwise).
        """
        stopping = self._stopping_code == CLOSE_GOING_AWAY and not self._force
        taken = acceptor.stop(take_queued=self.config.backlog if stopping else 0)
        if taken:
            logger.info("worker %d: took %d queued connection(s) to serve", self.ctx.slot, taken)
        if not self._force:
            await asyncio.sleep(DRAIN_SETTLE_S)

    def pause_accepting(self) -> None:
        """Take no new connections; the siblings and the successor take them (idempotent)."""
        if self.acceptor is not None:
            self.acceptor.pause()

    def _connection_closed(self, remaining: int) -> None:
        if self.acceptor is not None:
            self.acceptor.load_changed()
        if not remaining:
            self._idle.set()

    async def _drain(self, server: WorkerServer, keep: asyncio.Task[None] | None) -> None:
        """Finish in-flight work within the graceful timeout, then cut what is left.

        Resource handling: on return no connection is open and every task but the
        caller's and ``keep`` (lifespan) has been cancelled and given CANCEL_WAIT_S.
        """
        deadline = self.loop.time() + self.config.graceful_timeout
        server.begin_drain(self._stopping_code)
        while server.connections and not self._force:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            # No await between clear() and the check above: a close cannot be missed.
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except asyncio.TimeoutError:
                break
        if server.connections:
            logger.warning(
                "worker %d: %d connection(s) still open after the graceful timeout; closing",
                self.ctx.slot,
                len(server.connections),
            )
        for conn in list(server.connections):
            conn.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current and t is not keep]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)


class _ConnectionSet(set[ServedConnection]):
    """``WorkerServer.connections`` that calls ``on_discard(remaining)`` after each close.

    Connections add and discard themselves (connection_made / connection_lost), so this
    is the one place that sees every close: the acceptor's load and the drain's wait for
    the last connection both hang on it, instead of polling.
    """

    def __init__(self, on_discard: Callable[[int], None]) -> None:
        super().__init__()
        self._on_discard = on_discard

    def discard(self, conn: object) -> None:
        super().discard(conn)
        self._on_discard(len(self))
