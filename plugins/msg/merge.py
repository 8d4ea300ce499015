"""Sync of the MSG state: each node's share (records), and the union of every share after a merge.

The rules are the contract's: per queue name an open copy beats a closed one
beats an unavailable one, the lowest sender breaks ties, and the kept copy's
usage comes from what its own side's nodes report holding; groups keep the
lowest side's policy and members followed by the members only the others
had; waits survive when their sender's node is still there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openais.msg import MAX_NUM_QUEUES_PER_GROUP, QueueGroupChange, QueueGroupPolicy
from plugins.msg import messages as m
from plugins.msg.state import FOREVER, GroupChanged, GroupState, MoveOut, QueueId, QueueState, Status, Timer, Wait

if TYPE_CHECKING:
    from plugins.msg.state import MsgState


def records(state: MsgState, me: int, stores: dict[QueueId, list[list[int]]]) -> list[bytes]:
    """This node's sync share: its view of everything, and what it really holds (``stores``)."""
    side = sorted(set(state.members) | {me})
    out = [m.Record.pack(m.RecordKind.META, m.Meta.pack(state.now, state.serial, side))]
    for q in state.queues.values():
        out.append(m.Record.pack(m.RecordKind.QUEUE, m.QueueRecord.pack(
            q.qid[0], q.qid[1], q.name, q.named, q.creation_flags, q.size, q.retention, q.retention_now,
            int(q.status), q.home, q.opener_conn, q.opener_handle, q.opener_pid, q.receive_cb, q.close_time,
            q.deadline,
            q.reached, q.available, q.reached_flags, q.open_pending is not None,
            q.open_pending[0] if q.open_pending else 0, q.open_pending[1] if q.open_pending else 0,
            q.open_pending[2] if q.open_pending else False)))
    for g in state.groups.values():
        out.append(m.Record.pack(m.RecordKind.GROUP, m.GroupRecord.pack(
            g.name, int(g.policy), g.members, g.last, [m.Cursor(n, c) for n, c in sorted(g.cursors.items())])))
    for w in state.waits.values():
        out.append(m.Record.pack(m.RecordKind.WAIT, m.WaitRecord.pack(
            w.sender_id, w.node, w.conn, w.request, w.qid[0], w.qid[1])))
    for qid, areas in stores.items():
        out.append(m.Record.pack(m.RecordKind.STORE, m.StoreRecord.pack(
            qid[0], qid[1], [a[0] for a in areas], [a[1] for a in areas])))
    return out

def merge(state: MsgState, shares: dict[int, list[bytes]], members: tuple[int, ...]) -> tuple[list, set[QueueId]]:
    """Replace the state by the union of every member's share; return (effects, queues kept).

    Per queue name, the copy kept is an open one if any side had it open, else a closed one,
    else an unavailable one; among equals, that of the lowest sender.  Groups keep the lowest
    sender's policy and members, followed by the members only other shares had.  Usage comes
    from what each node reported holding.
    """
    alive = set(members)
    old_groups = {name: (list(g.members), {n: state.eligible(n) for n in g.members}, int(g.policy))
                  for name, g in state.groups.items()}
    queues: dict[str, tuple[tuple[int, int], QueueState]] = {}
    zombies: dict[QueueId, QueueState] = {}
    groups: dict[str, GroupState] = {}
    waits: dict[int, Wait] = {}
    stores: dict[QueueId, dict[int, list[list[int]]]] = {}
    sides: dict[int, set[int]] = {}
    chosen_from: dict[QueueId, int] = {}
    now, serial = state.now, state.serial
    for sender in sorted(shares):
        for raw in shares[sender]:
            rec = m.Record.decode(raw)
            kind, data = rec.kind, rec.data
            if kind == m.RecordKind.META:
                meta = m.Meta.decode(data)
                now, serial = max(now, meta.now), max(serial, meta.serial)
                sides[sender] = set(meta.side) | {sender}
            elif kind == m.RecordKind.QUEUE:
                q = _queue_from(m.QueueRecord.decode(data))
                if not q.named:
                    if q.qid not in zombies:
                        zombies[q.qid] = q
                        chosen_from[q.qid] = sender
                    continue
                rank = {Status.OPEN: 0, Status.CLOSED: 1, Status.UNAVAILABLE: 2}[q.status]
                have = queues.get(q.name)
                if have is None or rank < have[0][0]:
                    queues[q.name] = ((rank, sender), q)
                    chosen_from[q.qid] = sender
            elif kind == m.RecordKind.GROUP:
                r = m.GroupRecord.decode(data)
                g = groups.get(r.name)
                if g is None:
                    groups[r.name] = GroupState(r.name, QueueGroupPolicy(r.policy), list(r.members), r.last,
                                                {c.node: c.last for c in r.cursors})
                else:
                    g.members.extend(x for x in r.members if x not in g.members)
                    del g.members[MAX_NUM_QUEUES_PER_GROUP:]
            elif kind == m.RecordKind.WAIT:
                w = m.WaitRecord.decode(data)
                waits.setdefault(w.sender_id, Wait(w.sender_id, w.node, w.conn, w.request,
                                                   (w.qid_node, w.qid_serial)))
            elif kind == m.RecordKind.STORE:
                s = m.StoreRecord.decode(data)
                stores.setdefault((s.qid_node, s.qid_serial), {})[sender] = [
                    [u, c] for u, c in zip(s.used, s.counts, strict=False)]
    out: list = []
    state.now, state.serial = now, serial
    state.queues, state.names = {}, {}
    for _name, (_rank, q) in sorted(queues.items()):
        state.queues[q.qid] = q
        state.names[q.name] = q.qid
    for qid, q in zombies.items():
        if qid not in state.queues:
            state.queues[qid] = q
    for q in state.queues.values():
        side = sides.get(chosen_from.get(q.qid, 0), {q.home})
        q.holders = {n: a for n, a in stores.get(q.qid, {}).items() if n in alive and n in side}
        q.retotal()
        if q.status is Status.OPEN and q.open_pending is not None and all(n == q.home for n in q.holders):
            state._opened(q, out)
        elif q.status is Status.OPEN and any(n != q.home for n in q.holders):
            out.append(MoveOut(q.qid, q.home))
    state.groups = groups
    for g in groups.values():
        g.members = [x for x in g.members if x in state.names]
    state.waits = {sid: w for sid, w in waits.items() if w.node in alive}
    out.extend(state.nodes_left({q.home for q in state.queues.values() if q.home and q.home not in alive}))
    for q in state.queues.values():
        if q.deadline != FOREVER:
            out.append(Timer(q.qid, q.deadline))
    _diff_groups(state, old_groups, out)
    return out, set(state.queues)


def _diff_groups(state: MsgState, old: dict, out: list) -> None:
    for name in sorted(set(old) | set(state.groups)):
        g = state.groups.get(name)
        if g is None:
            out.append(GroupChanged(name, old[name][2], {}, [], deleted=True))
            continue
        before_members, before_elig, _ = old.get(name, ([], {}, 0))
        changes: dict = {}
        for x in before_members:
            if x not in g.members:
                changes[x] = QueueGroupChange.REMOVED
        for x in g.members:
            if x not in before_members:
                changes[x] = QueueGroupChange.ADDED
            elif before_elig.get(x) != state.eligible(x):
                changes[x] = QueueGroupChange.STATE_CHANGED
        if changes:
            out.append(GroupChanged(name, int(g.policy), changes, list(g.members)))


def _queue_from(r: m.QueueRecord) -> QueueState:
    pending = (r.open_request, r.open_invocation, r.open_async) if r.open_pending else None
    return QueueState((r.qid_node, r.qid_serial), r.name, r.creation_flags, list(r.size), r.retention,
                      r.retention_now, Status(r.status), r.home, r.opener_conn, r.opener_handle, r.opener_pid,
                      r.receive_cb, r.named, r.close_time, r.deadline, list(r.reached), list(r.available),
                      list(r.reached_flags), {}, pending)
