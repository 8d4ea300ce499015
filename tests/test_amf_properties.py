"""Property-style runs of the AMF engine on an in-process cluster: seeded random faults, checked invariants.

Every step is one of: a component dies, a node crashes or restarts, the ring partitions or heals, an
admin operation.  After each step (once quiet) the invariants hold: no CSI has two ACTIVE components
outside N-way active; every node of one ring reports the same assignments; and once the whole cluster
is back and healthy every SI is assigned again.
"""

from __future__ import annotations

import random

import pytest

from aisexec.testing import ServiceCluster
from openais import amf
from openais.errors import AisError
from plugins.amf import model
from plugins.amf.engine import AmfEngine
from tests.amf_components.bridge import BridgedHandle, Components, FakeLifecycle
from tests.amf_components.confgen import multi_conf

GROUPS = [
    dict(name="a", model="2n", sus=3, sis=2, comp_extra="saAmfCompRecoveryOnError = component_failover"),
    dict(name="b", model="nplusm", sus=3, sis=2, sg_extra="saAmfSGNumPrefActiveSUs = 2"),
    dict(name="c", model="nway", sus=3, sis=2),
    dict(name="d", model="nwayactive", sus=3, sis=1, si_extra="saAmfSIPrefActiveAssignments = 2"),
    dict(name="e", model="noredundancy", sus=3, sis=2, capability="x_active"),
]
MODEL = model.parse(multi_conf(GROUPS, node_extra="saAmfNodeSuFailoverMax = 1000"), "prop.conf")


def _check(cluster: ServiceCluster, live: set[int], components: list[set[int]]) -> None:
    for comp in components:
        comp = comp & live
        views = [cluster.engine(n, amf.SERVICE_ID).status()["sis"] for n in sorted(comp)]
        assert all(v == views[0] for v in views), "nodes of one ring disagree"
        for n in sorted(comp):
            st = cluster.engine(n, amf.SERVICE_ID).state
            for csi in MODEL.csis:
                sg = MODEL.sgs[MODEL.sis[MODEL.csis[csi].si].sg]
                actives = [c for c, a in st.csi_holders(csi) if a.ha == 1]
                if sg.model != "nwayactive":
                    assert len(actives) <= 1, f"{csi} ACTIVE on {actives}"
            break


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("AMF_PROP_SEEDS", "6"))))
def test_random_faults_keep_the_invariants(seed):
    rng = random.Random(seed)
    cluster = ServiceCluster([lambda: AmfEngine(MODEL, FakeLifecycle)], nodes=[1, 2, 3])
    comps = Components(cluster)
    comps.settle()
    live = {1, 2, 3}
    parts = [{1, 2, 3}]
    admin = BridgedHandle(cluster, 1)
    admin.pump = comps.settle
    locked: list[str] = []
    for _step in range(25):
        action = rng.choice(["kill", "kill", "crash", "restart", "partition", "heal", "admin", "unlock"])
        if action == "kill" and comps.handles:
            victim = rng.choice(sorted(comps.handles))
            node = next(n for n in live if cluster.engine(n, amf.SERVICE_ID).state.host(victim) == n) \
                if any(cluster.engine(n, amf.SERVICE_ID).state.host(victim) == n for n in live) else None
            if node is not None and not comps.handles[victim].conn.closed:
                comps.kill(victim)
        elif action == "crash" and len(live) > 1:
            n = rng.choice(sorted(live - {1}) or sorted(live))
            if n != 1:
                cluster.crash(n)
                live.discard(n)
                parts = [p - {n} for p in parts]
                for dn in [d for d, h in comps.handles.items() if h.conn.node == n]:
                    comps.handles.pop(dn)
        elif action == "restart" and live != {1, 2, 3}:
            n = rng.choice(sorted({1, 2, 3} - live))
            cluster.restart(n)
            live.add(n)
            parts = [set(live)]
        elif action == "partition" and len(live) == 3 and len(parts) == 1:
            cut = rng.choice([2, 3])
            parts = [live - {cut}, {cut}]
            cluster.partition([sorted(p) for p in parts])
        elif action == "heal" and len(parts) > 1:
            cluster.heal()
            parts = [set(live)]
        elif action == "admin" and len(parts) == 1:
            su = rng.choice(sorted(MODEL.sus))
            try:
                admin.admin_operation(su, amf.AdminOperation.LOCK, timeout=5)
                locked.append(su)
            except AisError:
                pass
        elif action == "unlock" and locked and len(parts) == 1:
            su = locked.pop(0)
            try:
                admin.admin_operation(su, amf.AdminOperation.UNLOCK, timeout=5)
            except AisError:
                pass
        comps.settle()
        for _ in range(3):
            cluster.advance(6.0)
            comps.settle()
        _check(cluster, live, parts)
    # heal everything: every SI is assigned again
    for n in sorted({1, 2, 3} - live):
        cluster.restart(n)
    if len(parts) > 1:
        cluster.heal()
    comps.settle()
    for su in locked:
        try:
            admin.admin_operation(su, amf.AdminOperation.UNLOCK, timeout=5)
        except AisError:
            pass
    for _ in range(3):
        cluster.advance(6.0)
        comps.settle()
    _check(cluster, {1, 2, 3}, [{1, 2, 3}])
    doc = cluster.engine(1, amf.SERVICE_ID).status()
    unassigned = [s["name"] for s in doc["sis"] if s["assignment_state"] == "UNASSIGNED"]
    assert not unassigned, (seed, unassigned, [(c["name"], c["presence_state"], c["registered"])
                                               for c in doc["components"] if c["presence_state"] != "INSTANTIATED"])
