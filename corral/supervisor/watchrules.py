"""What ``--reload`` watches: the reload directories, less what nobody wants watched.

Pure rules over paths, plus the directory walk; the reloader thread (``reloader.py``)
applies them. Paths below a reload directory are matched relative to it, so a reload
dir may itself sit inside an ignored one (``--reload-dir .venv/src/mylib``).

Rules, in order:

1. The env file (``--env-file``) always counts, wherever it is.
2. Anything outside the reload directories never counts.
3. A directory is *pruned* (never watched, nothing below it counts) when its name
   matches :data:`IGNORED_DIRS`, when it is a virtualenv (it holds ``pyvenv.cfg``,
   whatever its name), or when its relative path matches a ``--reload-exclude`` glob.
4. A file never counts when its name matches :data:`IGNORED_FILES` (compiled files,
   editor swap, backup and lock files) or its path matches a ``--reload-exclude`` glob.
5. Otherwise a file counts when its path matches a ``--reload-include`` glob; ``*.py``
   always does.

Globs follow :meth:`pathlib.PurePath.match`: without a slash a glob matches the name
(``*.html``, ``build``); with one it matches the end of the path below the reload
directory (``templates/*.html``); an absolute glob matches the whole absolute path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import final

from corral.config import Config

#: Directory names never watched: version control, tool caches, dependencies. Virtualenvs
#: are found by their pyvenv.cfg, whatever their name; .venv and venv are listed anyway
#: so that one being created is skipped before its pyvenv.cfg exists.
IGNORED_DIRS = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".tox",
    ".nox",
    "*.egg-info",
)

#: File names never counted: compiled Python, and the swap, backup, lock and temporary
#: files editors write next to the file being saved (vim, emacs, JetBrains, macOS).
IGNORED_FILES = (
    "*.py[cod]",
    "*.sw?",
    "*.swpx",
    "*~",
    "*.bak",
    ".#*",
    "#*#",
    "4913",  # vim's probe that the directory is writable
    "*___jb_???___",
    ".DS_Store",
)

#: The include glob that always applies (unless a --reload-exclude glob says otherwise).
DEFAULT_INCLUDE = "*.py"

#: How many changed paths a reload reason names before "and N more".
REASON_PATHS = 3


@final
@dataclass(frozen=True, slots=True)
class WatchRules:
    """The rules above, for one set of options. Every path in it is absolute."""

    roots: tuple[str, ...]
    include: tuple[str, ...] = (DEFAULT_INCLUDE,)
    exclude: tuple[str, ...] = ()
    env_file: str | None = None

    @classmethod
    def from_config(cls, config: Config, cwd: Path | None = None) -> WatchRules:
        """The rules of ``config``: reload dirs default to ``cwd`` (the working directory).

        A reload dir nested in another one is dropped (the outer one covers it); one
        that is not a directory is kept, and watched if it appears.
        """
        base = Path.cwd() if cwd is None else cwd
        wanted = [str((base / d).resolve()) for d in config.reload_dir or (".",)]
        roots: list[str] = []
        for root in sorted(set(wanted), key=len):
            if not any(_inside(root, outer) for outer in roots):
                roots.append(root)
        include = tuple(dict.fromkeys((DEFAULT_INCLUDE, *config.reload_include)))
        env_file = None
        if config.env_file is not None:
            env_file = str((base / config.env_file).absolute())
        exclude = tuple(p for p in config.reload_exclude if p)
        return cls(tuple(roots), include, exclude, env_file)

    # -- the rules --------------------------------------------------------------------------

    def wanted(self, path: str) -> bool:
        """Whether a change of the file ``path`` should reload (rules 1, 2, 4 and 5)."""
        if path == self.env_file:
            return True
        located = self._locate(path)
        if located is None or not located[1].parts:
            return False
        root, relative = located
        parts = relative.parts
        if any(self._pruned(root, PurePosixPath(*parts[:i])) for i in range(1, len(parts))):
            return False
        if any(fnmatchcase(relative.name, pattern) for pattern in IGNORED_FILES):
            return False
        if self._excluded(root, relative):
            return False
        return any(relative.match(pattern) for pattern in self.include)

    def watchable_dir(self, path: str) -> bool:
        """Whether the directory ``path`` is in a reload dir and neither it nor a parent is
        pruned (rule 3). A reload dir itself always is."""
        located = self._locate(path)
        if located is None:
            return False
        root, relative = located
        parts = relative.parts
        if any(self._pruned(root, PurePosixPath(*parts[:i])) for i in range(1, len(parts) + 1)):
            return False
        return not (parts and os.path.isfile(os.path.join(path, "pyvenv.cfg")))

    def relative(self, path: str) -> PurePosixPath | None:
        """``path`` relative to the reload dir holding it, or None if none does."""
        located = self._locate(path)
        return None if located is None else located[1]

    def _locate(self, path: str) -> tuple[str, PurePosixPath] | None:
        for root in self.roots:
            if path == root:
                return root, PurePosixPath()
            if _inside(path, root):
                return root, PurePosixPath(path[len(root) :].lstrip("/"))
        return None

    def _pruned(self, root: str, relative: PurePosixPath) -> bool:
        if any(fnmatchcase(relative.name, pattern) for pattern in IGNORED_DIRS):
            return True
        return self._excluded(root, relative)

    def _excluded(self, root: str, relative: PurePosixPath) -> bool:
        for pattern in self.exclude:
            # An absolute glob matches the whole absolute path, a relative one its end.
            target = PurePosixPath(root, relative) if pattern.startswith("/") else relative
            if target.match(pattern):
                return True
        return False

    # -- the file system --------------------------------------------------------------------

    def watch_dirs(self) -> list[str]:
        """Every directory to watch: the reload dirs and everything below them not pruned.

        Symbolic links to directories are not followed (a link to / would be a disaster).
        """
        found: list[str] = []
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            for current, subdirs, _ in os.walk(root):
                found.append(current)
                subdirs[:] = [d for d in subdirs if self.watchable_dir(os.path.join(current, d))]
        return found

    def wanted_files(self, dirs: Iterable[str]) -> set[str]:
        """The wanted files directly in ``dirs`` (new directories, created unwatched)."""
        found: set[str] = set()
        for directory in dirs:
            try:
                with os.scandir(directory) as entries:
                    found.update(e.path for e in entries if e.is_file() and self.wanted(e.path))
            except OSError:
                continue  # gone again already
        return found

    def env_dir(self) -> str | None:
        """The directory of the env file, if there is one (watched for its renames)."""
        return None if self.env_file is None else os.path.dirname(self.env_file)

    def reason(self, changed: Iterable[str]) -> str:
        """How the master's log names a reload: ``changed: app.py, models.py and 2 more``."""
        names = sorted(str(self.relative(p) or p) for p in changed)
        shown = ", ".join(names[:REASON_PATHS])
        if len(names) > REASON_PATHS:
            shown += f" and {len(names) - REASON_PATHS} more"
        return f"changed: {shown}"


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")
