"""The MSG service engine: thin glue between library connections, the ring and :mod:`plugins.msg.state`.

Library handlers validate, then multicast a cluster message (through the
shared :class:`aisexec.outbox.Outbox`, which keeps this node's messages in
order, retries them when the ring is full and splits large ones into pieces
that an :class:`aisexec.outbox.Reassembler` joins on every node); exec
handlers feed the delivered message to the replicated :class:`MsgState` and
carry out the effects addressed to this node: answers and callbacks to
local connections, messages to keep in the local :class:`QueueStore`,
moves, timers.  ``message_get`` is local: the node that holds a queue hands
its messages to the opener at once and tells the cluster afterwards
(CONSUMED) so the replicated usage follows.
"""

from __future__ import annotations

import itertools
import json
import logging
import struct
import time
from collections import deque, namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.clustertimers import ClusterTimers
from aisexec.objects import ObjectTable
from aisexec.outbox import Outbox, Reassembler
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.statesync import StateTransfer
from aisexec.totem.api import ConfKind
from openais import msg as wire
from openais.errors import SaAisError
from openais.message import MessageError
from openais.msg import FOREVER, Callback, Request, SendKind
from plugins.msg import messages as m
from plugins.msg import state as st
from plugins.msg.store import QueueStore, make_item
from plugins.msg.tracking import Trackers

log = logging.getLogger("aisexec.msg")

OK = int(SaAisError.OK)
#: Unconfirmed message_send_async calls (and their bytes) one connection may have; more wait unanswered,
#: which stops the library's pipelined sends (its window fills): back-pressure, never a lost message.
MAX_ASYNC_PER_CONN = 1024
MAX_ASYNC_BYTES_PER_CONN = 8 << 20
#: Once a connection's sends wait (parked), they are taken again only when this many (and this many bytes)
#: of its sends are confirmed: the answers then go out in batches (one write, one burst of requests from
#: the library) instead of one per delivered message.
UNPARK_BATCH = 64
UNPARK_BYTES = 1 << 20
#: A send the caller waits for queues behind this node's earlier messages while they take fewer bytes
#: than this (the ring is briefly behind); beyond it TRY_AGAIN.
MAX_QUEUED_SYNC_BYTES = 8 << 20
#: Sends of one connection waiting for room (a library keeps far fewer in flight), then TRY_AGAIN.
MAX_PARKED_PER_CONN = 256
#: message_get calls blocked on one queue, then NO_RESOURCES.
MAX_GETTERS_PER_QUEUE = 1024
#: message_send_receive calls of one connection waiting for their reply, then TRY_AGAIN.
MAX_WAITS_PER_CONN = 1024
#: Seconds a node collects the gets of its queues into one CONSUMED message.
CONSUMED_DELAY = 0.01
#: Bytes of moved messages per MOVE message.
MOVE_CHUNK = 256 * 1024
#: Cluster messages above this many bytes travel as FRAGMENT pieces (the ring takes 1 MiB)...
FRAGMENT_OVER = 900 * 1024
#: ... of this many bytes each.
FRAGMENT_PIECE = 256 * 1024
#: Most bytes one sender's unfinished message may take here (our largest message, with room).
MAX_REASSEMBLY = 2 << 20
#: Seconds between retries when the ring is full.
RETRY = 0.002
#: Sends of one connection read in one turn of the hub travel as one SEND_BATCH of at most this many
#: bytes and sends (a larger message goes alone).
BATCH_BYTES = 64 * 1024
BATCH_SENDS = 1024
#: Messages a sync round accounts for: queued ones are forgotten when it starts.
SYNC_REPLACES = (m.Exec.CONSUMED, m.Exec.MOVE, m.Exec.MOVE_DONE, m.Exec.EXPIRE)
_LIB_MAX = wire.MAX_MESSAGE_SIZE + 4096
_GOT = struct.Struct("!qQ")  # wire.GotMessage without its body (the body follows as is)
_ASYNC = int(SendKind.ASYNC)
_SEND_RECEIVE = int(SendKind.SEND_RECEIVE)


@dataclass(slots=True)
class LocalQueue:
    """A queue a local connection has open: its handle and the gets blocked on it."""

    handle: int
    conn: Any
    qid: st.QueueId | None  #: None while the open is not decided
    name: str
    getters: deque = field(default_factory=deque)  # (request_id, cancel timer fn)


@dataclass(slots=True)
class LocalConn:
    """What the engine keeps per local connection."""

    conn: Any
    async_unconfirmed: int = 0
    async_bytes: int = 0
    async_sizes: dict = field(default_factory=dict)  # request id -> bytes, of unconfirmed async sends
    parked: deque = field(default_factory=deque)  # (request id, payload) of sends waiting for room
    waits: dict = field(default_factory=dict)  # request id -> (sender_id, cancel timer fn)
    open_deadlines: set = field(default_factory=set)  # request ids of opens whose caller gave up
    open_timers: dict = field(default_factory=dict)  # request id -> cancel, of sync opens with a timeout


@dataclass(slots=True)
class PendingBatch:
    """Sends of one connection to one destination waiting for the end of the hub turn (one SEND_BATCH)."""

    conn: int
    destination: bytes
    entries: list = field(default_factory=list)  # (kind, request, invocation, ack, sender_id, send_time, body)
    size: int = 0


class MessageEngine(ServiceEngine):
    """MSG (service id 6): message queues and queue groups."""

    id = wire.SERVICE_ID
    name = "MSG"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self.state = st.MsgState()
        self.stores: dict[st.QueueId, QueueStore] = {}
        self.handles: ObjectTable[LocalQueue] = ObjectTable()  # Queue handles of local connections
        self.by_qid: dict[st.QueueId, int] = {}  # queue -> the local handle that has it open
        self.conns: dict[int, LocalConn] = {}
        self.trackers = Trackers()
        self.moving: set[st.QueueId] = set()
        self.outbox: Outbox | None = None
        self.fragments = Reassembler(MAX_REASSEMBLY, sequenced=True)
        self.timers: ClusterTimers | None = None
        self.transfer: StateTransfer | None = None
        self._shares: dict[int, list[bytes]] = {}
        self._consumed: dict[st.QueueId, tuple[list[int], list[int]]] = {}
        self._consumed_timer: Any = None
        self._sender_ids = itertools.count(1)
        self._batches: list[PendingBatch] = []  # in the order they were begun
        self._open_batch: dict[int, PendingBatch] = {}  # connection id -> its batch still taking sends
        self._batch_flush_due = False
        #: ``defer(fn)`` runs ``fn`` once the work in hand is done (``api.call_soon``: the end of this turn of
        #: the event loop) and returns True, or returns False (then every send leaves at once, in a batch of
        #: its own).  Tests may replace it.
        self.defer: Callable[[Callable[[], None]], bool] = self._call_soon
        self.lib_handlers = {
            Request.QUEUE_OPEN: LibHandler(self._lib_open, needs_cluster=True, max_size=2048),
            Request.QUEUE_CLOSE: LibHandler(self._lib_close, needs_cluster=True, max_size=64),
            Request.STATUS_GET: LibHandler(self._lib_status, max_size=512),
            Request.RETENTION_SET: LibHandler(self._lib_retention, needs_cluster=True, max_size=64),
            Request.UNLINK: LibHandler(self._lib_unlink, needs_cluster=True, max_size=512),
            Request.GROUP_CREATE: LibHandler(_group_handler(self, Request.GROUP_CREATE), needs_cluster=True,
                                             max_size=1024),
            Request.GROUP_INSERT: LibHandler(_group_handler(self, Request.GROUP_INSERT), needs_cluster=True,
                                             max_size=1024),
            Request.GROUP_REMOVE: LibHandler(_group_handler(self, Request.GROUP_REMOVE), needs_cluster=True,
                                             max_size=1024),
            Request.GROUP_DELETE: LibHandler(_group_handler(self, Request.GROUP_DELETE), needs_cluster=True,
                                             max_size=1024),
            Request.GROUP_TRACK: LibHandler(self._lib_track, needs_cluster=True, max_size=512),
            Request.GROUP_TRACK_STOP: LibHandler(self._lib_track_stop, max_size=512),
            Request.SEND: LibHandler(self._lib_send, needs_cluster=True, max_size=_LIB_MAX, pipelined=True),
            Request.GET: LibHandler(self._lib_get, max_size=64),
            Request.CANCEL: LibHandler(self._lib_cancel, max_size=64),
            Request.REPLY: LibHandler(self._lib_reply, needs_cluster=True, max_size=_LIB_MAX),
            Request.THRESHOLDS_SET: LibHandler(self._lib_thresholds_set, needs_cluster=True, max_size=256),
            Request.THRESHOLDS_GET: LibHandler(self._lib_thresholds_get, max_size=64),
            Request.DUMP: LibHandler(self._lib_dump, max_size=0),
        }
        self.exec_handlers = {
            m.Exec.OPEN: ExecHandler(self._exec(m.Open, self.state.apply_open)),
            m.Exec.CLOSE: ExecHandler(self._exec(m.Close, self.state.apply_close)),
            m.Exec.CONN_GONE: ExecHandler(self._exec(m.ConnGone, self.state.apply_conn_gone)),
            m.Exec.RETENTION: ExecHandler(self._exec(m.Retention, self.state.apply_retention)),
            m.Exec.UNLINK: ExecHandler(self._exec(m.Unlink, self.state.apply_unlink)),
            m.Exec.GROUP: ExecHandler(self._exec(m.Group, self.state.apply_group)),
            m.Exec.SEND_BATCH: ExecHandler(self._exec_send_batch),
            m.Exec.CONSUMED: ExecHandler(self._exec(m.Consumed, self.state.apply_consumed)),
            m.Exec.REPLY: ExecHandler(self._exec(m.Reply, self.state.apply_reply)),
            m.Exec.WAIT_TIMEOUT: ExecHandler(self._exec(m.WaitTimeout, self.state.apply_wait_timeout)),
            m.Exec.EXPIRE: ExecHandler(self._exec(m.Expire, self.state.apply_expire)),
            m.Exec.THRESHOLDS: ExecHandler(self._exec(m.Thresholds, self.state.apply_thresholds)),
            m.Exec.MOVE: ExecHandler(self._exec_move),
            m.Exec.MOVE_DONE: ExecHandler(self._exec_move_done),
            m.Exec.FRAGMENT: ExecHandler(self._exec_fragment),
            m.Exec.SYNC: ExecHandler(self._exec_sync),
            m.Exec.TRACK: ExecHandler(self._exec_track),
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the api; build the outbox, the cluster timers and the state transfer."""
        self.api = api
        self.outbox = Outbox(api, self.id, retry=RETRY, fragment_id=m.Exec.FRAGMENT, fragment_size=FRAGMENT_PIECE,
                             split_over=FRAGMENT_OVER, sequenced=True)
        self.timers = ClusterTimers(api, self._on_expire)
        self.transfer = StateTransfer(api, self.id, m.Exec.SYNC)

    def _call_soon(self, fn: Callable[[], None]) -> bool:
        call_soon = getattr(self.api, "call_soon", None)
        if call_soon is None:
            return False
        call_soon(fn)
        return True

    def lib_init(self, conn: Any) -> None:
        """A connection opened."""
        self.conns[conn.id] = LocalConn(conn)

    def lib_exit(self, conn: Any) -> None:
        """A connection closed: its queues close (cluster-wide), its waits and trackers go."""
        local = self.conns.pop(conn.id, None)
        for handle, lq in self.handles.release(conn):
            if lq.qid is not None and self.by_qid.get(lq.qid) == handle:
                del self.by_qid[lq.qid]
            for _rid, cancel in lq.getters:
                if cancel is not None:
                    cancel()
        if local is not None:
            for _sid, cancel in local.waits.values():
                if cancel is not None:
                    cancel()
        self.trackers.drop_conn(conn.id)
        self._emit(m.Exec.CONN_GONE, m.ConnGone.pack(self._now(), conn.id))

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Nodes lost (transitional): their queues become unavailable at this point of the agreed order."""
        assert self.timers is not None
        if kind == ConfKind.TRANSITIONAL and left:
            self.fragments.forget(left)
            self._effects(self.state.nodes_left(left))
        if kind == ConfKind.REGULAR:
            self.timers.membership(tuple(members))

    def dump(self) -> dict:
        """Queues (node, areas, fill, opener), groups and members, as every node knows them."""
        queues = {}
        for q in sorted(self.state.queues.values(), key=lambda q: q.name):
            queues[q.name if q.named else f"{q.name} (unlinked)"] = {
                "status": q.status.name.lower(), "node": q.home or None,
                "opener": {"node": q.home, "pid": q.opener_pid} if q.opener else None,
                "persistent": q.persistent, "retention": None if q.retention_now < 0 else q.retention_now / 1e9,
                "close_time": q.close_time,
                "areas": [{"priority": p, "size": q.size[p], "used": q.used(p), "messages": q.count(p),
                           "capacity_reached": q.reached[p], "capacity_available": q.available[p],
                           "reached": q.reached_flags[p]} for p in range(4)],
                "held_here": len(self.stores[q.qid]) if q.qid in self.stores else 0,
            }
        groups = {g.name: {"policy": g.policy.name, "members": [
            {"queue": x, "eligible": self.state.eligible(x),
             "node": (self.state.queue(x).home or None) if self.state.queue(x) else None} for x in g.members]}
            for g in sorted(self.state.groups.values(), key=lambda g: g.name)}
        return {"nodeid": self.api.nodeid if self.api else 0, "queues": queues, "groups": groups,
                "waiting_replies": len(self.state.waits), "local_open": len(self.handles),
                "outbox": len(self.outbox) if self.outbox else 0}

    # -- sync -------------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Send this node's view and what it really holds; hold ordinary traffic until activate.

        Every node forgets its unfinished reassemblies here, so a joining node and the others agree;
        a message this node was sending in fragments starts over, whole, first in line.
        """
        assert self.outbox is not None and self.transfer is not None
        self._flush_batches()
        self.outbox.restart(drop=SYNC_REPLACES)
        self.fragments.clear()
        self._consumed = {}  # the share counts what this node really holds
        self.moving.clear()
        self._shares = {}
        stores = {qid: s.usage() for qid, s in self.stores.items() if len(s)}
        self.transfer.start(ring_id, self.state.records(self.api.nodeid, stores))

    def sync_process(self) -> bool:
        """Multicast chunks of the share; True while more remains."""
        assert self.transfer is not None
        return self.transfer.process()

    def sync_activate(self) -> None:
        """Every share is in: unite them, reconcile this node, release the outbox."""
        assert self.outbox is not None and self.timers is not None and self.transfer is not None
        shares, self._shares = self._shares, {}
        members = tuple(self.api.members())
        self.transfer.abort()
        self.timers.clear()
        effects, _kept = self.state.merge(shares, members)
        self.state.members = members
        self._effects(effects)
        self._reconcile()
        self.outbox.flush()

    def sync_abort(self) -> None:
        """The round was interrupted: forget its shares (the next round starts over)."""
        assert self.transfer is not None
        self._shares = {}
        self.transfer.abort()

    def _exec_sync(self, sender: int, payload: bytes) -> None:
        assert self.transfer is not None
        try:
            records = self.transfer.receive(sender, payload)
        except MessageError as exc:
            log.warning("dropping a malformed MSG sync chunk from node %d: %s", sender, exc)
            return
        if records:
            self._shares.setdefault(sender, []).extend(records)

    def _reconcile(self) -> None:
        """After a merge: local handles whose queue copy lost are gone; stores not ours are dropped."""
        me = self.api.nodeid
        for handle, _cid, lq in list(self.handles):
            if lq.qid is None:
                continue
            q = self.state.queues.get(lq.qid)
            if q is None or q.opener != (me, lq.conn.id) or q.opener_handle != handle:
                self._take(lq.conn.id, handle, lost=True)
        for qid in list(self.stores):
            q = self.state.queues.get(qid)
            if q is None or me not in q.holders:
                del self.stores[qid]

    # -- helpers ---------------------------------------------------------------------------

    def _after(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` in ``seconds`` (a per-request deadline); return its canceller."""
        return self.api.call_later(seconds, fn)

    @staticmethod
    def _now() -> int:
        """This node's clock for the ``time`` of the messages it sends (the state keeps the largest)."""
        return time.time_ns()

    def _emit(self, exec_id: int, payload: bytes) -> None:
        """Multicast an internal message (kept in order, retried when the ring is full)."""
        assert self.outbox is not None
        self._flush_consumed()
        if self._batches:
            self._flush_batches()
        self.outbox.send(exec_id, payload)

    def _consume(self, qid: st.QueueId, priority: int, charge: int) -> None:
        """Tell the cluster (soon, batched) that this node handed out a message of ``qid``."""
        prios, charges = self._consumed.setdefault(qid, ([], []))
        prios.append(priority)
        charges.append(charge)
        if len(prios) >= 4096:
            self._flush_consumed()
        elif self._consumed_timer is None:
            def later() -> None:
                self._consumed_timer = None
                self._flush_consumed()

            self._consumed_timer = self._after(CONSUMED_DELAY, later)

    def _flush_consumed(self) -> None:
        """Send the batched CONSUMED messages (before anything else this node sends, to keep order)."""
        assert self.outbox is not None
        if not self._consumed:
            return
        batch, self._consumed = self._consumed, {}
        for qid, (prios, charges) in batch.items():
            self.outbox.send(m.Exec.CONSUMED, m.Consumed.pack(self._now(), qid[0], qid[1], prios, charges))

    def _batch_send(self, conn_id: int, destination: str, entry: tuple, size: int) -> None:
        """Queue one send of connection ``conn_id`` for the SEND_BATCH that leaves at the end of this turn."""
        batch = self._open_batch.get(conn_id)
        dest = destination.encode("utf-8")
        if batch is not None and (batch.destination != dest or batch.size + size > BATCH_BYTES
                                  or len(batch.entries) >= BATCH_SENDS):
            batch = None
        if batch is None:
            batch = self._open_batch[conn_id] = PendingBatch(conn_id, dest)
            self._batches.append(batch)
        batch.entries.append(entry)
        batch.size += size
        if not self._batch_flush_due:
            self._batch_flush_due = True
            if not self.defer(self._flush_batches):
                self._flush_batches()

    def _flush_batches(self) -> None:
        """Multicast the pending SEND_BATCH messages, in the order they were begun (after CONSUMED)."""
        self._batch_flush_due = False
        if not self._batches:
            return
        assert self.outbox is not None
        self._flush_consumed()
        batches, self._batches = self._batches, []
        self._open_batch.clear()
        now = time.time_ns()
        for b in batches:
            self.outbox.send(m.Exec.SEND_BATCH, m.pack_send_batch(now, b.conn, b.destination, b.entries))

    def _send(self, conn: Any, request: int, request_id: int, exec_id: int, payload: bytes,
              consumed_first: bool = True) -> bool:
        """Multicast for a library request; answer TRY_AGAIN (False) when it cannot go now.

        Batched CONSUMED go first (a later decision about room sees them) unless ``consumed_first`` is
        False: a REPLY decides nothing about room, and is not held up behind them.
        """
        assert self.outbox is not None
        if consumed_first:
            self._flush_consumed()
        if self._batches:
            self._flush_batches()
        error = self.outbox.offer(exec_id, payload)
        if error != OK:
            conn.respond(self.id, request, request_id, error)
            return False
        return True

    def _exec(self, cls: Any, apply: Any) -> Any:
        """An exec handler: decode ``cls`` strictly and feed it to ``apply``.

        The fields come from ``cls.unpack`` (the same checks as ``decode``) as a NamedTuple of the same
        field names, whose attributes are read without a Python call each (the state reads most of them).
        """
        view = _fields_of(cls)
        unpack = cls.unpack
        new = tuple.__new__

        def handler(sender: int, payload: bytes) -> None:
            try:
                msg = new(view, unpack(payload))
            except MessageError as exc:
                log.warning("dropping a malformed MSG cluster message from node %d: %s", sender, exc)
                return
            self._effects(apply(sender, msg))

        return handler

    def _exec_send_batch(self, sender: int, payload: bytes) -> None:
        """The hot path: a delivered SEND_BATCH, decoded once, its sends applied in order."""
        try:
            time_ns, conn, destination, entries = m.decode_send_batch(payload)
        except MessageError as exc:
            log.warning("dropping a malformed MSG send batch from node %d: %s", sender, exc)
            return
        self._effects(self.state.send_batch(sender, time_ns, conn, destination, entries))

    def _exec_fragment(self, sender: int, payload: bytes) -> None:
        try:
            whole = self.fragments.receive(sender, payload)
        except ValueError as exc:  # MessageError (malformed) or too large: a broken sender
            log.warning("dropping a bad MSG fragment from node %d: %s", sender, exc)
            return
        if whole is None:
            return
        msg_id, data = whole
        handler = self.exec_handlers.get(msg_id)
        if handler is None or msg_id in (m.Exec.FRAGMENT, m.Exec.SYNC):
            log.warning("dropping a reassembled MSG message of unknown id %d from node %d", msg_id, sender)
            return
        handler.fn(sender, bytes(data))

    def _local(self, conn: Any, handle: int) -> LocalQueue | None:
        lq = self.handles.get(conn, handle)
        return lq if lq is not None and lq.qid is not None else None

    def _conn(self, conn_id: int) -> LocalConn | None:
        local = self.conns.get(conn_id)
        return local if local is not None and not local.conn.closed else None

    def _queue_of(self, lq: LocalQueue) -> st.QueueState | None:
        q = self.state.queues.get(lq.qid)
        if q is None or q.opener != (self.api.nodeid, lq.conn.id):
            return None
        return q

    # -- library: queues ------------------------------------------------------------------------

    def _lib_open(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.OpenRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.QUEUE_OPEN, request_id, SaAisError.INVALID_PARAM)
            return
        error = _check_open(req)
        if error != OK:
            conn.respond(self.id, Request.QUEUE_OPEN, request_id, error)
            return
        lq = LocalQueue(0, conn, None, req.name)
        try:
            handle = lq.handle = self.handles.add(conn, lq)  # decided when the OPEN is delivered
        except OverflowError:
            conn.respond(self.id, Request.QUEUE_OPEN, request_id, SaAisError.NO_RESOURCES)
            return
        size = list(req.size) if req.has_attrs else [0, 0, 0, 0]
        out = m.Open.pack(self._now(), conn.id, request_id, req.invocation, req.is_async, req.name, req.has_attrs,
                          req.creation_flags, size, req.retention, req.open_flags, handle, conn.pid)
        if not self._send(conn, Request.QUEUE_OPEN, request_id, m.Exec.OPEN, out):
            self.handles.remove(conn, handle)
            return
        if req.is_async:
            conn.respond(self.id, Request.QUEUE_OPEN, request_id, OK, wire.OpenAnswer.pack(0))
        elif req.timeout >= 0:
            local = self.conns.get(conn.id)

            def gave_up() -> None:  # the open's answer decides for the caller: TIMEOUT now, close it later
                if local is not None:
                    local.open_timers.pop(request_id, None)
                    local.open_deadlines.add(request_id)
                    local.conn.respond(self.id, Request.QUEUE_OPEN, request_id, SaAisError.TIMEOUT)

            if local is not None:
                local.open_timers[request_id] = self._after(req.timeout / 1e9, gave_up)

    def _lib_close(self, conn: Any, request_id: int, payload: bytes) -> None:
        lq = self._decode_queue(conn, Request.QUEUE_CLOSE, request_id, payload)
        if lq is None:
            return
        if not self._send(conn, Request.QUEUE_CLOSE, request_id, m.Exec.CLOSE,
                          m.Close.pack(self._now(), conn.id, request_id, lq.qid[0], lq.qid[1])):
            return
        self._take(conn.id, lq.handle, lost=False)

    def _decode_queue(self, conn: Any, request: int, request_id: int, payload: bytes) -> LocalQueue | None:
        try:
            handle = wire.QueueRequest.decode(payload).queue
        except MessageError:
            conn.respond(self.id, request, request_id, SaAisError.INVALID_PARAM)
            return None
        lq = self._local(conn, handle)
        if lq is None:
            conn.respond(self.id, request, request_id, SaAisError.BAD_HANDLE)
        return lq

    def _lib_status(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            name = wire.NameRequest.decode(payload).name
        except MessageError:
            conn.respond(self.id, Request.STATUS_GET, request_id, SaAisError.INVALID_PARAM)
            return
        q = self.state.queue(name)
        if q is None:
            conn.respond(self.id, Request.STATUS_GET, request_id, SaAisError.NOT_EXIST)
            return
        usage = [wire.Usage(q.size[p], q.used(p), q.count(p)) for p in range(4)]
        conn.respond(self.id, Request.STATUS_GET, request_id, OK,
                     wire.StatusAnswer.pack(q.creation_flags, q.retention_now, q.close_time, usage))

    def _lib_retention(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.RetentionRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.RETENTION_SET, request_id, SaAisError.INVALID_PARAM)
            return
        lq = self._local(conn, req.queue)
        q = self._queue_of(lq) if lq is not None else None
        if q is None:
            conn.respond(self.id, Request.RETENTION_SET, request_id, SaAisError.BAD_HANDLE)
            return
        if q.persistent:
            conn.respond(self.id, Request.RETENTION_SET, request_id, SaAisError.BAD_OPERATION)
            return
        if req.retention < FOREVER:
            conn.respond(self.id, Request.RETENTION_SET, request_id, SaAisError.INVALID_PARAM)
            return
        self._send(conn, Request.RETENTION_SET, request_id, m.Exec.RETENTION,
                   m.Retention.pack(self._now(), conn.id, request_id, q.qid[0], q.qid[1], req.retention))

    def _lib_unlink(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            name = wire.NameRequest.decode(payload).name
        except MessageError:
            conn.respond(self.id, Request.UNLINK, request_id, SaAisError.INVALID_PARAM)
            return
        self._send(conn, Request.UNLINK, request_id, m.Exec.UNLINK,
                   m.Unlink.pack(self._now(), conn.id, request_id, name))

    def _lib_thresholds_set(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.ThresholdsRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.THRESHOLDS_SET, request_id, SaAisError.INVALID_PARAM)
            return
        lq = self._local(conn, req.queue)
        q = self._queue_of(lq) if lq is not None else None
        if q is None:
            conn.respond(self.id, Request.THRESHOLDS_SET, request_id, SaAisError.BAD_HANDLE)
            return
        if (len(req.reached) != 4 or len(req.available) != 4
                or any(not 0 <= a <= r <= s for a, r, s in zip(req.available, req.reached, q.size, strict=False))):
            conn.respond(self.id, Request.THRESHOLDS_SET, request_id, SaAisError.INVALID_PARAM)
            return
        self._send(conn, Request.THRESHOLDS_SET, request_id, m.Exec.THRESHOLDS,
                   m.Thresholds.pack(self._now(), conn.id, request_id, q.qid[0], q.qid[1], req.reached,
                                     req.available))

    def _lib_thresholds_get(self, conn: Any, request_id: int, payload: bytes) -> None:
        lq = self._decode_queue(conn, Request.THRESHOLDS_GET, request_id, payload)
        if lq is None:
            return
        q = self.state.queues.get(lq.qid)
        if q is None:
            conn.respond(self.id, Request.THRESHOLDS_GET, request_id, SaAisError.BAD_HANDLE)
            return
        conn.respond(self.id, Request.THRESHOLDS_GET, request_id, OK,
                     wire.ThresholdsRequest.pack(0, q.reached, q.available))

    # -- library: groups and tracking ---------------------------------------------------------------

    def _lib_track(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.TrackRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.GROUP_TRACK, request_id, SaAisError.INVALID_PARAM)
            return
        flags = req.flags
        if (not flags or flags & ~(wire.TRACK_CURRENT | wire.TRACK_CHANGES | wire.TRACK_CHANGES_ONLY)
                or (flags & wire.TRACK_CHANGES and flags & wire.TRACK_CHANGES_ONLY)):
            conn.respond(self.id, Request.GROUP_TRACK, request_id, SaAisError.BAD_FLAGS)
            return
        self._send(conn, Request.GROUP_TRACK, request_id, m.Exec.TRACK,
                   m.Track.pack(conn.id, request_id, req.group, flags, req.in_answer))

    def _exec_track(self, sender: int, payload: bytes) -> None:
        if sender != self.api.nodeid:
            return
        try:
            req = m.Track.decode(payload)
        except MessageError as exc:
            log.warning("dropping a malformed MSG track message: %s", exc)
            return
        local = self._conn(req.conn)
        if local is None:
            return
        conn, request_id, flags = local.conn, req.request, req.flags
        g = self.state.groups.get(req.group)
        if g is None:
            conn.respond(self.id, Request.GROUP_TRACK, request_id, SaAisError.NOT_EXIST)
            return
        current = wire.TrackNotice.pack(g.name, int(g.policy), len(g.members), OK,
                                        [wire.Note(x, wire.QueueGroupChange.NO_CHANGE) for x in g.members])
        if flags & (wire.TRACK_CHANGES | wire.TRACK_CHANGES_ONLY):
            self.trackers.track(req.group, conn, flags)
        if flags & wire.TRACK_CURRENT and req.in_answer:
            conn.respond(self.id, Request.GROUP_TRACK, request_id, OK, current)
            return
        conn.respond(self.id, Request.GROUP_TRACK, request_id, OK)
        if flags & wire.TRACK_CURRENT:
            conn.dispatch(self.id, Callback.GROUP_TRACK, current)

    def _lib_track_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            group = wire.NameRequest.decode(payload).name
        except MessageError:
            conn.respond(self.id, Request.GROUP_TRACK_STOP, request_id, SaAisError.INVALID_PARAM)
            return
        error = OK if self.trackers.stop(group, conn.id) else SaAisError.NOT_EXIST
        conn.respond(self.id, Request.GROUP_TRACK_STOP, request_id, error)

    # -- library: messages ---------------------------------------------------------------------------

    def _lib_send(self, conn: Any, request_id: int, payload: bytes) -> None:
        local = self.conns.get(conn.id)
        if local is None:
            return
        if local.parked or not self._do_send(local, request_id, payload):
            if len(local.parked) >= MAX_PARKED_PER_CONN:  # only a client ignoring its window gets here
                conn.respond(self.id, Request.SEND, request_id, SaAisError.TRY_AGAIN)
                return
            local.parked.append((request_id, payload))  # answered, in order, when earlier ones are confirmed

    def _do_send(self, local: LocalConn, request_id: int, payload: bytes) -> bool:
        """Take one send; False (nothing done) when this connection has too many unconfirmed."""
        conn = local.conn
        try:
            kind_value, invocation, ack, timeout, send_time, destination, body = wire.SendRequest.unpack(payload)
            priority, _length = st.body_meta(body)
            if body[9]:  # a sender name: check it is UTF-8 (the strict decoder does)
                wire.Body.decode(body)
        except (MessageError, ValueError) as exc:
            why = str(exc)
            big = ("data" in why and "outside" in why) or "too big" in why
            conn.respond(self.id, Request.SEND, request_id, SaAisError.TOO_BIG if big else SaAisError.INVALID_PARAM)
            return True
        kind = st.SEND_KINDS.get(kind_value)
        if kind is None or priority > wire.LOWEST_PRIORITY or ack & ~wire.MESSAGE_DELIVERED_ACK:
            conn.respond(self.id, Request.SEND, request_id, SaAisError.INVALID_PARAM)
            return True
        if kind is SendKind.ASYNC:  # checked at once by contract; a sync send is decided in agreed order
            dest_error = self._destination_error(destination, kind)
            if dest_error != OK:
                conn.respond(self.id, Request.SEND, request_id, dest_error)
                return True
            if (local.async_unconfirmed >= MAX_ASYNC_PER_CONN
                    or (local.async_bytes + len(payload) > MAX_ASYNC_BYTES_PER_CONN and local.async_unconfirmed)):
                return False
        sender_id = 0
        if kind is SendKind.SEND_RECEIVE:
            if len(local.waits) >= MAX_WAITS_PER_CONN:
                conn.respond(self.id, Request.SEND, request_id, SaAisError.TRY_AGAIN)
                return True
            sender_id = (self.api.nodeid << 40) | (next(self._sender_ids) & ((1 << 40) - 1) or 1)
        entry = (kind_value, request_id, invocation, ack, sender_id, send_time, body)
        if kind is SendKind.ASYNC:
            # in order behind anything waiting; never refused once checked
            self._batch_send(conn.id, destination, entry, len(payload))
            local.async_unconfirmed += 1
            local.async_bytes += len(payload)
            local.async_sizes[request_id] = len(payload)
            conn.respond(self.id, Request.SEND, request_id, OK)
            return True
        assert self.outbox is not None
        if self.outbox.queued_bytes + len(payload) > MAX_QUEUED_SYNC_BYTES:  # the ring is far behind
            conn.respond(self.id, Request.SEND, request_id, SaAisError.TRY_AGAIN)
            return True
        if self._batches:  # behind this turn's sends of this node (in a batch of their own, or this one's)
            self._batch_send(conn.id, destination, entry, len(payload))
            self._flush_batches()  # the caller waits: no reason to wait for the end of the turn
        else:  # a lone send the caller waits for: a batch of one, at once
            self._flush_consumed()
            self.outbox.send(m.Exec.SEND_BATCH, m.pack_send_batch(time.time_ns(), conn.id, destination.encode("utf-8"),
                                                                  [entry]))
        if kind is SendKind.SEND_RECEIVE:
            cancel = None
            if timeout >= 0:
                def timed_out(sid: int = sender_id) -> None:
                    if sid in self.state.waits:
                        self._emit(m.Exec.WAIT_TIMEOUT, m.WaitTimeout.pack(self._now(), sid))

                cancel = self._after(timeout / 1e9, timed_out)
            local.waits[request_id] = (sender_id, cancel)
        return True

    def _unpark(self, local: LocalConn) -> None:
        """Confirmations came: take this connection's parked sends while there is room."""
        while local.parked:
            request_id, payload = local.parked.popleft()
            if not self._do_send(local, request_id, payload):
                local.parked.appendleft((request_id, payload))
                return

    def _destination_error(self, dest: str, kind: SendKind) -> SaAisError:
        q = self.state.queue(dest)
        if q is not None:
            return SaAisError.QUEUE_NOT_AVAILABLE if q.status is st.Status.UNAVAILABLE else SaAisError.OK
        g = self.state.groups.get(dest)
        if g is None:
            return SaAisError.NOT_EXIST
        if g.policy is wire.QueueGroupPolicy.BROADCAST and kind is SendKind.SEND_RECEIVE:
            return SaAisError.INVALID_PARAM
        if not any(self.state.eligible(x) for x in g.members):
            return SaAisError.QUEUE_NOT_AVAILABLE
        return SaAisError.OK

    def _lib_reply(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            is_async, _invocation, _ack, sender_id, _send_time, body = wire.ReplyRequest.unpack(payload)
            st.body_meta(body)
            if body[9]:  # a sender name: check it is UTF-8 (the strict decoder does)
                wire.Body.decode(body)
        except (MessageError, ValueError) as exc:
            why = str(exc)
            big = ("data" in why and "outside" in why) or "too big" in why
            conn.respond(self.id, Request.REPLY, request_id, SaAisError.TOO_BIG if big else SaAisError.INVALID_PARAM)
            return
        if sender_id == 0:
            conn.respond(self.id, Request.REPLY, request_id, SaAisError.INVALID_PARAM)
            return
        if is_async and sender_id not in self.state.waits:
            conn.respond(self.id, Request.REPLY, request_id, SaAisError.NOT_EXIST)
            return
        # m.Reply is (time, conn, request) followed by the ReplyRequest's fields, encoded alike: no re-encode
        out = m.REPLY_HEAD.pack(self._now(), conn.id, request_id) + payload
        if self._send(conn, Request.REPLY, request_id, m.Exec.REPLY, out, consumed_first=False) and is_async:
            conn.respond(self.id, Request.REPLY, request_id, OK)

    def _lib_get(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            queue, timeout = wire.GetRequest.unpack(payload)
        except MessageError:
            conn.respond(self.id, Request.GET, request_id, SaAisError.INVALID_PARAM)
            return
        lq = self._local(conn, queue)
        q = self._queue_of(lq) if lq is not None else None
        if lq is None or q is None:
            conn.respond(self.id, Request.GET, request_id, SaAisError.BAD_HANDLE)
            return
        if q.open_pending is None and self._hand_out(lq, request_id):
            return
        if timeout == 0:
            conn.respond(self.id, Request.GET, request_id, SaAisError.TIMEOUT)
            return
        if len(lq.getters) >= MAX_GETTERS_PER_QUEUE:
            conn.respond(self.id, Request.GET, request_id, SaAisError.NO_RESOURCES)
            return
        cancel = None
        if timeout > 0:
            def expired() -> None:
                for i, (rid, _c) in enumerate(lq.getters):
                    if rid == request_id:
                        del lq.getters[i]
                        lq.conn.respond(self.id, Request.GET, request_id, SaAisError.TIMEOUT)
                        return

            cancel = self._after(timeout / 1e9, expired)
        lq.getters.append((request_id, cancel))

    def _hand_out(self, lq: LocalQueue, request_id: int) -> bool:
        """Give the next stored message to request ``request_id``; False when none is stored."""
        store = self.stores.get(lq.qid)
        item = store.pop() if store is not None else None
        if item is None:
            return False
        priority, send_time, sender_id, body, charge = item
        lq.conn.respond(self.id, Request.GET, request_id, OK, _GOT.pack(send_time, sender_id) + body)
        self._consume(lq.qid, priority, charge)
        return True

    def _serve_getters(self, qid: st.QueueId) -> None:
        handle = self.by_qid.get(qid)
        found = self.handles.lookup(handle) if handle is not None else None
        for lq in [found] if found is not None else []:
            q = self._queue_of(lq)
            if q is None or q.open_pending is not None:
                continue
            while lq.getters:
                rid, cancel = lq.getters[0]
                if not self._hand_out(lq, rid):
                    break
                lq.getters.popleft()
                if cancel is not None:
                    cancel()

    def _lib_cancel(self, conn: Any, request_id: int, payload: bytes) -> None:
        lq = self._decode_queue(conn, Request.CANCEL, request_id, payload)
        if lq is None:
            return
        if not lq.getters:
            conn.respond(self.id, Request.CANCEL, request_id, SaAisError.NOT_EXIST)
            return
        while lq.getters:
            rid, cancel = lq.getters.popleft()
            if cancel is not None:
                cancel()
            conn.respond(self.id, Request.GET, rid, SaAisError.INTERRUPT)
        conn.respond(self.id, Request.CANCEL, request_id, OK)

    def _lib_dump(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.DUMP, request_id, OK, wire.DumpAnswer.pack(json.dumps(self.dump()).encode()))

    # -- cluster messages with local work --------------------------------------------------------------

    def _exec_move(self, sender: int, payload: bytes) -> None:
        try:
            msg = m.Move.decode(payload)
        except MessageError as exc:
            log.warning("dropping a malformed MSG move from node %d: %s", sender, exc)
            return
        qid = (msg.qid_node, msg.qid_serial)
        q = self.state.queues.get(qid)
        accepted = q is not None and sender in q.holders and q.home == msg.target
        if sender == self.api.nodeid and accepted:  # they live at the target now
            store = self.stores.get(qid)
            if store is not None:
                counts = [0, 0, 0, 0]
                for item in msg.items:
                    counts[item.priority] += 1
                store.pop_front(counts)
        self._effects(self.state.apply_move(sender, msg))

    def _exec_move_done(self, sender: int, payload: bytes) -> None:
        try:
            msg = m.MoveDone.decode(payload)
        except MessageError as exc:
            log.warning("dropping a malformed MSG move-done from node %d: %s", sender, exc)
            return
        self._effects(self.state.apply_move_done(sender, msg))
        me = self.api.nodeid
        if sender != me:
            return
        qid = (msg.qid_node, msg.qid_serial)
        self.moving.discard(qid)
        q = self.state.queues.get(qid)
        if q is not None and me in q.holders and q.home != me:  # it went elsewhere meanwhile: move again
            self._move_out(qid, q.home)

    def _on_expire(self, key: Any) -> None:
        q = self.state.queues.get(key)
        if q is None or q.deadline == FOREVER:
            assert self.timers is not None
            self.timers.cancel(key)
            return
        self._emit(m.Exec.EXPIRE, m.Expire.pack(self._now(), key[0], key[1], q.deadline))

    def _move_out(self, qid: st.QueueId, target: int) -> None:
        store = self.stores.get(qid)
        me = self.api.nodeid
        if target == me or qid in self.moving:
            return
        q = self.state.queues.get(qid)
        if q is None or me not in q.holders:
            return
        self.moving.add(qid)
        batch: list = []
        size = 0
        for item in store.items() if store is not None else []:
            priority, send_time, sender_id, body, _charge = item
            batch.append(m.Stored(priority, send_time, sender_id, body))
            size += len(body) + 32
            if size >= MOVE_CHUNK:
                self._emit(m.Exec.MOVE, m.Move.pack(self._now(), qid[0], qid[1], target, batch))
                batch, size = [], 0
        if batch:
            self._emit(m.Exec.MOVE, m.Move.pack(self._now(), qid[0], qid[1], target, batch))
        self._emit(m.Exec.MOVE_DONE, m.MoveDone.pack(self._now(), qid[0], qid[1], target))

    # -- effects -------------------------------------------------------------------------------------

    def _take(self, conn_id: int, handle: int, lost: bool) -> None:
        """The Queue ``handle`` no longer stands for an open queue: blocked gets fail with BAD_HANDLE."""
        lq = self.handles.remove(conn_id, handle)
        if lq is None:
            return
        if lq.qid is not None and self.by_qid.get(lq.qid) == handle:
            del self.by_qid[lq.qid]
        while lq.getters:
            rid, cancel = lq.getters.popleft()
            if cancel is not None:
                cancel()
            lq.conn.respond(self.id, Request.GET, rid, SaAisError.BAD_HANDLE)
        if lost:
            lq.conn.dispatch(self.id, Callback.QUEUE_LOST, wire.QueueCallback.pack(handle, 0))

    def _effects(self, effects: list) -> None:
        me = self.api.nodeid
        touched: set[st.QueueId] = set()
        for e in effects:
            t = type(e)
            if t is st.StoreMany:
                if e.node == me and e.items:
                    store = self.stores.get(e.qid)
                    if store is None:
                        store = self.stores[e.qid] = QueueStore()
                    store.add_many(e.items)
                    touched.add(e.qid)
            elif t is st.BatchResult:
                if e.node == me:
                    self._batch_result(e)
            elif t is st.Store:
                if e.node == me:
                    store = self.stores.get(e.qid)
                    if store is None:
                        store = self.stores[e.qid] = QueueStore()
                    store.add(make_item(e.priority, e.send_time, e.sender_id, e.body, st.body_meta(e.body)[1]))
                    touched.add(e.qid)
            elif t is st.SendResult:
                if e.node == me:
                    self._send_result(e)
            elif t is st.OpenResult:
                if e.node == me:
                    self._open_result(e)
                    touched.add(e.qid)
            elif t is st.Answer:
                local = self._conn(e.conn) if e.node == me else None
                if local is not None:
                    local.conn.respond(self.id, e.msg_id, e.request, e.error)
            elif t is st.ReplyDelivered:
                if e.node == me:
                    self._reply_delivered(e)
            elif t is st.ReplyResult:
                if e.node == me:
                    self._reply_result(e)
            elif t is st.Received:
                local = self._conn(e.conn) if e.node == me else None
                if local is not None and e.handle in self.handles:
                    local.conn.dispatch(self.id, Callback.RECEIVED, wire.QueueCallback.pack(e.handle, 0))
            elif t is st.Capacity:
                local = self._conn(e.conn) if e.node == me else None
                if local is not None and e.handle in self.handles:
                    cb = Callback.CAPACITY_REACHED if e.reached else Callback.CAPACITY_AVAILABLE
                    local.conn.dispatch(self.id, cb, wire.QueueCallback.pack(e.handle, e.priority))
            elif t is st.Taken:
                if e.node == me:
                    self._take(e.conn, e.handle, e.lost)
            elif t is st.Drop:
                self.stores.pop(e.qid, None)
                self.moving.discard(e.qid)
            elif t is st.MoveOut:
                self._move_out(e.qid, e.target)
            elif t is st.Moved:
                if e.target == me:
                    store = self.stores.setdefault(e.qid, QueueStore())
                    for item in e.items:
                        body = wire.Body.decode(item.body)
                        store.add_moved(make_item(item.priority, item.send_time, item.sender_id, item.body,
                                                  len(body.data)))
                elif e.source == me:
                    pass
            elif t is st.Timer:
                assert self.timers is not None
                if e.deadline == FOREVER:
                    self.timers.cancel(e.qid)
                else:
                    self.timers.set(e.qid, e.deadline)
            elif t is st.GroupChanged:
                self.trackers.notify(e, self.id)
        for qid in touched:
            self._serve_getters(qid)
        for qid in [q for q in self.moving if q not in self.state.queues or me not in self.state.queues[q].holders]:
            self.moving.discard(qid)

    def _send_result(self, e: st.SendResult) -> None:
        local = self._conn(e.conn)
        if local is None:
            return
        if e.kind is SendKind.ASYNC:
            local.async_unconfirmed = max(0, local.async_unconfirmed - 1)
            local.async_bytes -= local.async_sizes.pop(e.request, 0)
            if e.ack:
                local.conn.dispatch(self.id, Callback.DELIVERED, wire.DeliveredCallback.pack(e.invocation, e.error))
            if (local.parked and local.async_unconfirmed <= MAX_ASYNC_PER_CONN - UNPARK_BATCH
                    and (local.async_bytes <= MAX_ASYNC_BYTES_PER_CONN - UNPARK_BYTES or not local.async_unconfirmed)):
                self._unpark(local)
            return
        if e.kind is SendKind.SEND_RECEIVE:
            entry = local.waits.pop(e.request, None)
            if entry is not None and entry[1] is not None:
                entry[1]()
        local.conn.respond(self.id, Request.SEND, e.request, e.error)

    def _batch_result(self, e: st.BatchResult) -> None:
        """The sends of one of this node's SEND_BATCH messages were decided: answer, confirm, unpark."""
        local = self._conn(e.conn)
        if local is None:
            return
        conn = local.conn
        errors = e.errors
        sizes = local.async_sizes
        confirmed = 0
        for i, entry in enumerate(e.entries):
            error = OK if errors is None else errors[i]
            kind = entry.kind
            if kind == _ASYNC:
                confirmed += 1
                local.async_bytes -= sizes.pop(entry.request, 0)
                if entry.ack:
                    conn.dispatch(self.id, Callback.DELIVERED, wire.DeliveredCallback.pack(entry.invocation, error))
            elif kind == _SEND_RECEIVE:
                if error == OK:
                    continue  # the reply answers it
                wait = local.waits.pop(entry.request, None)
                if wait is not None and wait[1] is not None:
                    wait[1]()
                conn.respond(self.id, Request.SEND, entry.request, error)
            else:
                conn.respond(self.id, Request.SEND, entry.request, error)
        if confirmed:
            local.async_unconfirmed = max(0, local.async_unconfirmed - confirmed)
            if (local.parked and local.async_unconfirmed <= MAX_ASYNC_PER_CONN - UNPARK_BATCH
                    and (local.async_bytes <= MAX_ASYNC_BYTES_PER_CONN - UNPARK_BYTES or not local.async_unconfirmed)):
                self._unpark(local)

    def _reply_delivered(self, e: st.ReplyDelivered) -> None:
        local = self._conn(e.conn)
        if local is None:
            return
        entry = local.waits.pop(e.request, None)
        if entry is not None and entry[1] is not None:
            entry[1]()
        if e.error != OK:
            local.conn.respond(self.id, Request.SEND, e.request, e.error)
            return
        local.conn.respond(self.id, Request.SEND, e.request, OK, _GOT.pack(e.send_time, 0) + e.body)

    def _reply_result(self, e: st.ReplyResult) -> None:
        local = self._conn(e.conn)
        if local is None:
            return
        if e.is_async:
            if e.ack:
                local.conn.dispatch(self.id, Callback.DELIVERED, wire.DeliveredCallback.pack(e.invocation, e.error))
            return
        local.conn.respond(self.id, Request.REPLY, e.request, e.error)

    def _open_result(self, e: st.OpenResult) -> None:
        local = self._conn(e.conn)
        if local is None:
            return  # its CONN_GONE follows and closes the queue
        cancel = local.open_timers.pop(e.request, None) if not e.is_async else None
        if cancel is not None:
            cancel()
        lq = self.handles.get(e.conn, e.handle)
        if not e.is_async and e.request in local.open_deadlines:
            local.open_deadlines.discard(e.request)
            self.handles.remove(e.conn, e.handle)
            if e.error == OK:  # the caller gave up waiting: nobody holds this queue
                self._emit(m.Exec.CLOSE, m.Close.pack(self._now(), e.conn, 0, e.qid[0], e.qid[1]))
            return
        ok = e.error == OK and lq is not None
        if ok:
            lq.qid = e.qid  # type: ignore[union-attr]
            self.by_qid[e.qid] = e.handle
        else:
            self.handles.remove(e.conn, e.handle)
        handle = e.handle if ok else 0
        if e.is_async:
            local.conn.dispatch(self.id, Callback.QUEUE_OPEN, wire.OpenCallback.pack(e.invocation, e.error, handle,
                                                                                     e.name))
        else:
            local.conn.respond(self.id, Request.QUEUE_OPEN, e.request, e.error,
                               wire.OpenAnswer.pack(handle) if ok else b"")


_VIEWS: dict[type, type] = {}


def _fields_of(cls: Any) -> type:
    """A NamedTuple class with the fields of the message class ``cls`` (built once per class)."""
    view = _VIEWS.get(cls)
    if view is None:
        view = _VIEWS[cls] = namedtuple(f"{cls.__name__}Fields", [f.name for f in cls._field_defs])  # type: ignore[misc]
    return view


def _check_open(req: Any) -> SaAisError:
    """Argument checks the library also makes (a raw client gets the same answers)."""
    if req.open_flags & ~(wire.QUEUE_CREATE | wire.QUEUE_RECEIVE_CALLBACK | wire.QUEUE_EMPTY):
        return SaAisError.BAD_FLAGS
    if req.has_attrs != bool(req.open_flags & wire.QUEUE_CREATE):
        return SaAisError.INVALID_PARAM
    if req.has_attrs:
        if req.creation_flags not in (0, wire.QUEUE_PERSISTENT):
            return SaAisError.BAD_FLAGS
        if len(req.size) != 4 or req.retention < FOREVER:
            return SaAisError.INVALID_PARAM
        if any(s > wire.MAX_PRIORITY_AREA_SIZE for s in req.size) or sum(req.size) > wire.MAX_QUEUE_SIZE:
            return SaAisError.TOO_BIG
    return SaAisError.OK


def _group_handler(engine: MessageEngine, request: Request) -> Any:
    op = {Request.GROUP_CREATE: m.GroupOp.CREATE, Request.GROUP_INSERT: m.GroupOp.INSERT,
          Request.GROUP_REMOVE: m.GroupOp.REMOVE, Request.GROUP_DELETE: m.GroupOp.DELETE}[request]

    def handler(conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.GroupRequest.decode(payload)
        except MessageError:
            conn.respond(engine.id, request, request_id, SaAisError.INVALID_PARAM)
            return
        if op == m.GroupOp.CREATE and req.policy not in set(wire.QueueGroupPolicy):
            conn.respond(engine.id, request, request_id, SaAisError.INVALID_PARAM)
            return
        if op in (m.GroupOp.INSERT, m.GroupOp.REMOVE) and not req.queue:
            conn.respond(engine.id, request, request_id, SaAisError.INVALID_PARAM)
            return
        engine._send(conn, request, request_id, m.Exec.GROUP,
                     m.Group.pack(engine._now(), conn.id, request_id, int(op), req.group, req.policy, req.queue))

    return handler


__all__ = ["MessageEngine"]
