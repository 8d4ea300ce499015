"""Who may talk to the executive: SO_PEERCRED checked against the configuration."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCred:
    """The kernel's word on who is at the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return PeerCred(*_UCRED.unpack(raw))


def supplementary_groups(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def _resolve(value: Any, by_name: Any) -> int | None:
    """A numeric id as is, a name through ``by_name`` (pwd/grp), None when empty or unknown."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return by_name(text)
    except KeyError:
        return None


def _uid(value: Any) -> int | None:
    return _resolve(value, lambda name: pwd.getpwnam(name).pw_uid)


def _gid(value: Any) -> int | None:
    return _resolve(value, lambda name: grp.getgrnam(name).gr_gid)


@dataclass(slots=True)
class Authorizer:
    """Root, the executive's own uid, and the configured uids/gids are admitted; nobody else."""

    allowed_uids: set[int] = field(default_factory=set)
    allowed_gids: set[int] = field(default_factory=set)

    @classmethod
    def from_config(cls, config: Any) -> Authorizer:
        """Admit the ``uidgid { uid: gid: }`` sections and ``aisexec { group: }``."""
        uids: set[int] = set()
        gids: set[int] = set()
        for entry in getattr(config, "uidgid", None) or []:
            uid, gid = _uid(entry.get("uid")), _gid(entry.get("gid"))
            if uid is not None:
                uids.add(uid)
            if gid is not None:
                gids.add(gid)
        group = _gid((getattr(config, "aisexec", None) or {}).get("group"))
        if group is not None:
            gids.add(group)
        return cls(uids, gids)

    def admits(self, cred: PeerCred) -> bool:
        """True when the peer may use the executive."""
        if cred.uid in (0, os.geteuid()) or cred.uid in self.allowed_uids:
            return True
        if cred.gid in self.allowed_gids:
            return True
        return bool(self.allowed_gids & supplementary_groups(cred.pid))
