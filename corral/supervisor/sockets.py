"""Binding the listening sockets, once, in the master, and handing them over on re-exec.

Workers inherit these sockets through fork and accept on them; the master never
accepts. A bind failure is a one-line message and :data:`ExitCode.BIND`.

On USR2 the master execs itself (same pid). :func:`export_listeners` keeps the sockets
open across the exec and names them in ``CORRAL_INHERITED_FDS``; the new master's
:func:`inherited_listeners` picks them up and :func:`bind_all` uses them for the
addresses that are still configured, so the port never closes: connections arriving
meanwhile wait in the kernel's accept queue.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import final

from corral.config import BindError, BindSpec, parse_bind

#: Environment variable naming the listening sockets a re-exec'd master inherits (JSON).
INHERITED_FDS_ENV = "CORRAL_INHERITED_FDS"


class BindFailed(Exception):
    """A listening address could not be set up; the message is for the user."""


@final
@dataclass(slots=True)
class Listener:
    spec: BindSpec
    sock: socket.socket
    #: The unix socket file this process created and must remove on exit.
    owned_path: str | None = None
    #: Set for a socket passed by systemd (socket activation): its LISTEN_FDNAMES name,
    #: "unknown" when systemd gave none. Kept across a re-exec.
    fdname: str | None = None

    def url(self, scheme: str = "http") -> str:
        """How to reach it, with the real port when port 0 was asked for."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def close(self) -> None:
        self.sock.close()
        if self.owned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.owned_path)
            self.owned_path = None


def bind_all(
    specs: list[BindSpec],
    backlog: int,
    inherited: Mapping[str, Listener] | None = None,
    *,
    uds_mode: int | None = None,
) -> list[Listener]:
    """Bind every address or none, using an ``inherited`` socket where one matches.

    Inherited sockets are matched by address text (``str(spec)``), so ``127.0.0.1:0``
    gets back the port it was given before the re-exec. Those that match nothing
    any more are closed (and their socket files removed). Unix socket files created
    here get the permission bits ``uds_mode`` (else what the umask leaves).

    Raises:
        BindFailed: for the first address that fails; those already set up are closed.
    """
    unused = dict(inherited or {})
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listener = unused.pop(str(spec), None)
            if listener is None:
                listener = bind_one(spec, backlog, uds_mode=uds_mode)
            listeners.append(listener)
    except BindFailed:
        for listener in listeners:
            listener.close()
        raise
    finally:
        for listener in unused.values():
            listener.close()
    return listeners


def export_listeners(listeners: list[Listener]) -> str:
    """Keep ``listeners`` open across an exec; return the value for ``INHERITED_FDS_ENV``.

    Ownership of unix socket files passes to the new program with the sockets.
    """
    entries = []
    for listener in listeners:
        fd = listener.sock.fileno()
        os.set_inheritable(fd, True)
        entries.append(
            {
                "fd": fd,
                "spec": str(listener.spec),
                "path": listener.owned_path,
                "fdname": listener.fdname,
            }
        )
    return json.dumps(entries)


def inherited_listeners(environ: MutableMapping[str, str]) -> dict[str, Listener]:
    """Pop ``INHERITED_FDS_ENV`` and wrap the sockets it names, by address text.

    A malformed value or a descriptor that is not a listening stream socket is skipped
    (that address is then bound afresh, or fails to bind, as on a first start).
    """
    raw = environ.pop(INHERITED_FDS_ENV, "")
    if not raw:
        return {}
    try:
        entries = [
            (int(e["fd"]), str(e["spec"]), e.get("path"), e.get("fdname")) for e in json.loads(raw)
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    result: dict[str, Listener] = {}
    for fd, text, path, fdname in entries:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            continue
        try:
            spec = parse_bind(text)
        except BindError:
            sock.close()
            continue
        result[text] = Listener(
            spec,
            sock,
            owned_path=path if isinstance(path, str) else None,
            fdname=fdname if isinstance(fdname, str) else None,
        )
    return result


def bind_one(spec: BindSpec, backlog: int, *, uds_mode: int | None = None) -> Listener:
    """Bind and listen on one address.

    Raises:
        BindFailed: with the address and the reason.
    """
    if spec.kind == "fd":
        return _adopt_fd(spec)
    if spec.kind == "unix":
        return _bind_unix(spec, backlog, uds_mode)
    try:
        infos = socket.getaddrinfo(
            spec.host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindFailed(f"cannot bind {spec}: {exc.strerror}") from None
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindFailed(f"cannot bind {spec}: {spec.explain(exc)}") from None
    sock.set_inheritable(True)
    return Listener(spec, sock)


def _bind_unix(spec: BindSpec, backlog: int, mode: int | None) -> Listener:
    path = spec.path
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise BindFailed(f"cannot bind {spec}: {exc.strerror or exc}") from None
    try:
        if mode is not None:
            # Before listen(): nobody can connect until the file has its final mode.
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise BindFailed(f"cannot bind {spec}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return Listener(spec, sock, owned_path=path)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; never one that something listens on."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindFailed(f"cannot bind unix:{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise BindFailed(f"cannot bind unix:{path}: the file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise BindFailed(f"cannot bind unix:{path}: {exc.strerror}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        raise BindFailed(f"cannot bind unix:{path}: another server is listening on it")
    finally:
        probe.close()


def _adopt_fd(spec: BindSpec) -> Listener:
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise BindFailed(f"cannot use {spec}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindFailed(f"cannot use {spec}: not a stream socket")
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        accepting = 1  # not every platform can tell; trust the caller
    if not accepting:
        sock.detach()
        raise BindFailed(f"cannot use {spec}: the socket is not listening")
    sock.set_inheritable(True)
    return Listener(spec, sock)
