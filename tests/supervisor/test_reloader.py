"""The --reload watcher: its rules (pure), the polling choice, the env file, the thread.

The thread tests use real watchfiles on ``tmp_path`` and wait on a queue with a bounded
timeout; every thread started is stopped (and joined) by the ``reloader`` fixture.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.config import Config, ConfigError
from corral.supervisor import reloader as reloader_module
from corral.supervisor.envfile import EnvFile
from corral.supervisor.reloader import (
    Poller,
    Reloader,
    WatchMode,
    banner,
    choose_polling,
    mount_fstype,
)
from corral.supervisor.watchrules import WatchRules
from tests.harness import TIME_FACTOR

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
40 27 0:50 / /home/dev/code rw,relatime shared:20 - nfs4 server:/code rw,vers=4.2
41 27 0:51 / /mnt/c rw,noatime - 9p drvfs rw,aname=drvfs
42 27 0:52 / /mnt/my\\040share rw - cifs //srv/share rw
"""


def rules(
    root: Path,
    include: tuple[str, ...] = ("*.py",),
    exclude: tuple[str, ...] = (),
    env_file: str | None = None,
) -> WatchRules:
    return WatchRules((str(root),), include, exclude, env_file)


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "wanted"),
    [
        ("app.py", True),
        ("pkg/sub/models.py", True),
        ("README.md", False),
        ("templates/index.html", True),
        ("other/index.html", False),
        (".git/hooks/pre-commit.py", False),
        ("__pycache__/app.cpython-311.py", False),
        ("pkg/__pycache__/app.cpython-311.pyc", False),
        ("node_modules/x/setup.py", False),
        (".venv/lib/site.py", False),
        ("venv/lib/site.py", False),
        ("pkg.egg-info/x.py", False),
        (".mypy_cache/x.py", False),
        ("app.pyc", False),
        (".app.py.swp", False),
        ("app.py~", False),
        (".#app.py", False),
        ("#app.py#", False),
        ("4913", False),
        ("app.py___jb_tmp___", False),
        ("build/gen.py", False),
        ("pkg/build/gen.py", False),
        ("skip_me.py", False),
        ("docs/conf.py", False),
        ("pkg/docs/conf.py", True),
    ],
)
def test_wanted(tmp_path: Path, relative: str, wanted: bool) -> None:
    """Built-in ignores, includes (name or path glob) and excludes (name, path, directory)."""
    r = rules(
        tmp_path,
        include=("*.py", "templates/*.html"),
        exclude=("build", "skip_*.py", f"{tmp_path}/docs"),
    )
    assert r.wanted(f"{tmp_path}/{relative}") is wanted


def test_outside_the_roots_nothing_counts_but_the_env_file(tmp_path: Path) -> None:
    """A path beside a root, even with the root as a name prefix, is not watched."""
    r = WatchRules((str(tmp_path / "src"),), env_file=str(tmp_path / ".env"))
    assert r.wanted(str(tmp_path / "src" / "a.py"))
    assert not r.wanted(str(tmp_path / "src2" / "a.py"))
    assert not r.wanted(str(tmp_path / "a.py"))
    assert r.wanted(str(tmp_path / ".env"))
    assert not r.wanted(str(tmp_path / "src"))


def test_a_root_inside_an_ignored_directory_is_watched(tmp_path: Path) -> None:
    """--reload-dir .venv/src/lib: the rules apply below the root only."""
    root = tmp_path / ".venv" / "src" / "lib"
    r = WatchRules((str(root),))
    assert r.wanted(str(root / "mod.py"))
    assert r.watchable_dir(str(root))


def test_from_config_resolves_and_deduplicates(tmp_path: Path) -> None:
    """Default root is the working dir; nested roots collapse; *.py is always included."""
    (tmp_path / "src").mkdir()
    config = Config(
        app="a:b",
        reload_dir=("src", ".", "src/"),
        reload_include=("*.html", "*.py"),
        reload_exclude=("", "build"),
        env_file=".env",
    )
    r = WatchRules.from_config(config, tmp_path)
    assert r.roots == (str(tmp_path.resolve()),)
    assert r.include == ("*.py", "*.html")
    assert r.exclude == ("build",)
    assert r.env_file == str(tmp_path / ".env")
    default = WatchRules.from_config(Config(app="a:b"), tmp_path)
    assert default.roots == (str(tmp_path.resolve()),)
    assert default.include == ("*.py",)


def test_watch_dirs_prunes_what_is_never_watched(tmp_path: Path) -> None:
    """Virtualenvs (by name or pyvenv.cfg), node_modules, excludes and symlinks are skipped."""
    for d in ("pkg/sub", ".git/objects", "node_modules/x", "env/lib", "build/out", "static"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "link").symlink_to(tmp_path / "pkg")
    r = rules(tmp_path, exclude=("build",))
    found = {os.path.relpath(d, tmp_path) for d in r.watch_dirs()}
    assert found == {".", "pkg", "pkg/sub", "static"}


def test_reason_names_a_few_paths(tmp_path: Path) -> None:
    r = rules(tmp_path)
    assert r.reason([f"{tmp_path}/a.py"]) == "changed: a.py"
    many = [f"{tmp_path}/{name}.py" for name in "edcba"]
    assert r.reason(many) == "changed: a.py, b.py, c.py and 2 more"


# -- polling ------------------------------------------------------------------------------------


def test_mount_fstype_takes_the_longest_mount_point() -> None:
    assert mount_fstype("/home/dev/code/app", MOUNTINFO) == "nfs4"
    assert mount_fstype("/home/dev/codex", MOUNTINFO) == "ext4"
    assert mount_fstype("/mnt/my share/x", MOUNTINFO) == "cifs"
    assert mount_fstype("/", MOUNTINFO) == "ext4"


@pytest.mark.parametrize(
    ("roots", "asked", "environ", "poll", "why"),
    [
        (["/srv/app"], False, {}, False, ""),
        (["/srv/app"], True, {}, True, "--reload-poll"),
        (["/srv/app"], False, {"WATCHFILES_FORCE_POLLING": "1"}, True, "WATCHFILES_FORCE"),
        (["/mnt/c/app"], False, {"WATCHFILES_FORCE_POLLING": "false"}, False, "WATCHFILES"),
        (["/srv/app", "/home/dev/code/x"], False, {}, True, "is on nfs4"),
        (["/mnt/c/proj"], False, {}, True, "is on 9p"),
    ],
)
def test_choose_polling(
    roots: list[str], asked: bool, environ: dict[str, str], poll: bool, why: str
) -> None:
    """Asked, forced by watchfiles' variable, or a file system that raises no events."""
    mode = choose_polling(roots, asked=asked, environ=environ, mountinfo=MOUNTINFO)
    assert mode.poll is poll
    assert why in mode.reason


def test_poll_interval_from_the_environment() -> None:
    environ = {"WATCHFILES_POLL_DELAY_MS": "900"}
    mode = choose_polling(["/x"], asked=True, environ=environ, mountinfo=None)
    assert mode.poll_interval_ms == 900
    assert "polling every 900 ms (--reload-poll)" in mode.describe()


def test_banner_says_what_where_and_warns_when_public(tmp_path: Path) -> None:
    r = rules(tmp_path, exclude=("build",), env_file=str(tmp_path / ".env"))
    lines = banner(r, WatchMode(False), ["http://0.0.0.0:8000", "http://127.0.0.1:9000"])
    text = "\n".join(lines)
    assert f"watching {tmp_path} for *.py, and the env file {tmp_path}/.env" in text
    assert "node_modules" in text
    assert "(--reload-exclude) build" in text
    assert "serving http://127.0.0.1:9000" in text
    assert text.count("reachable from other machines") == 1


# -- the env file -----------------------------------------------------------------------------


def test_env_file_applies_changes_and_restores_removed_keys(tmp_path: Path) -> None:
    """Keys added, changed and removed; a removed key gets its previous value back."""
    path = tmp_path / ".env"
    environ = {"KEEP": "outer", "PATH": "/bin"}
    env = EnvFile(environ)
    path.write_text("A=1\nKEEP=inner\n")
    assert env.load(str(path)) == ["A", "KEEP"]
    assert environ == {"KEEP": "inner", "PATH": "/bin", "A": "1"}
    path.write_text("A=2\nB=3\n")
    assert env.load(str(path)) == ["A", "B", "KEEP"]
    assert environ == {"KEEP": "outer", "PATH": "/bin", "A": "2", "B": "3"}
    assert env.load(None) == ["A", "B"]
    assert environ == {"KEEP": "outer", "PATH": "/bin"}


def test_env_file_reload_keeps_the_old_values_when_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-saved file is logged; the next generation gets the previous values."""
    caplog.set_level(logging.INFO, logger="corral.error")
    path = tmp_path / ".env"
    environ: dict[str, str] = {}
    env = EnvFile(environ)
    path.write_text("SECRET=one\n")
    env.load(str(path))
    path.write_text("SECRET\n")
    env.reload(str(path))
    assert environ == {"SECRET": "one"}
    assert "expected KEY=VALUE" in caplog.text
    path.write_text("SECRET=two\n")
    env.reload(str(path))
    assert environ == {"SECRET": "two"}
    assert "SECRET changed" in caplog.text
    assert "two" not in caplog.text  # values are never logged
    with pytest.raises(ConfigError):
        env.load(str(tmp_path / "missing"))


# -- the thread -------------------------------------------------------------------------------

#: Seconds to wait for a change to be reported (it takes about STEP_MS).
REPORT_S = 5 * TIME_FACTOR


@pytest.fixture
def reloader(
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Callable[..., tuple[Reloader, queue.Queue[str]]]]:
    caplog.set_level(logging.INFO, logger="corral.error")
    started: list[Reloader] = []

    def start(r: WatchRules, mode: WatchMode | None = None) -> tuple[Reloader, queue.Queue[str]]:
        reasons: queue.Queue[str] = queue.Queue()
        watcher = Reloader(r, mode or WatchMode(False))
        started.append(watcher)
        handler = _ArmedHandler()
        armed = handler.armed
        reloader_module.logger.addHandler(handler)
        try:
            watcher.start(reasons.put)
            assert armed.wait(REPORT_S), "the watcher never armed"
        finally:
            reloader_module.logger.removeHandler(handler)
        return watcher, reasons

    yield start
    for watcher in started:
        watcher.stop()


class _ArmedHandler(logging.Handler):
    """Sets ``armed`` when the reloader logs its "watching N directories" line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.armed = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("reload: watching"):
            self.armed.set()


def test_thread_reports_a_change_and_stops_promptly(
    tmp_path: Path, reloader: Callable[..., tuple[Reloader, queue.Queue[str]]]
) -> None:
    """An ignored write then a wanted one: one reason naming the wanted file; stop joins."""
    (tmp_path / "app.py").write_text("x = 1\n")
    watcher, reasons = reloader(rules(tmp_path))
    (tmp_path / "notes.txt").write_text("ignored\n")
    (tmp_path / "app.py").write_text("x = 22\n")
    assert reasons.get(timeout=REPORT_S) == "changed: app.py"
    thread = watcher._thread
    assert thread is not None
    watcher.stop()
    assert not thread.is_alive()
    assert reasons.empty()
    watcher.stop()  # idempotent


def test_thread_watches_new_directories(
    tmp_path: Path, reloader: Callable[..., tuple[Reloader, queue.Queue[str]]]
) -> None:
    """mkdir -p with a file inside: found by the rescan; later writes there are events."""
    _, reasons = reloader(rules(tmp_path))
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "mod.py").write_text("x = 1\n")
    assert reasons.get(timeout=REPORT_S) == "changed: pkg/sub/mod.py"
    (tmp_path / "pkg" / "new.py").write_text("y = 2\n")
    # The first file's write may be reported once more, as an event of the new watch
    # (alone, or with the second file).
    reason = reasons.get(timeout=REPORT_S)
    if reason == "changed: pkg/sub/mod.py":
        reason = reasons.get(timeout=REPORT_S)
    assert reason in ("changed: pkg/new.py", "changed: pkg/new.py, pkg/sub/mod.py")


def test_thread_watches_an_env_file_outside_the_roots(
    tmp_path: Path, reloader: Callable[..., tuple[Reloader, queue.Queue[str]]]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    env = tmp_path / "settings.env"
    env.write_text("A=1\n")
    _, reasons = reloader(WatchRules((str(src),), env_file=str(env)))
    (tmp_path / "other.py").write_text("x = 1\n")
    env.write_text("A=2\n")
    assert reasons.get(timeout=REPORT_S) == f"changed: {env}"


def test_thread_polls_and_restarts(
    tmp_path: Path, reloader: Callable[..., tuple[Reloader, queue.Queue[str]]]
) -> None:
    """Polling notices a change too; a stopped reloader can be started again."""
    (tmp_path / "app.py").write_text("x = 1\n")
    watcher, reasons = reloader(rules(tmp_path), WatchMode(True, "test", poll_interval_ms=50))
    (tmp_path / "app.py").write_text("x = 333\n")
    assert reasons.get(timeout=REPORT_S) == "changed: app.py"
    watcher.stop()
    watcher.start(reasons.put)
    with pytest.raises(RuntimeError):
        watcher.start(reasons.put)
    watcher.stop()


def test_events_unavailable_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inotify watch limit (an OSError from watchfiles) means polling, for good."""

    def no_events(*args: object) -> object:
        raise OSError("OS file watch limit reached")

    monkeypatch.setattr(reloader_module, "RustNotify", no_events)
    watcher = Reloader(rules(tmp_path), WatchMode(False))
    armed = watcher._arm(frozenset())
    assert armed is not None
    assert isinstance(armed[0], Poller)
    assert watcher.mode.poll
    assert "events unavailable" in watcher.mode.describe()


def test_poller_sees_each_save(tmp_path: Path) -> None:
    """Two saves within one second, same size: both seen (mtime in ns, size, inode)."""
    app = tmp_path / "app.py"
    app.write_text("x = 1\n")
    poller = Poller([str(tmp_path)], interval_ms=10)
    stop = threading.Event()
    app.write_text("x = 22\n")
    assert poller.watch(0, 0, 0, stop) == {(2, str(app))}
    # Same size, and a save in the same clock tick as the last one: only the mtime differs.
    os.utime(app, ns=(app.stat().st_atime_ns, app.stat().st_mtime_ns + 1))
    assert poller.watch(0, 0, 0, stop) == {(2, str(app))}
    (tmp_path / "new.py").write_text("")
    app.unlink()
    assert poller.watch(0, 0, 0, stop) == {(1, str(tmp_path / "new.py")), (3, str(app))}
    stop.set()
    assert poller.watch(0, 0, 0, stop) == "stop"
    poller.close()
