"""Starting a server: logging, pidfile, binding, optional preload, then the master loop.

:func:`serve` is what the command line runs; :func:`run` is the same for Python
callers (``corral.run(app="pkg.mod:app", workers=2)``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.config import ConfigError, LoadedConfig, effective_binds, load_config
from corral.lifecycle import ExitCode
from corral.logs import configure_logging

logger = logging.getLogger("corral.error")


class PidfileBusy(Exception):
    """The pidfile names a live process."""


def write_pidfile(path: str) -> None:
    """Write our pid, refusing a file that names another live process.

    Raises:
        PidfileBusy: with a message for the user.
    """
    target = Path(path)
    with contextlib.suppress(FileNotFoundError, ValueError):
        other = int(target.read_text().strip() or "0")
        if other and other != os.getpid():
            try:
                os.kill(other, 0)
            except ProcessLookupError:
                pass  # stale: its process is gone
            except PermissionError:
                raise PidfileBusy(f"pidfile {path} names a live process ({other})") from None
            else:
                raise PidfileBusy(f"pidfile {path} names a live process ({other})")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(target)


def serve(loaded: LoadedConfig, cli: Mapping[str, object], config_file: str | None = None) -> int:
    """Run the server described by ``loaded`` until it stops; return the exit code.

    ``cli`` and ``config_file`` are kept so that HUP can load the config again from the
    same sources. After a USR2 re-exec this runs again in the same process: the sockets
    and workers of the previous program are adopted instead of bound and forked.
    """
    from corral.config.loader import parse_mode
    from corral.supervisor.activation import activated_listeners, other_binds
    from corral.supervisor.envfile import EnvFile
    from corral.supervisor.handover import inherited_workers
    from corral.supervisor.loop import Master, exit_code_name
    from corral.supervisor.sockets import BindFailed, bind_all, inherited_listeners
    from corral.workers.app import AppLoadError, load_app
    from corral.workers.privileges import resolve_identity
    from corral.workers.tls import load_server_tls

    config = loaded.config
    try:
        configure_logging(config.log_level, config.log_format, config.log_config)
    except ValueError as exc:
        print(f"corral: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    env_file = EnvFile()  # read again before each new generation (loop.py)
    try:
        env_file.load(config.env_file)
    except ConfigError as exc:
        logger.error("%s", exc)
        return ExitCode.USAGE
    try:
        # Checked here so that a wrong user or an unreadable key is one line and exit 2,
        # not a crash loop of workers. Each worker does both again for itself.
        resolve_identity(config)
        load_server_tls(config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return ExitCode.USAGE
    if config.pid is not None:
        try:
            write_pidfile(config.pid)
        except (PidfileBusy, OSError) as exc:
            logger.error("%s", exc)
            return ExitCode.USAGE
    # Popped before anything is forked: workers and later re-execs must not see them.
    inherited = inherited_listeners(os.environ)
    adopted = inherited_workers(os.environ)
    listeners = []
    try:
        try:
            listeners = activated_listeners(os.environ, inherited)
            specs = effective_binds(config.bind, config.host, config.port, config.uds, config.fd)
            uds_mode = None if config.uds_mode is None else parse_mode(config.uds_mode)
            specs = other_binds(config, specs, listeners)
            listeners += bind_all(specs, config.backlog, inherited, uds_mode=uds_mode)
        except BindFailed as exc:
            logger.error("%s", exc)
            return ExitCode.BIND
        app = None
        if config.preload and not config.reload:
            try:
                app = load_app(config.app, factory=config.factory, app_dir=config.app_dir)
            except Exception as exc:
                if isinstance(exc, AppLoadError):
                    logger.error("cannot load the application: %s", exc)
                else:
                    logger.exception("cannot load the application %s", config.app)
                if not adopted:
                    return ExitCode.APP_IMPORT
                # Re-exec'd with workers that serve: exiting would kill them. Let the new
                # workers fail to import instead, which abandons the hand-over.
                logger.error("--preload failed after re-exec; the adopted workers keep serving")
            else:
                # Move what the import made to the permanent generation, which no
                # collection scans: a worker's full collection would otherwise write to
                # every preloaded object's GC header and un-share its page (the gc.freeze
                # documentation recommends this before forking).
                gc.freeze()
        scheme = "http" if config.ssl_certfile is None else "https"
        for listener in listeners:
            if listener.fdname is None:
                logger.info("listening on %s", listener.url(scheme))
            else:
                logger.info("listening on %s (systemd: %s)", listener.url(scheme), listener.fdname)
        logger.info(
            "corral master %d serving %s with %d worker%s",
            os.getpid(),
            config.app,
            config.workers,
            "" if config.workers == 1 else "s",
        )
        watcher = None
        if config.reload:
            from corral.supervisor.reloader import development_reloader

            watcher = development_reloader(config, [li.url() for li in listeners])
        master = Master(
            loaded,
            listeners,
            reload_config=lambda: load_config(cli, config_path=config_file),
            app=app,
            inherited=adopted,
            watcher=watcher,
            env_file=env_file,
        )
        try:
            code = master.run()
        except Exception:
            logger.exception("the master failed")
            code = ExitCode.INTERNAL
        logger.info("corral master exiting with code %d (%s)", code, exit_code_name(code))
        return code
    finally:
        for listener in listeners:
            listener.close()
        if config.pid is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(config.pid)


def run(app: str, **options: Any) -> int:
    """Serve ``app`` (``"module:attribute"``) with the given options; return the exit code.

    Options are the config keys (``workers=2``, ``bind=["unix:/tmp/s"]``) and follow the
    same precedence as the command line: they override the environment and config file.

    Raises:
        ConfigError: for an invalid option.
    """
    cli: dict[str, object] = {"app": app}
    for name, value in options.items():
        cli[name] = list(value) if isinstance(value, (list, tuple)) else value
    return serve(load_config(cli), cli)
