"""The CPG service engine: replicated group membership and agreed-order group messaging.

Replicated state is one table, group name -> set of (nodeid, pid), changed
only by delivered cluster messages (JOIN, LEAVE, node loss, sync), so every
node holds the same table at the same point of the agreed order.  Each node
also knows its own library connections and which group each has joined;
callbacks go to the local connections joined to the group concerned.

Request pattern: the library handler validates, multicasts an exec message
carrying (connection id, request id, pid, group); on delivery every node
applies it and dispatches callbacks; the origin node answers the connection
(if it is still open).  MCAST is answered as soon as it is queued.

Sync after every regular configuration: each node multicasts its own
processes' memberships (sync traffic, bounded shares); on activate the
union replaces the table and local handles get one configuration change per
group that differs: NODEDOWN for processes that vanished with their node,
NODEUP for processes that appeared through a merge.  Nodes lost in a
transitional configuration are removed at once with NODEDOWN.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from aisexec.outbox import Outbox, mcast_request
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.totem.api import ConfKind, QueueFull, RingId
from openais import cpg as wire
from openais.cpg import (
    Confchg,
    Deliver,
    GroupList,
    GroupRequest,
    McastRequest,
    Member,
    MemberList,
    NodeId,
    Reason,
    Request,
)
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.cpg.messages import Exec, JoinMsg, LeaveMsg, McastMsg, SyncEntry, SyncMembersMsg

log = logging.getLogger("aisexec.cpg")

#: Most (pid, group) entries in one sync share (keeps each message well under 64 KiB).
SYNC_ENTRIES_PER_MESSAGE = 400

_OK = int(SaAisError.OK)
_INVALID_PARAM = int(SaAisError.INVALID_PARAM)
_NOT_EXIST = int(SaAisError.NOT_EXIST)
_EXIST = int(SaAisError.EXIST)
_TOO_BIG = int(SaAisError.TOO_BIG)
#: Largest request payloads: a group request; the guarantee byte and the largest message.
_GROUP_REQUEST = 1024  # a name over MAX_GROUP_NAME is INVALID_PARAM, from the decoder
_MCAST_REQUEST = 1 + wire.MAX_MESSAGE

Key = tuple[int, int]  # (nodeid, pid)


class ConnState(enum.Enum):
    """Where one library connection is in its group's life."""

    UNJOINED = "unjoined"
    JOIN_STARTED = "join-started"
    JOINED = "joined"
    LEAVE_STARTED = "leave-started"


class _Local:
    """Per-connection CPG state of one local library connection."""

    __slots__ = ("conn", "group", "state")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.group: str | None = None
        self.state = ConnState.UNJOINED


class CpgEngine(ServiceEngine):
    """Closed process groups (service id 8)."""

    id = wire.SERVICE_ID
    name = "CPG"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self.groups: dict[str, set[Key]] = {}
        self._locals: dict[int, _Local] = {}  # conn id -> state, open connections of this node
        self._joined: dict[str, dict[int, _Local]] = {}  # group -> conn id -> state, for callbacks
        self.outbox: Outbox | None = None  # PROCDOWN leaves of connections that went, never lost
        self._sync_ring: RingId | None = None
        self._sync_outbox: list[SyncEntry] = []
        self._shadow: dict[str, set[Key]] = {}
        self.lib_handlers = {
            Request.JOIN: LibHandler(self._lib_join, needs_cluster=True, max_size=_GROUP_REQUEST),
            Request.LEAVE: LibHandler(self._lib_leave, needs_cluster=True, max_size=_GROUP_REQUEST),
            Request.MCAST: LibHandler(self._lib_mcast, needs_cluster=True, max_size=_MCAST_REQUEST, pipelined=True),
            Request.MEMBERSHIP: LibHandler(self._lib_membership, max_size=_GROUP_REQUEST),
            Request.LOCAL_NODEID: LibHandler(self._lib_local_nodeid, max_size=0),
            Request.ITERATE: LibHandler(self._lib_iterate, max_size=0),
        }
        self.exec_handlers = {
            Exec.JOIN: ExecHandler(self._exec_join),
            Exec.LEAVE: ExecHandler(self._exec_leave),
            Exec.MCAST: ExecHandler(self._exec_mcast),
            Exec.SYNC_MEMBERS: ExecHandler(self._exec_sync_members),
        }

    # -- lifecycle ----------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the executive api; cleanups go through an outbox (never lost when the ring is full)."""
        self.api = api
        self.outbox = Outbox(api, self.id)

    def lib_init(self, conn: Any) -> None:
        """A connection opened: it has joined nothing yet."""
        self._locals[conn.id] = _Local(conn)

    def lib_exit(self, conn: Any) -> None:
        """A connection closed: a process still in a group leaves it with reason PROCDOWN."""
        local = self._locals.pop(conn.id, None)
        if local is None or local.group is None or local.state is ConnState.UNJOINED:
            return
        self.outbox.send(Exec.LEAVE, LeaveMsg.pack(conn.id, 0, conn.pid, Reason.PROCDOWN, local.group))

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Processes of nodes lost in a transitional configuration go at once (NODEDOWN)."""
        if kind == ConfKind.TRANSITIONAL and left:
            gone = set(left)
            new = {g: {k for k in keys if k[0] not in gone} for g, keys in self.groups.items()}
            self._replace_table(new)
        if self.outbox is not None:
            self.outbox.flush()

    def dump(self) -> dict:
        """Groups with their members, and this node's connections."""
        return {
            "groups": {g: [list(k) for k in sorted(keys)] for g, keys in sorted(self.groups.items())},
            "connections": {cid: {"pid": loc.conn.pid, "group": loc.group, "state": loc.state.value}
                            for cid, loc in self._locals.items()},
        }

    # -- sync -----------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Start a round: queue this node's own memberships for sending, empty the shadow table."""
        self._sync_ring = RingId(*ring_id)
        me = self.api.nodeid
        self._sync_outbox = sorted(SyncEntry(pid, g) for g, keys in self.groups.items() for (n, pid) in keys if n == me)
        self._shadow = {}

    def sync_process(self) -> bool:
        """Send one share of this node's memberships; True while more remains (or the ring was full)."""
        ring = self._sync_ring
        if ring is None:
            return False
        if not self._sync_outbox:
            return False
        share = self._sync_outbox[:SYNC_ENTRIES_PER_MESSAGE]
        try:
            self.api.mcast(self.id, Exec.SYNC_MEMBERS, SyncMembersMsg.pack(ring.rep, ring.seq, share))
        except QueueFull:
            return True
        del self._sync_outbox[: len(share)]
        return bool(self._sync_outbox)

    def sync_activate(self) -> None:
        """Every member's share is in: the union becomes the table; local handles hear the differences."""
        shadow, self._shadow = self._shadow, {}
        self._sync_ring = None
        self._replace_table(shadow)

    def sync_abort(self) -> None:
        """The round was interrupted: forget its shares."""
        self._shadow = {}
        self._sync_outbox = []
        self._sync_ring = None

    def _exec_sync_members(self, sender: int, payload: bytes) -> None:
        msg = SyncMembersMsg.decode(payload)
        if self._sync_ring is None or (msg.ring_rep, msg.ring_seq) != tuple(self._sync_ring):
            return
        for pid, group in msg.entries:
            self._shadow.setdefault(group, set()).add((sender, pid))

    def _replace_table(self, new: dict[str, set[Key]]) -> None:
        """Install ``new`` as the table; one confchg per changed group (NODEDOWN gone, NODEUP appeared)."""
        old = self.groups
        self.groups = {g: keys for g, keys in new.items() if keys}
        for group in sorted(set(old) | set(self.groups)):
            before, after = old.get(group, set()), self.groups.get(group, set())
            if before == after:
                continue
            left = [Member(n, p, Reason.NODEDOWN) for n, p in sorted(before - after)]
            joined = [Member(n, p, Reason.NODEUP) for n, p in sorted(after - before)]
            self._notify_confchg(group, left, joined)

    # -- library requests -----------------------------------------------------------

    def _lib_join(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            group = GroupRequest.decode(payload).group
        except MessageError:
            conn.respond(self.id, Request.JOIN, request_id, _INVALID_PARAM)
            return
        local = self._locals[conn.id]
        if local.state is not ConnState.UNJOINED or self._pid_in_group(conn.pid, group):
            conn.respond(self.id, Request.JOIN, request_id, _EXIST)
            return
        if not self._mcast(conn, Request.JOIN, request_id, Exec.JOIN,
                           JoinMsg.pack(conn.id, request_id, conn.pid, group)):
            return
        local.group = group
        local.state = ConnState.JOIN_STARTED

    def _lib_leave(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            group = GroupRequest.decode(payload).group
        except MessageError:
            conn.respond(self.id, Request.LEAVE, request_id, _INVALID_PARAM)
            return
        local = self._locals[conn.id]
        if local.group != group or local.state in (ConnState.UNJOINED, ConnState.LEAVE_STARTED):
            conn.respond(self.id, Request.LEAVE, request_id, _NOT_EXIST)
            return
        if self._mcast(conn, Request.LEAVE, request_id, Exec.LEAVE,
                       LeaveMsg.pack(conn.id, request_id, conn.pid, Reason.LEAVE, group)):
            local.state = ConnState.LEAVE_STARTED

    def _lib_mcast(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            guarantee, data = McastRequest.unpack(payload)
        except MessageError as exc:  # the data's only failure is its length
            conn.respond(self.id, Request.MCAST, request_id, _TOO_BIG if exc.field == "data" else _INVALID_PARAM)
            return
        local = self._locals[conn.id]
        if local.group is None or local.state in (ConnState.UNJOINED, ConnState.LEAVE_STARTED):
            conn.respond(self.id, Request.MCAST, request_id, _NOT_EXIST)
            return
        if self._mcast(conn, Request.MCAST, request_id, Exec.MCAST,
                       McastMsg.pack(conn.pid, local.group, data), safe=guarantee == wire.SAFE):
            conn.respond(self.id, Request.MCAST, request_id, _OK)

    def _lib_membership(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            group = GroupRequest.decode(payload).group
        except MessageError:
            conn.respond(self.id, Request.MEMBERSHIP, request_id, _INVALID_PARAM)
            return
        conn.respond(self.id, Request.MEMBERSHIP, request_id, _OK, MemberList.pack(self.members(group)))

    def _lib_local_nodeid(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.LOCAL_NODEID, request_id, _OK, NodeId.pack(self.api.nodeid))

    def _lib_iterate(self, conn: Any, request_id: int, payload: bytes) -> None:
        listing = [(g, self.members(g)) for g in sorted(self.groups)]
        conn.respond(self.id, Request.ITERATE, request_id, _OK, GroupList.pack(listing))

    # -- cluster messages -----------------------------------------------------------

    def _exec_join(self, sender: int, payload: bytes) -> None:
        msg = JoinMsg.decode(payload)
        keys = self.groups.setdefault(msg.group, set())
        key = (sender, msg.pid)
        origin = self._locals.get(msg.conn_id) if sender == self.api.nodeid else None
        if key in keys:
            if origin is not None:
                origin.conn.respond(self.id, Request.JOIN, msg.request_id, _EXIST)
                if origin.state is ConnState.JOIN_STARTED:
                    origin.state, origin.group = ConnState.UNJOINED, None
            return
        keys.add(key)
        if origin is not None and origin.state is ConnState.JOIN_STARTED and origin.group == msg.group:
            origin.state = ConnState.JOINED
            self._joined.setdefault(msg.group, {})[msg.conn_id] = origin
        self._notify_confchg(msg.group, [], [Member(sender, msg.pid, Reason.JOIN)])
        if origin is not None:
            origin.conn.respond(self.id, Request.JOIN, msg.request_id, _OK)

    def _exec_leave(self, sender: int, payload: bytes) -> None:
        msg = LeaveMsg.decode(payload)
        keys = self.groups.get(msg.group)
        key = (sender, msg.pid)
        origin = self._locals.get(msg.conn_id) if sender == self.api.nodeid else None
        if keys is not None and key in keys:
            keys.discard(key)
            if not keys:
                del self.groups[msg.group]
            self._notify_confchg(msg.group, [Member(sender, msg.pid, msg.reason)], [])
        if sender == self.api.nodeid:
            listeners = self._joined.get(msg.group)
            if listeners is not None:
                listeners.pop(msg.conn_id, None)
                if not listeners:
                    del self._joined[msg.group]
        if origin is not None and msg.reason is Reason.LEAVE:
            origin.state, origin.group = ConnState.UNJOINED, None
            origin.conn.respond(self.id, Request.LEAVE, msg.request_id, _OK)

    def _exec_mcast(self, sender: int, payload: bytes) -> None:
        pid, group, data = McastMsg.unpack(payload)
        listeners = self._joined.get(group)
        if not listeners:
            return
        callback = Deliver.pack(group, sender, pid, data)
        for local in list(listeners.values()):
            local.conn.dispatch(self.id, wire.Callback.DELIVER, callback)

    # -- helpers --------------------------------------------------------------------

    def members(self, group: str) -> list[Member]:
        """Members of ``group`` in (nodeid, pid) order, identical on every node."""
        return [Member(n, p, Reason.JOIN) for n, p in sorted(self.groups.get(group, ()))]

    def _pid_in_group(self, pid: int, group: str) -> bool:
        """True when another connection of process ``pid`` on this node is in (or joining) ``group``."""
        return any(loc.conn.pid == pid and loc.group == group for loc in self._locals.values())

    def _notify_confchg(self, group: str, left: list[Member], joined: list[Member]) -> None:
        listeners = self._joined.get(group)
        if not listeners:
            return
        callback = Confchg.pack(group, self.members(group), left, joined)
        for local in list(listeners.values()):
            local.conn.dispatch(self.id, wire.Callback.CONFCHG, callback)

    def _mcast(self, conn: Any, request: int, request_id: int, exec_id: int, payload: bytes,
               safe: bool = False) -> bool:
        """Multicast for a library request; on failure answer it (TRY_AGAIN or TOO_BIG) and return False."""
        return mcast_request(self.api, self.id, conn, request, request_id, exec_id, payload, safe=safe)


__all__ = ["CpgEngine"]
