"""Deadlock detection for LCK: the wait-for graph between owners, searched where a request is applied.

Owner X waits for owner Y when X has a request queued on a resource where Y holds a conflicting
granted lock, or Y has a request queued ahead of X's.  A request whose owner would then wait for
itself closes a cycle and is refused with ``DEADLOCK``.  The search reads the table's indexes only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openais.lck import LockMode
from plugins.lck.records import LockRec, Owner, Resource

if TYPE_CHECKING:
    from plugins.lck.state import LockState

_EX = LockMode.EX


def would_deadlock(state: LockState, res: Resource, rec: LockRec, position: int | None = None) -> bool:
    """True when ``rec`` queued at the tail of ``res`` (or already queued there) makes its owner wait for itself.

    A depth-first walk of the wait-for graph from the owners ``rec`` would wait for, on the queue
    indexes: a request waits for the conflicting holders of its resource and for every owner queued
    ahead of it.  An owner queued ahead whose only wait is that request adds no edge beyond those
    (the holders it waits for, and owners further ahead), so only owners that also wait elsewhere
    (``Resource.multi``) are followed; a check costs O(holders scanned + owners followed), not the
    length of the queues.
    """
    me: Owner = rec.owner  # type: ignore[assignment]
    queued = state.queued_by_owner
    if position is None and me not in queued and me not in state.granted_by_owner:
        return False  # nobody can wait for an owner that holds nothing and waits for nothing
    scanned: dict[str, int] = {}  # resource -> 1: EX holders scanned, 2: all holders scanned
    stack: list[Owner] = []
    seen: set[Owner] = set()

    def waits(target: Resource, mode: int, bound: int) -> bool:
        """Follow a request of ``mode`` on ``target`` with the requests below qseq ``bound`` ahead of it."""
        mine = target.queue_owners.get(me)
        if mine is not None and mine < bound:
            return True
        ex = target.ex_qseqs
        need = 2 if mode == _EX or (ex and ex[0] < bound) else 1
        name = target.name
        if scanned.get(name, 0) < need:
            scanned[name] = need
            for held in target.granted.values():
                owner = held.owner
                if owner is None or (need == 1 and held.mode != _EX):
                    continue
                if owner == me:
                    return True
                if owner not in seen:
                    seen.add(owner)
                    if owner in queued:
                        stack.append(owner)
        for owner in target.multi:
            if owner not in seen and target.queue_owners[owner] < bound:
                seen.add(owner)
                stack.append(owner)
        return False

    if waits(res, rec.mode, state.qseq + 1 if position is None else rec.qseq):
        return True
    while stack:
        owner = stack.pop()
        for waiting in queued.get(owner, {}).values():
            if waits(state.resources[waiting.resource], waiting.mode, waiting.qseq):
                return True
    return False
