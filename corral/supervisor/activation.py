"""systemd socket activation: serve on the sockets the service manager passes.

The protocol (sd_listen_fds(3)), written directly: systemd (or
``systemd-socket-activate``, or any manager that speaks the protocol) opens the
listening sockets, starts us with them as file descriptors 3, 4, ... and sets

- ``LISTEN_PID``: the pid the sockets are meant for. A wrapper that forked (a shell
  script without ``exec``) passes variables that name another pid: they are ignored,
  as sd_listen_fds() does;
- ``LISTEN_FDS``: how many descriptors, starting at 3 (``SD_LISTEN_FDS_START``);
- ``LISTEN_FDNAMES``: optional, colon-separated names (``FileDescriptorName=``), used
  here in the log only.

Rules:

- The three variables are removed from ``os.environ`` before anything is forked, so
  the workers, the app's own subprocesses and a re-exec'd master never see them (a
  child that believed them would take fds 3.. for sockets).
- With activated sockets corral binds nothing of its own unless an address was asked
  for explicitly (``--bind``, ``--host``/``--port``, ``--uds``, ``--fd``); the default
  127.0.0.1:8000 applies only when nothing was passed and nothing asked.
- The sockets are systemd's: they are never unlinked, and a USR2 re-exec keeps them
  (``sockets.export_listeners`` records the name, so the new master knows them as
  activated although the variables are gone).

Error handling: a passed descriptor that is not a listening stream socket is a
:class:`~corral.supervisor.sockets.BindFailed` (exit code 5): the unit and the server
disagree, and serving on fewer sockets than the unit declares would hide that.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from corral.config import BindSpec, Config
from corral.supervisor.sockets import BindFailed, Listener

#: The first passed descriptor (sd-daemon.h): 0-2 are stdin, stdout and stderr.
SD_LISTEN_FDS_START = 3

#: The variables of the protocol, all removed from the environment once read.
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: systemd's name for a socket without FileDescriptorName= (sd_listen_fds_with_names).
UNNAMED = "unknown"


def activated_listeners(
    environ: MutableMapping[str, str], inherited: MutableMapping[str, Listener]
) -> list[Listener]:
    """Pop the activation variables and wrap the sockets they pass.

    After a USR2 re-exec the variables are gone; the activated sockets then come back
    through ``inherited`` (marked by their ``fdname``) and are moved out of it here.

    Raises:
        BindFailed: a passed descriptor is not a listening stream socket, or
            ``LISTEN_FDS`` is not a number.
    """
    values = {name: environ.pop(name, "") for name in LISTEN_VARIABLES}
    listeners = [
        inherited.pop(text) for text, li in list(inherited.items()) if li.fdname is not None
    ]
    if not values["LISTEN_FDS"] or values["LISTEN_PID"] != str(os.getpid()):
        return listeners
    try:
        count = int(values["LISTEN_FDS"])
    except ValueError:
        raise BindFailed(f"LISTEN_FDS={values['LISTEN_FDS']!r} is not a number") from None
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    names += [UNNAMED] * (count - len(names))
    for index in range(count):
        try:
            listener = _wrap(SD_LISTEN_FDS_START + index, names[index])
        except BindFailed:
            for done in listeners:
                done.close()
            raise
        listeners.append(listener)
    return listeners


def _wrap(fd: int, name: str) -> Listener:
    """One passed descriptor as a Listener.

    Raises:
        BindFailed: it is not an open, listening stream socket.
    """
    what = f"systemd socket {fd} ({name})"
    try:
        sock = socket.socket(fileno=fd)  # family and type are read from the descriptor
    except OSError as exc:
        raise BindFailed(f"cannot use {what}: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindFailed(f"cannot use {what}: not a stream socket (ListenStream= is needed)")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise BindFailed(f"cannot use {what}: the socket is not listening")
    sock.set_inheritable(True)
    return Listener(BindSpec("fd", fd=fd), sock, fdname=name)


def other_binds(config: Config, specs: list[BindSpec], activated: list[Listener]) -> list[BindSpec]:
    """The addresses to bind besides the ``activated`` sockets.

    ``specs`` are the configured addresses (``effective_binds``). With activated sockets
    only explicitly asked-for addresses are bound, and an ``fd://N`` naming a socket
    systemd passed is that socket, not a second one.
    """
    if not activated:
        return specs
    asked = bool(config.bind) or any(
        value is not None for value in (config.host, config.port, config.uds, config.fd)
    )
    if not asked:
        return []
    passed = {listener.sock.fileno() for listener in activated}
    return [spec for spec in specs if spec.kind != "fd" or spec.fd not in passed]
