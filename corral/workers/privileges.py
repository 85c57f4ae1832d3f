"""The workers' process identity: ``--user``, ``--group`` and ``--umask``.

The master binds the sockets as whoever started it (root may bind port 443 or create a
socket in a root-owned directory), then forks. Each worker switches identity first
thing after the fork, before it imports the app, runs lifespan or accepts a
connection, so no application code runs with the master's privileges. (``--preload``
imports the app in the master, before any switch: with ``--user`` it is the operator's
choice to make.)

Order of operations, each step needing the privilege the next one drops:

1. ``umask`` (needs nothing);
2. supplementary groups: the user's own groups (``getgrouplist``), or just the group
   when only ``--group`` is given; never root's groups, which would survive the
   ``setgid``/``setuid`` below otherwise;
3. ``setgid`` (real, effective and saved group id), which needs root;
4. ``setuid`` (real, effective and saved user id): after it there is no way back.

The kernel clears PR_SET_PDEATHSIG when credentials change, so the worker arms it after
:func:`apply_identity` (see ``worker.run_worker``).

Error handling: :func:`resolve_identity` raises ``ConfigError`` for an unknown user or
group and for a switch that needs root when corral is not root; the master calls it at
start (exit code 2) and each worker again before :func:`apply_identity`.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import final

from corral.config import Config, ConfigError
from corral.config.loader import parse_mode


@final
@dataclass(frozen=True, slots=True)
class Identity:
    """What a worker becomes. ``None`` fields are left as inherited."""

    uid: int | None = None
    gid: int | None = None
    #: Supplementary groups to set (needs root), or None to leave them.
    groups: tuple[int, ...] | None = None
    umask: int | None = None


def _lookup_user(text: str) -> tuple[int, int | None, str | None]:
    """``(uid, primary gid, name)`` of a user name or numeric uid (a bare uid may lack an
    entry in the user database: then it has no primary group and no name).

    Raises:
        ConfigError: no such user.
    """
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        if text.isdigit():
            return int(text), None, None
        raise ConfigError(f"invalid value for user: no user named {text!r}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _lookup_group(text: str) -> int:
    """The gid of a group name or numeric gid.

    Raises:
        ConfigError: no such group.
    """
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"invalid value for group: no group named {text!r}") from None


def resolve_identity(config: Config) -> Identity | None:
    """The identity ``config`` asks the workers to take, or None if it asks nothing.

    Raises:
        ConfigError: an unknown user or group, or a switch of user or group while
            corral does not run as root.
    """
    if config.user is None and config.group is None and config.umask is None:
        return None
    umask = None if config.umask is None else parse_mode(config.umask)
    uid = gid = None
    groups: tuple[int, ...] | None = None
    if config.user is not None:
        uid, gid, name = _lookup_user(config.user)
        if config.group is not None:
            gid = _lookup_group(config.group)
        if gid is None:
            raise ConfigError(
                f"invalid value for user: uid {uid} has no user entry; give --group too"
            )
        groups = tuple(os.getgrouplist(name, gid)) if name is not None else (gid,)
    elif config.group is not None:
        gid = _lookup_group(config.group)
        groups = (gid,)
    changes = (uid is not None and uid != os.geteuid()) or (gid is not None and gid != os.getegid())
    if changes and os.geteuid() != 0:
        raise ConfigError(
            f"--user/--group need root to switch identity; corral runs as uid {os.geteuid()}"
        )
    if not changes:
        groups = None  # already that identity: nothing to set, and no root needed
    return Identity(uid=uid, gid=gid, groups=groups, umask=umask)


def apply_identity(identity: Identity | None) -> None:
    """Become ``identity`` for good. Call in the worker, right after the fork.

    Raises:
        OSError: the kernel refused a step (the worker must then not serve).
    """
    if identity is None:
        return
    if identity.umask is not None:
        os.umask(identity.umask)
    if identity.groups is not None:
        os.setgroups(list(identity.groups))
    if identity.gid is not None and identity.gid != os.getegid():
        os.setgid(identity.gid)
    if identity.uid is not None and identity.uid != os.geteuid():
        os.setuid(identity.uid)
