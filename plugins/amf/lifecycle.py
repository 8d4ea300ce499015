"""AMF state, part 1: component life cycle — registration, instantiation (by SU and level), cleanup,
termination, local and proxied components.  Mixed into :class:`plugins.amf.state.AmfState`."""

from __future__ import annotations

from typing import Any

from openais.amf import AdminState as Adm
from openais.amf import OperationalState as Oper
from openais.amf import PresenceState as Pres
from openais.amf import Request
from openais.errors import SaAisError
from plugins.amf.common import (
    _FAILED,
    _OK,
    BUSY_PHASES,
    NOT_QUIESCED,
    T_QUIESCED,
    _Done,
    log,
)
from plugins.amf.runtime import ACTIVE, QUIESCED, QUIESCING, Assign, Op


class LifecycleMixin:
    """Registration, instantiation, cleanup and termination of components."""

    def _register(self, sender: int, msg: Any) -> None:
        comp = self.m.comps.get(msg.comp)
        cr = self.rt.comps.get(msg.comp)
        proxied = comp is not None and comp.category == "proxied"
        if proxied:
            proxy = self.proxy_of(msg.comp)
            pr = self.rt.comps[proxy] if proxy else None
            if msg.proxy != proxy or pr is None or (pr.reg_node, pr.reg_conn) != (sender, msg.conn):
                self._answer(sender, msg.conn, msg.request, Request.REGISTER, int(SaAisError.BAD_OPERATION))
                return
        if comp is None or cr is None or (self.host(msg.comp) != sender and not proxied):
            self._answer(sender, msg.conn, msg.request, Request.REGISTER, int(SaAisError.NOT_EXIST))
            return
        if cr.registered:
            self._answer(sender, msg.conn, msg.request, Request.REGISTER, int(SaAisError.EXIST))
            return
        if cr.presence not in (Pres.INSTANTIATING, Pres.RESTARTING, Pres.INSTANTIATED) or cr.phase in ("clean",
                                                                                                      "term"):
            self._answer(sender, msg.conn, msg.request, Request.REGISTER, int(SaAisError.BAD_OPERATION))
            return
        if (msg.proxy is None) != (comp.category != "proxied") or comp.category == "local":
            self._answer(sender, msg.conn, msg.request, Request.REGISTER, int(SaAisError.BAD_OPERATION))
            return
        cr.reg_node, cr.reg_conn, cr.reg_pid = sender, msg.conn, msg.pid
        if cr.phase == "inst":
            if cr.presence == Pres.RESTARTING:
                cr.restart_count += 1
            cr.phase, cr.attempts = None, 0
        cr.presence = int(Pres.INSTANTIATED)
        log.info("component %s registered (pid %d on node %d)", msg.comp, msg.pid, sender)
        self._answer(sender, msg.conn, msg.request, Request.REGISTER, _OK)
        su = self.rt.sus[comp.su]
        if su.failing and self._up(comp.su):
            su.failing = False
        if su.recovery == "su_restart" and self._up(comp.su):
            su.recovery = None

    def _unregister(self, sender: int, msg: Any) -> None:
        cr = self.rt.comps.get(msg.comp)
        if cr is None or not cr.registered or (cr.reg_node, cr.reg_conn) != (sender, msg.conn):
            self._answer(sender, msg.conn, msg.request, Request.UNREGISTER, int(SaAisError.NOT_EXIST))
            return
        if cr.assigns or cr.queue:
            self._answer(sender, msg.conn, msg.request, Request.UNREGISTER, int(SaAisError.BAD_OPERATION))
            return
        cr.reg_node = cr.reg_conn = cr.reg_pid = 0
        self._answer(sender, msg.conn, msg.request, Request.UNREGISTER, _OK)

    def _instantiate(self, comp: str, delay_ms: int = 0) -> None:
        epoch = self._begin_instantiation(comp)
        self.effects.append(("inst", comp, epoch, delay_ms))

    def _begin_instantiation(self, comp: str) -> int:
        """An instantiation attempt of ``comp`` starts (a new epoch, INSTANTIATING unless restarting); its epoch."""
        cr = self.rt.comps[comp]
        cr.epoch += 1
        cr.phase = "inst"
        cr.attempts += 1
        if cr.presence != Pres.RESTARTING:
            cr.presence = int(Pres.INSTANTIATING)
        return cr.epoch

    def proxy_of(self, comp: str) -> str | None:
        """The proxy of a proxied component: the component holding its proxy CSI ACTIVE (acknowledged)."""
        csi = self.m.comps[comp].proxy_csi
        return self._active_comp(csi) if csi else None

    def _cleanup(self, comp: str, after: str) -> None:
        cr = self.rt.comps[comp]
        cr.epoch += 1
        cr.phase, cr.after = "clean", after
        if self.m.comps[comp].category == "proxied":
            proxy = self.proxy_of(comp)
            registered = cr.registered
            cr.reg_node = cr.reg_conn = cr.reg_pid = 0
            cr.queue.clear()
            self.effects.append(("stopped", comp))
            if proxy is not None and registered and self.rt.comps[proxy].registered:
                self._enqueue(proxy, Op(self._inv(), "proxied_clean", other=comp, epoch=cr.epoch))
            else:  # no proxy to ask: nothing of it can still run
                self.effects.append(("clean", comp, cr.epoch, 0))
            return
        pid = cr.reg_pid if cr.reg_node and cr.reg_node == self.host(comp) else 0
        cr.reg_node = cr.reg_conn = cr.reg_pid = 0
        cr.queue.clear()
        self.effects.append(("clean", comp, cr.epoch, pid))
        self.effects.append(("stopped", comp))

    def _terminate(self, comp: str, after: str = "none") -> None:
        """Graceful termination: terminate callback (SA-aware) or TERMINATE command (local)."""
        cr = self.rt.comps[comp]
        c = self.m.comps[comp]
        if cr.presence == Pres.UNINSTANTIATED and cr.phase is None:
            return
        if c.category == "local" or not cr.registered:
            if c.category == "local":
                cr.epoch += 1
                cr.phase, cr.after = "term", after
                cr.presence = int(Pres.TERMINATING)
                self.effects.append(("term", comp, cr.epoch))
            else:
                self._cleanup(comp, after)
            return
        cr.phase, cr.after = "term", after
        cr.presence = int(Pres.TERMINATING)
        cr.queue.clear()
        self._enqueue(comp, Op(self._inv(), "terminate"))

    def _inst_failed(self, sender: int, msg: Any) -> None:
        cr = self.rt.comps.get(msg.comp)
        if cr is None or cr.epoch != msg.epoch or cr.phase != "inst":
            return
        log.warning("instantiation of %s failed (attempt %d): %s", msg.comp, cr.attempts, msg.reason)
        self._cleanup(msg.comp, "inst_retry")

    def _lc_done(self, sender: int, msg: Any) -> None:
        cr = self.rt.comps.get(msg.comp)
        if cr is None or cr.epoch != msg.epoch:
            return
        if msg.what == "inst" and cr.phase == "inst" and self.m.comps[msg.comp].category == "local":
            self._local_instantiated(msg.comp, bool(msg.ok))
            return
        if cr.phase not in ("clean", "term"):
            return
        comp = self.m.comps[msg.comp]
        after = cr.after
        cr.phase = cr.after = None
        if not msg.ok:
            if msg.what == "term":
                self._cleanup(msg.comp, after or "none")
                return
            log.error("cleanup of %s failed: TERMINATION_FAILED", msg.comp)
            cr.presence = int(Pres.TERMINATION_FAILED)
            cr.oper = int(Oper.DISABLED)
            self.rt.sus[comp.su].oper = int(Oper.DISABLED)
            node_dn = self.m.sus[comp.su].node
            if self.m.nodes[node_dn].a["saAmfNodeRebootOnTerminationFailure"]:
                self._node_failover(node_dn)
            return
        self.effects.append(("stopped", msg.comp))
        cr.reg_node = cr.reg_conn = cr.reg_pid = 0
        if after in ("restart", "su_restart"):
            cr.presence = int(Pres.RESTARTING)
            self._cleanup_next_level(comp.su)
            if comp.category == "local":
                for csi in [k for k, a in cr.assigns.items() if a.stale]:
                    del cr.assigns[csi]
                    self._local_set(msg.comp, csi, ACTIVE)
            return
        if after == "local_removed":
            cr.presence = int(Pres.UNINSTANTIATED)
            self._drop_assignments(msg.comp, failed=False)
            return
        if after == "local_failed":
            cr.presence, cr.oper = int(Pres.INSTANTIATION_FAILED), int(Oper.DISABLED)
            self.rt.sus[comp.su].oper = int(Oper.DISABLED)
            return
        cr.presence = int(Pres.UNINSTANTIATED)
        if after == "inst_retry":
            total = comp.max_without_delay + comp.max_with_delay
            if cr.attempts < total:
                cr.presence = int(Pres.INSTANTIATING)
                self._instantiate(msg.comp, comp.delay if cr.attempts >= comp.max_without_delay else 0)
                return
            log.error("component %s: INSTANTIATION_FAILED after %d attempts", msg.comp, cr.attempts)
            cr.presence, cr.oper, cr.attempts = int(Pres.INSTANTIATION_FAILED), int(Oper.DISABLED), 0
            self.rt.sus[comp.su].oper = int(Oper.DISABLED)
            self._drop_assignments(msg.comp, failed=True)
            for other in self.m.sus[comp.su].comps:
                o = self.rt.comps[other]
                if other != msg.comp and o.presence not in (Pres.UNINSTANTIATED, *_FAILED) and o.phase != "clean":
                    self._drop_assignments(other, failed=True)
                    self._cleanup(other, "none")
            node_dn = self.m.sus[comp.su].node
            if self.m.nodes[node_dn].a["saAmfNodeRebootOnInstantiationFailure"]:
                self._node_failover(node_dn)
            return
        if after in ("failover", "su_failover", "node_failover", "none"):
            self._drop_assignments(msg.comp, failed=True)
        cr.attempts = 0
        self._recovery_progress(comp.su)

    def _local_instantiated(self, comp: str, ok: bool) -> None:
        cr = self.rt.comps[comp]
        csi = cr.after or ""
        cr.phase = cr.after = None
        if not ok:
            log.error("local component %s: INSTANTIATE failed: INSTANTIATION_FAILED", comp)
            self._cleanup(comp, "local_failed")
            return
        if cr.presence == Pres.RESTARTING:
            cr.restart_count += 1
        cr.presence, cr.attempts = int(Pres.INSTANTIATED), 0
        if csi in self.m.csis:
            self.rt.sis[self.m.csis[csi].si].handover.pop(csi, None)
            cr.assigns[csi] = Assign(ACTIVE)
            self.effects.append(("pg", csi))

    def _cleanup_next_level(self, su: str) -> None:
        """SU restart/failover: clean up the components level by level, in reverse instantiation order."""
        comps = self.m.sus[su].comps
        waiting = [c for c in comps if self.rt.comps[c].phase == "clean_wait"]
        if not waiting or any(self.rt.comps[c].phase in ("clean", "term") for c in comps):
            return
        level = max(self.m.comps[c].level for c in waiting)
        for c in waiting:
            if self.m.comps[c].level == level:
                cr = self.rt.comps[c]
                after, cr.phase = cr.after or "none", None
                self._cleanup(c, after)

    def _recovery_progress(self, su: str) -> None:
        s = self.rt.sus[su]
        self._cleanup_next_level(su)
        busy = any(self.rt.comps[c].phase in BUSY_PHASES for c in self.m.sus[su].comps)
        if busy:
            return
        if s.recovery == "su_failover":
            s.recovery = None
            if not self.m.sgs[self.m.sus[su].sg].auto_repair:
                s.oper = int(Oper.DISABLED)
        elif s.recovery == "node_failover":
            s.recovery = None
            node_dn = self.m.sus[su].node
            if all(self.rt.sus[u].recovery != "node_failover" for u in self.m.nodes[node_dn].sus):
                if self.m.nodes[node_dn].a["saAmfNodeAutoRepair"]:
                    self.rt.nodes[node_dn].oper = int(Oper.ENABLED)

    def _drop_assignments(self, comp: str, failed: bool) -> None:
        """Forget every assignment of ``comp`` (it is gone): record the failover hand-over."""
        cr = self.rt.comps[comp]
        for csi, a in list(cr.assigns.items()):
            if failed and a.ha in (ACTIVE, QUIESCING, QUIESCED):
                si = self.m.csis[csi].si
                self.rt.sis[si].handover[csi] = [NOT_QUIESCED if a.ha != QUIESCED else T_QUIESCED, comp]
            del cr.assigns[csi]
            self.effects.append(("pg", csi))

    def _proxied_answer(self, op: Op, ok: bool) -> None:
        """The proxy answered proxied_component_instantiate / _cleanup for ``op.other``."""
        target = op.other or ""
        cr = self.rt.comps.get(target)
        if cr is None or cr.epoch != op.epoch:
            return
        if op.kind == "proxied_clean":
            self._lc_done(0, _Done(target, op.epoch, "clean", int(ok)))
        elif not ok and cr.phase == "inst":
            log.warning("the proxy refused to instantiate %s", target)
            self._cleanup(target, "inst_retry")

    def _proxy_check(self) -> bool:
        """Proxied components whose proxy changed are instantiated again through the new one."""
        changed = False
        for dn, comp in self.m.comps.items():
            if comp.category != "proxied":
                continue
            cr = self.rt.comps[dn]
            if not cr.registered:
                continue
            proxy = self.proxy_of(dn)
            pr = self.rt.comps[proxy] if proxy else None
            if pr is not None and (pr.reg_node, pr.reg_conn) == (cr.reg_node, cr.reg_conn):
                continue
            log.warning("proxied component %s lost its proxy: it is instantiated again through the next one", dn)
            cr.reg_node = cr.reg_conn = cr.reg_pid = 0
            cr.queue.clear()
            cr.phase = None
            cr.epoch += 1
            for a in cr.assigns.values():
                a.stale = True
            cr.presence = int(Pres.RESTARTING if cr.assigns else Pres.UNINSTANTIATED)
            changed = True
        return changed

    def _instantiable(self, su: str) -> bool:
        s = self.rt.sus[su]
        node = self.node_of_su(su)
        sg = self.m.sus[su].sg
        return (node.member and node.oper == Oper.ENABLED and s.oper == Oper.ENABLED
                and Adm.LOCKED_INSTANTIATION not in (s.admin, node.admin, self.rt.sgs_admin[sg])
                and s.recovery not in ("su_failover", "node_failover"))

    def _instantiations(self) -> bool:
        changed = False
        for sg in self.m.sgs.values():
            cands = [u for u in sg.sus if self._instantiable(u)]
            up = [u for u in cands if self.su_presence(u) != Pres.UNINSTANTIATED]
            target = up[: sg.n_inservice]
            target += [u for u in cands if u not in target][: sg.n_inservice - len(target)]
            for su in sg.sus:
                changed |= self._instantiate_levels(su, su in target)
        return changed

    def _instantiate_levels(self, su: str, targeted: bool) -> bool:
        comps = self.m.sus[su].comps
        if not self._instantiable(su) or any(self.rt.comps[c].phase in BUSY_PHASES for c in comps):
            return False
        need = [c for c in comps if self.rt.comps[c].phase is None and self.m.comps[c].category != "local"
                and (self.rt.comps[c].presence == Pres.RESTARTING
                     or (targeted and self.rt.comps[c].presence == Pres.UNINSTANTIATED))]
        if not need:
            return False
        level = min(self.m.comps[c].level for c in need)
        lower = [c for c in comps if self.m.comps[c].level < level and self.m.comps[c].category != "local"]
        if any(self.rt.comps[c].presence != Pres.INSTANTIATED for c in lower):
            return False
        started = False
        for c in need:
            if self.m.comps[c].level != level:
                continue
            if self.m.comps[c].category == "proxied":
                started |= self._instantiate_proxied(c)
            else:
                self._instantiate(c)
                started = True
        return started

    def _instantiate_proxied(self, comp: str) -> bool:
        """Ask the proxy (proxied_component_instantiate); it then registers the component."""
        proxy = self.proxy_of(comp)
        if proxy is None or not self.rt.comps[proxy].registered:
            return False
        epoch = self._begin_instantiation(comp)
        self._enqueue(proxy, Op(self._inv(), "proxied_inst", other=comp, epoch=epoch))
        return True
