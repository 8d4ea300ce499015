"""The quorum engine: votequorum over Totem configurations, the provider LCK, AMF and CKPT ask.

Without a ``quorum { }`` section the engine registers nothing and answers
every library call with NOT_EXIST: the cluster behaves as openais did.  With
one, it registers itself as the service layer's quorum provider.  The decision
for a configuration is a pure function of the replicated
:class:`plugins.quorum.state.QuorumState`, recomputed at each transitional
configuration (every remaining member knows every remaining member's votes)
and after each sync round (the union of every member's view).  The
last_man_standing window is a cluster-wide timer: the lowest node decides,
a SHRINK message carries the decision to everyone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aisexec.clustertimers import ClusterTimers
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.statesync import StateTransfer
from aisexec.totem.api import ConfKind, QueueFull, RingId
from openais import quorum as wire
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.quorum import messages as m
from plugins.quorum.state import Decision, QuorumSettings, QuorumState, SyncRecord

log = logging.getLogger("aisexec.quorum")

_OK = int(SaAisError.OK)


def own_votes(config: Any) -> int:
    """This node's votes: ``totem.votes``, else its own member entry's ``votes``, else 1."""
    votes = config.totem.get("votes")
    if votes:
        return int(votes)
    if config.interfaces:
        bind = config.interfaces[0].get("bindnetaddr")
        for member in config.interfaces[0].get("members", []):
            if member.get("memberaddr") == bind:
                return int(member.get("votes") or 1)
    return 1


class QuorumEngine(ServiceEngine):
    """Quorum (service id 9): votequorum semantics."""

    id = wire.SERVICE_ID
    name = "QUORUM"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self.state: QuorumState | None = None
        self.transfer: StateTransfer | None = None
        self.timers: ClusterTimers | None = None
        self._records: list[SyncRecord] = []
        self._ring_id = ""
        self._last: Decision | None = None
        self._decided = False  # False from a regular configuration until its sync round merged every view
        self._trackers: dict[int, Any] = {}
        self._pending: dict[tuple[int, int], Any] = {}
        self.lib_handlers = {
            wire.Request.GETQUORATE: LibHandler(self._lib_getquorate, max_size=0),
            wire.Request.GETINFO: LibHandler(self._lib_getinfo, max_size=16),
            wire.Request.TRACK: LibHandler(self._lib_track, max_size=16),
            wire.Request.TRACK_STOP: LibHandler(self._lib_track_stop, max_size=0),
            wire.Request.SET_EXPECTED: LibHandler(self._lib_set_expected, needs_cluster=True, max_size=16),
        }
        self.exec_handlers = {
            m.Exec.SYNC: ExecHandler(self._exec_sync),
            m.Exec.SET_EXPECTED: ExecHandler(self._exec_set_expected),
            m.Exec.SHRINK: ExecHandler(self._exec_shrink),
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Register as the quorum provider when the configuration has a quorum section."""
        self.api = api
        config = getattr(api, "config", None)
        if config is None or not config.has_section("quorum"):
            return
        settings = QuorumSettings.from_config(config.section("quorum"), own_votes(config))
        self.state = QuorumState(settings, api.nodeid)
        self.transfer = StateTransfer(api, self.id, m.Exec.SYNC)
        self.timers = ClusterTimers(api, self._shrink_due)
        api.set_quorum_provider(self)
        log.info("quorum: votequorum, expected_votes %d, this node %d vote(s)%s", settings.expected_votes,
                 settings.own_votes, "".join(f", {flag}" for flag in sorted(self.state.compute().flags)))

    def lib_exit(self, conn: Any) -> None:
        """A closed connection stops tracking."""
        self._trackers.pop(conn.id, None)

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Recompute at once for a transitional configuration; a regular one waits for sync."""
        if self.state is None:
            return
        self._ring_id = str(RingId(*ring_id))
        if kind == ConfKind.TRANSITIONAL:
            self._report(self.state.configuration(members), members)
        else:
            # until the sync round merged every member's view, the members may disagree (a new node's
            # votes, wait_for_all seen elsewhere): nobody acts on quorum before it is decided for all
            self._decided = False
            self.state.configuration(members)
            self.timers.membership(members)

    # -- sync ---------------------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Send this node's view; collect everyone's."""
        if self.state is None:
            return
        self._records = []
        record = self.state.sync_record()
        payload = m.SyncRecordMsg.pack(record.own_votes, record.expected_votes, record.wfa_cleared,
                                       [m.NodeVotes(n, v) for n, v in record.known])
        self.transfer.start(ring_id, [payload])

    def sync_process(self) -> bool:
        """Send the record (True while the ring had no room)."""
        return False if self.transfer is None else self.transfer.process()

    def sync_activate(self) -> None:
        """Merge every member's view and report the configuration's decision."""
        if self.state is None:
            return
        decision = self.state.merge(self._records)
        self._records = []
        self.transfer.abort()
        self._decided = True
        self._report(decision, self.state.members, always=True)
        self._arm_shrink()

    def sync_abort(self) -> None:
        """Forget the round."""
        self._records = []
        if self.transfer is not None:
            self.transfer.abort()

    def _exec_sync(self, sender: int, payload: bytes) -> None:
        if self.transfer is None:
            return
        for raw in self.transfer.receive(sender, payload):
            msg = m.SyncRecordMsg.decode(raw)
            self._records.append(SyncRecord(sender, msg.own_votes, msg.expected_votes, msg.wfa_cleared,
                                            tuple((n.nodeid, n.votes) for n in msg.known)))

    # -- provider -------------------------------------------------------------------------------------

    def quorate(self) -> bool:
        """The current configuration's decision; False while a new configuration's views are being merged."""
        if self.state is None:
            return True
        return self._decided and self.state.compute().quorate

    def holds_readiness(self) -> bool:
        """True with votequorum's ``wait_for_all``: the executive reports ready only once quorate."""
        return self.state is not None and self.state.settings.wait_for_all

    def quorum_status(self) -> dict:
        """For cfgtool, metrics and the tool."""
        if self.state is None:
            return {}
        d = self.state.compute()
        return {"quorate": d.quorate, "expected_votes": d.expected_votes, "highest_expected": d.highest_expected,
                "total_votes": d.total_votes, "quorum": d.quorum, "flags": sorted(d.flags)}

    def dump(self) -> dict:
        """Quorum state for SIGUSR2 and tools."""
        if self.state is None:
            return {"configured": False}
        return {"configured": True, **self.quorum_status(), "node_votes": dict(self.state.node_votes),
                "members": list(self.state.members)}

    # -- decisions --------------------------------------------------------------------------------------

    def _report(self, decision: Decision, members: tuple[int, ...], always: bool = False) -> None:
        """Log a change of quorum, tell the services (``always``: after every sync round) and the trackers."""
        previous, self._last = self._last, decision
        changed = previous is None or previous.quorate != decision.quorate
        if changed:
            if decision.quorate:
                log.log(25, "This node is within the primary component and will provide service "
                            "(votes %d of %d, quorum %d).", decision.total_votes, decision.highest_expected,
                        decision.quorum)
            else:
                log.warning("This node is within the non-primary component and will NOT provide any services "
                            "(votes %d of %d, quorum %d).", decision.total_votes, decision.highest_expected,
                            decision.quorum)
        if changed or always:
            self.api.quorum_changed(self.quorate())
        note = wire.Notify.pack(decision.quorate, self._ring_id, list(members))
        for conn in list(self._trackers.values()):
            conn.dispatch(self.id, wire.Callback.NOTIFY, note)

    def _arm_shrink(self) -> None:
        state = self.state
        key = ("lms", state.members)
        for other in list(self.timers.pending):
            if other != key:
                self.timers.cancel(other)
        if state.shrink_target() is not None:
            window = state.settings.last_man_standing_window_ms
            self.timers.set(key, time.time_ns() + window * 1_000_000)

    def _shrink_due(self, key: Any) -> None:
        state = self.state
        target = state.shrink_target()
        if target is None or key != ("lms", state.members):
            self.timers.cancel(key)
            return
        self.api.mcast(self.id, m.Exec.SHRINK, m.ShrinkMsg.pack(list(state.members), target))  # QueueFull: retried
        self.timers.cancel(key)

    def _exec_shrink(self, sender: int, payload: bytes) -> None:
        if self.state is None:
            return
        msg = m.ShrinkMsg.decode(payload)
        before = self.state.expected_votes
        decision = self.state.apply_shrink(tuple(msg.members), msg.expected_votes)
        if decision.expected_votes != before:
            log.info("last_man_standing: expected votes %d -> %d", before, decision.expected_votes)
            self._report(decision, self.state.members)

    def _exec_set_expected(self, sender: int, payload: bytes) -> None:
        msg = m.SetExpectedMsg.decode(payload)
        conn = self._pending.pop((msg.conn_id, msg.request_id), None) if sender == self.api.nodeid else None
        if self.state is None:
            return
        if msg.votes < self.state.total_votes():
            if conn is not None and not conn.closed:
                conn.respond(self.id, wire.Request.SET_EXPECTED, msg.request_id, int(SaAisError.INVALID_PARAM))
            return
        before = self.state.expected_votes
        decision = self.state.apply_set_expected(msg.votes)
        log.info("expected votes set to %d (was %d) by node %d", decision.expected_votes, before, sender)
        self._report(decision, self.state.members)
        self._arm_shrink()
        if conn is not None and not conn.closed:
            conn.respond(self.id, wire.Request.SET_EXPECTED, msg.request_id, _OK)

    # -- library requests ------------------------------------------------------------------------------

    def _not_configured(self, conn: Any, msg_id: int, request_id: int) -> bool:
        if self.state is None:
            conn.respond(self.id, msg_id, request_id, int(SaAisError.NOT_EXIST))
            return True
        return False

    def _lib_getquorate(self, conn: Any, request_id: int, payload: bytes) -> None:
        if not self._not_configured(conn, wire.Request.GETQUORATE, request_id):
            conn.respond(self.id, wire.Request.GETQUORATE, request_id, _OK, wire.Quorate.pack(self.quorate()))

    def _lib_getinfo(self, conn: Any, request_id: int, payload: bytes) -> None:
        rid = wire.Request.GETINFO
        if self._not_configured(conn, rid, request_id):
            return
        try:
            nodeid = wire.InfoRequest.decode(payload).nodeid
        except MessageError:
            conn.respond(self.id, rid, request_id, int(SaAisError.INVALID_PARAM))
            return
        state = self.state
        d = state.compute()
        nodes = [wire.NodeEntry(n, state.node_votes.get(n, 1)) for n in state.members]
        if nodeid is not None:
            if nodeid not in state.node_votes:
                conn.respond(self.id, rid, request_id, int(SaAisError.NOT_EXIST))
                return
            nodes = [wire.NodeEntry(nodeid, state.node_votes[nodeid])]
        conn.respond(self.id, rid, request_id, _OK,
                     wire.InfoAnswer.pack(d.quorate, d.expected_votes, d.highest_expected, d.total_votes, d.quorum,
                                          nodes, sorted(d.flags)))

    def _lib_track(self, conn: Any, request_id: int, payload: bytes) -> None:
        rid = wire.Request.TRACK
        if self._not_configured(conn, rid, request_id):
            return
        try:
            flags = wire.TrackRequest.decode(payload).flags
        except MessageError:
            flags = 0
        if not flags or flags & ~(wire.TRACK_CURRENT | wire.TRACK_CHANGES):
            conn.respond(self.id, rid, request_id, int(SaAisError.BAD_FLAGS))
            return
        if flags & wire.TRACK_CHANGES:
            self._trackers[conn.id] = conn
        conn.respond(self.id, rid, request_id, _OK)
        if flags & wire.TRACK_CURRENT:
            conn.dispatch(self.id, wire.Callback.NOTIFY,
                          wire.Notify.pack(self.quorate(), self._ring_id, list(self.state.members)))

    def _lib_track_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        rid = wire.Request.TRACK_STOP
        if self._not_configured(conn, rid, request_id):
            return
        found = self._trackers.pop(conn.id, None) is not None
        conn.respond(self.id, rid, request_id, _OK if found else int(SaAisError.NOT_EXIST))

    def _lib_set_expected(self, conn: Any, request_id: int, payload: bytes) -> None:
        rid = wire.Request.SET_EXPECTED
        if self._not_configured(conn, rid, request_id):
            return
        if conn.uid != 0:
            conn.respond(self.id, rid, request_id, int(SaAisError.ACCESS))
            return
        try:
            votes = wire.SetExpected.decode(payload).votes
        except MessageError:
            votes = 0
        if not 1 <= votes <= 100_000:
            conn.respond(self.id, rid, request_id, int(SaAisError.INVALID_PARAM))
            return
        try:
            self.api.mcast(self.id, m.Exec.SET_EXPECTED, m.SetExpectedMsg.pack(conn.id, request_id, votes))
        except QueueFull:
            conn.respond(self.id, rid, request_id, int(SaAisError.TRY_AGAIN))
            return
        self._pending[(conn.id, request_id)] = conn
