"""The development reloader (``--reload``): a watchfiles thread that only asks for reloads.

The master starts one :class:`Reloader`. Its thread waits for file system events and,
when a file that matters changed, calls the ``request(reason)`` callback the master gave
it; the master turns that into ``ReloadRequested`` and the state machine rolls the
workers through the replacement primitive (the new worker is READY before the old one
drains). The thread never forks, signals, kills or touches the state machine.

What counts as a change is :class:`WatchRules` (``watchrules.py``); how to watch (events
or polling) is :func:`choose_polling`.
"""

# Theory of operation
# ===================
#
# Watching. Every directory below the reload dirs that is not pruned (watchrules.py:
# VCS and cache directories, virtualenvs, node_modules, --reload-exclude) is watched on
# its own, non-recursively, by one watchfiles ``RustNotify``. A recursive watch cannot
# skip a directory, and a project's .venv or node_modules holds more directories than
# the project itself: every one costs an inotify watch, and with polling a stat of each
# of its files every interval (uvicorn#338, #452). The env file's directory is watched
# too when it is outside the reload dirs.
#
# A directory appears or disappears (mkdir, git checkout, rename): the tree is walked
# again and a new RustNotify armed *before* the old one is closed, so no event falls in
# a gap; the new directories are then scanned for wanted files (created before the new
# watch existed), and those count as changes too.
#
# Debouncing. watchfiles returns a batch once STEP_MS passed without a new event (an
# editor's write, rename and chmod of one save land within a few milliseconds), or after
# DEBOUNCE_MS of continuous events (a checkout); a poll round is a batch by itself. One
# batch is one reload request. Two
# batches in a row (a formatter rewriting the file after the save) are two requests; the
# state machine makes the newest generation win, and the loop merges requests that
# arrive between two of its iterations.
#
# Thread rules. The thread only calls ``request`` (which queues and writes one byte to
# the master's wakeup pipe) and logs. ``stop()`` sets an event watchfiles checks every
# STEP_MS and joins the thread; the master stops it before it closes the pipe, and before
# a USR2 re-exec (the new program starts its own). Workers are forked while the thread
# runs: they never use watchfiles, and the thread holds no lock a worker needs (logging
# re-initialises its locks after fork, and the GIL is with the forking thread).
#
# Polling. inotify reports changes made by this kernel only: on NFS, SMB, 9p (WSL's
# Windows drives, some Docker Desktop mounts) and VM shared folders, an edit made on the
# other side raises no event (uvicorn PR #1647, watchfiles#169). Polling is used when
# asked (--reload-poll, or WATCHFILES_FORCE_POLLING as watchfiles documents it), when a
# reload dir is on such a file system (/proc/self/mountinfo), and when events cannot be
# set up at all (the inotify watch limit). The poller is ours (:class:`Poller`), over
# the same pruned directory list: notify's compares mtimes in whole seconds.

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, final

from corral.config import Config

# RustNotify is documented in watchfiles' reference ("Rust backend direct usage"): unlike
# watch(), it lets us arm the next watcher before closing the current one. It lives in a
# private module, so it is reached through the hook module with the other private APIs.
from corral.protocol.private import RustNotify
from corral.supervisor.watchrules import IGNORED_DIRS, IGNORED_FILES, WatchRules

logger = logging.getLogger("corral.error")

#: A batch is returned once no new event arrived for this long (see "Debouncing").
STEP_MS = 50

#: ... and at the latest after this long, however busy the tree is.
DEBOUNCE_MS = 1600

#: Poll interval when polling: each round stats every file in the watched directories.
#: uvicorn's StatReload uses 250 ms too; WATCHFILES_POLL_DELAY_MS overrides it.
POLL_INTERVAL_MS = 250

#: How long a failed watcher waits before it tries again (a directory being recreated).
RETRY_S = 1.0

#: How long stop() waits for the thread. It notices the stop within STEP_MS unless it is
#: walking a huge tree; it is a daemon thread, so it can never hold up the exit.
STOP_WAIT_S = 2.0

#: More watched directories than this is worth a warning: probably the wrong --reload-dir.
MANY_DIRS = 10_000

#: File systems on which changes made elsewhere raise no inotify event.
EVENTLESS_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",  # WSL 2's /mnt/c, Docker Desktop and QEMU shares
        "v9fs",
        "drvfs",  # WSL 1
        "vboxsf",
        "vmhgfs",
        "fuse.vmhgfs-fuse",
        "fuse.sshfs",
        "fuse.grpcfuse",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
    }
)

# watchfiles.Change values, as RustNotify reports them.
_ADDED, _MODIFIED, _DELETED = 1, 2, 3


@final
@dataclass(frozen=True, slots=True)
class WatchMode:
    """Events or polling, and why."""

    poll: bool
    reason: str = ""
    poll_interval_ms: int = POLL_INTERVAL_MS

    def describe(self) -> str:
        if not self.poll:
            return "file system events"
        why = f" ({self.reason})" if self.reason else ""
        return f"polling every {self.poll_interval_ms} ms{why}"


def mount_fstype(path: str, mountinfo: str) -> str | None:
    """The type of the file system ``path`` is on, from /proc/self/mountinfo text."""
    best, fstype = "", None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        mount_point = _unescape(fields[4])
        prefix = mount_point.rstrip("/") + "/"
        if (path == mount_point or path.startswith(prefix)) and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[fields.index("-", 6) + 1]
    return fstype


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def choose_polling(
    roots: Iterable[str], *, asked: bool, environ: Mapping[str, str], mountinfo: str | None
) -> WatchMode:
    """Whether to poll, and why (see "Polling" above).

    Args:
        roots: the reload directories (absolute).
        asked: --reload-poll was given.
        environ: the environment (WATCHFILES_FORCE_POLLING, WATCHFILES_POLL_DELAY_MS).
        mountinfo: the text of /proc/self/mountinfo, or None where there is none.
    """
    delay = environ.get("WATCHFILES_POLL_DELAY_MS", "")
    interval_ms = int(delay) if delay.isdecimal() and int(delay) > 0 else POLL_INTERVAL_MS
    if asked:
        return WatchMode(True, "--reload-poll", interval_ms)
    forced = environ.get("WATCHFILES_FORCE_POLLING", "")
    if forced:
        poll = forced.lower() not in ("false", "disable", "disabled")
        return WatchMode(poll, "WATCHFILES_FORCE_POLLING", interval_ms)
    for root in roots:
        fstype = mount_fstype(root, mountinfo) if mountinfo is not None else None
        if fstype in EVENTLESS_FS:
            reason = f"{root} is on {fstype}, where changes made elsewhere raise no events"
            return WatchMode(True, reason, interval_ms)
    return WatchMode(False, "", interval_ms)


def read_mountinfo() -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None  # not Linux: events it is


def banner(rules: WatchRules, mode: WatchMode, urls: Iterable[str]) -> list[str]:
    """The lines logged at start: what is watched, what is ignored, where it serves."""
    roots = ", ".join(rules.roots) or "nothing"
    lines = [f"reload: watching {roots} for {', '.join(rules.include)}"]
    if rules.env_file is not None:
        lines[0] += f", and the env file {rules.env_file}"
    ignored = ", ".join((*IGNORED_DIRS, "virtualenvs", *IGNORED_FILES))
    lines.append(f"reload: ignoring {ignored}")
    if rules.exclude:
        lines.append(f"reload: also ignoring (--reload-exclude) {', '.join(rules.exclude)}")
    lines.append(f"reload: noticing changes by {mode.describe()}")
    for url in urls:
        lines.append(f"reload: serving {url}; Ctrl-C stops (twice: at once)")
        if not _local(url):
            lines.append(
                f"reload: {url} is reachable from other machines, and so are the "
                "tracebacks --reload shows for broken code: bind 127.0.0.1 for development"
            )
    return lines


def _local(url: str) -> bool:
    if url.startswith("unix:"):
        return True
    host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class _Watch(Protocol):
    """What the thread needs of a watcher: RustNotify's ``watch`` and ``close``."""

    def watch(
        self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: threading.Event
    ) -> set[tuple[int, str]] | Literal["signal", "stop", "timeout"]: ...

    def close(self) -> None: ...


@final
class Poller:
    """Polling by ``stat``: each round lists the watched directories and compares.

    Not notify's own poll watcher: that one compares modification times in whole seconds
    (a second save within the same second goes unseen) and takes its first snapshot some
    time after it starts. This one compares mtime in nanoseconds, size and inode, and
    takes its first snapshot at once. A round costs one ``scandir`` per directory and
    one ``stat`` per entry: small next to the interval once the tree is pruned.
    """

    def __init__(self, dirs: Iterable[str], interval_ms: int) -> None:
        self._dirs = list(dirs)
        self._interval_s = interval_ms / 1000
        self._snapshot = self._scan()

    def watch(
        self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: threading.Event
    ) -> set[tuple[int, str]] | Literal["stop"]:
        """Poll until something changed (returned as RustNotify does) or ``stop_event``.

        The debounce arguments are not needed: a round sees a whole save at once.
        """
        while not stop_event.wait(self._interval_s):
            snapshot = self._scan()
            old = self._snapshot
            self._snapshot = snapshot
            changes = {(_ADDED, p) for p in snapshot.keys() - old.keys()}
            changes |= {(_DELETED, p) for p in old.keys() - snapshot.keys()}
            changes |= {(_MODIFIED, p) for p, v in snapshot.items() if old.get(p, v) != v}
            if changes:
                return changes
        return "stop"

    def close(self) -> None:
        self._snapshot = {}

    def _scan(self) -> dict[str, tuple[int, int, int]]:
        snapshot: dict[str, tuple[int, int, int]] = {}
        for directory in self._dirs:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # removed while listed: the next round says so
                        snapshot[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                continue  # gone: its parent's round reports it
        return snapshot


@final
class Reloader:
    """The watcher thread. ``start`` it with the master's callback; ``stop`` joins it.

    It can be started again after ``stop`` (the master does so when a re-exec failed).
    """

    def __init__(self, rules: WatchRules, mode: WatchMode) -> None:
        self.rules = rules
        self.mode = mode
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, request: Callable[[str], None]) -> None:
        """Start watching; ``request(reason)`` is called from the thread for each change.

        Raises:
            RuntimeError: if it is already running.
        """
        if self._thread is not None:
            raise RuntimeError("the reloader is already running")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(request, self._stop), name="corral-reloader", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait (up to STOP_WAIT_S) until it is gone. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(STOP_WAIT_S)
        if thread.is_alive():
            logger.warning("reload: the file watcher did not stop within %.0fs", STOP_WAIT_S)

    # -- the thread -------------------------------------------------------------------------

    def _run(self, request: Callable[[str], None], stop: threading.Event) -> None:
        watch: _Watch | None = None
        dirs: frozenset[str] = frozenset()
        first = True
        try:
            while not stop.is_set():
                try:
                    if watch is None:
                        armed = self._arm(dirs)
                        if armed is None:
                            stop.wait(RETRY_S)
                            continue
                        watch, dirs = armed
                        if first:
                            first = False
                            what = f"{len(dirs)} director{'y' if len(dirs) == 1 else 'ies'}"
                            logger.info("reload: watching %s (%s)", what, self.mode.describe())
                    result = watch.watch(DEBOUNCE_MS, STEP_MS, 0, stop)
                    if isinstance(result, str):
                        continue  # "stop"; "timeout" and "signal" do not happen here
                    changed = {path for _, path in result if self.rules.wanted(path)}
                    if self._tree_changed(result, dirs):
                        rearmed = self._arm(dirs)
                        if rearmed is not None:
                            # The new watcher exists before the old one goes: no gap.
                            watch.close()
                            watch, new_dirs = rearmed
                            changed |= self.rules.wanted_files(new_dirs - dirs)
                            dirs = new_dirs
                    if changed:
                        request(self.rules.reason(changed))
                except (OSError, RuntimeError) as exc:
                    # RuntimeError covers watchfiles' WatchfilesRustInternalError.
                    logger.warning("reload: the file watcher failed (%s); restarting it", exc)
                    if watch is not None:
                        watch.close()
                    watch = None
                    stop.wait(RETRY_S)
        finally:
            if watch is not None:
                watch.close()

    def _arm(self, old: frozenset[str]) -> tuple[_Watch, frozenset[str]] | None:
        """Walk the tree and start watching it; None if there is nothing to watch.

        Falls back to polling for good if file system events cannot be set up.
        """
        dirs = frozenset(self.rules.watch_dirs())
        if len(dirs) > MANY_DIRS and len(old) <= MANY_DIRS:
            logger.warning(
                "reload: watching %d directories; point --reload-dir at your code, or "
                "--reload-exclude what is not",
                len(dirs),
            )
        paths = sorted(dirs)
        env_dir = self.rules.env_dir()
        if env_dir is not None and env_dir not in dirs and os.path.isdir(env_dir):
            paths.append(env_dir)
        if not paths:
            return None
        if self.mode.poll:
            return Poller(paths, self.mode.poll_interval_ms), dirs
        try:
            return RustNotify(paths, False, False, 0, False, True), dirs
        except (OSError, RuntimeError) as exc:
            logger.warning("reload: file system events unavailable (%s); polling instead", exc)
            self.mode = WatchMode(True, "events unavailable", self.mode.poll_interval_ms)
            return Poller(paths, self.mode.poll_interval_ms), dirs

    def _tree_changed(self, changes: set[tuple[int, str]], dirs: frozenset[str]) -> bool:
        """Whether a watched directory went away or a new one to watch appeared."""
        for change, path in changes:
            if change == _DELETED:
                if path in dirs:
                    return True
            elif path not in dirs and os.path.isdir(path) and self.rules.watchable_dir(path):
                return True
        return False


def development_reloader(config: Config, urls: Iterable[str]) -> Reloader:
    """The reloader for ``config`` (``--reload``), after logging the start banner."""
    rules = WatchRules.from_config(config)
    mode = choose_polling(
        rules.roots, asked=config.reload_poll, environ=os.environ, mountinfo=read_mountinfo()
    )
    for line in banner(rules, mode, urls):
        logger.info("%s", line)
    for root in rules.roots:
        if not os.path.isdir(root):
            logger.warning("reload: %s is not a directory; nothing is watched there", root)
    if config.preload:
        logger.warning("reload: --preload is ignored: each generation imports the app afresh")
    return Reloader(rules, mode)
