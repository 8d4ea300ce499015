"""The replicated lock table of LCK as a pure, deterministic object.

Every node feeds the same delivered cluster messages, in agreed order, to its
own :class:`LockState`; each call returns the *effects* of the change (answers
to pending library requests, waiter callbacks) for the engine to carry out on
the node they concern.  Nothing here reads a clock, touches IPC or the ring,
so every node decides every grant identically.

Model
    *opener*  one open ``Resource`` of a library handle: key ``(nodeid, res_handle)``
    *owner*   the library handle (connection) it belongs to: ``(nodeid, conn_id)``
    *lock*    a granted lock or a queued request, ``lock_id`` unique cluster-wide

A resource exists while it has openers or granted (orphan) locks.  Each
resource has its granted locks and one FIFO queue; :meth:`LockState.lock`
applies the grant rule of the contract (NO_MORE, DUPLICATE_EX, GRANTED,
ORPHANED, NOT_QUEUED, DEADLOCK, queued) and :meth:`LockState._serve` serves a
queue from its head whenever something is released.

Deadlock detection (:mod:`plugins.lck.waitfor`) searches the wait-for graph
between owners as the table is when a request is applied; the objects and
effects are in :mod:`plugins.lck.records`, sync records and merges in
:mod:`plugins.lck.tablesync`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter

from openais.errors import SaAisError
from openais.lck import MAX_NUM_LOCKS, LockFlags, LockMode, LockStatus
from plugins.lck.records import (
    NO_LOCKS,
    NO_OWNERS,
    NO_QUEUE,
    NO_SET,
    Answer,
    Effect,
    GrantedOver,
    LockRec,
    Opener,
    OpenerKey,
    Owner,
    Queued,
    Resource,
    Waiter,
    conflicts,
    qseq_key,
)
from plugins.lck.tablesync import TableSync
from plugins.lck.waitfor import would_deadlock

_OK = SaAisError.OK
_PR, _EX = int(LockMode.PR), int(LockMode.EX)
_ORPHAN_FLAG = int(LockFlags.ORPHAN)
_NO_QUEUE_FLAG = int(LockFlags.NO_QUEUE)
_GRANTED = int(LockStatus.GRANTED)
_DEADLOCK = int(LockStatus.DEADLOCK)
_NOT_QUEUED = int(LockStatus.NOT_QUEUED)
_ORPHANED = int(LockStatus.ORPHANED)
_NO_MORE = int(LockStatus.NO_MORE)
_DUPLICATE_EX = int(LockStatus.DUPLICATE_EX)


# -- the state ----------------------------------------------------------------------------------------


class LockState(TableSync):
    """The lock table of one node; identical on every node that applied the same messages."""

    def __init__(self, max_locks: int = MAX_NUM_LOCKS) -> None:
        self.max_locks = max_locks
        self.resources: dict[str, Resource] = {}
        self.openers: dict[OpenerKey, Opener] = {}
        self.owners: dict[Owner, set[OpenerKey]] = {}
        self.locks: dict[int, LockRec] = {}
        self.queued_by_owner: dict[Owner, dict[int, LockRec]] = {}
        self.granted_by_owner: dict[Owner, int] = {}  # owner -> granted locks it holds
        self.node_inc: dict[int, int] = {}  # nodeid -> incarnation the table's entries belong to
        self.qseq = 0

    # -- the quorum hook ------------------------------------------------------------------------------

    #: ``fn() -> bool``: may this partition grant?  The engine sets the service layer's quorum answer
    #: (the same on every member of a configuration); True without a quorum service.
    quorate: Callable[[], bool] = staticmethod(lambda: True)  # type: ignore[assignment]

    def partition_may_grant(self) -> bool:
        """May this partition grant locks at all?  False in a partition without quorum (quorum.md, LCK)."""
        return self.quorate()

    # -- resources ------------------------------------------------------------------------------------

    def open(self, node: int, token: int, res_handle: int, conn_id: int, pid: int, name: str,
             create: bool) -> list[Effect]:
        """A Resource is opened (OPEN delivered from ``node``)."""
        key = (node, res_handle)
        if key in self.openers:
            return [Answer(node, token, SaAisError.EXIST)]
        res = self.resources.get(name)
        if res is None:
            if not create:
                return [Answer(node, token, SaAisError.NOT_EXIST)]
            res = self.resources[name] = Resource(name)
        owner = (node, conn_id)
        self.openers[key] = Opener(key, owner, pid, name)
        self.owners.setdefault(owner, set()).add(key)
        res.n_openers += 1
        return [Answer(node, token, _OK)]

    def close(self, node: int, token: int, res_handle: int) -> list[Effect]:
        """A Resource is closed: its locks go (orphan ones stay), its requests are withdrawn."""
        opener = self.openers.get((node, res_handle))
        if opener is None:
            return [Answer(node, token, SaAisError.BAD_HANDLE)] if token else []
        effects: list[Effect] = []
        self._close_opener(opener, effects)
        if token:
            effects.append(Answer(node, token, _OK))
        return effects

    def conn_exit(self, node: int, conn_id: int) -> list[Effect]:
        """A library handle finalized or its process died: every Resource of it is closed."""
        effects: list[Effect] = []
        for key in sorted(self.owners.get((node, conn_id), ())):
            self._close_opener(self.openers[key], effects)
        return effects

    def nodes_lost(self, nodes: Iterable[int]) -> list[Effect]:
        """Nodes left the configuration: finalize every handle they had, in one deterministic order."""
        gone = set(nodes)
        effects: list[Effect] = []
        for owner in sorted(o for o in self.owners if o[0] in gone):
            for key in sorted(self.owners.get(owner, ())):
                self._close_opener(self.openers[key], effects)
        return effects

    def _close_opener(self, opener: Opener, effects: list[Effect]) -> None:
        res = self.resources[opener.name]
        touched = False
        for rec in sorted(opener.locks.values(), key=attrgetter("lock_id")):
            if rec.granted:
                if rec.flags & _ORPHAN_FLAG:
                    self._count_granted(rec.owner, -1)
                    rec.owner = None
                    rec.opener = None
                else:
                    self._release(res, rec)
                    touched = True
            else:
                self._dequeue(res, rec)
                effects.append(Answer(rec.owner[0], rec.token, SaAisError.BAD_HANDLE, 0, rec.lock_id))  # type: ignore[index]
                touched = True
        opener.locks = NO_LOCKS
        del self.openers[opener.key]
        keys = self.owners.get(opener.owner)
        if keys is not None:
            keys.discard(opener.key)
            if not keys:
                del self.owners[opener.owner]
        res.n_openers -= 1
        if touched:
            self._serve(res, effects)
        self._maybe_delete(res)

    def _maybe_delete(self, res: Resource) -> None:
        if not res.n_openers and not res.granted and not res.queue:
            del self.resources[res.name]

    # -- locks --------------------------------------------------------------------------------------

    def lock(self, node: int, token: int, res_handle: int, lock_id: int, mode: int, flags: int,
             waiter_signal: int, since: int) -> list[Effect]:
        """A lock request (LOCK delivered from ``node``): the grant rule of the contract.

        The hot path of the service (every node applies every request): the uncontended grant
        builds one record and one answer, nothing else.
        """
        opener = self.openers.get((node, res_handle))
        if opener is None:
            return [Answer(node, token, SaAisError.BAD_HANDLE, 0, lock_id)]
        locks = self.locks
        if lock_id in locks:
            return [Answer(node, token, SaAisError.NO_RESOURCES, 0, lock_id)]
        if len(locks) >= self.max_locks:
            return [Answer(node, token, _OK, _NO_MORE, lock_id)]
        held = opener.locks
        if mode == _EX and held and any(r.granted and r.mode == _EX for r in held.values()):
            return [Answer(node, token, _OK, _DUPLICATE_EX, lock_id)]
        res = self.resources[opener.name]
        rec = LockRec(lock_id, res.name, opener.key, opener.owner, opener.pid, mode, flags, waiter_signal,
                      token, since)
        if not res.queue and not res.n_ex and (mode == _PR or not res.n_pr) and self.partition_may_grant():
            self._grant(res, rec, opener)
            return [Answer(node, token, _OK, _GRANTED, lock_id)]
        if flags & _ORPHAN_FLAG and any(r.orphan for r in res.conflicting(mode)):
            return [Answer(node, token, _OK, _ORPHANED, lock_id)]
        if flags & _NO_QUEUE_FLAG:
            return [Answer(node, token, _OK, _NOT_QUEUED, lock_id)]
        if would_deadlock(self, res, rec):
            return [Answer(node, token, _OK, _DEADLOCK, lock_id)]
        self._enqueue(res, rec, opener)
        return [Queued(lock_id)]

    def unlock(self, node: int, token: int, res_handle: int, lock_id: int) -> list[Effect]:
        """Unlock a granted lock or withdraw a queued request of Resource ``(node, res_handle)``."""
        rec = self.locks.get(lock_id)
        if rec is None or rec.opener != (node, res_handle):
            return [Answer(node, token, SaAisError.NOT_EXIST)]
        res = self.resources[rec.resource]
        self.openers[rec.opener].locks.pop(lock_id, None)  # type: ignore[index]
        if rec.granted:
            self._release(res, rec)
            if not res.queue:  # the uncontended release: nobody to serve
                return [Answer(node, token, _OK)]
            effects: list[Effect] = []
        else:
            self._dequeue(res, rec)
            effects = [Answer(node, rec.token, SaAisError.NOT_EXIST, 0, lock_id)]
        self._serve(res, effects)
        effects.append(Answer(node, token, _OK))
        return effects

    def withdraw(self, node: int, lock_id: int) -> list[Effect]:
        """The timeout of a queued request expired at its caller's executive: withdraw it if still queued."""
        rec = self.locks.get(lock_id)
        if rec is None or rec.granted or rec.owner is None or rec.owner[0] != node:
            return []
        res = self.resources[rec.resource]
        self._dequeue(res, rec)
        self.openers[rec.opener].locks.pop(lock_id, None)  # type: ignore[index]
        effects: list[Effect] = [Answer(node, rec.token, SaAisError.TIMEOUT, 0, lock_id)]
        self._serve(res, effects)
        return effects

    def purge(self, node: int, token: int, res_handle: int) -> list[Effect]:
        """Remove every orphan lock of the Resource's resource, then serve its queue."""
        opener = self.openers.get((node, res_handle))
        if opener is None:
            return [Answer(node, token, SaAisError.BAD_HANDLE)]
        res = self.resources[opener.name]
        effects: list[Effect] = []
        for rec in [r for r in res.granted.values() if r.orphan]:
            self._release(res, rec)
        self._serve(res, effects)
        effects.append(Answer(node, token, _OK))
        return effects

    # -- grant machinery ----------------------------------------------------------------------------

    def _grant(self, res: Resource, rec: LockRec, opener: Opener) -> None:
        rec.granted = True
        lock_id = rec.lock_id
        if res.granted is NO_LOCKS:
            res.granted = {}
        res.granted[lock_id] = rec
        if rec.mode == _EX:
            res.n_ex += 1
        else:
            res.n_pr += 1
        self.locks[lock_id] = rec
        if opener.locks is NO_LOCKS:
            opener.locks = {}
        opener.locks[lock_id] = rec
        owner = rec.owner
        if owner is not None:
            counts = self.granted_by_owner
            counts[owner] = counts.get(owner, 0) + 1

    def _count_granted(self, owner: Owner | None, delta: int) -> None:
        if owner is None:
            return
        count = self.granted_by_owner.get(owner, 0) + delta
        if count:
            self.granted_by_owner[owner] = count
        else:
            del self.granted_by_owner[owner]

    def _enqueue(self, res: Resource, rec: LockRec, opener: Opener) -> None:
        self.qseq += 1
        rec.qseq = self.qseq
        if res.queue is NO_QUEUE:
            res.queue, res.queue_owners = [], {}
        res.queue.append(rec)
        owner: Owner = rec.owner  # type: ignore[assignment]
        res.queue_owners[owner] = rec.qseq
        if rec.mode == _EX:
            if res.ex_qseqs is NO_QUEUE:
                res.ex_qseqs = []
            res.ex_qseqs.append(rec.qseq)
        self.locks[rec.lock_id] = rec
        if opener.locks is NO_LOCKS:
            opener.locks = {}
        opener.locks[rec.lock_id] = rec
        mine = self.queued_by_owner.setdefault(owner, {})
        mine[rec.lock_id] = rec
        if len(mine) == 2:
            for other in mine.values():
                self._mark_multi(self.resources[other.resource], owner, True)
        elif len(mine) > 2:
            self._mark_multi(res, owner, True)

    @staticmethod
    def _mark_multi(res: Resource, owner: Owner, on: bool) -> None:
        if on:
            if res.multi is NO_SET:
                res.multi = set()
            res.multi.add(owner)  # type: ignore[union-attr]
        elif owner in res.multi:
            res.multi.discard(owner)  # type: ignore[union-attr]

    def _dequeue(self, res: Resource, rec: LockRec) -> None:
        index = bisect_left(res.queue, rec.qseq, key=qseq_key)
        if index < len(res.queue) and res.queue[index] is rec:
            del res.queue[index]
        else:  # pragma: no cover - defensive: the queue is always ordered by qseq
            res.queue.remove(rec)
        self.locks.pop(rec.lock_id, None)
        owner: Owner = rec.owner  # type: ignore[assignment]
        if res.queue_owners.get(owner) == rec.qseq:
            del res.queue_owners[owner]
        if rec.mode == _EX:
            at = bisect_left(res.ex_qseqs, rec.qseq)
            if at < len(res.ex_qseqs) and res.ex_qseqs[at] == rec.qseq:
                del res.ex_qseqs[at]
        self._mark_multi(res, owner, False)
        mine = self.queued_by_owner.get(owner)
        if mine is not None:
            mine.pop(rec.lock_id, None)
            if len(mine) == 1:
                for other in mine.values():
                    self._mark_multi(self.resources[other.resource], owner, False)
            elif not mine:
                del self.queued_by_owner[owner]

    def _release(self, res: Resource, rec: LockRec) -> None:
        del res.granted[rec.lock_id]
        if rec.mode == _EX:
            res.n_ex -= 1
        else:
            res.n_pr -= 1
        self.locks.pop(rec.lock_id, None)
        rec.granted = False
        owner = rec.owner
        if owner is not None:
            counts = self.granted_by_owner
            count = counts.get(owner, 0) - 1
            if count:
                counts[owner] = count
            else:
                del counts[owner]

    def _serve(self, res: Resource, effects: list[Effect]) -> None:
        """Grant from the head of the queue while the head is compatible with every granted lock."""
        queue = res.queue
        if not queue or not self.partition_may_grant():
            return
        granted_now = []
        while queue and res.compatible(queue[0].mode):
            rec = queue[0]
            self._dequeue(res, rec)
            opener = self.openers[rec.opener]  # type: ignore[index]
            self._grant(res, rec, opener)
            granted_now.append(rec)
            effects.append(Answer(rec.owner[0], rec.token, _OK, _GRANTED, rec.lock_id))  # type: ignore[index]
        if queue:
            effects.extend(GrantedOver(rec.lock_id) for rec in granted_now)

    def waiters_of(self, effect: Queued | GrantedOver, node: int | None = None) -> Iterator[Waiter]:
        """The waiter callbacks ``effect`` stands for, as the table is now; only owners on ``node`` if given."""
        rec = self.locks.get(effect.lock_id)
        if rec is None:
            return
        res = self.resources[rec.resource]
        if type(effect) is Queued:
            if rec.granted:
                return
            for held in res.conflicting(rec.mode):
                owner = held.owner
                if owner is not None and (node is None or owner[0] == node):
                    yield Waiter(owner, rec.waiter_signal, held.lock_id, held.mode, rec.mode)
        else:
            owner = rec.owner
            if not rec.granted or owner is None or (node is not None and owner[0] != node):
                return
            for waiting in res.queue:
                if conflicts(rec.mode, waiting.mode):
                    yield Waiter(owner, waiting.waiter_signal, rec.lock_id, rec.mode, waiting.mode)

    # -- views ----------------------------------------------------------------------------------------

    def holders(self, name: str) -> list[LockRec]:
        """Granted locks of resource ``name`` in lock id order."""
        res = self.resources.get(name)
        return [] if res is None else sorted(res.granted.values(), key=attrgetter("lock_id"))

    def waiters(self, name: str) -> list[LockRec]:
        """Queued requests of resource ``name`` in queue order."""
        res = self.resources.get(name)
        return [] if res is None else list(res.queue)

    def check_invariants(self) -> None:
        """Assert the table is self-consistent (tests): counts, indexes, grant compatibility, FIFO heads."""
        count = 0
        for name, res in self.resources.items():
            assert res.name == name
            ex = sum(1 for r in res.granted.values() if r.mode == _EX)
            assert (ex, len(res.granted) - ex) == (res.n_ex, res.n_pr), name
            assert [r.qseq for r in res.queue] == sorted(r.qseq for r in res.queue), name
            assert res.queue_owners == {r.owner: r.qseq for r in res.queue}, name
            assert len(res.queue_owners) == len(res.queue), f"{name}: an owner queued twice"
            assert res.ex_qseqs == [r.qseq for r in res.queue if r.mode == _EX], name
            assert set(res.multi) == {r.owner for r in res.queue if len(self.queued_by_owner[r.owner]) > 1}, name
            assert res.n_openers or res.granted, name
            assert res.n_openers == sum(1 for o in self.openers.values() if o.name == name), name
            if res.queue and self.partition_may_grant():
                assert not res.compatible(res.queue[0].mode), f"{name}: grantable head left queued"
            count += len(res.granted) + len(res.queue)
        assert count == len(self.locks)
        assert not NO_LOCKS and not NO_QUEUE and not NO_OWNERS, "a shared empty container was mutated"
        held: dict[Owner, int] = {}
        for rec in self.locks.values():
            if rec.granted and rec.owner is not None:
                held[rec.owner] = held.get(rec.owner, 0) + 1
        assert held == self.granted_by_owner, (held, self.granted_by_owner)
        for key, opener in self.openers.items():
            assert opener.name in self.resources
            for rec in opener.locks.values():
                assert rec.opener == key and self.locks.get(rec.lock_id) is rec


__all__ = ["Answer", "Effect", "GrantedOver", "LockRec", "LockState", "Opener", "Queued", "Resource", "Waiter",
           "conflicts"]
