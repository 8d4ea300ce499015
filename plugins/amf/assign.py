"""AMF state, part 3: assignment — callbacks and their answers, and the per-SG plan that moves
assignments in acknowledged waves toward what the redundancy model wants.  Mixed into AmfState."""

from __future__ import annotations

from typing import Any

from openais.amf import AdminState as Adm
from openais.amf import PresenceState as Pres
from openais.amf import ReadinessState as Ready
from openais.errors import SaAisError
from plugins.amf import planner
from plugins.amf.common import (
    _OK,
    CSI_ADD_ONE,
    CSI_TARGET_ALL,
    CSI_TARGET_ONE,
    NEW_ASSIGN,
    REC_NONE,
    STILL_ACTIVE,
    T_QUIESCED,
    _Done,
    log,
)
from plugins.amf.runtime import ACTIVE, QUIESCED, QUIESCING, STANDBY, Assign, Op


class AssignMixin:
    """CSI callbacks, their answers and the assignment waves of each SG."""

    def _inv(self) -> int:
        inv = self.rt.next_invocation
        self.rt.next_invocation += 1
        return inv

    def _enqueue(self, comp: str, op: Op) -> None:
        collecting = getattr(self, "_collecting", None)
        if collecting is not None and op.kind == "set":
            collecting.append((comp, op))
            return
        cr = self.rt.comps[comp]
        cr.queue.append(op)
        if len(cr.queue) == 1:
            self.effects.append(("send", comp, op))

    def find_op(self, invocation: int) -> tuple[str, Op] | None:
        """The component whose in-flight callback is ``invocation``."""
        for dn, cr in self.rt.comps.items():
            if cr.queue and cr.queue[0].invocation == invocation:
                return dn, cr.queue[0]
        return None

    def _answerer(self, comp: str) -> int:
        """The node whose answers count for ``comp``'s callbacks (a proxied component's: its proxy's)."""
        cr = self.rt.comps[comp]
        return cr.reg_node or self.host(comp)

    def _pop(self, comp: str) -> None:
        cr = self.rt.comps[comp]
        cr.queue.pop(0)
        if cr.queue:
            self.effects.append(("send", comp, cr.queue[0]))

    def _response(self, sender: int, msg: Any) -> None:
        found = self.find_op(msg.invocation)
        if found is None:
            return
        comp, op = found
        if self._answerer(comp) != sender or op.quiescing_acked:
            return
        cr = self.rt.comps[comp]
        if op.kind in ("proxied_inst", "proxied_clean"):
            self._pop(comp)
            self._proxied_answer(op, msg.error == _OK)
            return
        if msg.error != _OK:
            log.warning("component %s answered %s callback %d with %s", comp, op.kind, op.invocation,
                        SaAisError(msg.error).name if msg.error in SaAisError._value2member_map_ else msg.error)
            if op.kind == "terminate":
                self._cleanup(comp, cr.after or "none")
                return
            self._pop(comp)
            self._comp_error(comp, REC_NONE, 0, "callback")
            return
        if op.kind == "terminate":
            cr.queue.clear()
            cr.epoch += 1
            cr.phase = "term"
            if self.m.comps[comp].category == "proxied":  # its proxy keeps running: done at once
                cr.reg_node = cr.reg_conn = cr.reg_pid = 0
                self._lc_done(0, _Done(comp, cr.epoch, "term", 1))
            else:
                self.effects.append(("term_wait", comp, cr.epoch))
            return
        if op.kind == "remove":
            cr.assigns.pop(op.csi, None)
            self.effects.append(("pg", op.csi))
            self._pop(comp)
            return
        csis = [op.csi] if op.csi is not None else sorted(cr.assigns)  # CSI_TARGET_ALL: every CSI it holds
        if op.ha == QUIESCING:
            op.quiescing_acked = True
            for csi in csis:
                cr.assigns[csi] = Assign(QUIESCING)
                self.effects.append(("pg", csi))
            return
        for csi in csis:
            si = self.m.csis[csi].si
            cr.assigns[csi] = Assign(op.ha, op.rank, op.other if op.ha == STANDBY else None)
            if op.ha == ACTIVE:
                self.rt.sis[si].handover.pop(csi, None)
                if self.rt.sis[si].swap:
                    self.rt.sis[si].swap = False
            elif op.ha == QUIESCED:
                self.rt.sis[si].handover[csi] = [T_QUIESCED, comp]
            self.effects.append(("pg", csi))
        self._pop(comp)

    def _quiescing_complete(self, sender: int, msg: Any) -> None:
        found = self.find_op(msg.invocation)
        if found is None:
            return
        comp, op = found
        if not op.quiescing_acked or self._answerer(comp) != sender:
            return
        if msg.error != _OK:
            self._pop(comp)
            self._comp_error(comp, REC_NONE, 0, "quiescing")
            return
        cr = self.rt.comps[comp]
        for csi in [op.csi] if op.csi is not None else sorted(cr.assigns):
            cr.assigns[csi] = Assign(QUIESCED)
            self.rt.sis[self.m.csis[csi].si].handover[csi] = [T_QUIESCED, comp]
            self.effects.append(("pg", csi))
        self._pop(comp)

    def _si_assignable(self, si: str) -> bool:
        sr = self.rt.sis[si]
        if sr.admin != Adm.UNLOCKED:
            return False
        if all(self.si_active(d) for d in self.m.sis[si].depends):
            return True
        return si in self.rt.dep_wait and not self.rt.dep_expired.get(si)  # within the tolerance time

    def _dep_check(self) -> bool:
        """Open a tolerance window when a sponsor of an active SI loses its active assignment; close it when back."""
        changed = False
        for dn, si in self.m.sis.items():
            if not si.depends:
                continue
            if all(self.si_active(d) for d in si.depends):
                if dn in self.rt.dep_wait or dn in self.rt.dep_expired:
                    self.rt.dep_wait.pop(dn, None)
                    self.rt.dep_expired.pop(dn, None)
                    changed = True
                continue
            if dn not in self.rt.dep_wait and not self.rt.dep_expired.get(dn) and self.si_active(dn):
                self.rt.dep_windows += 1
                self.rt.dep_wait[dn] = self.rt.dep_windows
                changed = True
            if dn in self.rt.dep_wait and not self.rt.dep_expired.get(dn):
                tolerance = min(t for d, t in si.depends.items() if not self.si_active(d))
                self.effects.append(("dep", dn, self.rt.dep_wait[dn], tolerance))
        return changed

    def _dep_expired(self, sender: int, msg: Any) -> None:
        if self.rt.dep_wait.get(msg.si) != msg.epoch or self.rt.dep_expired.get(msg.si):
            return
        if all(self.si_active(d) for d in self.m.sis[msg.si].depends):
            return
        log.warning("%s: a sponsor SI stayed unassigned beyond the tolerance time: its assignments are removed",
                    msg.si)
        self.rt.dep_expired[msg.si] = True

    def _plan(self, sg_dn: str) -> bool:
        sg = self.m.sgs[sg_dn]
        if self.sg_busy(sg_dn):
            return self._give_back(sg_dn)
        cur: dict[tuple[str, str], int] = {}
        ranks: dict[tuple[str, str], int] = {}
        for su in sg.sus:
            for si in sg.sis:
                h = self.su_ha(su, si)
                if h is not None:
                    cur[(su, si)] = h
                    for c in self.m.sus[su].comps:
                        a = self.rt.comps[c].assigns.get(self.m.sis[si].csis[0])
                        if a is not None:
                            ranks[(su, si)] = a.rank
        swap = {si for si in sg.sis if self.rt.sis[si].swap}
        view = planner.View(cur, ranks, self.keep, self.eligible, self._si_assignable, swap)
        want = planner.desired(self.m, sg, view)
        exclusive = sg.model != "nwayactive"
        stopping = {su for su in sg.sus if self.su_readiness(su) == Ready.STOPPING}
        # 1. quiesce actives that must give their work up
        wave = []
        for (su, si), h in cur.items():
            if h == ACTIVE and want.get((su, si), (0,))[0] != ACTIVE:
                shut = su in stopping or self.rt.sis[si].admin == Adm.SHUTTING_DOWN
                wave.append(("set", su, si, QUIESCING if shut else QUIESCED, 0))
        if not wave:  # 2. new actives (after the old one is quiesced or gone)
            for (su, si), (h, _r) in want.items():
                if h != ACTIVE or cur.get((su, si)) == ACTIVE:
                    continue
                others = [u for (u, s), hh in cur.items() if s == si and u != su and hh in (ACTIVE, QUIESCING)]
                if exclusive and others:
                    continue
                if not self.partition_may_assign():
                    continue
                wave.append(("set", su, si, ACTIVE, 0))
        if not wave:  # 3. removals and standby changes
            for (su, si), h in cur.items():
                w = want.get((su, si))
                if w is None and h != QUIESCING:
                    wave.append(("remove", su, si, 0, 0))
                elif w is not None and w[0] == STANDBY and (h != STANDBY or ranks.get((su, si)) != w[1]
                                                              or self._standby_stale(su, si)):
                    if h in (STANDBY, QUIESCED):
                        wave.append(("set", su, si, STANDBY, w[1]))
        if not wave:  # 4. new standbys, once the SI has its active
            for (su, si), (h, r) in want.items():
                if h == STANDBY and (su, si) not in cur and self.si_active(si):
                    wave.append(("set", su, si, STANDBY, r))
        self._collecting: list[tuple[str, Op]] | None = []
        try:
            for kind, su, si, ha, rank in wave:
                if kind == "remove":
                    self._remove_ops(su, si)
                else:
                    self._set_ops(su, si, ha, rank)
            collected = self._collecting
        finally:
            self._collecting = None
        self._enqueue_sets(collected)
        return bool(wave)

    def _enqueue_sets(self, ops: list[tuple[str, Op]]) -> None:
        """Queue a wave's csi_set callbacks: one CSI_TARGET_ALL when a component's every CSI changes alike."""
        by_comp: dict[str, list[Op]] = {}
        for comp, op in ops:
            by_comp.setdefault(comp, []).append(op)
        for comp, group in by_comp.items():
            held = set(self.rt.comps[comp].assigns)
            first = group[0]
            same = all(o.flags == CSI_TARGET_ONE and (o.ha, o.transition, o.other, o.rank)
                       == (first.ha, first.transition, first.other, first.rank) for o in group)
            if len(group) > 1 and same and {o.csi for o in group} == held:
                self._enqueue(comp, Op(first.invocation, "set", None, first.ha, CSI_TARGET_ALL, first.transition,
                                       first.other, first.rank))
                continue
            for op in group:
                self._enqueue(comp, op)

    def _standby_stale(self, su: str, si: str) -> bool:
        """The standby was told of an active component that is no longer the active one."""
        for csi in self.m.sis[si].csis:
            act = next((c for c, a in self.csi_holders(csi) if a.ha == ACTIVE), None)
            for c in self.m.sus[su].comps:
                a = self.rt.comps[c].assigns.get(csi)
                if a is not None and a.ha == STANDBY and act is not None and a.active_ref != act:
                    return True
        return False

    def _give_back(self, sg_dn: str) -> bool:
        """Restarted components that registered again get their assignments back (same HA state)."""
        changed = False
        for su in self.m.sgs[sg_dn].sus:
            for c in self.m.sus[su].comps:
                cr = self.rt.comps[c]
                if cr.queue or cr.phase is not None or cr.presence != Pres.INSTANTIATED or not cr.registered:
                    continue
                for csi in [x for x in self._csi_order(c) if cr.assigns.get(x) and cr.assigns[x].stale]:
                    a = cr.assigns.pop(csi)
                    ha = QUIESCED if a.ha == QUIESCING else a.ha
                    other = self._active_comp(csi) if ha == STANDBY else None
                    self._enqueue(c, Op(self._inv(), "set", csi, ha, CSI_ADD_ONE,
                                        NEW_ASSIGN if ha == ACTIVE else 0, other, a.rank))
                    changed = True
        return changed

    def _csi_order(self, comp: str) -> list[str]:
        return [csi for si in self.m.sis.values() for csi in si.csis
                if csi in self.rt.comps[comp].assigns]

    def _active_comp(self, csi: str) -> str | None:
        return next((c for c, a in self.csi_holders(csi) if a.ha == ACTIVE), None)

    def _choose_comp(self, su: str, csi: str, ha: int) -> str | None:
        t = self.m.csis[csi].cs_type
        for c in self.m.sus[su].comps:
            if csi in self.rt.comps[c].assigns:
                return c
        for c in self.m.sus[su].comps:
            comp = self.m.comps[c]
            if t not in comp.cs_types:
                continue
            held = [a.ha for a in self.rt.comps[c].assigns.values()]
            na = sum(1 for h in held if h in (ACTIVE, QUIESCING))
            ns = sum(1 for h in held if h == STANDBY)
            if ha == ACTIVE and comp.max_active and na >= comp.max_active:
                continue
            if ha == STANDBY and (comp.max_standby < 0 or (comp.max_standby and ns >= comp.max_standby)):
                continue
            return c
        return None

    def _local_set(self, comp: str, csi: str, ha: int) -> None:
        """A local component: ACTIVE instantiates it (CSI attributes in its environment), anything else ends it."""
        cr = self.rt.comps[comp]
        if ha == ACTIVE:
            if csi in cr.assigns or cr.phase is not None:
                return
            cr.epoch += 1
            cr.phase, cr.after, cr.attempts = "inst", csi, cr.attempts + 1
            if cr.presence != Pres.RESTARTING:
                cr.presence = int(Pres.INSTANTIATING)
            self.effects.append(("inst_local", comp, cr.epoch, csi))
        elif csi in cr.assigns:
            self._terminate(comp, "local_removed")

    def _set_ops(self, su: str, si: str, ha: int, rank: int) -> None:
        sr = self.rt.sis[si]
        for csi in self.m.sis[si].csis:
            comp = self._choose_comp(su, csi, ha)
            if comp is None:
                continue
            if self.m.comps[comp].category == "local":
                self._local_set(comp, csi, ha)
                continue
            prev = self.rt.comps[comp].assigns.get(csi)
            flags = CSI_TARGET_ONE if prev is not None else CSI_ADD_ONE
            transition, other = 0, None
            if ha == ACTIVE:
                if prev is not None and prev.ha == QUIESCING:
                    transition, other = STILL_ACTIVE, comp
                elif csi in sr.handover:
                    transition, other = sr.handover[csi]
                else:
                    transition = NEW_ASSIGN
            elif ha == STANDBY:
                other = self._active_comp(csi)
            self._enqueue(comp, Op(self._inv(), "set", csi, ha, flags, transition, other, rank))

    def _remove_ops(self, su: str, si: str) -> None:
        for csi in reversed(self.m.sis[si].csis):
            for c in self.m.sus[su].comps:
                if csi in self.rt.comps[c].assigns and self.m.comps[c].category == "local":
                    self._local_set(c, csi, 0)
                elif csi in self.rt.comps[c].assigns:
                    self._enqueue(c, Op(self._inv(), "remove", csi, 0, CSI_TARGET_ONE))
