"""Binding the listening sockets, once, in the master.

Workers inherit these sockets through fork and accept on them; the master never
accepts. A bind failure is a one-line message and :data:`ExitCode.BIND`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import final

from corral.config import BindSpec


class BindFailed(Exception):
    """A listening address could not be set up; the message is for the user."""


@final
@dataclass(slots=True)
class Listener:
    spec: BindSpec
    sock: socket.socket
    #: The unix socket file this process created and must remove on exit.
    owned_path: str | None = None

    def url(self) -> str:
        """How to reach it, with the real port when port 0 was asked for."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.sock.close()
        if self.owned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.owned_path)
            self.owned_path = None


def bind_all(specs: list[BindSpec], backlog: int) -> list[Listener]:
    """Bind every address or none.

    Raises:
        BindFailed: for the first address that fails; those already bound are closed.
    """
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listeners.append(bind_one(spec, backlog))
    except BindFailed:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def bind_one(spec: BindSpec, backlog: int) -> Listener:
    """Bind and listen on one address.

    Raises:
        BindFailed: with the address and the reason.
    """
    if spec.kind == "fd":
        return _adopt_fd(spec)
    if spec.kind == "unix":
        return _bind_unix(spec, backlog)
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
        raise BindFailed(f"cannot bind {spec}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return Listener(spec, sock)


def _bind_unix(spec: BindSpec, backlog: int) -> Listener:
    path = spec.path
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
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
