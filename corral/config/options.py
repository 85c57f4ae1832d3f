"""Every option, declared once.

Each field of :class:`Config` carries an :class:`OptionSpec` in its metadata. That one
declaration drives the click flag (``--graceful-timeout``), the environment variable
(``CORRAL_GRACEFUL_TIMEOUT``), the config-file key (``graceful_timeout``), the help
text and the generated reference in ``docs/options.md``. Nothing else lists options.

The model is flat on purpose: the file keys and environment variables of the contract
are flat (``workers = 4``), and a flat model keeps each option's three spellings
trivially derivable from its field name.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Final


class Kind(enum.Enum):
    """How an option's raw value (a string from argv or env, or a TOML value) is parsed."""

    STR = "text"
    INT = "integer"
    FLOAT = "number"
    BOOL = "boolean"
    CHOICE = "choice"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    help: str
    kind: Kind
    section: str
    #: Extra spellings on the command line, such as ``-w``.
    short: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    #: Smallest accepted number, for INT and FLOAT.
    minimum: float | None = None
    #: ``None`` is an accepted value (spelled ``none`` in env and on the command line).
    nullable: bool = False
    metavar: str = ""
    #: Environment variables read after ``CORRAL_<NAME>``, for compatibility.
    env_aliases: tuple[str, ...] = ()
    #: Never shown by ``--print-config`` (a password).
    secret: bool = False


def option(
    default: Any,
    help: str,
    kind: Kind,
    section: str,
    *,
    short: tuple[str, ...] = (),
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    nullable: bool = False,
    metavar: str = "",
    env_aliases: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    spec = OptionSpec(
        help=help,
        kind=kind,
        section=section,
        short=short,
        choices=choices,
        minimum=minimum,
        nullable=nullable,
        metavar=metavar,
        env_aliases=env_aliases,
        secret=secret,
    )
    if isinstance(default, (list, tuple)):
        frozen = tuple(default)
        return field(default_factory=lambda: frozen, metadata={"corral": spec})
    return field(default=default, metadata={"corral": spec})


SERVER = "Application and server"
BIND = "Binding"
TLS = "TLS"
PROXY = "Proxies"
WORKERS = "Workers and supervision"
HTTP = "HTTP"
TIMEOUTS = "Timeouts"
WS = "WebSocket"
LOG = "Logging"
RELOAD = "Development reload"

S, N, F, B, C, L = Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.CHOICE, Kind.LIST


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The complete, validated configuration of one server. Immutable.

    Build one with :func:`corral.config.load_config` (which applies defaults, file,
    environment and command line, in that order) or directly with keyword arguments.
    """

    # -- application and server -------------------------------------------------------
    app: str = option("", "The ASGI application, as module:attribute.", S, SERVER, metavar="APP")
    factory: bool = option(False, "APP names a callable that returns the application.", B, SERVER)
    app_dir: str = option(
        ".", "Directory put first on sys.path to import APP.", S, SERVER, metavar="DIR"
    )
    lifespan: str = option(
        "auto",
        "ASGI lifespan: on (required), off, or auto (used if the app supports it; a startup "
        "that raises is logged as a warning and the app is served without lifespan).",
        C,
        SERVER,
        choices=("auto", "on", "off"),
    )
    root_path: str = option("", "ASGI root_path, for an app mounted below a prefix.", S, SERVER)
    http: str = option(
        "auto",
        "How plain request heads are read: httptools when installed (auto), or h11's "
        "grammar. h11 reads everything else either way.",
        C,
        SERVER,
        choices=("auto", "h11", "httptools"),
    )
    loop: str = option(
        "auto",
        "Event loop: uvloop when installed (auto), or asyncio.",
        C,
        SERVER,
        choices=("auto", "asyncio", "uvloop"),
    )
    env_file: str | None = option(
        None,
        "File of KEY=VALUE lines added to the workers' environment; read again before "
        "each new generation (HUP, --reload).",
        S,
        SERVER,
        nullable=True,
        metavar="FILE",
    )
    server_header: bool = option(True, "Send a Server header.", B, SERVER)
    date_header: bool = option(True, "Send a Date header.", B, SERVER)
    header: tuple[str, ...] = option(
        (),
        "Extra default response header, as 'Name: value' (repeatable).",
        L,
        SERVER,
        metavar="HEADER",
    )

    # -- binding -------------------------------------------------------------------------
    bind: tuple[str, ...] = option(
        (),
        "Address to listen on: HOST:PORT, [V6]:PORT, unix:PATH or fd://N (repeatable). "
        "Default 127.0.0.1:8000.",
        L,
        BIND,
        short=("-b",),
        metavar="ADDR",
    )
    host: str | None = option(None, "Shortcut: bind to this host.", S, BIND, nullable=True)
    port: int | None = option(
        None,
        "Shortcut: bind to this port (0 picks a free one).",
        N,
        BIND,
        # No minimum: -1 gets the same "out of range" as 65536 (loader.validate).
        nullable=True,
    )
    uds: str | None = option(
        None, "Shortcut: bind to this unix socket path.", S, BIND, nullable=True, metavar="PATH"
    )
    fd: int | None = option(
        None,
        "Shortcut: serve on this inherited file descriptor.",
        N,
        BIND,
        minimum=0,
        nullable=True,
    )
    backlog: int = option(2048, "Listen backlog of each socket.", N, BIND, minimum=1)
    uds_mode: str | None = option(
        None,
        "Permissions of the unix socket files corral creates, in octal (660, 0o666); "
        "default: what the umask leaves.",
        S,
        BIND,
        nullable=True,
        metavar="MODE",
    )

    # -- TLS -----------------------------------------------------------------------------------
    ssl_certfile: str | None = option(
        None,
        "Serve HTTPS/WSS with this PEM certificate (chain); read again by each new worker, "
        "so HUP picks up a renewed one.",
        S,
        TLS,
        nullable=True,
        metavar="FILE",
    )
    ssl_keyfile: str | None = option(
        None,
        "PEM private key of --ssl-certfile (default: the key is in the certificate file).",
        S,
        TLS,
        nullable=True,
        metavar="FILE",
    )
    ssl_keyfile_password: str | None = option(
        None,
        "Password of an encrypted --ssl-keyfile (prefer the environment variable).",
        S,
        TLS,
        nullable=True,
        metavar="PASSWORD",
        secret=True,
    )
    ssl_ca_certs: str | None = option(
        None,
        "PEM file of CA certificates that client certificates are verified against.",
        S,
        TLS,
        nullable=True,
        metavar="FILE",
    )
    ssl_cert_reqs: str = option(
        "none",
        "Client certificates: not asked for (none), verified if sent (optional), or "
        "required (mutual TLS); optional and required need --ssl-ca-certs.",
        C,
        TLS,
        choices=("none", "optional", "required"),
    )
    ssl_ciphers: str | None = option(
        None,
        "OpenSSL cipher list for TLS 1.2 and older (default: OpenSSL's secure defaults).",
        S,
        TLS,
        nullable=True,
        metavar="CIPHERS",
    )

    # -- workers ---------------------------------------------------------------------------
    workers: int = option(
        1,
        "Number of worker processes.",
        N,
        WORKERS,
        short=("-w",),
        minimum=1,
        env_aliases=("WEB_CONCURRENCY",),
    )
    preload: bool = option(False, "Import the app in the master before forking.", B, WORKERS)
    graceful_timeout: float = option(
        30.0,
        "Seconds to drain on stop or reload before workers are killed (5 with --reload).",
        F,
        WORKERS,
        minimum=0,
    )
    worker_timeout: float = option(
        60.0,
        "Seconds of heartbeat silence before a worker is killed (0: never; 0 with --reload, "
        "so a worker paused at a breakpoint lives). A second before, its stack is logged and "
        "its successor started, which serves as soon as it is ready.",
        F,
        WORKERS,
        minimum=0,
    )
    max_requests: int = option(
        0,
        "Replace a worker after this many requests (0: never). Its successor is started early "
        "enough to take over about then; a worker 10% past the limit takes no new work until "
        "it does (one more request per open connection is still answered).",
        N,
        WORKERS,
        minimum=0,
    )
    max_requests_jitter: int = option(
        0, "Random extra requests added to --max-requests per worker.", N, WORKERS, minimum=0
    )
    max_worker_lifetime: float | None = option(
        None,
        "Replace a worker after it has served this many seconds, one at a time. Its successor "
        "starts one boot time early; a worker still serving 10% past the lifetime is retired "
        "anyway.",
        F,
        WORKERS,
        minimum=1,
        nullable=True,
        metavar="SECONDS",
    )
    max_worker_memory: int | None = option(
        None,
        "Replace a worker whose resident memory exceeds this many MiB (sampled each "
        "second); it serves until its successor is ready, unless a second later it is still "
        "10% over. Leave room for up to 8 MiB of freed memory a busy worker keeps for reuse.",
        N,
        WORKERS,
        minimum=1,
        nullable=True,
        metavar="MIB",
    )
    ready_timeout: float = option(
        60.0,
        "Seconds a new worker may take to import the app and finish lifespan startup.",
        F,
        WORKERS,
        minimum=1,
    )
    pid: str | None = option(
        None, "Write the master's PID to this file.", S, WORKERS, nullable=True, metavar="FILE"
    )
    user: str | None = option(
        None,
        "Workers switch to this user (name or uid) after the sockets are bound; needs root.",
        S,
        WORKERS,
        nullable=True,
        metavar="USER",
    )
    group: str | None = option(
        None,
        "Workers switch to this group (name or gid); default: the --user's primary group.",
        S,
        WORKERS,
        nullable=True,
        metavar="GROUP",
    )
    umask: str | None = option(
        None,
        "The workers' umask, in octal (027, 0o077); default: inherited.",
        S,
        WORKERS,
        nullable=True,
        metavar="MASK",
    )

    # -- HTTP ---------------------------------------------------------------------------------
    limit_concurrency: int | None = option(
        None,
        "Requests and WebSockets served at once per worker; more get 503.",
        N,
        HTTP,
        minimum=1,
        nullable=True,
    )
    max_header_size: int = option(
        16384, "Largest request head in bytes; larger gets 431.", N, HTTP, minimum=256
    )
    max_body_size: int | None = option(
        None,
        "Largest request body in bytes; larger gets 413.",
        N,
        HTTP,
        minimum=0,
        nullable=True,
    )

    # -- proxies -------------------------------------------------------------------------------
    proxy_headers: bool = option(
        False,
        "Believe the forwarding headers of trusted proxies (--forwarded-allow-ips) for the "
        "client address, scheme and host; strip them from everyone else.",
        B,
        PROXY,
    )
    forwarded_allow_ips: tuple[str, ...] = option(
        ("127.0.0.1", "::1", "unix"),
        "Trusted proxies: IP addresses, CIDR networks, 'unix' (unix-socket peers) or '*'.",
        L,
        PROXY,
        metavar="ADDRS",
        env_aliases=("FORWARDED_ALLOW_IPS",),
    )
    forwarded_headers: str = option(
        "x-forwarded",
        "Which headers the trusted proxies set: X-Forwarded-For/-Proto/-Host/-Port, or "
        "RFC 7239 Forwarded. The other kind is stripped, never believed.",
        C,
        PROXY,
        choices=("x-forwarded", "forwarded"),
    )

    # -- timeouts ---------------------------------------------------------------------------
    timeout_keep_alive: float = option(
        5.0, "Seconds an idle keep-alive connection is kept open.", F, TIMEOUTS, minimum=0
    )
    timeout_header: float = option(
        10.0,
        "Seconds to receive a whole request head, from its first byte; also how long a "
        "new connection may stay silent.",
        F,
        TIMEOUTS,
        minimum=0.1,
    )
    timeout_body: float = option(
        30.0,
        "Seconds of silence allowed while the app waits for request body.",
        F,
        TIMEOUTS,
        minimum=0.1,
    )
    timeout_write: float = option(
        30.0,
        "Seconds a response may stall because the client does not read.",
        F,
        TIMEOUTS,
        minimum=0.1,
    )

    # -- WebSocket ---------------------------------------------------------------------------
    ws_max_size: int = option(
        16 * 1024 * 1024,
        "Largest WebSocket message in bytes, after reassembly and decompression; "
        "larger closes with 1009.",
        N,
        WS,
        minimum=1,
    )
    ws_per_message_deflate: bool = option(
        True, "Negotiate permessage-deflate compression when the client offers it.", B, WS
    )
    ws_ping_interval: float | None = option(
        20.0,
        "Idle seconds before the server pings a WebSocket client (none: never).",
        F,
        WS,
        minimum=0.1,
        nullable=True,
    )
    ws_ping_timeout: float | None = option(
        20.0,
        "Seconds to wait for any reply to a ping before closing with 1011 (none: forever).",
        F,
        WS,
        minimum=0.1,
        nullable=True,
    )

    # -- logging ---------------------------------------------------------------------------
    log_level: str = option(
        "info",
        "Log level.",
        C,
        LOG,
        choices=("critical", "error", "warning", "info", "debug", "trace"),
    )
    access_log: bool = option(True, "Write an access log line per request.", B, LOG)
    log_format: str = option("text", "Log line format.", C, LOG, choices=("text", "json"))
    log_config: str | None = option(
        None,
        "logging.config.dictConfig file (JSON or TOML); overrides the above.",
        S,
        LOG,
        nullable=True,
        metavar="FILE",
    )

    # -- development reload ------------------------------------------------------------------
    reload: bool = option(
        False,
        "Development: start new workers when a watched file changes; broken code is shown "
        "as a 500 page with its traceback until the next save. Not for production.",
        B,
        RELOAD,
    )
    reload_dir: tuple[str, ...] = option(
        (),
        "Directory to watch with --reload (repeatable). Default: the current directory.",
        L,
        RELOAD,
        metavar="DIR",
    )
    reload_include: tuple[str, ...] = option(
        ("*.py",),
        "Glob of files whose change reloads (repeatable), matched against the file name or "
        "its path below the watched directory. *.py always counts unless excluded.",
        L,
        RELOAD,
        metavar="GLOB",
    )
    reload_exclude: tuple[str, ...] = option(
        (),
        "Glob of files or directories never to watch (repeatable), on top of the built-in "
        "ignores: VCS and cache directories, virtualenvs, node_modules, compiled and editor "
        "files.",
        L,
        RELOAD,
        metavar="GLOB",
    )
    reload_poll: bool = option(
        False,
        "Poll for changes instead of waiting for file system events (chosen automatically on "
        "network and host-shared file systems, where events do not arrive).",
        B,
        RELOAD,
    )


#: Option name -> its declaration, in declaration order.
SPECS: Final[dict[str, OptionSpec]] = {
    f.name: f.metadata["corral"] for f in dataclasses.fields(Config)
}
DEFAULTS: Final = Config()

#: Defaults that differ under --reload (applied when the option was not given at all): a
#: developer's Ctrl-C or save should not wait 30 s for a stream to end, and a worker
#: paused at a breakpoint is not hung.
RELOAD_DEFAULTS: Final[dict[str, object]] = {"graceful_timeout": 5.0, "worker_timeout": 0.0}
