"""Parsing of listen addresses: ``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``, ``fd://N``."""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from typing import Literal, final

DEFAULT_BIND = "127.0.0.1:8000"

#: Ports are 16-bit numbers (RFC 9293 section 3.1); 0 asks the kernel for a free one.
#: Python's ``bind`` does not check: Linux binds 99999 as a random port.
PORT_RANGE = range(0, 65536)

#: Ports below this need privilege to bind: BSD's ``IPPORT_RESERVED``, and the default of
#: Linux's ``net.ipv4.ip_unprivileged_port_start`` (CAP_NET_BIND_SERVICE lifts it).
PRIVILEGED_PORTS_BELOW = 1024


class BindError(ValueError):
    """A listen address that cannot be understood."""


@final
@dataclass(frozen=True, slots=True)
class BindSpec:
    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def explain(self, exc: OSError) -> str:
        """Why binding this address failed with ``exc``, in words for the user (pure).

        ``exc.strerror``, plus what to do where the usual cause is known: EACCES on a
        port below 1024 means the process lacks the privilege to bind it.
        """
        reason = exc.strerror or str(exc)
        if (
            exc.errno == errno.EACCES
            and self.kind == "tcp"
            and 0 < self.port < PRIVILEGED_PORTS_BELOW
        ):
            return (
                f"{reason} (ports below {PRIVILEGED_PORTS_BELOW} need root or CAP_NET_BIND_SERVICE)"
            )
        return reason


def parse_bind(text: str) -> BindSpec:
    """Parse one address.

    Raises:
        BindError: with a message fit for the user.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise BindError(f"{text!r}: unix: needs a path")
        return BindSpec("unix", path=path)
    if text.startswith("fd://"):
        try:
            fd = int(text[5:])
        except ValueError:
            raise BindError(f"{text!r}: fd:// needs a file descriptor number") from None
        if fd < 0:
            raise BindError(f"{text!r}: file descriptors are not negative")
        return BindSpec("fd", fd=fd)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise BindError(f"{text!r}: write IPv6 addresses as [ADDR]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BindError(f"{text!r}: {host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise BindError(f"{text!r}: expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N")
        if ":" in host:
            raise BindError(f"{text!r}: write IPv6 addresses as [ADDR]:PORT")
        host = host or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise BindError(f"{text!r}: port {port_text!r} is not a number") from None
    why = port_error(port)
    if why is not None:
        raise BindError(f"{text!r}: {why}")
    return BindSpec("tcp", host=host, port=port)


def port_error(port: int) -> str | None:
    """Why ``port`` is not a port, or None: one wording for ``--bind``, ``--port`` and the file."""
    if port in PORT_RANGE:
        return None
    return f"port {port} is out of range ({PORT_RANGE.start}-{PORT_RANGE.stop - 1})"


def effective_binds(
    bind: tuple[str, ...],
    host: str | None,
    port: int | None,
    uds: str | None,
    fd: int | None,
) -> list[BindSpec]:
    """The addresses to serve: ``--bind`` values plus the uvicorn-style shortcuts.

    ``--host``/``--port`` make one TCP address (each defaulting to 127.0.0.1 and 8000),
    ``--uds`` a unix socket and ``--fd`` an inherited descriptor. With none of them the
    default is 127.0.0.1:8000.
    """
    specs = [parse_bind(text) for text in bind]
    if host is not None or port is not None:
        host = host or "127.0.0.1"
        specs.append(BindSpec("tcp", host=host.strip("[]"), port=8000 if port is None else port))
    if uds is not None:
        specs.append(BindSpec("unix", path=uds))
    if fd is not None:
        specs.append(BindSpec("fd", fd=fd))
    return specs or [parse_bind(DEFAULT_BIND)]
