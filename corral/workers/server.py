"""What the connections of one worker share: the app, settings read once, counters.

Every value a request needs is computed here once, when the worker starts, so the hot
path never looks up config or formats a header that does not change. The sweep runs
every :data:`SWEEP_INTERVAL_S`: it refreshes the Date header, closes connections whose
deadline passed and sends the heartbeat, all from inside the event loop (a blocked loop
therefore goes silent, which is what the master watches for).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from corral.config import Config
from corral.logs import access_logger, format_access
from corral.protocol.http import HeadReader, HTTPLimits
from corral.protocol.request import parse_head
from corral.protocol.response import DefaultHeaders, header_from_text
from corral.protocol.websocket import WebSocketLimits
from corral.workers.proxy import ProxyHeaders
from corral.workers.tls import ServerTLS
from corral.workers.types import ASGIApp

if TYPE_CHECKING:
    from corral.workers.channel import Exchange, ServedConnection
    from corral.workers.cycle import RequestCycle

#: How often deadlines are checked and the Date header refreshed. Deadlines are
#: therefore honoured to within this much; none of them is shorter than 0.1 s.
SWEEP_INTERVAL_S = 0.25

logger = logging.getLogger("corral.error")

SERVER_HEADER = (b"server", b"corral")

# RFC 9110 section 5.6.7: IMF-fixdate names days and months in English whatever the
# process's locale (time.strftime's %a and %b follow it).
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> bytes:
    """The Date header value for a Unix time, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode("ascii")


#: Unsent bytes a session may hold, in maximum messages (the core fails the connection
#: with 1008 past it). Flow control stops a well-behaved app long before; this bounds
#: what bypasses it: Pongs to a ping flood, one huge message to a client that stopped
#: reading. Four leaves room to echo one maximum message to a slow reader.
OUTBOUND_BUFFER_MESSAGES = 4

#: The smallest message size the outbound bound is computed from, so that an app with a
#: small --ws-max-size may still send bigger messages than it accepts.
OUTBOUND_BUFFER_FLOOR_BYTES = 1024 * 1024


def websocket_limits(config: Config) -> WebSocketLimits:
    """The core's limits from the --ws-* options."""
    return WebSocketLimits(
        max_message_size=config.ws_max_size,
        max_outbound_buffer=OUTBOUND_BUFFER_MESSAGES
        * max(config.ws_max_size, OUTBOUND_BUFFER_FLOOR_BYTES),
        per_message_deflate=config.ws_per_message_deflate,
        ping_interval_s=config.ws_ping_interval or None,
        ping_timeout_s=config.ws_ping_timeout or None,
    )


def head_reader(choice: str) -> HeadReader:
    """The head reader ``--http`` asks for: httptools when installed (auto), or h11.

    Either way h11 reads every head the fast reader declines, and every body that is
    not a plain Content-Length (see ``corral/protocol/httptools_head.py``).
    """
    if choice in ("auto", "httptools"):
        try:
            from corral.protocol.httptools_head import HttptoolsHeadReader
        except ImportError:
            if choice == "httptools":
                logger.warning("--http httptools: httptools is not installed; using h11")
        else:
            logger.debug("request heads are read with httptools")
            return HttptoolsHeadReader().read
    logger.debug("request heads are read with h11's grammar")
    return parse_head


@final
class WorkerServer:
    """The shared state of one worker's connections."""

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        lifespan_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        *,
        on_request: Callable[[], None] | None = None,
        websockets: bool = True,
        tls: ServerTLS | None = None,
    ) -> None:
        self.loop = loop
        self.app = app
        self.lifespan_state = lifespan_state
        self.http_limits = HTTPLimits(
            max_header_bytes=config.max_header_size, max_body_bytes=config.max_body_size
        )
        self.read_head = head_reader(config.http)
        self.config = config
        self.root_path = config.root_path
        self.scheme = "http" if tls is None else "https"
        #: The TLS context and the shared part of the scope's tls extension, or None.
        self.tls = tls
        #: --proxy-headers: trust is decided per connection, headers applied per request.
        self.proxy = (
            ProxyHeaders(config.forwarded_allow_ips, config.forwarded_headers)
            if config.proxy_headers
            else None
        )
        self.timeout_keep_alive = config.timeout_keep_alive
        self.timeout_header = config.timeout_header
        self.timeout_body = config.timeout_body
        self.timeout_write = config.timeout_write
        self.limit_concurrency = config.limit_concurrency or 0
        self.access_log = config.access_log
        self.connections: set[ServedConnection] = set()
        # Strong references to the running app tasks: the event loop keeps only weak
        # ones, and an app awaiting something nobody else references could be collected.
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = 0
        self.requests = 0
        self.draining = False
        self.close_code = 0
        #: Called after each completed request (--max-requests), or None.
        self.on_request = on_request
        #: The WebSocket core's limits from the --ws-* options; None refuses upgrades.
        self.ws_limits = websocket_limits(config) if websockets else None
        extra = [header_from_text(text) for text in config.header]  # checked at load
        self._static_headers = ([SERVER_HEADER] if config.server_header else []) + extra
        self._date_header = config.date_header
        self._date_second = -1
        #: Date, Server and ``--header`` as pairs (error responses, the WebSocket 101)
        #: and rendered once for every response head (``defaults``).
        self.default_headers: list[tuple[bytes, bytes]] = list(self._static_headers)
        self.defaults = DefaultHeaders(self.default_headers)
        self._refresh_headers()

    def _refresh_headers(self) -> None:
        """Rebuild the default headers when the Date header's second has changed."""
        if not self._date_header:
            return
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            date = http_date(second)
            # A new list, never an in-place change: a response may be extending a copy.
            self.default_headers = [(b"date", date), *self._static_headers]
            self.defaults = DefaultHeaders(self.default_headers)

    # -- admission ----------------------------------------------------------------------------

    def admit(self) -> bool:
        """Take a slot for a request or WebSocket, or say no (503)."""
        limit = self.limit_concurrency
        if limit and self.active >= limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def run_cycle(self, cycle: RequestCycle, *, eager: bool = False) -> None:
        """Run the app for one admitted request as a task.

        With ``eager`` on Python 3.12+ the task starts eagerly: the app runs at once,
        inside ``data_received``, up to its first real wait. An app that answers
        without waiting (most simple endpoints) finishes there, with no task scheduled
        and no extra turn of the event loop.
        """
        if eager and sys.version_info >= (3, 12):  # a version test mypy understands
            task = asyncio.Task(cycle.run(self.app), loop=self.loop, eager_start=True)
            if task.done():
                return
        else:
            task = self.loop.create_task(cycle.run(self.app))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- logging ------------------------------------------------------------------------------

    def log_access(
        self, conn: ServedConnection, status: int, size: int, cycle: Exchange | None
    ) -> None:
        """One access line, when a response completed or was cut (``cycle`` may be None
        for an error answered before a request was parsed)."""
        if not self.access_log or not access_logger.isEnabledFor(logging.INFO):
            return
        # The cycle's perf_counter clock (see RequestCycle.started_at), not loop.time().
        duration = time.perf_counter() - cycle.started_at if cycle is not None else 0.0
        method = cycle.method if cycle is not None else b"-"
        target = cycle.target if cycle is not None else b"-"
        format_access(conn.client, method, target, status, size, duration)

    # -- the sweep ----------------------------------------------------------------------------

    def sweep(self) -> None:
        """Refresh the Date header and enforce deadlines. Runs in the event loop."""
        self._refresh_headers()
        now = self.loop.time()
        expired = [conn for conn in self.connections if conn.deadline <= now]
        for conn in expired:
            conn.deadline_passed()

    def begin_drain(self, close_code: int) -> None:
        """Stop reusing connections: idle ones close now, busy ones after their response.

        WebSockets are closed with ``close_code`` (1001 on stop, 1012 on reload).
        """
        self.draining = True
        self.close_code = close_code
        for conn in list(self.connections):
            conn.shutdown()
