"""``--env-file``: its values in the master's environment, which every forked worker inherits.

The master loads the file once at start and again before each new generation (HUP, or
a change the reloader saw), so the workers of one generation all see the same values
and a new generation sees the file as it is now. A key removed from the file is removed
from the environment again, or given back the value it had before the file set it.

Error handling: a file that cannot be read or parsed at start is a usage error; later,
it is logged and the previous values stay (a half-saved file must not empty the
environment of the next generation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import final

from corral.config import ConfigError

logger = logging.getLogger("corral.error")


def load_env_file(path: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``#`` comments, optional quotes, optional ``export``).

    Raises:
        ConfigError: if the file cannot be read or a line is not KEY=VALUE.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").isalnum():
            raise ConfigError(f"env file {path}, line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = value
    return result


@final
class EnvFile:
    """The env file's keys as applied to ``environ`` (default ``os.environ``)."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        #: Key -> the value it had before the file set it (None: it was not set).
        self._saved: dict[str, str | None] = {}
        #: What the file set, as last applied.
        self._applied: dict[str, str] = {}

    def load(self, path: str | None) -> list[str]:
        """Apply the file at ``path`` (None: no file); return the keys that changed.

        Raises:
            ConfigError: the file cannot be read or a line is not KEY=VALUE.
        """
        values = {} if path is None else load_env_file(path)
        changed = [k for k in self._applied if k not in values]
        for key in changed:
            previous = self._saved.pop(key)
            if previous is None:
                self._environ.pop(key, None)
            else:
                self._environ[key] = previous
        for key, value in values.items():
            if key not in self._saved:
                self._saved[key] = self._environ.get(key)
            if self._applied.get(key) != value:
                changed.append(key)
            self._environ[key] = value
        self._applied = values
        return sorted(changed)

    def reload(self, path: str | None) -> None:
        """Read the file again before a new generation; log what changed, never raise."""
        if path is None and not self._applied:
            return
        try:
            changed = self.load(path)
        except ConfigError as exc:
            logger.error("%s; the new workers get the previous values", exc)
            return
        if changed:
            # Names only: an env file holds secrets.
            logger.info("env file %s: %s changed", path or "(none)", ", ".join(changed))
