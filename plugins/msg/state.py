"""The replicated MSG state: queues, groups and waiting senders, changed only by delivered messages.

Pure and deterministic: every node feeds the same delivered cluster
messages, in agreed order, to its :class:`MsgState` and gets the same state
and the same *effects* back (answers and callbacks for the connections of
one node, messages to store on one node, timers to set).  Nothing here
reads a clock, touches IPC or knows Totem; the engine turns effects into
actions on its own node and ignores those addressed to other nodes.

What is replicated: a queue's attributes, its status (open on a node,
closed, unavailable), thresholds and its *usage* per holder node and
priority area (bytes charged and message count); groups with their
members and cursors; which ``message_send_receive`` waits for which reply.
What is not: the messages themselves, kept only by the node that holds
them (the engine's store), and the bytes of the local reads: a get is local
and its CONSUMED message lowers the replicated usage afterwards, so
decisions (room, policy choices) are always made on the replicated figure,
the same on every node, and never below what the node really holds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openais.errors import SaAisError
from openais.msg import (
    MAX_NUM_QUEUE_GROUPS,
    MAX_NUM_QUEUES,
    MAX_NUM_QUEUES_PER_GROUP,
    METADATA_SIZE,
    QUEUE_CREATE,
    QUEUE_EMPTY,
    QUEUE_PERSISTENT,
    QUEUE_RECEIVE_CALLBACK,
    Body,
    QueueGroupChange,
    QueueGroupPolicy,
    Request,
    SendKind,
)
from plugins.msg import messages as m
from plugins.msg.policy import choose

OK = SaAisError.OK
FOREVER = -1
QueueId = tuple[int, int]


class Status(enum.IntEnum):
    """Where a queue is."""

    OPEN = 1
    CLOSED = 2
    UNAVAILABLE = 3


# -- effects --------------------------------------------------------------------------------------------


class OpenResult(NamedTuple):
    """Answer a queue_open of ``conn`` on ``node`` (error OK: ``handle`` now stands for ``qid``)."""

    node: int
    conn: int
    request: int
    is_async: bool
    invocation: int
    error: SaAisError
    handle: int
    qid: QueueId
    name: str


class Answer(NamedTuple):
    """Answer request ``request`` of ``conn`` on ``node`` with ``error`` (``msg_id`` is the Request)."""

    node: int
    conn: int
    msg_id: int
    request: int
    error: SaAisError


class SendResult(NamedTuple):
    """Outcome of a send of ``conn`` on ``node``."""

    node: int
    conn: int
    request: int
    kind: SendKind
    invocation: int
    ack: int
    error: SaAisError


class ReplyResult(NamedTuple):
    """Outcome of a reply of ``conn`` on ``node`` (the replier's side)."""

    node: int
    conn: int
    request: int
    is_async: bool
    invocation: int
    ack: int
    error: SaAisError


class ReplyDelivered(NamedTuple):
    """Answer the waiting send_receive of ``conn`` on ``node``: the reply, or an error."""

    node: int
    conn: int
    request: int
    error: SaAisError
    send_time: int = 0
    body: Any = b""


class Store(NamedTuple):
    """``node`` keeps this message of queue ``qid``."""

    node: int
    qid: QueueId
    priority: int
    send_time: int
    sender_id: int
    body: Any


class StoreMany(NamedTuple):
    """``node`` keeps these messages of queue ``qid``, in order: ``(priority, send_time, reply id, body,
    charge)`` each (one effect per SEND_BATCH, not one per message)."""

    node: int
    qid: QueueId
    items: list


class BatchResult(NamedTuple):
    """Outcome of the sends of one SEND_BATCH of ``conn`` on ``node``: ``entries`` (the decoded
    :class:`plugins.msg.messages.SendEntry` list) and their errors (None: every one OK)."""

    node: int
    conn: int
    entries: list
    errors: list | None


class Drop(NamedTuple):
    """Every node forgets the messages it holds of ``qid``."""

    qid: QueueId


class MoveOut(NamedTuple):
    """Nodes other than ``target`` holding messages of ``qid`` send them to ``target``."""

    qid: QueueId
    target: int


class Moved(NamedTuple):
    """``target`` receives moved messages of ``qid`` (older than any it stored since the open)."""

    target: int
    qid: QueueId
    source: int
    items: list


class Taken(NamedTuple):
    """The Queue ``handle`` of ``conn`` on ``node`` no longer stands for an open queue (merge, close)."""

    node: int
    conn: int
    handle: int
    lost: bool


class Timer(NamedTuple):
    """Set (``deadline`` >= 0) or cancel (-1) the retention deadline of ``qid``."""

    qid: QueueId
    deadline: int


class Received(NamedTuple):
    """A message was stored in the queue ``handle`` of ``conn`` (opened with RECEIVE_CALLBACK)."""

    node: int
    conn: int
    handle: int


class Capacity(NamedTuple):
    """Area ``priority`` of the queue ``handle`` reached (or went back to available)."""

    node: int
    conn: int
    handle: int
    priority: int
    reached: bool


class GroupChanged(NamedTuple):
    """Members of ``group`` changed: ``changes`` per member name; ``members`` after; ``deleted``."""

    group: str
    policy: int
    changes: dict
    members: list
    deleted: bool = False


# -- objects ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class QueueState:
    """One queue as every node knows it."""

    qid: QueueId
    name: str
    creation_flags: int
    size: list[int]
    retention: int
    retention_now: int
    status: Status = Status.OPEN
    home: int = 0
    opener_conn: int = 0
    opener_handle: int = 0
    opener_pid: int = 0
    receive_cb: bool = False
    named: bool = True
    close_time: int = 0
    deadline: int = FOREVER
    reached: list[int] = field(default_factory=list)
    available: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    reached_flags: list[bool] = field(default_factory=lambda: [False] * 4)
    holders: dict[int, list[list[int]]] = field(default_factory=dict)
    open_pending: tuple[int, int, bool] | None = None  # (request, invocation, is_async) waiting for a move
    #: [bytes charged, count] per area over every holder: the sum of ``holders``, kept by :meth:`MsgState._charge`
    #: and recomputed by :meth:`retotal` wherever ``holders`` is changed otherwise.
    tot: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(4)])

    def retotal(self) -> None:
        """Recompute :attr:`tot` from ``holders`` (after any change of ``holders`` but a charge)."""
        self.tot = [[sum(h[p][0] for h in self.holders.values()), sum(h[p][1] for h in self.holders.values())]
                    for p in range(4)]

    def used(self, priority: int) -> int:
        """Bytes charged in area ``priority`` over every holder."""
        return self.tot[priority][0]

    def count(self, priority: int) -> int:
        """Messages in area ``priority`` over every holder."""
        return self.tot[priority][1]

    def fits(self, priority: int, length: int) -> bool:
        """True when a message of ``length`` data bytes fits in area ``priority``."""
        return self.tot[priority][0] + length + METADATA_SIZE <= self.size[priority]

    def free(self, priority: int) -> int:
        """Free bytes of area ``priority``."""
        return self.size[priority] - self.tot[priority][0]

    @property
    def persistent(self) -> bool:
        """Deleted only by unlink."""
        return bool(self.creation_flags & QUEUE_PERSISTENT)

    @property
    def opener(self) -> tuple[int, int] | None:
        """(node, conn) of the opener, or None."""
        return (self.home, self.opener_conn) if self.status is Status.OPEN else None


@dataclass(slots=True)
class GroupState:
    """One queue group."""

    name: str
    policy: QueueGroupPolicy
    members: list[str] = field(default_factory=list)
    last: int = -1  #: index of the member that got the group's last round-robin message
    cursors: dict[int, int] = field(default_factory=dict)  #: LOCAL_ROUND_ROBIN cursors per node


@dataclass(slots=True)
class Wait:
    """A message_send_receive waiting for its reply."""

    sender_id: int
    node: int
    conn: int
    request: int
    qid: QueueId


#: (priority, data length) of an encoded :class:`openais.msg.Body`; ValueError when malformed (the hot path
#: of every delivered send: the checks of ``Body.decode`` without building it).  Shared with SEND_BATCH.
body_meta = m.body_meta


#: SendKind by wire value (an unknown value is absent).
SEND_KINDS = {int(k): k for k in SendKind}
_SEND_RECEIVE = int(SendKind.SEND_RECEIVE)


def _empty_areas() -> list[list[int]]:
    return [[0, 0] for _ in range(4)]


# -- the state ------------------------------------------------------------------------------------------


class MsgState:
    """Queues, groups and waiters; ``apply_*`` methods return lists of effects."""

    def __init__(self) -> None:
        self.queues: dict[QueueId, QueueState] = {}
        self.names: dict[str, QueueId] = {}
        self.groups: dict[str, GroupState] = {}
        self.waits: dict[int, Wait] = {}
        self.now = 0
        self.serial = 0
        self.members: tuple[int, ...] = ()

    # -- lookups ------------------------------------------------------------

    def queue(self, name: str) -> QueueState | None:
        """The named (not unlinked) queue ``name``."""
        qid = self.names.get(name)
        return None if qid is None else self.queues.get(qid)

    def _tick(self, time_ns: int) -> None:
        if time_ns > self.now:
            self.now = time_ns

    # -- queues ---------------------------------------------------------------

    def apply_open(self, sender: int, msg: m.Open) -> list:
        """queue_open: create, reopen (moving messages to the opener's node), or refuse."""
        self._tick(msg.time)
        out: list = []

        def result(error: SaAisError, qid: QueueId = (0, 0)) -> list:
            out.append(OpenResult(sender, msg.conn, msg.request, msg.is_async, msg.invocation, error,
                                  msg.handle, qid, msg.name))
            return out

        if msg.name in self.groups:
            return result(SaAisError.EXIST)
        q = self.queue(msg.name)
        if q is None:
            if not msg.open_flags & QUEUE_CREATE:
                return result(SaAisError.NOT_EXIST)
            if len(self.queues) >= MAX_NUM_QUEUES:
                return result(SaAisError.NO_RESOURCES)
            self.serial += 1
            qid = (sender, self.serial)
            q = QueueState(qid, msg.name, msg.creation_flags, list(msg.size), msg.retention, msg.retention,
                           reached=list(msg.size))
            self.queues[qid] = q
            self.names[msg.name] = qid
            self._make_open(q, sender, msg)
            return result(OK, qid)
        if msg.has_attrs and (msg.creation_flags != q.creation_flags or list(msg.size) != q.size
                              or msg.retention != q.retention):
            return result(SaAisError.EXIST)
        if q.status is Status.OPEN:
            return result(SaAisError.BUSY)
        was = q.status
        if q.deadline != FOREVER:
            q.deadline = FOREVER
            out.append(Timer(q.qid, FOREVER))
        if was is Status.UNAVAILABLE or msg.open_flags & QUEUE_EMPTY:
            if q.holders:
                out.append(Drop(q.qid))
            q.holders = {}
            q.retotal()
            self._recheck_thresholds(q, out, silent=True)
        self._make_open(q, sender, msg)
        self._group_state_changed(q.name, out)
        movers = [n for n, areas in q.holders.items() if n != sender and any(a[1] for a in areas)]
        for n in [n for n in q.holders if n != sender and n not in movers]:
            del q.holders[n]
        q.retotal()
        if movers:
            q.open_pending = (msg.request, msg.invocation, msg.is_async)
            out.append(MoveOut(q.qid, sender))
            return out
        return result(OK, q.qid)

    def _make_open(self, q: QueueState, node: int, msg: m.Open) -> None:
        q.status = Status.OPEN
        q.home = node
        q.opener_conn = msg.conn
        q.opener_handle = msg.handle
        q.opener_pid = msg.pid
        q.receive_cb = bool(msg.open_flags & QUEUE_RECEIVE_CALLBACK)
        q.close_time = 0

    def _opened(self, q: QueueState, out: list) -> None:
        """A pending open completed (no other node holds messages any more)."""
        if q.open_pending is None:
            return
        request, invocation, is_async = q.open_pending
        q.open_pending = None
        out.append(OpenResult(q.home, q.opener_conn, request, is_async, invocation, OK, q.opener_handle,
                              q.qid, q.name))

    def apply_close(self, sender: int, msg: m.Close) -> list:
        """The opener closed its queue."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is not None and q.opener == (sender, msg.conn):
            self._close(q, out)
        out.append(Answer(sender, msg.conn, Request.QUEUE_CLOSE, msg.request, OK))
        return out

    def _close(self, q: QueueState, out: list) -> None:
        if q.open_pending is not None:
            request, invocation, is_async = q.open_pending
            q.open_pending = None
            out.append(OpenResult(q.home, q.opener_conn, request, is_async, invocation, SaAisError.BAD_HANDLE,
                                  q.opener_handle, q.qid, q.name))
        out.append(Taken(q.home, q.opener_conn, q.opener_handle, lost=False))
        q.status = Status.CLOSED
        q.opener_conn = q.opener_handle = 0
        q.receive_cb = False
        q.close_time = self.now
        self._group_state_changed(q.name, out)
        if not q.named:
            self._delete(q, out)
            return
        self._start_retention(q, out)

    def _start_retention(self, q: QueueState, out: list) -> None:
        if q.persistent:
            return
        retention = q.retention_now
        if retention == FOREVER:
            return
        if retention == 0:
            self._delete(q, out)
            return
        q.deadline = self.now + retention
        out.append(Timer(q.qid, q.deadline))

    def _delete(self, q: QueueState, out: list) -> None:
        self.queues.pop(q.qid, None)
        if q.named and self.names.get(q.name) == q.qid:
            del self.names[q.name]
            self._leave_groups(q.name, out)
        if q.holders:
            out.append(Drop(q.qid))
        if q.deadline != FOREVER:
            out.append(Timer(q.qid, FOREVER))

    def _leave_groups(self, name: str, out: list) -> None:
        for g in self.groups.values():
            if name in g.members:
                index = g.members.index(name)
                g.members.remove(name)
                if g.last >= index:
                    g.last -= 1
                for node, cur in list(g.cursors.items()):
                    if cur >= index:
                        g.cursors[node] = cur - 1
                out.append(GroupChanged(g.name, int(g.policy), {name: QueueGroupChange.REMOVED}, list(g.members)))

    def apply_conn_gone(self, sender: int, msg: m.ConnGone) -> list:
        """A connection died or finalized: its queues close, its waits go."""
        self._tick(msg.time)
        out: list = []
        for q in list(self.queues.values()):
            if q.opener == (sender, msg.conn):
                self._close(q, out)
        for sid in [s for s, w in self.waits.items() if (w.node, w.conn) == (sender, msg.conn)]:
            del self.waits[sid]
        return out

    def apply_retention(self, sender: int, msg: m.Retention) -> list:
        """retention_time_set of the opener."""
        self._tick(msg.time)
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        error = OK
        if q is None or q.opener != (sender, msg.conn):
            error = SaAisError.BAD_HANDLE
        elif q.persistent:
            error = SaAisError.BAD_OPERATION
        else:
            q.retention_now = msg.retention
        return [Answer(sender, msg.conn, Request.RETENTION_SET, msg.request, error)]

    def apply_unlink(self, sender: int, msg: m.Unlink) -> list:
        """queue_unlink: delete now, or when its opener closes it; the name is free at once."""
        self._tick(msg.time)
        out: list = []
        q = self.queue(msg.name)
        if q is None:
            out.append(Answer(sender, msg.conn, Request.UNLINK, msg.request, SaAisError.NOT_EXIST))
            return out
        if q.status is Status.OPEN:
            del self.names[q.name]
            q.named = False
            self._leave_groups(q.name, out)
        else:
            self._delete(q, out)
        out.append(Answer(sender, msg.conn, Request.UNLINK, msg.request, OK))
        return out

    def apply_expire(self, sender: int, msg: m.Expire) -> list:
        """A retention deadline passed (idempotent)."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is not None and q.status is not Status.OPEN and q.deadline == msg.deadline and q.deadline != FOREVER:
            self._delete(q, out)
        return out

    def apply_thresholds(self, sender: int, msg: m.Thresholds) -> list:
        """capacity_thresholds_set of the opener."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is None or q.opener != (sender, msg.conn):
            out.append(Answer(sender, msg.conn, Request.THRESHOLDS_SET, msg.request, SaAisError.BAD_HANDLE))
        elif any(not 0 <= a <= r <= s for a, r, s in zip(msg.available, msg.reached, q.size, strict=False)):
            out.append(Answer(sender, msg.conn, Request.THRESHOLDS_SET, msg.request, SaAisError.INVALID_PARAM))
        else:
            q.reached, q.available = list(msg.reached), list(msg.available)
            self._recheck_thresholds(q, out, silent=True)
            out.append(Answer(sender, msg.conn, Request.THRESHOLDS_SET, msg.request, OK))
        return out

    # -- usage --------------------------------------------------------------------

    def _charge(self, q: QueueState, node: int, priority: int, delta_bytes: int, delta_count: int,
                out: list) -> None:
        total = q.tot[priority]
        before = total[0]
        areas = q.holders.get(node)
        if areas is None:
            areas = q.holders[node] = _empty_areas()
        area = areas[priority]
        old_bytes, old_count = area
        area[0] = max(0, old_bytes + delta_bytes)
        area[1] = max(0, old_count + delta_count)
        after = total[0] = before + area[0] - old_bytes
        total[1] += area[1] - old_count
        if q.reached_flags[priority] or after >= q.reached[priority]:
            self._threshold(q, priority, before, after, out)

    def _threshold(self, q: QueueState, p: int, before: int, after: int, out: list) -> None:
        if not q.reached_flags[p] and before < q.reached[p] <= after:
            q.reached_flags[p] = True
            if q.status is Status.OPEN:
                out.append(Capacity(q.home, q.opener_conn, q.opener_handle, p, True))
        elif q.reached_flags[p] and after <= q.available[p]:
            q.reached_flags[p] = False
            if q.status is Status.OPEN:
                out.append(Capacity(q.home, q.opener_conn, q.opener_handle, p, False))

    def _recheck_thresholds(self, q: QueueState, out: list, silent: bool) -> None:
        for p in range(4):
            used = q.used(p)
            if q.reached_flags[p] and used <= q.available[p]:
                q.reached_flags[p] = False
            elif not q.reached_flags[p] and used >= q.reached[p] > 0:
                q.reached_flags[p] = True

    def apply_consumed(self, sender: int, msg: m.Consumed) -> list:
        """The holder node gave messages to its opener."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is None or sender not in q.holders:
            return out
        for p, charge in zip(msg.priorities, msg.charges, strict=False):
            if 0 <= p < 4:
                self._charge(q, sender, p, -charge, -1, out)
        return out

    # -- sending --------------------------------------------------------------------

    def apply_send(self, sender: int, msg: m.Send) -> list:
        """A send: choose the queue(s), check room, store at the holder node, answer the sender."""
        return self.send(sender, *msg)

    def send(self, sender: int, time_ns: int, conn: int, request: int, kind_value: int, invocation: int, ack: int,
             sender_id: int, send_time: int, destination: str, body: Any) -> list:
        """:meth:`apply_send` on the fields of a :class:`m.Send` (the hot path: ``m.Send.unpack`` tuples)."""
        if time_ns > self.now:
            self.now = time_ns
        out: list = []
        kind = SEND_KINDS.get(kind_value, SendKind.SYNC)
        try:
            priority, length = body_meta(body)
        except ValueError:
            out.append(SendResult(sender, conn, request, kind, invocation, ack, SaAisError.INVALID_PARAM))
            return out
        error, targets = self._choose(sender, destination, priority, length, kind)
        if error == OK:
            reply_id = sender_id if kind is SendKind.SEND_RECEIVE else 0
            for q in targets:
                self._store(q, priority, length, send_time, reply_id, body, out)
            if kind is SendKind.SEND_RECEIVE:
                self.waits[sender_id] = Wait(sender_id, sender, conn, request, targets[0].qid)
                return out
        out.append(SendResult(sender, conn, request, kind, invocation, ack, error))
        return out

    def send_batch(self, sender: int, time_ns: int, conn: int, destination: str, entries: list) -> list:
        """A SEND_BATCH: its sends (:class:`plugins.msg.messages.SendEntry`) decided one after the other, as
        if each had been delivered alone at this point of the agreed order.

        To a queue (the hot path) this is a loop over plain integers: room, charge, thresholds, and one
        :class:`StoreMany` for the holder and one :class:`BatchResult` for the sender's node.  To a group,
        or to a queue that is not available, every send takes the path of :meth:`send`.
        """
        if time_ns > self.now:
            self.now = time_ns
        q = self.queue(destination)
        if q is None or q.status is Status.UNAVAILABLE:
            out: list = []
            for e in entries:
                out.extend(self.send(sender, time_ns, conn, e.request, e.kind, e.invocation, e.ack, e.sender_id,
                                     e.send_time, destination, e.body))
            return out
        node = q.home
        items: list = []
        out = [StoreMany(node, q.qid, items)]
        areas = q.holders.get(node)
        if areas is None:
            areas = q.holders[node] = _empty_areas()
        tot, size, reached, flags = q.tot, q.size, q.reached, q.reached_flags
        receive = q.receive_cb and q.status is Status.OPEN
        errors: list | None = None
        send_receive = _SEND_RECEIVE
        for i, e in enumerate(entries):
            p = e.priority
            charge = e.length + METADATA_SIZE
            total = tot[p]
            before = total[0]
            after = before + charge
            if after > size[p]:
                if errors is None:
                    errors = [OK] * len(entries)
                errors[i] = SaAisError.QUEUE_FULL
                continue
            total[0] = after
            total[1] += 1
            area = areas[p]
            area[0] += charge
            area[1] += 1
            items.append((p, e.send_time, e.sender_id, e.body, charge))
            if flags[p] or after >= reached[p]:
                self._threshold(q, p, before, after, out)
            if e.kind == send_receive:
                self.waits[e.sender_id] = Wait(e.sender_id, sender, conn, e.request, q.qid)
            if receive:
                out.append(Received(node, q.opener_conn, q.opener_handle))
        out.append(BatchResult(sender, conn, entries, errors))
        return out

    def _store(self, q: QueueState, priority: int, length: int, send_time: int, reply_id: int, body: Any,
               out: list) -> None:
        node = q.home
        out.append(Store(node, q.qid, priority, send_time, reply_id, body))
        self._charge(q, node, priority, length + METADATA_SIZE, 1, out)
        if q.status is Status.OPEN and q.receive_cb:
            out.append(Received(q.home, q.opener_conn, q.opener_handle))

    def _choose(self, sender: int, dest: str, p: int, length: int,
                kind: SendKind) -> tuple[SaAisError, list[QueueState]]:
        return choose(self, sender, dest, p, length, kind)

    # -- replies ------------------------------------------------------------------

    def apply_reply(self, sender: int, msg: m.Reply) -> list:
        """A reply: to the waiting sender if it still waits, else NOT_EXIST for the replier."""
        self._tick(msg.time)
        wait = self.waits.pop(msg.sender_id, None)
        if wait is None:
            return [ReplyResult(sender, msg.conn, msg.request, msg.is_async, msg.invocation, msg.ack,
                                SaAisError.NOT_EXIST)]
        return [ReplyDelivered(wait.node, wait.conn, wait.request, OK, msg.send_time, msg.body),
                ReplyResult(sender, msg.conn, msg.request, msg.is_async, msg.invocation, msg.ack, OK)]

    def apply_wait_timeout(self, sender: int, msg: m.WaitTimeout) -> list:
        """The origin's send_receive gave up (only if it still waits)."""
        self._tick(msg.time)
        wait = self.waits.get(msg.sender_id)
        if wait is None or wait.node != sender:
            return []
        del self.waits[msg.sender_id]
        return [ReplyDelivered(wait.node, wait.conn, wait.request, SaAisError.TIMEOUT)]

    # -- groups ------------------------------------------------------------------------

    def apply_group(self, sender: int, msg: m.Group) -> list:
        """Group create / insert / remove / delete."""
        self._tick(msg.time)
        out: list = []
        error = self._group_op(msg, out)
        out.append(Answer(sender, msg.conn, Request.GROUP_CREATE - 1 + msg.op, msg.request, error))
        return out

    def _group_op(self, msg: m.Group, out: list) -> SaAisError:
        op = msg.op
        g = self.groups.get(msg.group)
        if op == m.GroupOp.CREATE:
            if g is not None or msg.group in self.names:
                return SaAisError.EXIST
            if msg.policy not in set(QueueGroupPolicy):
                return SaAisError.INVALID_PARAM
            if len(self.groups) >= MAX_NUM_QUEUE_GROUPS:
                return SaAisError.NO_RESOURCES
            self.groups[msg.group] = GroupState(msg.group, QueueGroupPolicy(msg.policy))
            return OK
        if g is None:
            return SaAisError.NOT_EXIST
        if op == m.GroupOp.INSERT:
            if self.queue(msg.queue) is None:
                return SaAisError.NOT_EXIST
            if msg.queue in g.members:
                return SaAisError.EXIST
            if len(g.members) >= MAX_NUM_QUEUES_PER_GROUP:
                return SaAisError.NO_RESOURCES
            g.members.append(msg.queue)
            out.append(GroupChanged(g.name, int(g.policy), {msg.queue: QueueGroupChange.ADDED}, list(g.members)))
            return OK
        if op == m.GroupOp.REMOVE:
            if msg.queue not in g.members:
                return SaAisError.NOT_EXIST
            index = g.members.index(msg.queue)
            g.members.remove(msg.queue)
            if g.last >= index:
                g.last -= 1
            for node, cur in list(g.cursors.items()):
                if cur >= index:
                    g.cursors[node] = cur - 1
            out.append(GroupChanged(g.name, int(g.policy), {msg.queue: QueueGroupChange.REMOVED}, list(g.members)))
            return OK
        if op == m.GroupOp.DELETE:
            del self.groups[msg.group]
            out.append(GroupChanged(g.name, int(g.policy), {}, [], deleted=True))
            return OK
        return SaAisError.INVALID_PARAM

    def _group_state_changed(self, name: str, out: list) -> None:
        for g in self.groups.values():
            if name in g.members:
                out.append(GroupChanged(g.name, int(g.policy), {name: QueueGroupChange.STATE_CHANGED},
                                        list(g.members)))

    # -- moving messages ----------------------------------------------------------------

    def apply_move(self, sender: int, msg: m.Move) -> list:
        """Messages of a queue moved from ``sender`` to ``target``."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is None or sender not in q.holders or q.home != msg.target:
            return out
        for item in msg.items:
            if 0 <= item.priority < 4:
                charge = len(Body.decode(item.body).data) + METADATA_SIZE
                areas = q.holders[sender]
                areas[item.priority][0] = max(0, areas[item.priority][0] - charge)
                areas[item.priority][1] = max(0, areas[item.priority][1] - 1)
                dest = q.holders.setdefault(msg.target, _empty_areas())
                dest[item.priority][0] += charge
                dest[item.priority][1] += 1
        q.retotal()
        out.append(Moved(msg.target, q.qid, sender, list(msg.items)))
        return out

    def apply_move_done(self, sender: int, msg: m.MoveDone) -> list:
        """``sender`` moved everything it held of the queue."""
        self._tick(msg.time)
        out: list = []
        q = self.queues.get((msg.qid_node, msg.qid_serial))
        if q is None or q.home != msg.target:
            return out
        q.holders.pop(sender, None)
        q.retotal()
        if all(n == q.home for n in q.holders):
            self._opened(q, out)
        return out

    # -- membership ---------------------------------------------------------------------------

    def nodes_left(self, left: tuple[int, ...] | set[int]) -> list:
        """Nodes left the configuration: their queues become unavailable, their waits go."""
        gone = set(left)
        out: list = []
        for q in sorted(self.queues.values(), key=lambda q: q.qid):
            if q.home in gone and q.status is not Status.UNAVAILABLE:
                was_open = q.status is Status.OPEN
                q.status = Status.UNAVAILABLE
                q.opener_conn = q.opener_handle = 0
                q.receive_cb = False
                q.open_pending = None
                q.close_time = self.now
                if q.holders:
                    out.append(Drop(q.qid))
                q.holders = {}
                q.retotal()
                q.reached_flags = [False] * 4
                if was_open:
                    self._group_state_changed(q.name, out)
                if not q.named:
                    self._delete(q, out)
                else:
                    if q.deadline != FOREVER:
                        q.deadline = FOREVER
                        out.append(Timer(q.qid, FOREVER))
                    self._start_retention(q, out)
            else:
                for n in [n for n in q.holders if n in gone]:
                    del q.holders[n]
                q.retotal()
                if q.status is Status.OPEN and all(n == q.home for n in q.holders):
                    self._opened(q, out)
        for sid, w in sorted(self.waits.items()):
            if w.node in gone:
                del self.waits[sid]
                continue
            q = self.queues.get(w.qid)
            if q is None or q.status is Status.UNAVAILABLE:
                del self.waits[sid]
                out.append(ReplyDelivered(w.node, w.conn, w.request, SaAisError.QUEUE_NOT_AVAILABLE))
        return out

    # -- sync records ------------------------------------------------------------------------

    def records(self, me: int, stores: dict[QueueId, list[list[int]]]) -> list[bytes]:
        """This node's sync share (see :func:`plugins.msg.merge.records`)."""
        from plugins.msg.merge import records

        return records(self, me, stores)

    def merge(self, shares: dict[int, list[bytes]], members: tuple[int, ...]) -> tuple[list, set[QueueId]]:
        """Replace the state by the union of every member's share (see :func:`plugins.msg.merge.merge`)."""
        from plugins.msg.merge import merge

        return merge(self, shares, members)

    def eligible(self, name: str) -> bool:
        """True when the queue ``name`` is open (a group may choose it)."""
        q = self.queue(name)
        return q is not None and q.status is Status.OPEN
