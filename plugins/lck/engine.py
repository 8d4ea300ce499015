"""The LCK service engine: thin glue between library connections, the ring and the lock table.

Library handlers validate a request, remember it as a *pending* entry under a
token and multicast a cluster message carrying that token.  Exec handlers
decode the delivered message and feed it to :class:`plugins.lck.state.LockState`,
identical on every node; the effects it returns are carried out here on the
node they concern: the answer to a pending request (a response, or a
callback for the async calls) and waiter callbacks.

Node loss is applied at the transitional configuration change (the same
point of the agreed order on every survivor).  Sync after every regular
configuration: every member sends a HELLO (its incarnation); when the members
do not all come from one previous ring, the lowest node of each previous ring
sends its side's table, and every node unites the tables in
``LockState.install``.  Timeouts of ``lock()`` and ``resource_open()`` are the
caller's: its executive arms a local timer and withdraws the request through
the ring (WITHDRAW, or CLOSE of a resource opened too late), so the decision
is still a delivered message.
"""

from __future__ import annotations

import itertools
import json
import logging
import struct
import time
from collections.abc import Iterator
from typing import Any

from aisexec.objects import ObjectTable
from aisexec.outbox import Outbox, mcast_request
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.statesync import StateTransfer
from aisexec.totem.api import ConfKind
from openais import lck as wire
from openais.errors import SaAisError
from openais.lck import Callback, Request
from openais.message import MessageError
from plugins.lck import messages as m
from plugins.lck.messages import Exec
from plugins.lck.state import Answer, Effect, LockState

log = logging.getLogger("aisexec.lck")

#: Most Resources open per node (ObjectTable bound).
MAX_OPEN_RESOURCES = 1_000_000
#: Timeouts longer than this (ns, 10 years) are treated as no timeout (no timer is armed).
MAX_TIMER_NS = 10 * 365 * 86400 * 10**9
#: Most pending requests per node (then TRY_AGAIN).
MAX_PENDING = 200_000

_OK = int(SaAisError.OK)
_TRY_AGAIN = int(SaAisError.TRY_AGAIN)
_INVALID_PARAM = int(SaAisError.INVALID_PARAM)
_BAD_HANDLE = int(SaAisError.BAD_HANDLE)
_BAD_FLAGS = int(SaAisError.BAD_FLAGS)
_TIMEOUT = int(SaAisError.TIMEOUT)
_NOT_EXIST = int(SaAisError.NOT_EXIST)
_NO_RESOURCES = int(SaAisError.NO_RESOURCES)
_PR, _EX = int(wire.LockMode.PR), int(wire.LockMode.EX)
_LOCK_FLAGS = wire.LOCK_NO_QUEUE | wire.LOCK_ORPHAN
_REQ_LOCK, _REQ_UNLOCK = Request.LOCK, Request.UNLOCK
_EXEC_LOCK, _EXEC_UNLOCK = int(Exec.LOCK), int(Exec.UNLOCK)
# The hot paths' fixed layouts: packed and unpacked by one struct call (exactly as strict as the
# messages' own decoders: a payload of any other length is refused).
_LOCK_MSG = m.LockMsg.fixed
_UNLOCK_MSG = m.UnlockMsg.fixed
_LOCK_ANSWER = wire.LockAnswer.fixed
_SYNC_LOCK_REQUEST, _SYNC_UNLOCK_REQUEST = wire.SYNC_LOCK_REQUEST, wire.SYNC_UNLOCK_REQUEST
_SYNC_LOCK_SIZE, _SYNC_UNLOCK_SIZE = _SYNC_LOCK_REQUEST.size, _SYNC_UNLOCK_REQUEST.size
assert _LOCK_MSG is not None and _UNLOCK_MSG is not None and _LOCK_ANSWER is not None


class _Res:
    """This node's view of one Resource a connection opened (local, not replicated)."""

    __slots__ = ("name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "opening"  # -> open -> closing


class _Pending:
    """A library request waiting for its cluster message to be delivered."""

    __slots__ = ("abandoned", "cancel", "conn", "invocation", "kind", "lock_id", "name", "request_id",
                 "res_handle")

    def __init__(self, kind: Request, conn: Any, request_id: int, invocation: int | None = None,
                 res_handle: int = 0, lock_id: int = 0, name: str = "") -> None:
        self.kind = kind
        self.conn = conn
        self.request_id = request_id
        self.invocation = invocation
        self.res_handle = res_handle
        self.lock_id = lock_id
        self.name = name
        self.abandoned = False
        self.cancel: Any = None


class LockEngine(ServiceEngine):
    """LCK (service id 5): distributed PR/EX locks with orphan locks and deadlock detection."""

    id = wire.SERVICE_ID
    name = "LCK"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self._ready: Any = None  # api.ready (None: always ready)
        self.nodeid = 0
        self.incarnation = 0
        self.state = LockState()
        self.resources: ObjectTable[_Res] = ObjectTable(limit=MAX_OPEN_RESOURCES)
        self.pending: dict[int, _Pending] = {}
        self._tokens = itertools.count(1)
        self._lock_ids = itertools.count(1)
        self._conns: dict[int, Any] = {}
        self._unlocking: set[int] = set()  # lock ids with an UNLOCK on its way (a second one: NOT_EXIST)
        self.outbox: Outbox | None = None  # closes and cleanups that must not be lost
        self.transfer: StateTransfer | None = None
        self._sync_members: tuple[int, ...] = ()
        self._tables: dict[int, list] = {}
        self._hellos: dict[int, int] = {}
        self.malformed = 0
        self.lib_handlers = {
            Request.RESOURCE_OPEN: LibHandler(self._lib_open, needs_cluster=True, max_size=1024),
            Request.RESOURCE_CLOSE: LibHandler(self._lib_close, needs_cluster=True, max_size=64),
            Request.LOCK: LibHandler(self._lib_lock, needs_cluster=True, max_size=128),
            Request.UNLOCK: LibHandler(self._lib_unlock, needs_cluster=True, max_size=64),
            Request.PURGE: LibHandler(self._lib_purge, needs_cluster=True, max_size=64),
            Request.DUMP: LibHandler(self._lib_dump, max_size=1024),
        }
        self.exec_handlers = {
            Exec.OPEN: ExecHandler(self._exec_open),
            Exec.CLOSE: ExecHandler(self._exec_close),
            Exec.LOCK: ExecHandler(self._exec_lock),
            Exec.UNLOCK: ExecHandler(self._exec_unlock),
            Exec.WITHDRAW: ExecHandler(self._exec_withdraw),
            Exec.PURGE: ExecHandler(self._exec_purge),
            Exec.CONN_EXIT: ExecHandler(self._exec_conn_exit),
            Exec.SYNC: ExecHandler(self._exec_sync),
        }

    # -- lifecycle ------------------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the executive api; this executive's incarnation tells a restart from a return."""
        self.api = api
        self._ready = getattr(api, "ready", None)
        self.outbox = Outbox(api, self.id)
        self.nodeid = api.nodeid
        self.incarnation = time.time_ns()
        self.transfer = StateTransfer(api, self.id, Exec.SYNC)
        if hasattr(api, "quorate"):
            self.state.quorate = api.quorate
            api.on_quorum_change(self._quorum_changed)

    def _quorum_changed(self, quorate: bool) -> None:
        """Quorum regained: grant what waited (every member hears this at the same point of the order)."""
        if quorate:
            self._apply(self.state.serve_all())

    def lib_init(self, conn: Any) -> None:
        """A connection opened."""
        self._conns[conn.id] = conn

    def lib_exit(self, conn: Any) -> None:
        """A connection closed (finalize or process death): every Resource of it is closed cluster-wide."""
        self._conns.pop(conn.id, None)
        self.resources.release(conn)
        if conn.private.get("lck_used"):
            self.outbox.send(Exec.CONN_EXIT, m.ConnExitMsg.pack(conn.id))

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Nodes lost in a transitional configuration: finalize their handles here and now."""
        if kind == ConfKind.TRANSITIONAL and left:
            self._apply(self.state.nodes_lost(left))
        self.outbox.flush()

    def dump(self) -> dict:
        """Summary of the table and this node's pending requests (SIGUSR2)."""
        return {"resources": len(self.state.resources), "locks": len(self.state.locks),
                "openers": len(self.state.openers), "pending": len(self.pending), "malformed": self.malformed}

    # -- sync -----------------------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Send a HELLO; the lowest node of each previous ring sends its table when rings merge or nodes join."""
        trans = set(transitional) or {self.nodeid}
        send_table = self.nodeid == min(trans) and trans != set(members)
        self._sync_members = tuple(members)
        self._tables, self._hellos = {}, {}
        assert self.transfer is not None
        self.transfer.start(ring_id, self._sync_records(sorted(trans), send_table))

    def _sync_records(self, trans: list[int], send_table: bool) -> Iterator[bytes]:
        yield m.encode_record(m.Record.HELLO, m.HelloRec(self.incarnation, trans))
        if send_table:
            for kind, rec in self.state.export():
                yield m.encode_record(kind, rec)

    def sync_process(self) -> bool:
        """Multicast as much of this node's share as the ring takes; True while more remains."""
        return self.transfer.process() if self.transfer is not None else False

    def sync_activate(self) -> None:
        """Every share is in: unite the tables, drop what belongs to no member, serve the queues."""
        tables, hellos = self._tables, self._hellos
        self._tables, self._hellos = {}, {}
        if self.transfer is not None:
            self.transfer.abort()
        self._apply(self.state.install(tables, hellos, self._sync_members))

    def sync_abort(self) -> None:
        """The round was interrupted: forget its records."""
        self._tables, self._hellos = {}, {}
        if self.transfer is not None:
            self.transfer.abort()

    def _exec_sync(self, sender: int, payload: bytes) -> None:
        if self.transfer is None or self.transfer.ring is None:
            return
        try:
            records = self.transfer.receive(sender, payload)
            for data in records:
                kind, rec = m.decode_record(data)
                if kind is m.Record.HELLO:
                    self._hellos[sender] = rec.incarnation
                else:
                    self._tables.setdefault(sender, []).append((kind, rec))
        except (MessageError, ValueError) as exc:
            self._malformed(sender, "sync", exc)

    # -- library requests -------------------------------------------------------------------------------

    def _not_ready(self, conn: Any, msg_id: int, request_id: int) -> bool:
        ready = self._ready
        if (ready is not None and not ready()) or len(self.pending) >= MAX_PENDING:
            conn.respond(self.id, msg_id, request_id, _TRY_AGAIN)
            return True
        return False

    def _lib_open(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.OpenRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _INVALID_PARAM)
            return
        if req.flags & ~wire.RESOURCE_CREATE:
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _BAD_FLAGS)
            return
        if req.timeout_ns < wire.NO_TIMEOUT or (req.invocation is not None and req.timeout_ns != wire.NO_TIMEOUT):
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _INVALID_PARAM)
            return
        if req.timeout_ns == 0:
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _TIMEOUT)
            return
        if self._not_ready(conn, Request.RESOURCE_OPEN, request_id):
            return
        try:
            res_handle = self.resources.add(conn, _Res(req.name))
        except OverflowError:
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _NO_RESOURCES)
            return
        token = next(self._tokens)
        msg = m.OpenMsg.pack(token, res_handle, conn.id, conn.pid, bool(req.flags & wire.RESOURCE_CREATE), req.name)
        if not self._mcast(conn, Request.RESOURCE_OPEN, request_id, Exec.OPEN, msg):
            self.resources.remove(conn, res_handle)
            return
        conn.private["lck_used"] = True
        pending = _Pending(Request.RESOURCE_OPEN, conn, request_id, req.invocation, res_handle, name=req.name)
        self.pending[token] = pending
        if req.invocation is not None:
            conn.respond(self.id, Request.RESOURCE_OPEN, request_id, _OK)
        elif 0 < req.timeout_ns < MAX_TIMER_NS:
            pending.cancel = self.api.call_later(req.timeout_ns / 1e9, lambda: self._open_timed_out(token))

    def _open_timed_out(self, token: int) -> None:
        pending = self.pending.get(token)
        if pending is None or pending.abandoned:
            return
        pending.abandoned = True
        pending.cancel = None
        pending.conn.respond(self.id, Request.RESOURCE_OPEN, pending.request_id, _TIMEOUT)

    def _own_resource(self, conn: Any, msg_id: int, request_id: int, res_handle: int) -> _Res | None:
        res = self.resources.get(conn, res_handle)
        if res is None or res.state != "open":
            conn.respond(self.id, msg_id, request_id, _BAD_HANDLE)
            return None
        return res

    def _lib_close(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.HandleRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.RESOURCE_CLOSE, request_id, _INVALID_PARAM)
            return
        res = self._own_resource(conn, Request.RESOURCE_CLOSE, request_id, req.res_handle)
        if res is None or self._not_ready(conn, Request.RESOURCE_CLOSE, request_id):
            return
        token = next(self._tokens)
        if self._mcast(conn, Request.RESOURCE_CLOSE, request_id, Exec.CLOSE, m.CloseMsg.pack(token, req.res_handle)):
            res.state = "closing"
            self.pending[token] = _Pending(Request.RESOURCE_CLOSE, conn, request_id, res_handle=req.res_handle)

    def _lib_lock(self, conn: Any, request_id: int, payload: bytes) -> None:
        if len(payload) == _SYNC_LOCK_SIZE and payload[-1] == 0:  # lock(): no invocation, one struct call
            res_handle, mode, flags, waiter_signal, timeout_ns, _absent = _SYNC_LOCK_REQUEST.unpack(payload)
            invocation = None
        else:
            try:
                res_handle, mode, flags, waiter_signal, timeout_ns, invocation = wire.LockRequest.unpack(payload)
            except MessageError:
                conn.respond(self.id, _REQ_LOCK, request_id, _INVALID_PARAM)
                return
        if (mode != _EX and mode != _PR) or timeout_ns < wire.NO_TIMEOUT or (
                invocation is not None and timeout_ns != wire.NO_TIMEOUT):
            conn.respond(self.id, _REQ_LOCK, request_id, _INVALID_PARAM)
            return
        if flags & ~_LOCK_FLAGS:
            conn.respond(self.id, _REQ_LOCK, request_id, _BAD_FLAGS)
            return
        if self._own_resource(conn, _REQ_LOCK, request_id, res_handle) is None:
            return
        if timeout_ns == 0:
            conn.respond(self.id, _REQ_LOCK, request_id, _TIMEOUT)
            return
        if self._not_ready(conn, _REQ_LOCK, request_id):
            return
        lock_id = self._new_lock_id()
        token = next(self._tokens)
        msg = _LOCK_MSG.pack(token, res_handle, lock_id, mode, flags, waiter_signal, time.time_ns())
        if not mcast_request(self.api, self.id, conn, _REQ_LOCK, request_id, _EXEC_LOCK, msg, too_big=_TRY_AGAIN):
            return
        pending = _Pending(_REQ_LOCK, conn, request_id, invocation, res_handle, lock_id)
        self.pending[token] = pending
        if invocation is not None:
            conn.respond(self.id, _REQ_LOCK, request_id, _OK, _LOCK_ANSWER.pack(lock_id, 0))
        elif 0 < timeout_ns < MAX_TIMER_NS:
            pending.cancel = self.api.call_later(timeout_ns / 1e9, lambda: self._lock_timed_out(token))

    def _lock_timed_out(self, token: int) -> None:
        pending = self.pending.get(token)
        if pending is None:
            return
        pending.cancel = None
        self.outbox.send(Exec.WITHDRAW, m.WithdrawMsg.pack(pending.lock_id))

    def _new_lock_id(self) -> int:
        """A lock id of this node: nodeid in the high 32 bits, never one live in the table."""
        locks = self.state.locks
        while True:
            lock_id = (self.nodeid << 32) | (next(self._lock_ids) & 0xFFFFFFFF)
            if lock_id & 0xFFFFFFFF and lock_id not in locks:
                return lock_id

    def _lib_unlock(self, conn: Any, request_id: int, payload: bytes) -> None:
        if len(payload) == _SYNC_UNLOCK_SIZE and payload[-1] == 0:  # unlock(): no invocation
            res_handle, lock_id, _absent = _SYNC_UNLOCK_REQUEST.unpack(payload)
            invocation = None
        else:
            try:
                res_handle, lock_id, invocation = wire.UnlockRequest.unpack(payload)
            except MessageError:
                conn.respond(self.id, _REQ_UNLOCK, request_id, _INVALID_PARAM)
                return
        if self._own_resource(conn, _REQ_UNLOCK, request_id, res_handle) is None:
            return
        if self._not_ready(conn, _REQ_UNLOCK, request_id):
            return
        if lock_id in self._unlocking:  # an unlock of it is already on its way
            conn.respond(self.id, _REQ_UNLOCK, request_id, _NOT_EXIST)
            return
        token = next(self._tokens)
        if not mcast_request(self.api, self.id, conn, _REQ_UNLOCK, request_id, _EXEC_UNLOCK,
                             _UNLOCK_MSG.pack(token, res_handle, lock_id), too_big=_TRY_AGAIN):
            return
        self.pending[token] = _Pending(_REQ_UNLOCK, conn, request_id, invocation, res_handle, lock_id)
        self._unlocking.add(lock_id)
        if invocation is not None:
            conn.respond(self.id, _REQ_UNLOCK, request_id, _OK)

    def _lib_purge(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.HandleRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.PURGE, request_id, _INVALID_PARAM)
            return
        if self._own_resource(conn, Request.PURGE, request_id, req.res_handle) is None:
            return
        if self._not_ready(conn, Request.PURGE, request_id):
            return
        token = next(self._tokens)
        if self._mcast(conn, Request.PURGE, request_id, Exec.PURGE, m.PurgeMsg.pack(token, req.res_handle)):
            self.pending[token] = _Pending(Request.PURGE, conn, request_id, res_handle=req.res_handle)

    def _lib_dump(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.DumpRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.DUMP, request_id, _INVALID_PARAM)
            return
        data = json.dumps(self.table(req.limit, req.prefix), separators=(",", ":")).encode()
        while len(data) > (1 << 20) - 1024 and req.limit > 1:  # keep the answer inside one IPC frame
            req = req._replace(limit=req.limit // 2)
            data = json.dumps(self.table(req.limit, req.prefix), separators=(",", ":")).encode()
        conn.respond(self.id, Request.DUMP, request_id, _OK, wire.DumpAnswer.pack(data))

    def table(self, limit: int = 1000, prefix: str = "") -> dict:
        """The lock table for tools: resources by name with their holders and waiters."""
        state = self.state
        names = sorted(n for n in state.resources if n.startswith(prefix))
        out = []
        for name in names[:limit]:
            res = state.resources[name]
            out.append({
                "name": name,
                "openers": res.n_openers,
                "holders": [_lock_view(r) for r in state.holders(name)],
                "waiters": [_lock_view(r) for r in state.waiters(name)],
            })
        return {"nodeid": self.nodeid, "resources": out, "resource_count": len(names),
                "truncated": len(names) > limit, "locks": len(state.locks), "max_locks": state.max_locks}

    # -- cluster messages -------------------------------------------------------------------------------

    def _decode(self, cls: type, sender: int, payload: bytes) -> Any:
        try:
            return cls.decode(payload)
        except MessageError as exc:
            self._malformed(sender, cls.__name__, exc)
            return None

    def _malformed(self, sender: int, what: str, exc: Exception) -> None:
        self.malformed += 1
        log.warning("dropping malformed LCK %s from node %d: %s", what, sender, exc)

    def _exec_open(self, sender: int, payload: bytes) -> None:
        msg = self._decode(m.OpenMsg, sender, payload)
        if msg is not None:
            self._apply(self.state.open(sender, msg.token, msg.res_handle, msg.conn_id, msg.pid, msg.name,
                                        msg.create))

    def _exec_close(self, sender: int, payload: bytes) -> None:
        msg = self._decode(m.CloseMsg, sender, payload)
        if msg is not None:
            self._apply(self.state.close(sender, msg.token, msg.res_handle))

    def _exec_lock(self, sender: int, payload: bytes) -> None:
        try:
            token, res_handle, lock_id, mode, flags, waiter_signal, since = _LOCK_MSG.unpack(payload)
        except struct.error as exc:
            self._malformed(sender, "LockMsg", exc)
            return
        if mode != _EX and mode != _PR:
            self._malformed(sender, "LockMsg", ValueError(f"mode {mode}"))
            return
        effects = self.state.lock(sender, token, res_handle, lock_id, mode, flags, waiter_signal, since)
        if sender == self.nodeid or len(effects) != 1 or type(effects[0]) is not Answer:
            self._apply(effects)  # else: another node's request, answered there (nothing to do here)

    def _exec_unlock(self, sender: int, payload: bytes) -> None:
        try:
            token, res_handle, lock_id = _UNLOCK_MSG.unpack(payload)
        except struct.error as exc:
            self._malformed(sender, "UnlockMsg", exc)
            return
        effects = self.state.unlock(sender, token, res_handle, lock_id)
        if sender == self.nodeid or len(effects) != 1:
            self._apply(effects)  # one effect: the answer to the sender's own request

    def _exec_withdraw(self, sender: int, payload: bytes) -> None:
        msg = self._decode(m.WithdrawMsg, sender, payload)
        if msg is not None:
            self._apply(self.state.withdraw(sender, msg.lock_id))

    def _exec_purge(self, sender: int, payload: bytes) -> None:
        msg = self._decode(m.PurgeMsg, sender, payload)
        if msg is not None:
            self._apply(self.state.purge(sender, msg.token, msg.res_handle))

    def _exec_conn_exit(self, sender: int, payload: bytes) -> None:
        msg = self._decode(m.ConnExitMsg, sender, payload)
        if msg is not None:
            self._apply(self.state.conn_exit(sender, msg.conn_id))

    # -- effects --------------------------------------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the effects that concern this node."""
        me = self.nodeid
        for effect in effects:
            if type(effect) is Answer:
                if effect.node == me:
                    self._answer(effect)
            else:
                for waiter in self.state.waiters_of(effect, me):
                    conn = self._conns.get(waiter.owner[1])
                    if conn is not None:
                        conn.dispatch(self.id, Callback.LOCK_WAITER, wire.WaiterCallback.pack(
                            waiter.waiter_signal, waiter.lock_id, waiter.mode_held, waiter.mode_requested))

    def _answer(self, effect: Answer) -> None:
        pending = self.pending.pop(effect.token, None)
        if pending is None:
            return
        if pending.cancel is not None:
            pending.cancel()
        conn, error, kind, rid = pending.conn, int(effect.error), pending.kind, pending.request_id
        if kind is _REQ_LOCK:
            if pending.invocation is None:
                if error == _OK:
                    conn.respond(self.id, kind, rid, _OK, _LOCK_ANSWER.pack(effect.lock_id, effect.status))
                else:
                    conn.respond(self.id, kind, rid, error)
            else:
                if error != _OK:
                    error = _NOT_EXIST if error in (_BAD_HANDLE, _TIMEOUT) else error
                conn.dispatch(self.id, Callback.LOCK_GRANT, wire.GrantCallback.pack(
                    pending.invocation, effect.lock_id, effect.status if error == _OK else 0, error))
        elif kind is _REQ_UNLOCK:
            self._unlocking.discard(pending.lock_id)
            if pending.invocation is None:
                conn.respond(self.id, kind, rid, error)
            else:
                conn.dispatch(self.id, Callback.RESOURCE_UNLOCK, wire.UnlockCallback.pack(pending.invocation, error))
        elif kind is Request.RESOURCE_OPEN:
            self._answer_open(pending, error)
        elif kind is Request.RESOURCE_CLOSE:
            if error == _OK:
                self.resources.remove(conn, pending.res_handle)
            else:
                res = self.resources.get(conn, pending.res_handle)
                if res is not None:
                    res.state = "open"
            conn.respond(self.id, kind, rid, error)
        else:
            conn.respond(self.id, kind, rid, error)

    def _answer_open(self, pending: _Pending, error: int) -> None:
        conn = pending.conn
        res = self.resources.get(conn, pending.res_handle)
        if error != _OK or res is None or conn.closed:
            self.resources.remove(conn, pending.res_handle)
            if error == _OK:  # opened for a connection that is gone or a caller that gave up
                self.outbox.send(Exec.CLOSE, m.CloseMsg.pack(0, pending.res_handle))
        elif pending.abandoned:
            self.resources.remove(conn, pending.res_handle)
            self.outbox.send(Exec.CLOSE, m.CloseMsg.pack(0, pending.res_handle))
            return
        else:
            res.state = "open"
        if pending.abandoned:
            return
        if pending.invocation is None:
            conn.respond(self.id, Request.RESOURCE_OPEN, pending.request_id, error,
                         wire.OpenAnswer.pack(pending.res_handle) if error == _OK else b"")
        else:
            conn.dispatch(self.id, Callback.RESOURCE_OPEN, wire.OpenCallback.pack(
                pending.invocation, pending.res_handle if error == _OK else 0, error, pending.name))

    # -- sending --------------------------------------------------------------------------------------

    def _mcast(self, conn: Any, request: int, request_id: int, exec_id: int, payload: bytes) -> bool:
        """Multicast for a library request; on failure answer it (TRY_AGAIN, a message too big too) and return False."""
        return mcast_request(self.api, self.id, conn, request, request_id, exec_id, payload, too_big=_TRY_AGAIN)


def _lock_view(rec: Any) -> dict:
    owner = rec.owner
    return {"lock_id": rec.lock_id, "node": rec.lock_id >> 32, "owner_node": owner[0] if owner else None,
            "pid": rec.pid, "mode": wire.LockMode(rec.mode).name, "flags": rec.flags, "orphan": owner is None,
            "since": rec.since}


__all__ = ["LockEngine"]
