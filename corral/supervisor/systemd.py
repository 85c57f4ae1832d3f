"""The systemd protocol, written directly: ``sd_notify`` datagrams and socket activation.

No libsystemd: a notification is one datagram to the unix socket named by
``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import final


@final
class Notifier:
    """Sends sd_notify messages if the service manager asked for them."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        #: Seconds between WATCHDOG=1 pings (half the service's WatchdogSec), or None.
        self.watchdog_interval_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        """Send one message; ``RELOADING=1`` gets the ``MONOTONIC_USEC`` systemd requires."""
        if self._sock is None or self._address is None:
            return
        if message.startswith("RELOADING=1"):
            message += f"\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
        with contextlib.suppress(OSError):  # systemd gone or socket full: nothing to do
            self._sock.sendto(message.encode(), self._address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
