"""AMF state, part 2: errors and recovery — the recommended recovery and escalation by the probation
counters (component restart, SU restart, SU failover, node failover).  Mixed into AmfState."""

from __future__ import annotations

from typing import Any

from openais.amf import OperationalState as Oper
from openais.amf import PresenceState as Pres
from plugins.amf.common import (
    _FAILED,
    _MS,
    BUSY_PHASES,
    REC_APP_RESTART,
    REC_CLUSTER_RESET,
    REC_COMP_FAILOVER,
    REC_COMP_RESTART,
    REC_NODE_FAILFAST,
    REC_NODE_FAILOVER,
    REC_NODE_SWITCHOVER,
    REC_NONE,
    log,
)
from plugins.amf.runtime import ACTIVE, QUIESCED, QUIESCING


class RecoveryMixin:
    """Errors of components and their recovery, with escalation (contract §2.8, §2.9)."""

    def _error_msg(self, sender: int, msg: Any) -> None:
        if msg.comp in self.m.comps:
            self._comp_error(msg.comp, msg.recovery or REC_NONE, msg.time_ns, msg.source)

    def _error_clear(self, sender: int, msg: Any) -> None:
        comp = self.m.comps.get(msg.comp)
        if comp is None:
            return
        s = self.rt.sus[comp.su]
        s.comp_restarts, s.comp_restart_start = 0, None
        s.su_restarts, s.su_restart_start = 0, None

    def recovering(self, comp: str) -> bool:
        """A recovery of the component, its SU or its node is under way (new errors are dropped)."""
        cr = self.rt.comps[comp]
        su = self.m.comps[comp].su
        s = self.rt.sus[su]
        node = self.node_of_su(su)
        return (cr.phase in BUSY_PHASES or s.recovery is not None or s.failing
                or node.oper == Oper.DISABLED or cr.presence in (Pres.UNINSTANTIATED, *_FAILED)
                or not node.member)

    def _disturb(self, sg: str) -> None:
        self.rt.disturbed[sg] = self.rt.disturbed.get(sg, 0) + 1

    def _comp_error(self, comp: str, recovery: int, t: int, source: str) -> None:
        if self.recovering(comp):
            log.info("error of %s (%s) dropped: a recovery is under way", comp, source)
            return
        c = self.m.comps[comp]
        self._disturb(self.m.sus[c.su].sg)
        rec = c.recovery if recovery == REC_NONE else recovery
        if rec == REC_NONE:
            rec = REC_COMP_RESTART
        if rec == REC_COMP_RESTART and c.disable_restart:
            rec = REC_COMP_FAILOVER
        log.warning("error of %s (%s): recovery %d", comp, source, rec)
        su = c.su
        node_dn = self.m.sus[su].node
        if rec == REC_COMP_RESTART:
            self._level1(comp, t)
        elif rec == REC_COMP_FAILOVER:
            self._level3(node_dn, t, lambda: self._su_failover(su) if self.m.sus[su].failover
                         else self._comp_failover(comp))
        elif rec == REC_NODE_SWITCHOVER:
            self._level3(node_dn, t, lambda: self._node_switchover(comp))
        elif rec in (REC_NODE_FAILOVER, REC_NODE_FAILFAST):
            self._node_failover(node_dn)
        elif rec == REC_APP_RESTART:
            app = self.m.sgs[self.m.sus[su].sg].app
            for sg in self.m.apps[app].sgs:
                for u in self.m.sgs[sg].sus:
                    self._su_restart(u)
        elif rec == REC_CLUSTER_RESET:
            for u in self.m.sus:
                self._su_restart(u)

    def _probation(self, count: int, start: int | None, prob_ms: int, t: int) -> tuple[int, int | None]:
        if start is None or t - start >= prob_ms * _MS:
            return 0, t
        return count, start

    def _level1(self, comp: str, t: int) -> None:
        c = self.m.comps[comp]
        su = c.su
        s = self.rt.sus[su]
        sg = self.m.sgs[self.m.sus[su].sg]
        s.comp_restarts, s.comp_restart_start = self._probation(s.comp_restarts, s.comp_restart_start,
                                                                sg.comp_restart_prob, t)
        if s.comp_restarts < sg.comp_restart_max:
            s.comp_restarts += 1
            self._comp_restart(comp)
            return
        s.comp_restarts, s.comp_restart_start = 0, None
        self._level2(su, t)

    def _level2(self, su: str, t: int) -> None:
        s = self.rt.sus[su]
        sg = self.m.sgs[self.m.sus[su].sg]
        disabled = any(self.m.comps[c].disable_restart for c in self.m.sus[su].comps)
        s.su_restarts, s.su_restart_start = self._probation(s.su_restarts, s.su_restart_start,
                                                            sg.su_restart_prob, t)
        if s.su_restarts < sg.su_restart_max and not disabled:
            s.su_restarts += 1
            self._su_restart(su)
            return
        s.su_restarts, s.su_restart_start = 0, None
        self._level3(self.m.sus[su].node, t, lambda: self._su_failover(su))

    def _level3(self, node_dn: str, t: int, action: Any) -> None:
        nr = self.rt.nodes[node_dn]
        node = self.m.nodes[node_dn]
        nr.su_failovers, nr.su_failover_start = self._probation(nr.su_failovers, nr.su_failover_start,
                                                                node.a["saAmfNodeSuFailOverProb"], t)
        if nr.su_failovers < node.a["saAmfNodeSuFailoverMax"]:
            nr.su_failovers += 1
            action()
            return
        nr.su_failovers, nr.su_failover_start = 0, None
        self._node_failover(node_dn)

    def _comp_restart(self, comp: str) -> None:
        cr = self.rt.comps[comp]
        for a in cr.assigns.values():
            a.stale = True
        cr.presence = int(Pres.RESTARTING)
        self._cleanup(comp, "restart")

    def _su_restart(self, su: str, graceful: bool = False) -> None:
        """Restart every component of the SU (cleanup; ``graceful``: terminate, for the admin restart)."""
        s = self.rt.sus[su]
        s.restart_count += 1
        s.recovery = "su_restart"
        for c in reversed(self.m.sus[su].comps):
            cr = self.rt.comps[c]
            if cr.presence in (Pres.UNINSTANTIATED, *_FAILED) and cr.phase is None:
                continue
            for a in cr.assigns.values():
                a.stale = True
            if graceful:
                self._terminate(c, "su_restart")
            else:
                cr.presence = int(Pres.RESTARTING)
                cr.queue.clear()
                cr.phase, cr.after = "clean_wait", "su_restart"
        self._cleanup_next_level(su)

    def _node_switchover(self, comp: str) -> None:
        """The erroneous component fails over; every other SU of its node hands its active work elsewhere."""
        su = self.m.comps[comp].su
        for other in self.m.nodes[self.m.sus[su].node].sus:
            if other != su and any(self.su_ha(other, s) in (ACTIVE, QUIESCING) for s in self.m.sgs[
                    self.m.sus[other].sg].sis):
                self.rt.sus[other].evacuate = True
        self._comp_failover(comp)

    def _evacuate_progress(self) -> bool:
        """An SU of a node switchover that holds no active work any more takes assignments again."""
        changed = False
        for su, s in self.rt.sus.items():
            if not s.evacuate or self.sg_busy(self.m.sus[su].sg):
                continue
            if not any(self.su_ha(su, si) in (ACTIVE, QUIESCING, QUIESCED) for si in self.m.sgs[
                    self.m.sus[su].sg].sis):
                s.evacuate = False
                changed = True
        return changed

    def _comp_failover(self, comp: str) -> None:
        su = self.m.comps[comp].su
        self.rt.sus[su].failing = True
        self._cleanup(comp, "failover")

    def _su_failover(self, su: str) -> None:
        s = self.rt.sus[su]
        s.recovery = "su_failover"
        for c in reversed(self.m.sus[su].comps):
            cr = self.rt.comps[c]
            if cr.presence in (Pres.UNINSTANTIATED, *_FAILED) and cr.phase is None:
                self._drop_assignments(c, failed=True)
                continue
            cr.queue.clear()
            cr.phase, cr.after = "clean_wait", "su_failover"
        self._recovery_progress(su)

    def _node_failover(self, node_dn: str) -> None:
        log.warning("AMF node %s fails over", node_dn)
        self.rt.nodes[node_dn].oper = int(Oper.DISABLED)
        for su in self.m.nodes[node_dn].sus:
            s = self.rt.sus[su]
            s.recovery = "node_failover"
            s.failing = False
            for c in self.m.sus[su].comps:
                cr = self.rt.comps[c]
                if cr.presence in (Pres.UNINSTANTIATED, *_FAILED) and cr.phase is None:
                    self._drop_assignments(c, failed=True)
                    continue
                self._cleanup(c, "node_failover")
            self._recovery_progress(su)
