"""The objects of the LCK lock table and the effects its changes produce (no logic beyond small helpers).

*Opener* is one open ``Resource`` of a library handle, keyed ``(nodeid, res_handle)``; *owner* is
the library handle (connection) it belongs to, ``(nodeid, conn_id)``; a *lock* is a granted lock
or a queued request, ``lock_id`` unique cluster-wide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from openais.errors import SaAisError
from openais.lck import LockMode

Owner = tuple[int, int]  # (nodeid, conn_id)
OpenerKey = tuple[int, int]  # (nodeid, res_handle)

_PR, _EX = LockMode.PR, LockMode.EX
qseq_key = attrgetter("qseq")
#: Shared empty containers: most resources and openers never hold a lock, so theirs are created on first
#: use (never mutated: the table replaces them by a fresh container before inserting).
NO_LOCKS: dict = {}
NO_QUEUE: list = []
NO_OWNERS: dict = {}
NO_SET: frozenset = frozenset()


# -- effects ----------------------------------------------------------------------------------------


class Answer(NamedTuple):
    """Answer pending request ``token`` of node ``node``: an error, and for lock requests a status.

    A named tuple, not a dataclass: every node builds one for every delivered request (most are
    another node's and only looked at), so it must cost no more than a tuple.
    """

    node: int
    token: int
    error: SaAisError
    status: int = 0
    lock_id: int = 0


@dataclass(frozen=True, slots=True)
class Waiter:
    """Tell owner ``owner`` (its node, its connection) that its lock ``lock_id`` blocks a request."""

    owner: Owner
    waiter_signal: int
    lock_id: int
    mode_held: int
    mode_requested: int


@dataclass(frozen=True, slots=True)
class Queued:
    """Request ``lock_id`` was queued: the owners of the granted locks it conflicts with are told.

    Compact on purpose: :meth:`LockState.waiters_of` expands it into :class:`Waiter` callbacks on the
    node that needs them, so no node builds callbacks for the others.
    """

    lock_id: int


@dataclass(frozen=True, slots=True)
class GrantedOver:
    """Lock ``lock_id`` was granted from the queue: its owner is told of each conflicting request still queued."""

    lock_id: int


Effect = Answer | Queued | GrantedOver


# -- records ----------------------------------------------------------------------------------------


class LockRec:
    """One granted lock or queued request."""

    __slots__ = ("flags", "granted", "lock_id", "mode", "opener", "owner", "pid", "qseq", "resource",
                 "since", "token", "waiter_signal")

    def __init__(self, lock_id: int, resource: str, opener: OpenerKey | None, owner: Owner | None, pid: int,
                 mode: int, flags: int, waiter_signal: int, token: int, since: int) -> None:
        self.lock_id = lock_id
        self.resource = resource
        self.opener = opener  # None once orphaned
        self.owner = owner  # None once orphaned
        self.pid = pid
        self.mode = mode
        self.flags = flags
        self.waiter_signal = waiter_signal
        self.token = token
        self.since = since
        self.granted = False
        self.qseq = 0

    @property
    def orphan(self) -> bool:
        """A granted lock whose owner is gone (taken with LOCK_ORPHAN)."""
        return self.owner is None


class Opener:
    """One open Resource of a library handle."""

    __slots__ = ("key", "locks", "name", "owner", "pid")

    def __init__(self, key: OpenerKey, owner: Owner, pid: int, name: str) -> None:
        self.key = key
        self.owner = owner
        self.pid = pid
        self.name = name
        self.locks: dict[int, LockRec] = NO_LOCKS


class Resource:
    """One named lock resource: its openers, granted locks and FIFO queue."""

    __slots__ = ("ex_qseqs", "granted", "multi", "n_ex", "n_openers", "n_pr", "name", "queue", "queue_owners")

    def __init__(self, name: str) -> None:
        self.name = name
        self.n_openers = 0
        self.granted: dict[int, LockRec] = NO_LOCKS
        self.queue: list[LockRec] = NO_QUEUE
        # indexes of the queue for deadlock detection (an owner has at most one request queued per resource)
        self.queue_owners: dict[Owner, int] = NO_OWNERS  # owner -> qseq of its queued request
        self.ex_qseqs: list[int] = NO_QUEUE  # qseqs of the queued EX requests, ascending
        self.multi: set[Owner] | frozenset = NO_SET  # queued owners that also wait elsewhere
        self.n_ex = 0
        self.n_pr = 0

    def compatible(self, mode: int) -> bool:
        """True when ``mode`` is compatible with every granted lock."""
        return self.n_ex == 0 and (mode == _PR or self.n_pr == 0)

    def conflicting(self, mode: int) -> Iterator[LockRec]:
        """Granted locks that conflict with a request of ``mode``."""
        for rec in self.granted.values():
            if mode == _EX or rec.mode == _EX:
                yield rec


def conflicts(a: int, b: int) -> bool:
    """True unless both modes are PR."""
    return a == _EX or b == _EX
