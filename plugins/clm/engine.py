"""The CLM service engine: the cluster's node table, view numbers and membership tracking.

Replicated state is the node table of the current view: one
:class:`openais.clm.ClusterNode` per member, and the view number.  It is
rebuilt by sync after every regular configuration: each node multicasts its
own :class:`plugins.clm.messages.NodeRecord` (name, ring-0 address, boot
timestamp, initial view, and the view it comes from) as sync traffic; on
activate every node computes the same table from the same records:

* the new view number is the largest previous view of the members, plus one
  unless every member comes from a view with exactly these members (so it
  grows with every configuration that changes membership, and never shrinks
  for any node);
* a node without an initial view (just booted) joins in the new view.

Then local connections tracking changes get one callback: the full set with
per-node change (``TRACK_CHANGES``) or only the changed nodes
(``TRACK_CHANGES_ONLY``).  A node that restarted between two views (new boot
timestamp) is reported as JOINED.  Library requests are answered locally from
the table.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.totem.api import QueueFull, RingId
from openais import clm as wire
from openais.clm import (
    LOCAL_NODE_ID,
    TRACK_CHANGES,
    TRACK_CHANGES_ONLY,
    TRACK_CURRENT,
    ClusterChange,
    ClusterNode,
    NodeGetAsyncRequest,
    NodeGetCallback,
    NodeGetRequest,
    Notification,
    NotificationBuffer,
    Request,
    TrackCallback,
    TrackRequest,
)
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.clm.messages import Exec, NodeRecord

log = logging.getLogger("aisexec.clm")

_OK = int(SaAisError.OK)
_TRY_AGAIN = int(SaAisError.TRY_AGAIN)
_INVALID_PARAM = int(SaAisError.INVALID_PARAM)
_NOT_EXIST = int(SaAisError.NOT_EXIST)
_BAD_FLAGS = int(SaAisError.BAD_FLAGS)

#: ``conn.private`` key holding a connection's track flags (0: not tracking changes).
_TRACK_KEY = "clm_track_flags"


def _node_name() -> str:
    """This node's name: the host name, cut to the SA Forum limit."""
    raw = socket.gethostname().encode("utf-8")[: wire.MAX_NAME]
    return raw.decode("utf-8", errors="ignore")


class ClmEngine(ServiceEngine):
    """Cluster membership (service id 1)."""

    id = wire.SERVICE_ID
    name = "CLM"
    version = "B.01.01"

    def __init__(self) -> None:
        self.api: Any = None
        self.view_number = 0
        self.nodes: dict[int, ClusterNode] = {}  # members of the current view
        self.activated = False
        self.boot_timestamp = time.time_ns()
        self.node_name = _node_name()
        self._initial_view = 0
        self._trackers: dict[int, Any] = {}  # conn id -> connection tracking changes
        self._sync_ring: RingId | None = None
        self._sync_members: tuple[int, ...] = ()
        self._sync_sent = False
        self._records: dict[int, NodeRecord] = {}
        self.lib_handlers = {
            Request.TRACK: LibHandler(self._lib_track, max_size=16),
            Request.TRACK_STOP: LibHandler(self._lib_track_stop, max_size=0),
            Request.NODE_GET: LibHandler(self._lib_node_get, max_size=16),
            Request.NODE_GET_ASYNC: LibHandler(self._lib_node_get_async, max_size=16),
        }
        self.exec_handlers = {Exec.NODE_RECORD: ExecHandler(self._exec_node_record)}

    # -- lifecycle ------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the executive api; the boot timestamp is the executive's start."""
        self.api = api
        self.boot_timestamp = time.time_ns()

    def lib_init(self, conn: Any) -> None:
        """A new connection tracks nothing."""
        conn.private[_TRACK_KEY] = 0

    def lib_exit(self, conn: Any) -> None:
        """A closed connection stops tracking."""
        self._trackers.pop(conn.id, None)

    def dump(self) -> dict:
        """The view number, the node table and the tracking connections."""
        return {
            "view_number": self.view_number,
            "nodes": [node._asdict() for _, node in sorted(self.nodes.items())],
            "trackers": {cid: conn.private.get(_TRACK_KEY, 0) for cid, conn in self._trackers.items()},
        }

    # -- sync -------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """A new regular configuration: collect every member's node record for ``ring_id``."""
        self._sync_ring = RingId(*ring_id)
        self._sync_members = tuple(members)
        self._sync_sent = False
        self._records = {}

    def sync_process(self) -> bool:
        """Multicast this node's record once; True (call again) while the ring had no room."""
        if self._sync_sent or self._sync_ring is None:
            return False
        nodeid = self.api.nodeid
        record = NodeRecord(
            ring_rep=self._sync_ring.rep,
            ring_seq=self._sync_ring.seq,
            previous_view=self.view_number,
            initial_view=self._initial_view,
            boot_timestamp=self.boot_timestamp,
            previous_members=tuple(sorted(self.nodes)),
            address=(self.api.node_address(nodeid) or "")[: wire.MAX_ADDRESS],
            name=self.node_name,
        )
        try:
            self.api.mcast(self.id, Exec.NODE_RECORD, record.encode())
        except QueueFull:
            return True
        self._sync_sent = True
        return False

    def sync_activate(self) -> None:
        """Every record is in: build the new table and view number, then tell the trackers."""
        members = self._sync_members
        records = self._records
        if self._sync_ring is None or any(n not in records for n in members):
            log.error("CLM sync activated without every member's record; keeping view %d", self.view_number)
            return
        same = all(set(records[n].previous_members) == set(members) for n in members)
        view = max(records[n].previous_view for n in members) + (0 if same else 1)
        table = {}
        for n in members:
            rec = records[n]
            table[n] = ClusterNode(n, rec.address, rec.name, True, rec.boot_timestamp, rec.initial_view or view)
        old = self.nodes
        self.nodes = table
        self.view_number = view
        self.activated = True
        self._initial_view = table[self.api.nodeid].initial_view_number if self.api.nodeid in table else 0
        self._sync_ring = None
        self._records = {}
        self._notify_trackers(old, table)

    def sync_abort(self) -> None:
        """The configuration changed during sync: forget this round's records."""
        self._sync_ring = None
        self._records = {}

    def _exec_node_record(self, sender: int, payload: bytes) -> None:
        try:
            record = NodeRecord.decode(payload)
        except MessageError as exc:
            log.warning("dropping malformed CLM node record from node %d: %s", sender, exc)
            return
        if self._sync_ring is None or (record.ring_rep, record.ring_seq) != tuple(self._sync_ring):
            return
        if sender in self._sync_members:
            self._records[sender] = record

    # -- tracking ---------------------------------------------------------------------

    def current_buffer(self) -> NotificationBuffer:
        """Every member with NO_CHANGE, in node id order."""
        return NotificationBuffer(
            self.view_number, [Notification(node, ClusterChange.NO_CHANGE) for _, node in sorted(self.nodes.items())]
        )

    def _notify_trackers(self, old: dict[int, ClusterNode], new: dict[int, ClusterNode]) -> None:
        joined = {n for n, node in new.items() if n not in old or old[n].boot_timestamp != node.boot_timestamp}
        left = sorted(n for n in old if n not in new)
        if not joined and not left:
            return
        gone = [Notification(old[n]._replace(member=False), ClusterChange.LEFT) for n in left]
        full = [
            Notification(node, ClusterChange.JOINED if n in joined else ClusterChange.NO_CHANGE)
            for n, node in sorted(new.items())
        ]
        changes = [note for note in full if note.cluster_change == ClusterChange.JOINED]
        full_payload = TrackCallback.pack(len(new), _OK, NotificationBuffer(self.view_number, full + gone))
        only_payload = TrackCallback.pack(len(new), _OK, NotificationBuffer(self.view_number, changes + gone))
        for conn in list(self._trackers.values()):
            flags = conn.private.get(_TRACK_KEY, 0)
            payload = full_payload if flags & TRACK_CHANGES else only_payload
            conn.dispatch(self.id, wire.Callback.TRACK, payload)

    # -- library requests -------------------------------------------------------------

    def _lib_track(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            flags, want_buffer = TrackRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.TRACK, request_id, _INVALID_PARAM)
            return
        if wire.flags_error(flags) != _OK:
            conn.respond(self.id, Request.TRACK, request_id, _BAD_FLAGS)
            return
        if flags & TRACK_CURRENT and not self.activated:
            conn.respond(self.id, Request.TRACK, request_id, _TRY_AGAIN)
            return
        if flags & (TRACK_CHANGES | TRACK_CHANGES_ONLY):
            conn.private[_TRACK_KEY] = flags & (TRACK_CHANGES | TRACK_CHANGES_ONLY)
            self._trackers[conn.id] = conn
        if flags & TRACK_CURRENT:
            current = self.current_buffer()
            if want_buffer:
                conn.respond(self.id, Request.TRACK, request_id, _OK, current.encode())
                return
            conn.respond(self.id, Request.TRACK, request_id, _OK)
            conn.dispatch(self.id, wire.Callback.TRACK, TrackCallback.pack(len(self.nodes), _OK, current))
            return
        conn.respond(self.id, Request.TRACK, request_id, _OK)

    def _lib_track_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._trackers.pop(conn.id, None) is None:
            conn.respond(self.id, Request.TRACK_STOP, request_id, _NOT_EXIST)
            return
        conn.private[_TRACK_KEY] = 0
        conn.respond(self.id, Request.TRACK_STOP, request_id, _OK)

    def lookup(self, node_id: int) -> tuple[int, ClusterNode | None]:
        """(error, node) for ``node_id`` (``LOCAL_NODE_ID`` = this node): NOT_EXIST unless a member.

        Before this node's first view its own node is answered with
        ``member=False``.
        """
        if node_id == 0:
            return _INVALID_PARAM, None
        nodeid = self.api.nodeid
        target = nodeid if node_id == LOCAL_NODE_ID else node_id
        node = self.nodes.get(target)
        if node is not None:
            return _OK, node
        if target == nodeid:
            address = (self.api.node_address(nodeid) or "")[: wire.MAX_ADDRESS]
            return _OK, ClusterNode(nodeid, address, self.node_name, False, self.boot_timestamp, self._initial_view)
        return _NOT_EXIST, None

    def _lib_node_get(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            (node_id,) = NodeGetRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.NODE_GET, request_id, _INVALID_PARAM)
            return
        error, node = self.lookup(node_id)
        conn.respond(self.id, Request.NODE_GET, request_id, error, node.encode() if node else b"")

    def _lib_node_get_async(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            invocation, node_id = NodeGetAsyncRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.NODE_GET_ASYNC, request_id, _INVALID_PARAM)
            return
        if node_id == 0:
            conn.respond(self.id, Request.NODE_GET_ASYNC, request_id, _INVALID_PARAM)
            return
        error, node = self.lookup(node_id)
        conn.respond(self.id, Request.NODE_GET_ASYNC, request_id, _OK)
        conn.dispatch(self.id, wire.Callback.NODE_GET, NodeGetCallback.pack(invocation, error, node))
