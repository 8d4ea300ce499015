"""The AMF service engine: thin glue between IPC, the ring, the replicated state and the local life cycle.

Library handlers validate and either answer from the replicated state
(``ha_state_get``, status) or multicast a cluster message whose delivery
changes the state (registration, responses, error reports, admin
operations).  Exec handlers feed :class:`plugins.amf.state.AmfState` and
carry out the effects that concern this node: CLC-CLI commands, callbacks
to its components, answers to its connections.  Node loss is applied at the
transitional configuration (every survivor at the same point); a ring that
gained members runs a state transfer whose merge takes the assignments of the
side that was quorate before the merge (else of the started side with the
lowest node id) and each node's own presence states.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from aisexec.clustertimers import ClusterTimers
from aisexec.outbox import Outbox
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.statesync import StateTransfer
from aisexec.totem.api import ConfKind
from openais import amf as wire
from openais.amf import Callback, Request
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.amf import doc, model
from plugins.amf.clc import Lifecycle
from plugins.amf.config import AMF_CONFIG_FILE
from plugins.amf.health import HealthChecks
from plugins.amf.library import LibraryMixin
from plugins.amf.messages import (
    DECODERS,
    Adjust,
    DepExpired,
    Error,
    Exec,
    Response,
    Startup,
    SyncRecord,
)
from plugins.amf.runtime import Op, from_doc, to_doc
from plugins.amf.state import AmfState
from plugins.amf.tracking import Tracking

log = logging.getLogger("aisexec.amf")

#: Seconds between retries of cluster messages the ring had no room for.
RETRY = 0.05
#: Seconds a clean stop waits for the switchover and termination of this node's components.
STOP_TIMEOUT = 5.0
#: Most queued outgoing cluster messages (beyond: the oldest local reports are dropped, logged).
OUTBOX_LIMIT = 10000


def amf_section(config: Any) -> dict:
    """The checked ``amf { }`` section (``{}`` without a configuration, as in some in-process tests)."""
    return config.section("amf") if config is not None else {}


def enabled(config: Any) -> bool:
    """True when ``amf { mode: enabled }``."""
    return amf_section(config).get("mode") == "enabled"


def config_file() -> str:
    """The AMF configuration file named by the environment (``OPENAIS_AMF_CONFIG_FILE``)."""
    return AMF_CONFIG_FILE.read()


class AmfEngine(LibraryMixin, ServiceEngine):
    """AMF (service id 2)."""

    id = wire.SERVICE_ID
    name = "AMF"
    version = "1.0"
    #: This node's cluster messages, kept in order while the ring is full (set up by :meth:`exec_init`).
    outbox: Outbox

    def __init__(self, model_override: model.Model | None = None, lifecycle: Callable[..., Any] | None = None) -> None:
        """``model_override`` enables AMF with that model (tests); ``lifecycle`` replaces the CLC-CLI runner."""
        self._model_override = model_override
        self._lifecycle = lifecycle or Lifecycle
        self.api: Any = None
        self.state: AmfState | None = None
        self.lc: Lifecycle | None = None
        self.conns: dict[int, Any] = {}
        self.masks: dict[int, int] = {}
        self.answered: set[int] = set()
        self._members: tuple[int, ...] = ()
        self._sync_records: list[Any] = []
        self._sync_full = False
        self._callback_timers: dict[int, Callable[[], None]] = {}
        self._term_conn: dict[str, int] = {}
        self.excluded = False  # the model digest differs from the lowest member's
        self._side_quorate = True  # the last quorum decision told to this engine (True: no quorum service)
        self._quorum_pending = False  # a sync round runs and the quorum service has not decided it yet
        self._adjust_timers: dict[Any, tuple[Any, Callable[[], None]]] = {}
        self.hostname = socket.gethostname()
        self.lib_handlers = {
            Request.HELLO: LibHandler(self._lib_hello, max_size=64),
            Request.REGISTER: LibHandler(self._lib_register, needs_cluster=True, max_size=4096),
            Request.UNREGISTER: LibHandler(self._lib_unregister, needs_cluster=True, max_size=4096),
            Request.PM_START: LibHandler(self._lib_pm_start, max_size=4096),
            Request.PM_STOP: LibHandler(self._lib_pm_stop, max_size=4096),
            Request.HC_START: LibHandler(self._lib_hc_start, max_size=4096),
            Request.HC_CONFIRM: LibHandler(self._lib_hc_confirm, max_size=4096),
            Request.HC_STOP: LibHandler(self._lib_hc_stop, max_size=4096),
            Request.HA_STATE_GET: LibHandler(self._lib_ha_state_get, max_size=4096),
            Request.QUIESCING_COMPLETE: LibHandler(self._lib_quiescing_complete, needs_cluster=True, max_size=64),
            Request.PG_TRACK: LibHandler(self._lib_pg_track, max_size=4096),
            Request.PG_TRACK_STOP: LibHandler(self._lib_pg_track_stop, max_size=4096),
            Request.ERROR_REPORT: LibHandler(self._lib_error_report, needs_cluster=True, max_size=4096),
            Request.ERROR_CLEAR: LibHandler(self._lib_error_clear, needs_cluster=True, max_size=4096),
            Request.RESPONSE: LibHandler(self._lib_response, max_size=64),
            Request.CLUSTER_STATE: LibHandler(self._lib_cluster_state, max_size=0),
            Request.ADMIN: LibHandler(self._lib_admin, needs_cluster=True, max_size=4096),
        }
        self.exec_handlers = {Exec.SYNC: ExecHandler(self._exec_sync)}
        for kind in DECODERS:
            self.exec_handlers[kind] = ExecHandler(self._make_exec(kind))

    # -- configuration -------------------------------------------------------------------------

    def config_check(self, config: Any, env: Any) -> None:
        """``aisexec -t`` and start-up: with AMF enabled, amf.conf must be valid (ConfigError otherwise)."""
        if enabled(config):
            model.load(config_file())

    # -- lifecycle --------------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Read the model (when enabled) and set up the state, life cycle and timers."""
        self.api = api
        self.outbox = Outbox(api, self.id, retry=RETRY, keep=OUTBOX_LIMIT)
        self.timers = ClusterTimers(api, self._timer_expired)
        self.transfer = StateTransfer(api, self.id, Exec.SYNC)
        if self._model_override is not None:
            m = self._model_override
        elif enabled(api.config):
            m = model.load(config_file())  # ConfigError: refused (aisexec checks it before, as for -t)
        else:
            return
        self.state = AmfState(m)
        if hasattr(api, "quorate"):
            self.state.quorate = api.quorate
            self.state.quorum_undecided = lambda: self._quorum_pending
            self.state.no_quorum_policy = str(amf_section(api.config).get("no_quorum_policy") or "stop")
            api.on_quorum_change(self._quorum_changed)
        from aisexec.env import Environment

        self.lc = self._lifecycle(m, self.outbox.send, Environment.from_environ().ipc_socket, api.call_later)
        self.health = HealthChecks(api.call_later, self._send_healthcheck, self._local_error)
        self.tracking = Tracking(self)
        log.info("AMF enabled: %s (%d SGs, %d SUs, %d components; digest %s)", m.path, len(m.sgs), len(m.sus),
                 len(m.comps), m.digest)

    def _quorum_changed(self, quorate: bool) -> None:
        """Without quorum no new ACTIVE (and, by no_quorum_policy stop, no ACTIVE at all); with it, assign."""
        self._side_quorate = quorate
        self._quorum_pending = False
        if self.state is not None and not self.excluded:
            log.log(25 if quorate else 30, "AMF: quorum %s; %s", "present" if quorate else "lost",
                    "assigning" if quorate else f"no_quorum_policy {self.state.no_quorum_policy}")
            self._run(self.state.quorum_changed())

    def exec_stopping(self) -> None:
        """Clean stop: switch this node's active work over and terminate its components (at most STOP_TIMEOUT)."""
        st = self.state
        if st is None or self.excluded or not self._members:
            return
        import gevent

        self.outbox.send(Exec.NODE_STOP, b"")
        me = self.api.nodeid
        mine = [dn for dn in st.m.comps if st.host(dn) == me]
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if all(st.rt.comps[dn].presence in (1, 6, 7) and st.rt.comps[dn].phase is None for dn in mine):
                log.info("AMF: this node's components are terminated; stopping")
                return
            gevent.sleep(0.05)
        log.warning("AMF: clean stop not finished within %.0f s; cleaning up what is left", STOP_TIMEOUT)

    def exec_exit(self) -> None:
        """Executive stop: clean up this node's components (they cannot outlive their executive)."""
        if self.lc is not None:
            self.lc.shutdown()

    def lib_init(self, conn: Any) -> None:
        """A connection opened."""
        self.conns[conn.id] = conn

    def lib_exit(self, conn: Any) -> None:
        """A connection closed: a component registered through it has failed (unless it was terminating)."""
        self.conns.pop(conn.id, None)
        self.masks.pop(conn.id, None)
        if self.state is None:
            return
        self.health.stop_connection(conn)
        self.tracking.drop(conn.id)
        me = self.api.nodeid
        for dn, cr in self.state.rt.comps.items():
            if cr.reg_node == me and cr.reg_conn == conn.id and cr.phase != "term" \
                    and self.state.m.comps[dn].category != "proxied":  # those follow their proxy
                self.outbox.send(Exec.ERROR, Error.pack(dn, 0, time.time_ns(), "connection loss"))

    def dump(self) -> dict:
        """The status document (SIGUSR2)."""
        return self.status()

    def status(self) -> dict:
        """The status document of §3.7."""
        if self.state is None:
            return doc.disabled(self.api.nodeid if self.api else 0)
        return doc.build(self.state, self.api.nodeid)

    # -- membership and sync ------------------------------------------------------------------------

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Nodes lost in a transitional configuration fail over at once (every survivor at the same point)."""
        if self.state is None:
            return
        if kind == ConfKind.TRANSITIONAL and left and not self.excluded:
            # With a quorum service, the work of the nodes that left is taken over only once this side's
            # quorum is decided (after the sync round; a side that lost it has given its work up by then):
            # a partition's two sides change configuration at about the same time, independently.
            if getattr(self.api, "quorum_configured", lambda: False)():
                self._quorum_pending = True
            self._members = tuple(members)
            self.timers.membership(self._members)
            self._run(self.state.membership(tuple(members)))

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """A full state exchange when the ring gained members; none when it only shrank."""
        if self.state is None:
            return
        self._members = tuple(members)
        self._sync_records = []
        # the quorum service decides this configuration after AMF's sync (it reports to every member at
        # the same point): until then a lost quorum gives nothing up ("stop" waits for the decision)
        self._quorum_pending = bool(getattr(self.api, "quorum_configured", lambda: False)())
        self._sync_full = bool(set(members) - set(transitional)) or not transitional
        if self._sync_full:
            record = SyncRecord.pack(self.api.nodeid, self.hostname, self.state.m.digest, self._side_quorate,
                                     json.dumps(to_doc(self.state.rt)).encode())
            self.transfer.start(ring_id, [record])
        else:
            self.transfer.abort()

    def sync_process(self) -> bool:
        """Send this node's record."""
        if self.state is None or not self._sync_full:
            return False
        return self.transfer.process()

    def sync_abort(self) -> None:
        """The round was interrupted."""
        self.transfer.abort()
        self._sync_records = []

    def _exec_sync(self, sender: int, payload: bytes) -> None:
        if self.state is None:
            return
        try:
            for rec in self.transfer.receive(sender, payload):
                self._sync_records.append(SyncRecord.decode(rec))
        except MessageError as exc:
            log.warning("dropping malformed AMF sync message from node %d: %s", sender, exc)

    def sync_activate(self) -> None:
        """Merge the records (full round), bind the AMF nodes to the new members, and carry on."""
        if self.state is None:
            return
        st = self.state
        members = self._members
        merged: list[tuple] = []
        if self._sync_full and self._sync_records:
            members, merged = self._merge(self._sync_records)
        self._sync_records = []
        self.transfer.abort()
        self.timers.membership(self._members)
        self._run(st.membership(members))
        self._run(merged)
        if self.excluded:
            return
        me = self.api.nodeid
        if not st.rt.started and st.rt.startup_deadline is None and self._members and min(self._members) == me:
            self.outbox.send(Exec.STARTUP, Startup.pack(time.time_ns()))
        if st.rt.startup_deadline is not None and not st.rt.started:
            self.timers.set("startup", st.rt.startup_deadline)

    def _merge(self, records: list[Any]) -> tuple[tuple[int, ...], list[tuple]]:
        """The merged runtime: the assignments of the side that was quorate (else the started side with the
        lowest node id), each node's own presence."""
        st = self.state
        assert st is not None
        low = min(records, key=lambda r: r.nodeid)
        good = [r for r in records if r.digest == low.digest]
        for r in records:
            if r.digest != low.digest:
                log.error("AMF: node %d has model digest %s, node %d has %s: node %d takes no part until it is "
                          "restarted with the same amf.conf", r.nodeid, r.digest, low.nodeid, low.digest, r.nodeid)
        if st.m.digest != low.digest:
            self.excluded = True  # this node's model differs: it hosts nothing and applies nothing
            st.rt = st.fresh_runtime(st.m)
            return (), []
        self.excluded = False
        docs = {r.nodeid: json.loads(bytes(r.runtime)) for r in good}
        # The base is a side that was quorate before the merge (it kept or took the ACTIVE work while the
        # other side gave it up), then any started side; the lowest node id among equals.
        started = [r.nodeid for r in good if docs[r.nodeid]["started"]]
        quorate = [r.nodeid for r in good if docs[r.nodeid]["started"] and r.quorate]
        base_id = min(quorate) if quorate else min(started) if started else min(docs)
        if quorate and min(started) != base_id:
            log.warning("AMF merge: the assignments of node %d's side win (it was quorate); node %d's side "
                        "was not", base_id, min(started))
        base = docs[base_id]
        rt = from_doc(json.loads(json.dumps(base)))
        rt.next_invocation = max(d["next_invocation"] for d in docs.values())  # never reuse one across sides
        self.answered.clear()
        st.hostnames.update({r.nodeid: r.hostname for r in good})
        host_of: dict[str, int] = {}
        for dn, node in st.m.nodes.items():
            if node.clm_nodeid is not None:
                host_of[dn] = node.clm_nodeid
            else:
                ids = [r.nodeid for r in good if r.hostname == node.clm_name]
                host_of[dn] = ids[0] if len(ids) == 1 else 0
        same_side = {n for n, d in docs.items() if json.dumps(d, sort_keys=True) == json.dumps(base, sort_keys=True)}
        effects: list[tuple] = []
        for dn, c in st.m.comps.items():
            owner = host_of.get(st.m.sus[c.su].node, 0)
            if owner not in docs:
                continue
            mine = docs[owner]["comps"][dn]
            cr = rt.comps[dn]
            for k in ("presence", "phase", "after", "epoch", "attempts", "reg_node", "reg_conn", "reg_pid",
                      "restart_count"):
                setattr(cr, k, mine[k])
            if owner not in same_side:
                cr.queue = []
                for csi in mine["assigns"]:
                    if csi not in cr.assigns and mine["reg_conn"]:
                        op = Op(rt.next_invocation, "remove", csi, 0, 2)
                        rt.next_invocation += 1
                        cr.queue.append(op)
                if cr.queue:
                    effects.append(("send", dn, cr.queue[0]))
        st.rt = rt
        return tuple(n for n in self._members if n in docs or n not in {r.nodeid for r in records}), effects

    def _timer_expired(self, key: Any) -> None:
        if key == "startup":
            self.api.mcast(self.id, Exec.STARTUP_EXPIRED, b"")

    # -- cluster messages -----------------------------------------------------------------------------

    def _make_exec(self, kind: int) -> Callable[[int, bytes], None]:
        decoder = DECODERS[kind]

        def handler(sender: int, payload: bytes) -> None:
            if self.state is None or self.excluded:
                return
            try:
                msg = decoder.decode(payload)
            except MessageError as exc:
                log.warning("dropping malformed AMF message %s from node %d: %s", Exec(kind).name, sender, exc)
                return
            if kind == Exec.STARTUP_EXPIRED:
                self.timers.cancel("startup")
            effects = self.state.apply(sender, kind, msg)
            if kind == Exec.REGISTER and sender == self.api.nodeid and self.lc is not None:
                cr = self.state.rt.comps.get(msg.comp)
                if cr is not None and cr.reg_conn == msg.conn:
                    self.lc.registered(msg.comp)
            if self.state.rt.startup_deadline is None:
                self.timers.cancel("startup")
            elif kind == Exec.STARTUP:
                self.timers.set("startup", self.state.rt.startup_deadline)
            self._run(effects)

        return handler

    def _run(self, effects: list[tuple]) -> None:
        st = self.state
        if st is None:
            return
        me = self.api.nodeid
        changed: list[str] = []
        for e in effects:
            kind = e[0]
            if kind == "answer":
                _k, node, conn_id, request, msg_id, error = e
                if node == me:
                    conn = self.conns.get(conn_id)
                    if conn is not None and not conn.closed:
                        conn.respond(self.id, msg_id, request, error)
                continue
            if kind == "pg":
                if e[1] not in changed:
                    changed.append(e[1])
                continue
            if kind == "adjust":
                self._arm_adjust(*e[1:])
                continue
            if kind == "dep":
                self._arm_owner(("dep", e[1]), e[2], e[3], Exec.DEP_EXPIRED, DepExpired.pack(e[1], e[2]))
                continue
            comp = e[1]
            target = st.host(comp)
            if kind == "send" and st.rt.comps[comp].reg_node:
                target = st.rt.comps[comp].reg_node  # a proxied component's callbacks go to its proxy
            if target != me:
                continue
            assert self.lc is not None
            if kind == "inst":
                self.lc.instantiate(comp, e[2], e[3])
            elif kind == "clean":
                self.lc.cleanup(comp, e[2], e[3])
            elif kind == "term":
                self.lc.terminate_command(comp, e[2])
            elif kind == "inst_local":
                self.lc.instantiate_local(comp, e[2], list(st.m.csis[e[3]].attrs))
            elif kind == "term_wait":
                conn_id = self._term_conn.get(comp, 0)
                self.lc.terminate_wait(comp, e[2], lambda c=conn_id: c not in self.conns)
            elif kind == "send":
                self._deliver(comp, e[2])
            elif kind == "stopped":
                self.health.stop_component(comp)
                self.lc.stop_monitoring(comp)
        for csi in changed:
            self.tracking.changed(csi)

    def _deliver(self, comp: str, op: Op) -> None:
        """Send a csi_set / csi_remove / terminate callback to the component's registering handle."""
        st = self.state
        assert st is not None
        cr = st.rt.comps[comp]
        conn = self.conns.get(cr.reg_conn) if cr.reg_node == self.api.nodeid else None
        c = st.m.comps[comp]
        if conn is None or conn.closed:
            self.outbox.send(Exec.RESPONSE, Response.pack(op.invocation, int(SaAisError.LIBRARY)))
            return
        if op.kind == "set":
            attrs = [wire.AttrWire(n, v) for n, v in st.m.csis[op.csi].attrs] if op.flags & 1 else []
            payload = wire.CsiSetCb.pack(op.invocation, comp, op.ha, op.flags, op.transition, op.rank, attrs,
                                         op.csi, op.other)
            conn.dispatch(self.id, Callback.CSI_SET, payload)
            timeout = c.csi_set_timeout
        elif op.kind == "remove":
            conn.dispatch(self.id, Callback.CSI_REMOVE, wire.CsiRemoveCb.pack(op.invocation, comp, op.flags, op.csi))
            timeout = c.csi_remove_timeout
        elif op.kind in ("proxied_inst", "proxied_clean"):
            cb = Callback.PROXIED_INSTANTIATE if op.kind == "proxied_inst" else Callback.PROXIED_CLEANUP
            conn.dispatch(self.id, cb, wire.CompCb.pack(op.invocation, op.other))
            timeout = st.m.comps[op.other].instantiate_timeout
        else:
            self._term_conn[comp] = conn.id
            conn.dispatch(self.id, Callback.TERMINATE, wire.CompCb.pack(op.invocation, comp))
            timeout = c.terminate_callback_timeout
        inv = op.invocation
        self._callback_timers[inv] = self.api.call_later(timeout / 1000.0, lambda: self._callback_timeout(inv))

    def _callback_timeout(self, inv: int) -> None:
        self._callback_timers.pop(inv, None)
        st = self.state
        if st is None:
            return
        found = st.find_op(inv)
        if found is None:
            return
        comp, op = found
        if op.quiescing_acked:
            return
        log.warning("component %s did not answer callback %d (%s) in time", comp, inv, op.kind)
        self.outbox.send(Exec.RESPONSE, Response.pack(inv, int(SaAisError.TIMEOUT)))

    def _arm_owner(self, name: Any, key: Any, ms: int, kind: int, payload: bytes) -> None:
        """On the owner (lowest member) only: multicast ``payload`` after ``ms`` unless re-armed with a new key."""
        if not self._members or min(self._members) != self.api.nodeid:
            return
        armed = self._adjust_timers.get(name)
        if armed is not None and armed[0] == key:
            return
        if armed is not None:
            armed[1]()
        self._adjust_timers[name] = (key, self.api.call_later(ms / 1000.0, lambda: self.outbox.send(kind, payload)))

    def _arm_adjust(self, sg: str, epoch: int, step: int, prob_ms: int) -> None:
        """The owner (lowest member) times the SG's stability; the ADJUST message decides on every node."""
        if not self._members or min(self._members) != self.api.nodeid:
            return
        key = (epoch, step)
        armed = self._adjust_timers.get(sg)
        if armed is not None and armed[0] == key:
            return
        if armed is not None:
            armed[1]()
        self._adjust_timers[sg] = (key, self.api.call_later(
            prob_ms / 1000.0, lambda: self.outbox.send(Exec.ADJUST, Adjust.pack(sg, epoch, step))))

    def _local_error(self, comp: str, recovery: int, source: str) -> None:
        self.outbox.send(Exec.ERROR, Error.pack(comp, recovery, time.time_ns(), source))

    def _send_healthcheck(self, conn: Any, inv: int, comp: str, key: bytes) -> None:
        if not conn.closed:
            conn.dispatch(self.id, Callback.HEALTHCHECK, wire.HealthcheckCb.pack(inv, comp, key))


__all__ = ["AmfEngine", "config_file", "enabled"]
