"""Synchronisation of the LCK lock table: its sync records, and the union of the tables of merging sides.

Mixed into :class:`plugins.lck.state.LockState`; deterministic like the rest of the table.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from operator import attrgetter

from openais.errors import SaAisError
from openais.lck import LockMode, LockStatus
from plugins.lck import messages as m
from plugins.lck.records import NO_LOCKS, Answer, Effect, LockRec, Opener, Resource, qseq_key
from plugins.lck.waitfor import would_deadlock

_OK = SaAisError.OK
_EX = LockMode.EX


class TableSync:
    """Sync records and merges of the lock table (a mixin of LockState)."""

    def export(self) -> Iterator[tuple[m.Record, m.Message]]:
        """This table as sync records: META, every opener, then every lock (granted, then queued in order)."""
        yield m.Record.META, m.MetaRec([m.NodeInc(n, inc) for n, inc in sorted(self.node_inc.items())])
        for key, opener in self.openers.items():
            yield m.Record.OPENER, m.OpenerRec(key[0], key[1], opener.owner[1], opener.pid, opener.name)
        queued = []
        for rec in self.locks.values():
            if rec.granted:
                yield m.Record.LOCK, _lock_record(rec)
            else:
                queued.append(rec)
        queued.sort(key=qseq_key)
        for rec in queued:
            yield m.Record.LOCK, _lock_record(rec)

    def install(self, tables: dict[int, list[tuple[m.Record, m.Message]]], hellos: dict[int, int],
                members: Iterable[int]) -> list[Effect]:
        """End of a sync round: unite the sides' tables (if any were sent) and drop what belongs to no member.

        ``tables`` maps each side's sender to its records; sides are taken in sender order (the lowest
        node id first): resources and openers are united, every granted and orphan lock is kept, queued
        requests are queued side after side, each side in its own order.  Owners of nodes that are not
        members, or whose executive restarted (``hellos``: node -> incarnation), are finalized.  Requests
        that now close a wait-for cycle are refused with DEADLOCK, latest first; then every queue is served.
        """
        effects: list[Effect] = []
        if tables:
            self._unite(tables)
        member_set = set(members)
        stale = {n for n in {o[0] for o in self.owners} | {r.opener[0] for r in self.locks.values() if r.opener}
                 if n not in member_set or (n in self.node_inc and hellos.get(n) != self.node_inc[n])}
        if stale:
            effects.extend(self.nodes_lost(stale))
        self.node_inc = {n: inc for n, inc in hellos.items() if n in member_set}
        if len(tables) > 1:
            self._refuse_cycles(effects)
        effects.extend(self.serve_all())
        return effects

    def serve_all(self) -> list[Effect]:
        """Serve every queue, resources in name order (after a merge; and when a partition may grant again)."""
        effects: list[Effect] = []
        for res in sorted((r for r in self.resources.values() if r.queue), key=attrgetter("name")):
            self._serve(res, effects)
        return effects

    def _unite(self, tables: dict[int, list[tuple[m.Record, m.Message]]]) -> None:
        fresh = type(self)(self.max_locks)  # type: ignore[call-arg]
        queued_sides: list[list[m.LockRec]] = []
        for sender in sorted(tables):
            queued: list[m.LockRec] = []
            for kind, rec in tables[sender]:
                if kind is m.Record.META:
                    for item in rec.node_inc:
                        fresh.node_inc.setdefault(item.nodeid, item.incarnation)
                elif kind is m.Record.OPENER:
                    key = (rec.nodeid, rec.res_handle)
                    if key in fresh.openers:
                        continue
                    res = fresh.resources.get(rec.name) or fresh.resources.setdefault(rec.name, Resource(rec.name))
                    owner = (rec.nodeid, rec.conn_id)
                    fresh.openers[key] = Opener(key, owner, rec.pid, rec.name)
                    fresh.owners.setdefault(owner, set()).add(key)
                    res.n_openers += 1
                elif kind is m.Record.LOCK:
                    if rec.granted:
                        fresh._adopt_granted(rec)
                    else:
                        queued.append(rec)
            queued_sides.append(sorted(queued, key=attrgetter("qseq")))
        for queued in queued_sides:
            for rec in queued:
                opener = fresh.openers.get((rec.opener_node, rec.res_handle))
                if opener is None or rec.lock_id in fresh.locks:
                    continue
                item = LockRec(rec.lock_id, rec.name, opener.key, opener.owner, rec.pid, rec.mode, rec.flags,
                               rec.waiter_signal, rec.token, rec.since)
                fresh._enqueue(fresh.resources[rec.name], item, opener)
        for name in ("resources", "openers", "owners", "locks", "queued_by_owner", "granted_by_owner", "node_inc",
                     "qseq"):
            setattr(self, name, getattr(fresh, name))

    def _adopt_granted(self, rec: m.LockRec) -> None:
        if rec.lock_id in self.locks:
            return
        res = self.resources.get(rec.name) or self.resources.setdefault(rec.name, Resource(rec.name))
        if rec.orphan:
            item = LockRec(rec.lock_id, rec.name, None, None, rec.pid, rec.mode, rec.flags, rec.waiter_signal,
                           rec.token, rec.since)
            item.granted = True
            if res.granted is NO_LOCKS:
                res.granted = {}
            res.granted[item.lock_id] = item
            if item.mode == _EX:
                res.n_ex += 1
            else:
                res.n_pr += 1
            self.locks[item.lock_id] = item
            return
        opener = self.openers.get((rec.opener_node, rec.res_handle))
        if opener is None:
            return
        item = LockRec(rec.lock_id, rec.name, opener.key, opener.owner, rec.pid, rec.mode, rec.flags,
                       rec.waiter_signal, rec.token, rec.since)
        self._grant(res, item, opener)

    def _refuse_cycles(self, effects: list[Effect]) -> None:
        """Refuse queued requests that close a wait-for cycle after a merge, the latest in queue order first."""
        queued = sorted((r for r in self.locks.values() if not r.granted), key=qseq_key, reverse=True)
        for rec in queued:
            res = self.resources[rec.resource]
            position = bisect_left(res.queue, rec.qseq, key=qseq_key)
            if would_deadlock(self, res, rec, position):
                self._dequeue(res, rec)
                self.openers[rec.opener].locks.pop(rec.lock_id, None)  # type: ignore[index]
                effects.append(Answer(rec.owner[0], rec.token, _OK, int(LockStatus.DEADLOCK), rec.lock_id))  # type: ignore[index]


def _lock_record(rec: LockRec) -> m.LockRec:
    opener = rec.opener or (0, 0)
    owner = rec.owner or (0, 0)
    return m.LockRec(rec.lock_id, rec.granted, rec.owner is None, opener[0], opener[1], owner[1], rec.pid,
                     rec.mode, rec.flags, rec.waiter_signal, rec.token, rec.since, rec.qseq, rec.resource)
