"""AMF's replicated state: a pure, deterministic object fed by delivered messages.

Every executive holds one :class:`AmfState` built from the same model and
applies the same delivered messages (and membership changes) in the same
order, so every decision — who is instantiated, who is ACTIVE, when a
recovery escalates — is the same on every node.  :meth:`AmfState.apply`
returns *effects*: what the node hosting a component must do (run a CLC-CLI
command, send a callback), answers to library requests, protection-group
changes.  No IPC, no clock reads, no Totem here: times come in messages.

Effects (tuples):
    ("inst", comp, epoch, delay_ms)      run INSTANTIATE on the comp's node
    ("clean", comp, epoch, pid)          run CLEANUP / kill on the comp's node (pid: the registered process)
    ("term_wait", comp, epoch)           the comp answered component_terminate: wait for its exit, kill its group
    ("term", comp, epoch)                terminate a local component (TERMINATE command)
    ("send", comp, Op)                   deliver a callback to the comp's registered handle
    ("answer", node, conn, request, msg_id, error)   answer a library request
    ("pg", csi)                          the protection group of ``csi`` changed
    ("adjust", sg, epoch, step, prob_ms) the SG is stable but not where its ranks want it: after prob_ms of
                                         no disturbance the owner node multicasts ADJUST(sg, epoch, step)
    ("dep", si, window, tolerance_ms)    a sponsor of ``si`` is down: after tolerance_ms the owner node multicasts
                                         DEP_EXPIRED(si, window)
    ("stopped", comp)                    the comp was cleaned up/terminated: stop its health checks and monitors
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openais.amf import AdminState as Adm
from openais.amf import OperationalState as Oper
from openais.amf import PresenceState as Pres
from openais.amf import ReadinessState as Ready
from plugins.amf.admin import AdminMixin
from plugins.amf.assign import AssignMixin
from plugins.amf.common import _FAILED, _MS, BUSY_PHASES, log
from plugins.amf.lifecycle import LifecycleMixin
from plugins.amf.messages import Exec
from plugins.amf.model import Model
from plugins.amf.recovery import RecoveryMixin
from plugins.amf.runtime import (
    ACTIVE,
    STANDBY,
    Assign,
    CompRt,
    NodeRt,
    Runtime,
    SiRt,
    SuRt,
)


class AmfState(LifecycleMixin, RecoveryMixin, AssignMixin, AdminMixin):
    """The replicated AMF runtime over one model; see the module docstring for effects."""

    def __init__(self, model: Model) -> None:
        self.m = model
        self.rt = self.fresh_runtime(model)
        self.effects: list[tuple] = []
        self.hostnames: dict[int, str] = {}
        #: ``fn() -> bool``: may this partition act?  The engine sets the service layer's quorum answer
        #: (the same on every member of a configuration); True without a quorum service.
        self.quorate: Callable[[], bool] = lambda: True
        #: ``amf { no_quorum_policy }``: "stop" removes ACTIVE work without quorum, "freeze" keeps what runs
        self.no_quorum_policy = "stop"
        #: ``fn() -> bool``: True while a new configuration's quorum is still being decided (its sync round):
        #: no new ACTIVE then, but nothing given up either (every member is undecided at the same points)
        self.quorum_undecided: Callable[[], bool] = lambda: False

    @staticmethod
    def fresh_runtime(model: Model) -> Runtime:
        """The runtime of a cluster that has not started: everything UNINSTANTIATED and UNLOCKED."""
        rt = Runtime()
        rt.comps = {dn: CompRt() for dn in model.comps}
        rt.sus = {dn: SuRt() for dn in model.sus}
        rt.nodes = {dn: NodeRt() for dn in model.nodes}
        rt.sgs_admin = {dn: int(Adm.UNLOCKED) for dn in model.sgs}
        rt.sis = {dn: SiRt() for dn in model.sis}
        return rt

    # -- derived states ----------------------------------------------------------------------

    def node_of_su(self, su: str) -> NodeRt:
        """Runtime of the AMF node hosting ``su``."""
        return self.rt.nodes[self.m.sus[su].node]

    def host(self, comp: str) -> int:
        """CLM node id hosting ``comp`` (0 when its AMF node is bound to no member)."""
        node = self.node_of_su(self.m.comps[comp].su)
        return node.nodeid if node.member else 0

    def su_presence(self, su: str) -> int:
        """An SU's presence, derived from its components'."""
        comps = self.m.sus[su].comps
        pre = [c for c in comps if self.m.comps[c].category != "local"] or comps
        ps = [self.rt.comps[c].presence for c in pre]
        for p in (Pres.TERMINATION_FAILED, Pres.INSTANTIATION_FAILED, Pres.RESTARTING, Pres.TERMINATING):
            if int(p) in ps:
                return int(p)
        if all(p == Pres.INSTANTIATED for p in ps):
            return int(Pres.INSTANTIATED)
        if all(p == Pres.UNINSTANTIATED for p in ps):
            return int(Pres.UNINSTANTIATED)
        return int(Pres.INSTANTIATING)

    def su_readiness(self, su: str) -> int:
        """IN_SERVICE, STOPPING or OUT_OF_SERVICE (contract §2.6)."""
        s = self.rt.sus[su]
        node = self.node_of_su(su)
        if (s.oper != Oper.ENABLED or node.oper != Oper.ENABLED or not node.member or s.failing or s.evacuate
                or s.recovery is not None):
            return int(Ready.OUT_OF_SERVICE)
        for c in self.m.sus[su].comps:
            cr = self.rt.comps[c]
            if self.m.comps[c].category == "local":  # non-pre-instantiable: up only while assigned
                if cr.oper != Oper.ENABLED or cr.presence in _FAILED:
                    return int(Ready.OUT_OF_SERVICE)
                continue
            if cr.presence not in (Pres.INSTANTIATED, Pres.RESTARTING) or cr.oper != Oper.ENABLED:
                return int(Ready.OUT_OF_SERVICE)
        admins = (s.admin, self.rt.sgs_admin[self.m.sus[su].sg], node.admin)
        if any(a in (Adm.LOCKED, Adm.LOCKED_INSTANTIATION) for a in admins):
            return int(Ready.OUT_OF_SERVICE)
        if Adm.SHUTTING_DOWN in admins:
            return int(Ready.STOPPING)
        if not self.partition_may_assign() and self.no_quorum_policy == "stop" and not self.quorum_undecided():
            return int(Ready.OUT_OF_SERVICE)  # without quorum: give the work up so the quorate side takes it
        return int(Ready.IN_SERVICE)

    def comp_readiness(self, comp: str) -> int:
        """A component's readiness: its SU's, unless the component itself is not up."""
        cr = self.rt.comps[comp]
        if cr.presence not in (Pres.INSTANTIATED, Pres.RESTARTING) or cr.oper != Oper.ENABLED:
            return int(Ready.OUT_OF_SERVICE)
        return self.su_readiness(self.m.comps[comp].su)

    def partition_may_assign(self) -> bool:
        """May this partition make ACTIVE assignments?  False without quorum, and while it is undecided."""
        return self.quorate() and not self.quorum_undecided()

    def quorum_changed(self) -> list[tuple]:
        """Quorum was lost or regained (every member at the same point of the order): plan every SG again."""
        self.effects = []
        self._settle()
        return self._take()

    def _up(self, su: str) -> bool:
        """Every component instantiated and registered (SA-aware): may take new work."""
        for c in self.m.sus[su].comps:
            cr = self.rt.comps[c]
            if self.m.comps[c].category == "local":
                if cr.phase is not None:
                    return False
                continue
            if cr.presence != Pres.INSTANTIATED or cr.phase is not None:
                return False
            if self.m.comps[c].category in ("sa_aware", "proxy", "proxied") and not cr.registered:
                return False
        return True

    def keep(self, su: str) -> bool:
        """The SU may keep the work it holds."""
        return self.su_readiness(su) == Ready.IN_SERVICE

    def eligible(self, su: str) -> bool:
        """The SU may take new work."""
        return self.keep(su) and self._up(su)

    def su_ha(self, su: str, si: str) -> int | None:
        """The SU's HA state for ``si``: that of its first assigned CSI of the SI."""
        for csi in self.m.sis[si].csis:
            for c in self.m.sus[su].comps:
                a = self.rt.comps[c].assigns.get(csi)
                if a is not None:
                    return a.ha
        return None

    def csi_holders(self, csi: str) -> list[tuple[str, Assign]]:
        """(component, assignment) of every component holding ``csi``, in DN order."""
        si = self.m.csis[csi].si
        sg = self.m.sgs[self.m.sis[si].sg]
        out = []
        for su in sg.sus:
            for c in self.m.sus[su].comps:
                a = self.rt.comps[c].assigns.get(csi)
                if a is not None:
                    out.append((c, a))
        return sorted(out, key=lambda x: x[0].encode())

    def si_assignment_state(self, si: str) -> int:
        """UNASSIGNED, FULLY_ASSIGNED or PARTIALLY_ASSIGNED."""
        sg = self.m.sgs[self.m.sis[si].sg]
        has = [self.su_ha(u, si) for u in sg.sus]
        active = sum(1 for h in has if h == ACTIVE)
        standby = sum(1 for h in has if h == STANDBY)
        if not active:
            return 1
        want_a, want_s = 1, 0
        if sg.model in ("2n", "nplusm"):
            want_s = 1
        elif sg.model == "nway":
            want_s = self.m.sis[si].pref_standby
        elif sg.model == "nwayactive":
            want_a = self.m.sis[si].pref_active
        return 2 if active >= want_a and standby >= want_s else 3

    def si_active(self, si: str) -> bool:
        """True when some SU holds ``si`` ACTIVE."""
        sg = self.m.sgs[self.m.sis[si].sg]
        return any(self.su_ha(u, si) == ACTIVE for u in sg.sus)

    def sg_busy(self, sg: str) -> bool:
        """A callback, cleanup, termination or give-back is under way in the SG (no new plan step)."""
        for su in self.m.sgs[sg].sus:
            for c in self.m.sus[su].comps:
                cr = self.rt.comps[c]
                if cr.queue or cr.phase in BUSY_PHASES or any(a.stale for a in cr.assigns.values()):
                    return True
                if cr.phase == "inst" and self.m.comps[c].category == "local":
                    return True
        return False

    # -- input: membership -----------------------------------------------------------------------

    def membership(self, members: tuple[int, ...], hostnames: dict[int, str] | None = None) -> list[tuple]:
        """A new membership: bind AMF nodes to members; nodes that left lose their SUs (node failover)."""
        self.effects = []
        if hostnames:
            self.hostnames.update(hostnames)
        for sg in self.m.sgs:
            self._disturb(sg)
        mem = set(members)
        names: dict[str, list[int]] = {}
        for n in sorted(mem):
            h = self.hostnames.get(n)
            if h:
                names.setdefault(h, []).append(n)
        for dn, node in self.m.nodes.items():
            nr = self.rt.nodes[dn]
            if node.clm_nodeid is not None:
                bound = node.clm_nodeid if node.clm_nodeid in mem else 0
            else:
                ids = names.get(node.clm_name or "", [])
                bound = ids[0] if len(ids) == 1 else 0
            if nr.member and (not bound or bound != nr.nodeid):
                self._node_lost(dn)
            if bound:
                nr.nodeid, nr.member = bound, True
            else:
                nr.member = False
        self.rt.admin = [a for a in self.rt.admin if a.node in mem]
        self._settle()
        return self._take()

    def _node_lost(self, node_dn: str) -> None:
        nr = self.rt.nodes[node_dn]
        log.warning("AMF node %s (node %d) left: its service units fail over", node_dn, nr.nodeid)
        nr.member = False
        if nr.stopping:  # a clean stop's admin state is not kept for the next start
            nr.stopping, nr.admin = False, int(Adm.UNLOCKED)
        for su in self.m.nodes[node_dn].sus:
            s = self.rt.sus[su]
            s.failing, s.recovery, s.evacuate = False, None, False
            for c in self.m.sus[su].comps:
                self._drop_assignments(c, failed=True)
                cr = self.rt.comps[c]
                cr.presence = int(Pres.UNINSTANTIATED)
                cr.phase = cr.after = None
                cr.reg_node = cr.reg_conn = cr.reg_pid = 0
                cr.queue.clear()
                cr.epoch += 1

    # -- input: delivered messages ------------------------------------------------------------

    def apply(self, sender: int, kind: int, msg: Any) -> list[tuple]:
        """Apply one delivered cluster message; return the effects."""
        self.effects = []
        handler = {
            Exec.STARTUP: self._startup, Exec.STARTUP_EXPIRED: self._startup_expired,
            Exec.REGISTER: self._register, Exec.UNREGISTER: self._unregister,
            Exec.INST_FAILED: self._inst_failed, Exec.LC_DONE: self._lc_done, Exec.RESPONSE: self._response,
            Exec.QUIESCING_COMPLETE: self._quiescing_complete, Exec.ERROR: self._error_msg,
            Exec.ERROR_CLEAR: self._error_clear, Exec.ADMIN: self._admin, Exec.NODE_STOP: self._node_stop,
            Exec.ADJUST: self._adjust, Exec.DEP_EXPIRED: self._dep_expired,
        }[kind]
        handler(sender, msg)
        self._settle()
        return self._take()

    def _take(self) -> list[tuple]:
        out, self.effects = self.effects, []
        return out

    def _answer(self, node: int, conn: int, request: int, msg_id: int, error: int) -> None:
        self.effects.append(("answer", node, conn, request, msg_id, error))

    def _startup(self, sender: int, msg: Any) -> None:
        if self.rt.startup_deadline is None and not self.rt.started:
            self.rt.startup_deadline = msg.time_ns + self.m.startup_timeout * _MS

    def _startup_expired(self, sender: int, msg: Any) -> None:
        if not self.rt.started:
            log.info("AMF startup timeout passed: assignment starts")
            self.rt.started = True
        self.rt.startup_deadline = None

    # -- settling: instantiation and assignment ------------------------------------------------------

    def _settle(self) -> None:
        for _ in range(64):
            changed = self._dep_check()  # first: a dependent SI is tolerated before any plan looks at it
            changed |= self._instantiations()
            changed |= self._check_started()
            if self.rt.started:
                for sg in self.m.sgs:
                    changed |= self._plan(sg)
            changed |= self._admin_progress()
            changed |= self._stopping_progress()
            changed |= self._proxy_check()
            changed |= self._evacuate_progress()
            if not changed:
                self._adjust_requests()
                return

    def _check_started(self) -> bool:
        if self.rt.started:
            return False
        if not all(n.member for n in self.rt.nodes.values()):
            return False
        if any(cr.phase == "inst" for cr in self.rt.comps.values()):
            return False
        if not any(n.member for n in self.rt.nodes.values()):
            return False
        log.info("every AMF node is a member and instantiation finished: assignment starts")
        self.rt.started = True
        self.rt.startup_deadline = None
        return True

    # -- queries ------------------------------------------------------------------------------------

    def ha_state(self, comp: str, csi: str) -> int | None:
        """The acknowledged HA state of ``comp`` for ``csi`` (None: no assignment)."""
        cr = self.rt.comps.get(comp)
        a = cr.assigns.get(csi) if cr else None
        return None if a is None else a.ha

    def pg_members(self, csi: str) -> list[tuple[str, int, int]]:
        """(component, HA state, rank) of every member of the CSI's protection group, in DN order."""
        return [(c, a.ha, a.rank if a.ha == STANDBY else 0) for c, a in self.csi_holders(csi)]
