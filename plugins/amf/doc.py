"""The status document (schema version 1) of ``openais-amftool status --json`` and ``cluster_state()``."""

from __future__ import annotations

from openais.amf import AdminState, AssignmentState, HAState, OperationalState, PresenceState, ReadinessState
from plugins.amf.state import AmfState


def _ha_list(items: list[tuple[str, int]], key: str) -> list[dict]:
    return [{key: k, "ha_state": HAState(h).name} for k, h in items]


def disabled(local_node_id: int) -> dict:
    """The document when AMF is not enabled."""
    return {"version": 1, "enabled": False, "local_node_id": local_node_id, "cluster": {"name": None,
            "started": False}, "nodes": [], "applications": [], "sgs": [], "sus": [], "components": [], "sis": []}


def build(state: AmfState, local_node_id: int) -> dict:
    """The whole status document, lists in DN order."""
    m, rt = state.m, state.rt
    order = sorted
    nodes = [{"name": dn, "clm_node_id": rt.nodes[dn].nodeid or m.nodes[dn].clm_nodeid,
              "member": rt.nodes[dn].member, "admin_state": AdminState(rt.nodes[dn].admin).name,
              "oper_state": OperationalState(rt.nodes[dn].oper).name} for dn in order(m.nodes)]
    apps = [{"name": dn, "admin_state": "UNLOCKED"} for dn in order(m.apps)]
    sgs = [{"name": dn, "redundancy_model": m.sgs[dn].model, "admin_state": AdminState(rt.sgs_admin[dn]).name,
            "sus": order(m.sgs[dn].sus), "sis": order(m.sgs[dn].sis)} for dn in order(m.sgs)]
    sus = []
    for dn in order(m.sus):
        su, s = m.sus[dn], rt.sus[dn]
        assigns = [(si, state.su_ha(dn, si)) for si in order(m.sgs[su.sg].sis)]
        sus.append({"name": dn, "sg": su.sg, "node": su.node, "rank": su.rank,
                    "admin_state": AdminState(s.admin).name, "oper_state": OperationalState(s.oper).name,
                    "presence_state": PresenceState(state.su_presence(dn)).name,
                    "readiness_state": ReadinessState(state.su_readiness(dn)).name,
                    "restart_count": s.restart_count,
                    "assignments": _ha_list([(k, h) for k, h in assigns if h is not None], "si")})
    comps = []
    for dn in order(m.comps):
        c, cr = m.comps[dn], rt.comps[dn]
        comps.append({"name": dn, "su": c.su, "category": c.category,
                      "presence_state": PresenceState(cr.presence).name,
                      "oper_state": OperationalState(cr.oper).name,
                      "readiness_state": ReadinessState(state.comp_readiness(dn)).name,
                      "registered": cr.registered, "pid": cr.reg_pid if cr.registered else None,
                      "restart_count": cr.restart_count,
                      "assignments": _ha_list(sorted((k, a.ha) for k, a in cr.assigns.items()), "csi")})
    sis = []
    for dn in order(m.sis):
        si = m.sis[dn]
        sg = m.sgs[si.sg]
        held = [(u, state.su_ha(u, dn)) for u in order(sg.sus)]
        sis.append({"name": dn, "sg": si.sg, "rank": si.rank, "admin_state": AdminState(rt.sis[dn].admin).name,
                    "assignment_state": AssignmentState(state.si_assignment_state(dn)).name,
                    "csis": order(si.csis), "assignments": _ha_list([(u, h) for u, h in held if h is not None],
                                                                     "su")})
    return {"version": 1, "enabled": True, "local_node_id": local_node_id,
            "cluster": {"name": m.cluster_dn, "started": rt.started}, "nodes": nodes, "applications": apps,
            "sgs": sgs, "sus": sus, "components": comps, "sis": sis}
