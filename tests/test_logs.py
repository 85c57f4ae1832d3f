"""corral/logs.py without a server: the formatters, --log-config files, reopening on USR1."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.logs import JSONFormatter, TextFormatter, _isatty, configure_logging, reopen_log_files


def record(level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord("corral.error", level, __file__, 1, "something %s", ("odd",), exc_info)


def test_text_lines_colour_the_level_only_on_a_terminal() -> None:
    """On a terminal the level is coloured; the record itself is left as it was."""
    rec = record()
    coloured = TextFormatter(colour=True).format(rec)
    assert "\x1b[33mWARNING\x1b[0m something odd" in coloured
    assert rec.levelname == "WARNING"
    assert "\x1b[" not in TextFormatter(colour=False).format(record())


def test_json_lines_carry_the_traceback() -> None:
    """An exception logged with exc_info goes into the JSON line's ``exc`` field."""
    data = json.loads(JSONFormatter().format(record(logging.ERROR, exc=True)))
    assert data["level"] == "error"
    assert data["message"] == "something odd"
    assert "ValueError: boom" in data["exc"]


def test_a_closed_stream_is_no_terminal() -> None:
    """isatty() on a closed stream raises ValueError: not a terminal, no colour."""
    stream = io.StringIO()
    stream.close()
    assert not _isatty(stream)


@pytest.fixture
def corral_logger() -> Iterator[logging.Logger]:
    """The corral logger, restored after the test (configure_logging replaces handlers)."""
    logger = logging.getLogger("corral")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_a_toml_log_config_is_applied(tmp_path: Path, corral_logger: logging.Logger) -> None:
    """--log-config FILE.toml is read like the config file and given to dictConfig."""
    log_file = tmp_path / "corral.log"
    config = tmp_path / "logging.toml"
    config.write_text(
        "version = 1\ndisable_existing_loggers = false\n"
        "[handlers.file]\nclass = 'logging.FileHandler'\n"
        f"filename = '{log_file}'\n"
        "[loggers.corral]\nhandlers = ['file']\nlevel = 'INFO'\npropagate = false\n"
    )
    configure_logging("info", "text", str(config))
    corral_logger.info("to the file")
    for handler in corral_logger.handlers:
        handler.flush()
    assert "to the file" in log_file.read_text()


def test_a_log_config_that_cannot_be_applied_is_one_message(tmp_path: Path) -> None:
    """A broken file is a ValueError naming the option and the file, not a traceback."""
    config = tmp_path / "logging.json"
    config.write_text('{"version": 1, "handlers": {"x": {"class": "no.such.Handler"}}}')
    with pytest.raises(ValueError, match=r"cannot apply --log-config .*logging\.json"):
        configure_logging("info", "text", str(config))


def test_usr1_reopens_every_log_file(tmp_path: Path, corral_logger: logging.Logger) -> None:
    """After logrotate moved the file away, the next line goes to a new file at the path."""
    path = tmp_path / "corral.log"
    handler = logging.FileHandler(path)
    corral_logger.handlers[:] = [handler]
    corral_logger.setLevel(logging.INFO)
    corral_logger.propagate = False
    corral_logger.info("before")
    path.rename(tmp_path / "corral.log.1")
    reopen_log_files()
    corral_logger.info("after")
    handler.flush()
    assert path.read_text().strip().endswith("after")
    assert "after" not in (tmp_path / "corral.log.1").read_text()
