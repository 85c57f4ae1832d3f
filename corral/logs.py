"""Logging: stdlib ``logging``, text (coloured on a TTY) or JSON, and the access log.

Loggers: ``corral.error`` for the server's own messages, ``corral.access`` for one
line per completed request, and for a WebSocket one at the handshake and one when the
session ends. ``--log-config FILE`` (a dictConfig as JSON or TOML)
replaces all of this. Every field of an access line that comes from the peer is
escaped, so a request cannot forge log lines (uvicorn's CVE-2020-7694).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

error_logger = logging.getLogger("corral.error")
access_logger = logging.getLogger("corral.access")

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# Anything outside printable ASCII is shown as \\xNN: ESC, CR, LF, DEL, and bytes >= 0x80.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]|\\")


def escape(text: str) -> str:
    """Make ``text`` safe for one log line: no control characters survive."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(
        lambda m: "\\\\" if m.group() == "\\" else f"\\x{ord(m.group()):02x}", text
    )


def format_access(
    client: tuple[str, int] | None,
    method: bytes,
    target: bytes,
    status: int,
    size: int,
    duration_s: float,
) -> None:
    """Emit one access line (the caller checked that access logging is on)."""
    peer = f"{client[0]}:{client[1]}" if client else "unix"
    request = escape(f"{method.decode('latin-1')} {target.decode('latin-1')}")
    access_logger.info(
        '%s "%s" %d %d %.1fms',
        peer,
        request,
        status,
        size,
        duration_s * 1000.0,
        extra={
            "client": peer,
            "request": request,
            "status": status,
            "bytes": size,
            "duration_ms": round(duration_s * 1000.0, 3),
        },
    )


def format_websocket_end(
    client: tuple[str, int] | None,
    target: bytes,
    close_code: int,
    duration_s: float,
    received: tuple[int, int],
    sent: tuple[int, int],
) -> None:
    """Emit the line that ends an accepted WebSocket session (logging is on).

    ``received`` and ``sent`` are (messages, bytes), the bytes being frames on the
    wire after the 101 (headers included, compressed if permessage-deflate was on).
    ``close_code`` is the one the app was told (1006: no Close frame).
    """
    peer = f"{client[0]}:{client[1]}" if client else "unix"
    request = escape(f"WEBSOCKET {target.decode('latin-1')}")
    access_logger.info(
        '%s "%s" closed %d %.1fms in %d messages %d bytes, out %d messages %d bytes',
        peer,
        request,
        close_code,
        duration_s * 1000.0,
        *received,
        *sent,
        extra={
            "client": peer,
            "request": request,
            "close_code": close_code,
            "duration_ms": round(duration_s * 1000.0, 3),
            "messages_in": received[0],
            "bytes_in": received[1],
            "messages_out": sent[0],
            "bytes_out": sent[1],
        },
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per line; access lines carry their fields as keys."""

    _FIELDS = (
        "client",
        "request",
        "status",
        "bytes",
        "duration_ms",
        # The end of a WebSocket session (format_websocket_end).
        "close_code",
        "messages_in",
        "bytes_in",
        "messages_out",
        "bytes_out",
    )

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in self._FIELDS:
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=True)


class TextFormatter(logging.Formatter):
    """``time [pid] LEVEL message``, with the level coloured on a terminal."""

    _COLOURS = {
        "DEBUG": "\x1b[36m",
        "INFO": "\x1b[32m",
        "WARNING": "\x1b[33m",
        "ERROR": "\x1b[31m",
        "CRITICAL": "\x1b[1;31m",
    }

    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(message)s")
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        if self._colour and record.levelname in self._COLOURS:
            record = logging.makeLogRecord(record.__dict__)
            record.levelname = f"{self._COLOURS[record.levelname]}{record.levelname}\x1b[0m"
        return super().format(record)


def configure_logging(
    level: str, fmt: str, log_config: str | None, stream: TextIO | None = None
) -> None:
    """Set up the ``corral`` loggers (idempotent; called again on reload).

    Raises:
        ValueError: if ``log_config`` cannot be read or applied (message for the user).
    """
    if log_config is not None:
        # Imported here: 10 ms to import, for an option few use. (Not as "import
        # logging.config", which would make "logging" a local name of this function.)
        from logging import config as logging_config

        path = Path(log_config)
        try:
            if path.suffix == ".toml":
                from corral.config.loader import read_config_file

                data = read_config_file(path)
            else:
                data = json.loads(path.read_text())
            logging_config.dictConfig(data)
        except Exception as exc:
            raise ValueError(f"cannot apply --log-config {log_config}: {exc}") from None
        return
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter(colour=_isatty(stream)))
    numeric = TRACE if level == "trace" else getattr(logging, level.upper())
    # asyncio reports what escapes the app's tasks ("Task exception was never
    # retrieved", accept() out of file descriptors) on its own logger: give it the same
    # handler, so those lines carry a time and pid and are JSON under --log-format json.
    for name, logger_level in (("corral", numeric), ("asyncio", max(numeric, logging.WARNING))):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logger_level)
        logger.propagate = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("NO_COLOR") is None
    except ValueError:
        return False


def reopen_log_files() -> None:
    """Reopen every file handler (log rotation with USR1)."""
    seen: set[int] = set()
    loggers = [
        logging.getLogger(),
        *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict)),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handler.acquire()
                try:
                    handler.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
