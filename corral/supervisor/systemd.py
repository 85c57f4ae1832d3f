"""The systemd notification protocol, written directly: ``sd_notify`` datagrams.

No libsystemd: a notification is one datagram to the unix socket named by
``NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Socket activation is
in ``activation.py``.

What the master sends (the state machine decides when; see ``state.py``):

- ``READY=1`` with ``MAINPID=`` once the first generation of workers serves, and again
  when a reload's new generation serves (or the reload is abandoned);
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` on HUP and USR2: both together are what
  ``Type=notify-reload`` (systemd 253) requires;
- ``STOPPING=1`` when a stop begins, then ``EXTEND_TIMEOUT_USEC=`` every
  :data:`EXTEND_INTERVAL_S` while the workers drain, so a ``TimeoutStopSec=`` shorter
  than the drain is extended for as long as the master loop runs (the drain itself is
  bounded by ``--graceful-timeout`` and the SIGKILL that follows);
- ``STATUS=`` whenever the worker counts change;
- ``WATCHDOG=1`` every half ``WatchdogSec=`` from the master loop, so a stuck master
  is restarted (workers are watched by the master itself, through heartbeats).

Each of these is at most one datagram per loop iteration and nothing is sent when
``NOTIFY_SOCKET`` is unset.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import final

#: While stopping, seconds between EXTEND_TIMEOUT_USEC messages.
EXTEND_INTERVAL_S = 1.0
#: How far each EXTEND_TIMEOUT_USEC message moves the stop deadline: several intervals,
#: so a slow loop iteration is not a kill, yet a master that hangs mid-drain is killed
#: this long after TimeoutStopSec= at the latest.
EXTEND_BY_S = 5.0


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
            # Non-blocking: a receiver that stops reading (its queue holds a few datagrams)
            # must never stall the master loop; the message is dropped instead.
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        #: Seconds between WATCHDOG=1 pings (half the service's WatchdogSec), or None.
        self.watchdog_interval_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2_000_000
        self._next_watchdog = 0.0
        self._next_extend = 0.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        """Send one message; ``RELOADING=1`` gets the ``MONOTONIC_USEC`` systemd requires.

        ``READY=1`` gets ``MAINPID=``: with a wrapper that forked (and NotifyAccess=all)
        it tells systemd which process is the service.
        """
        if self._sock is None or self._address is None:
            return
        if message.startswith("RELOADING=1"):
            # CLOCK_MONOTONIC, the clock systemd compares it with (time.monotonic on Linux).
            message += f"\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
        elif message.startswith("READY=1"):
            message += f"\nMAINPID={os.getpid()}"
        with contextlib.suppress(OSError):  # systemd gone or its queue full: nothing to do
            self._sock.sendto(message.encode(), self._address)

    def next_due(self, *, stopping: bool) -> float | None:
        """When :meth:`tick` next has something to send (``time.monotonic``), or None."""
        if self._sock is None:
            return None
        times = []
        if self.watchdog_interval_s is not None:
            times.append(self._next_watchdog)
        if stopping:
            times.append(self._next_extend)
        return min(times, default=None)

    def tick(self, now: float, *, stopping: bool) -> None:
        """Send what is due: WATCHDOG=1, and EXTEND_TIMEOUT_USEC while ``stopping``.

        Call once per master loop iteration: a loop that stops iterating stops both,
        which is the point.
        """
        if self._sock is None:
            return
        interval = self.watchdog_interval_s
        if interval is not None and now >= self._next_watchdog:
            self.notify("WATCHDOG=1")
            self._next_watchdog = now + interval
        if stopping and now >= self._next_extend:
            self.notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1_000_000)}")
            self._next_extend = now + EXTEND_INTERVAL_S

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
