"""AMF state, part 4: administration — admin operations, clean node stop and auto-adjust.
Mixed into :class:`plugins.amf.state.AmfState`."""

from __future__ import annotations

from typing import Any

from openais.amf import AdminOperation as AOp
from openais.amf import AdminState as Adm
from openais.amf import OperationalState as Oper
from openais.amf import PresenceState as Pres
from openais.amf import Request
from openais.errors import SaAisError
from plugins.amf import planner
from plugins.amf.common import (
    _FAILED,
    _OK,
    log,
)
from plugins.amf.runtime import ACTIVE, STANDBY, AdminPending


class AdminMixin:
    """Administrative operations (contract §2.11), clean node stop and auto-adjust."""

    def _preferred_swap(self, sg_dn: str) -> str | None:
        """An SI whose from-scratch active SU holds it STANDBY now (a swap moves it back), or None."""
        sg = self.m.sgs[sg_dn]
        if sg.model not in ("2n", "nplusm", "nway") or self.sg_busy(sg_dn) or not self.rt.started:
            return None
        if any(self.rt.sus[u].failing or self.rt.sus[u].recovery for u in sg.sus):
            return None
        if any(set(a.sgs) & {sg_dn} for a in self.rt.admin):
            return None
        scratch = planner.desired(self.m, sg, planner.View({}, {}, self.eligible, self.eligible,
                                                           self._si_assignable))
        for (su, si), (ha, _rank) in sorted(scratch.items(), key=lambda x: sg.sis.index(x[0][1])):
            if ha == ACTIVE and self.su_ha(su, si) == STANDBY and self.eligible(su):
                if any(self.su_ha(u, si) == ACTIVE for u in sg.sus if u != su):
                    return si
        return None

    def _adjust_requests(self) -> None:
        for dn, sg in self.m.sgs.items():
            if sg.auto_adjust and self._preferred_swap(dn) is not None:
                self.effects.append(("adjust", dn, self.rt.disturbed.get(dn, 0), self.rt.adjust_steps.get(dn, 0),
                                     sg.a["saAmfSGAutoAdjustProb"]))

    def _adjust(self, sender: int, msg: Any) -> None:
        if msg.sg not in self.m.sgs or msg.epoch != self.rt.disturbed.get(msg.sg, 0) \
                or msg.step != self.rt.adjust_steps.get(msg.sg, 0):
            return
        si = self._preferred_swap(msg.sg)
        if si is None:
            return
        log.info("auto-adjust of %s: %s goes back to its preferred SU", msg.sg, si)
        self.rt.adjust_steps[msg.sg] = msg.step + 1
        self.rt.sis[si].swap = True

    def _node_stop(self, sender: int, msg: Any) -> None:
        """The sender's executive stops cleanly: what lock and then lock-instantiation of its node do."""
        for dn, nr in self.rt.nodes.items():
            if nr.member and nr.nodeid == sender and not nr.stopping:
                log.info("AMF node %s stops: switching its work over", dn)
                nr.stopping = True
                nr.admin = int(Adm.LOCKED)

    def _stopping_progress(self) -> bool:
        changed = False
        for dn, nr in self.rt.nodes.items():
            if not nr.stopping or nr.admin == Adm.LOCKED_INSTANTIATION:
                continue
            sus = self.m.nodes[dn].sus
            if self._holds(dn) or any(self.sg_busy(self.m.sus[u].sg) for u in sus):
                continue
            nr.admin = int(Adm.LOCKED_INSTANTIATION)
            for u in sus:
                for c in reversed(self.m.sus[u].comps):
                    self._terminate(c)
            changed = True
        return changed

    def _standby_rank(self, su: str, si: str) -> int:
        for c in self.m.sus[su].comps:
            a = self.rt.comps[c].assigns.get(self.m.sis[si].csis[0])
            if a is not None:
                return a.rank
        return 1 << 30

    def _entity_sus(self, dn: str) -> list[str]:
        if dn in self.m.sus:
            return [dn]
        if dn in self.m.sgs:
            return list(self.m.sgs[dn].sus)
        if dn in self.m.nodes:
            return list(self.m.nodes[dn].sus)
        return []

    def _entity_sgs(self, dn: str) -> list[str]:
        if dn in self.m.sis:
            return [self.m.sis[dn].sg]
        return sorted({self.m.sus[u].sg for u in self._entity_sus(dn)})

    def _admin_get(self, dn: str) -> int:
        if dn in self.m.sus:
            return self.rt.sus[dn].admin
        if dn in self.m.sgs:
            return self.rt.sgs_admin[dn]
        if dn in self.m.nodes:
            return self.rt.nodes[dn].admin
        return self.rt.sis[dn].admin

    def _admin_set(self, dn: str, value: int) -> None:
        if dn in self.m.sus:
            self.rt.sus[dn].admin = value
        elif dn in self.m.sgs:
            self.rt.sgs_admin[dn] = value
        elif dn in self.m.nodes:
            self.rt.nodes[dn].admin = value
        else:
            self.rt.sis[dn].admin = value

    def _admin(self, sender: int, msg: Any) -> None:
        error = self._admin_start(msg.target, msg.op, msg.time_ns)
        if error != _OK:
            self._answer(sender, msg.conn, msg.request, Request.ADMIN, error)
            return
        expect = None
        if msg.op == AOp.SI_SWAP:
            sg = self.m.sgs[self.m.sis[msg.target].sg]
            expect = min((u for u in sg.sus if self.su_ha(u, msg.target) == STANDBY),
                         key=lambda u: self._standby_rank(u, msg.target), default=None)
        self.rt.admin.append(AdminPending(sender, msg.conn, msg.request, msg.op, msg.target,
                                          self._entity_sgs(msg.target), expect))
        for sg in self._entity_sgs(msg.target):
            self._disturb(sg)

    def _admin_start(self, dn: str, op: int, t: int) -> int:
        bad = int(SaAisError.BAD_OPERATION)
        kind = ("su" if dn in self.m.sus else "sg" if dn in self.m.sgs else "node" if dn in self.m.nodes
                else "si" if dn in self.m.sis else None)
        if kind is None:
            return int(SaAisError.NOT_EXIST)
        allowed = {AOp.UNLOCK: "su sg node si", AOp.LOCK: "su sg node si", AOp.LOCK_INSTANTIATION: "su sg node",
                   AOp.UNLOCK_INSTANTIATION: "su sg node", AOp.SHUTDOWN: "su sg node si", AOp.RESTART: "su node",
                   AOp.SI_SWAP: "si", AOp.REPAIRED: "su node"}
        if op not in allowed or kind not in allowed[AOp(op)].split():
            return bad
        sgs = self._entity_sgs(dn)
        recovering = any(self.rt.sus[u].failing or self.rt.sus[u].recovery is not None
                         for g in sgs for u in self.m.sgs[g].sus)
        if recovering or any(self.sg_busy(g) for g in sgs) or any(set(a.sgs) & set(sgs) for a in self.rt.admin):
            return int(SaAisError.TRY_AGAIN)
        state = self._admin_get(dn) if op != AOp.REPAIRED else None
        if op == AOp.UNLOCK:
            if state not in (Adm.LOCKED, Adm.SHUTTING_DOWN):
                return bad
            self._admin_set(dn, int(Adm.UNLOCKED))
        elif op == AOp.LOCK:
            if state not in (Adm.UNLOCKED, Adm.SHUTTING_DOWN):
                return bad
            self._admin_set(dn, int(Adm.LOCKED))
        elif op == AOp.SHUTDOWN:
            if state != Adm.UNLOCKED:
                return bad
            self._admin_set(dn, int(Adm.SHUTTING_DOWN))
        elif op == AOp.LOCK_INSTANTIATION:
            if state != Adm.LOCKED:
                return bad
            self._admin_set(dn, int(Adm.LOCKED_INSTANTIATION))
            for su in self._entity_sus(dn):
                for c in reversed(self.m.sus[su].comps):
                    self._terminate(c)
        elif op == AOp.UNLOCK_INSTANTIATION:
            if state != Adm.LOCKED_INSTANTIATION:
                return bad
            self._admin_set(dn, int(Adm.LOCKED))
        elif op == AOp.RESTART:
            if state != Adm.UNLOCKED:
                return bad
            sus = self._entity_sus(dn)
            if any(self.m.comps[c].disable_restart for u in sus for c in self.m.sus[u].comps):
                return bad
            if any(self.su_presence(u) != Pres.INSTANTIATED for u in sus):
                return bad
            for u in sus:
                self._su_restart(u, graceful=True)
        elif op == AOp.SI_SWAP:
            sg = self.m.sgs[self.m.sis[dn].sg]
            if sg.model not in ("2n", "nplusm", "nway"):
                return bad
            sg_sus = sg.sus
            if not any(self.su_ha(u, dn) == ACTIVE for u in sg_sus) or not any(
                    self.su_ha(u, dn) == STANDBY and self.eligible(u) for u in sg_sus):
                return bad
            self.rt.sis[dn].swap = True
        elif op == AOp.REPAIRED:
            if dn in self.m.nodes:
                nr = self.rt.nodes[dn]
                sus = self.m.nodes[dn].sus
                if nr.oper != Oper.DISABLED and all(self.rt.sus[u].oper != Oper.DISABLED for u in sus):
                    return bad
                nr.oper, nr.su_failovers, nr.su_failover_start = int(Oper.ENABLED), 0, None
            else:
                sus = [dn]
                if self.rt.sus[dn].oper != Oper.DISABLED:
                    return bad
            for u in sus:
                self._repair_su(u)
        return _OK

    def _repair_su(self, su: str) -> None:
        s = self.rt.sus[su]
        s.oper, s.failing, s.recovery = int(Oper.ENABLED), False, None
        s.comp_restarts = s.su_restarts = 0
        s.comp_restart_start = s.su_restart_start = None
        for c in self.m.sus[su].comps:
            cr = self.rt.comps[c]
            cr.oper = int(Oper.ENABLED)
            if cr.presence in _FAILED:
                cr.presence, cr.phase, cr.attempts = int(Pres.UNINSTANTIATED), None, 0

    def _holds(self, dn: str) -> bool:
        if dn in self.m.sis:
            return any(self.rt.comps[c].assigns.get(csi) for csi in self.m.sis[dn].csis for c in self.rt.comps)
        return any(self.rt.comps[c].assigns for u in self._entity_sus(dn) for c in self.m.sus[u].comps)

    def _admin_done(self, a: AdminPending) -> int | None:
        """OK when the operation completed, None while under way, an error when it failed."""
        if any(self.sg_busy(g) for g in a.sgs):
            return None
        op, dn = a.op, a.target
        sus = self._entity_sus(dn)
        if op in (AOp.LOCK, AOp.SHUTDOWN):
            if self._holds(dn):
                return None
            if op == AOp.SHUTDOWN and self._admin_get(dn) == Adm.SHUTTING_DOWN:
                self._admin_set(dn, int(Adm.LOCKED))
            return _OK
        if op == AOp.LOCK_INSTANTIATION:
            ok = all(self.rt.comps[c].presence in (Pres.UNINSTANTIATED, *_FAILED) and self.rt.comps[c].phase is None
                     for u in sus for c in self.m.sus[u].comps)
            return _OK if ok else None
        if op in (AOp.UNLOCK_INSTANTIATION, AOp.REPAIRED, AOp.RESTART, AOp.UNLOCK):
            if any(self.rt.comps[c].phase is not None for u in sus for c in self.m.sus[u].comps):
                return None
            return _OK
        if op == AOp.SI_SWAP:
            if self.rt.sis[dn].swap:
                return None
            if a.expect is not None and self.su_ha(a.expect, dn) != ACTIVE:
                log.warning("si-swap of %s failed: %s did not take over", dn, a.expect)
                return int(SaAisError.FAILED_OPERATION)
            return _OK
        return _OK

    def _admin_progress(self) -> bool:
        changed = False
        for a in list(self.rt.admin):
            # an SU whose admin state SHUTTING_DOWN holds nothing more: LOCKED
            result = self._admin_done(a)
            if result is None:
                continue
            self.rt.admin.remove(a)
            self._answer(a.node, a.conn, a.request, Request.ADMIN, result)
            changed = True
        return changed
