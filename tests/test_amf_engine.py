"""The AMF engine on several in-process nodes: node loss, partitions and merges, client death, timeouts."""

from __future__ import annotations

import json

import pytest

from aisexec.testing import ServiceCluster
from openais import amf
from openais.errors import AisError, SaAisError
from plugins.amf import model
from plugins.amf.engine import AmfEngine
from plugins.amf.messages import Exec
from tests.amf_components.bridge import BridgedHandle, Components, FakeLifecycle
from tests.amf_components.confgen import dn, sg_conf


def make(conf: str, nodes=(1, 2, 3)) -> tuple[ServiceCluster, Components]:
    m = model.parse(conf, "test.conf")
    cluster = ServiceCluster([lambda: AmfEngine(m, FakeLifecycle)], nodes=list(nodes))
    comps = Components(cluster)
    comps.settle()
    return cluster, comps


def status(cluster: ServiceCluster, nodeid: int) -> dict:
    return cluster.engine(nodeid, amf.SERVICE_ID).status()


def roles(cluster: ServiceCluster, nodeid: int = 1, si: str = "safSi=si1,safApp=app") -> dict[str, str]:
    doc = status(cluster, nodeid)
    entry = next(s for s in doc["sis"] if s["name"] == si)
    return {a["su"].split(",")[0][6:]: a["ha_state"] for a in entry["assignments"]}


def test_2n_assigns_identically_on_every_node():
    cluster, comps = make(sg_conf("2n", sus=2, nodes=2), nodes=(1, 2))
    assert roles(cluster) == {"su1": "ACTIVE", "su2": "STANDBY"}
    assert status(cluster, 1)["sis"] == status(cluster, 2)["sis"]
    sets = [e for e in comps.events if e[0] == "set"]
    assert sets[0][2] == amf.HAState.ACTIVE and sets[0][3].csi_attr == (amf.CSIAttribute("a", "v1"),)
    assert sets[1][3].csi_state_descriptor == amf.CSIStandbyDescriptor(dn("comp", "su1"), 1)


def test_client_death_fails_over_and_reinstantiates():
    conf = sg_conf("2n", sus=2, nodes=2, comp_extra="saAmfCompRecoveryOnError = component_failover")
    cluster, comps = make(conf, nodes=(1, 2))
    comps.kill(dn("comp", "su1"))
    comps.settle()
    assert roles(cluster) == {"su2": "ACTIVE", "su1": "STANDBY"}
    active = [e for e in comps.events if e[0] == "set" and e[1] == dn("comp", "su2") and e[2] == 1][-1]
    assert active[3].csi_state_descriptor == amf.CSIActiveDescriptor(amf.CSITransitionDescriptor.NOT_QUIESCED,
                                                                     dn("comp", "su1"))
    assert dn("comp", "su1") in comps.lc(1).cleaned


def test_node_crash_fails_over_and_restart_rejoins():
    cluster, comps = make(sg_conf("2n", sus=3, nodes=3))
    assert roles(cluster) == {"su1": "ACTIVE", "su2": "STANDBY"}
    cluster.crash(1)
    comps.settle()
    assert roles(cluster, 2) == {"su2": "ACTIVE", "su3": "STANDBY"}
    assert status(cluster, 2)["sis"] == status(cluster, 3)["sis"]
    cluster.restart(1)
    comps.settle()
    assert roles(cluster, 1) == {"su2": "ACTIVE", "su3": "STANDBY"}
    assert status(cluster, 1)["sus"] == status(cluster, 3)["sus"]
    su1 = next(s for s in status(cluster, 1)["sus"] if s["name"] == dn("su", "su1"))
    assert su1["presence_state"] == "INSTANTIATED"


def test_partition_and_merge_keep_one_active():
    cluster, comps = make(sg_conf("2n", sus=2, nodes=2), nodes=(1, 2, 3))
    cluster.partition([[1], [2, 3]])
    comps.settle()
    assert roles(cluster, 1) == {"su1": "ACTIVE"}
    assert roles(cluster, 2) == {"su2": "ACTIVE"}
    cluster.heal()
    comps.settle()
    for n in (1, 2, 3):
        assert roles(cluster, n) == {"su1": "ACTIVE", "su2": "STANDBY"}
    assert ("remove", dn("comp", "su2"), dn("csi", "si1")) in comps.events


def test_callback_timeout_is_an_error_of_the_component():
    conf = sg_conf("2n", sus=2, nodes=2, comp_extra="saAmfCompCSISetCallbackTimeout = 1000\n"
                                                    "saAmfCompRecoveryOnError = component_failover")
    m = model.parse(conf, "t")
    cluster = ServiceCluster([lambda: AmfEngine(m, FakeLifecycle)], nodes=[1, 2])
    comps = Components(cluster)
    comps.mute.add(dn("comp", "su1"))
    comps.settle()
    assert roles(cluster) == {}
    comps.mute.clear()
    cluster.advance(1.5)
    comps.settle()
    assert roles(cluster) == {"su2": "ACTIVE", "su1": "STANDBY"}


def test_startup_timeout_starts_without_the_missing_node():
    conf = sg_conf("2n", sus=3, nodes=3)
    m = model.parse(conf, "t")
    cluster = ServiceCluster([lambda: AmfEngine(m, FakeLifecycle)], nodes=[1, 2])
    comps = Components(cluster)
    comps.settle()
    assert not status(cluster, 1)["cluster"]["started"]
    cluster.advance(4.0)
    comps.settle()
    assert status(cluster, 1)["cluster"]["started"]
    assert roles(cluster) == {"su1": "ACTIVE", "su2": "STANDBY"}


def test_malformed_cluster_message_is_dropped():
    cluster, _comps = make(sg_conf("2n", sus=2, nodes=2), nodes=(1, 2))
    engine = cluster.engine(1, amf.SERVICE_ID)
    before = json.dumps(status(cluster, 1))
    for kind in (Exec.ERROR, Exec.REGISTER, Exec.ADMIN, Exec.RESPONSE, Exec.SYNC):
        engine.api.mcast(amf.SERVICE_ID, kind, b"\xff\x00garbage")
    cluster.run()
    assert json.dumps(status(cluster, 1)) == before


def test_admin_from_another_node_and_library_errors():
    cluster, comps = make(sg_conf("2n", sus=3, nodes=3))
    h = BridgedHandle(cluster, 3)
    h.pump = comps.settle
    h.admin_operation(dn("su", "su1"), amf.AdminOperation.LOCK)
    comps.settle()
    assert roles(cluster) == {"su2": "ACTIVE", "su3": "STANDBY"}
    with pytest.raises(AisError) as err:
        h.admin_operation(dn("su", "su1"), amf.AdminOperation.LOCK)
    assert err.value.code == SaAisError.BAD_OPERATION
    with pytest.raises(AisError) as err:
        h.admin_operation("safSu=x,safSg=g,safApp=app", amf.AdminOperation.LOCK)
    assert err.value.code == SaAisError.NOT_EXIST


def test_protection_group_tracking_reports_failover():
    conf = sg_conf("2n", sus=2, nodes=2, comp_extra="saAmfCompRecoveryOnError = component_failover")
    cluster, comps = make(conf, nodes=(1, 2))
    seen = []
    h = BridgedHandle(cluster, 2, protection_group_track=lambda *a: seen.append(a))
    current = h.protection_group_track(dn("csi", "si1"), amf.TRACK_CURRENT, buffer=True)
    assert [(n.member.comp_name, n.member.ha_state) for n in current] == [
        (dn("comp", "su1"), amf.HAState.ACTIVE), (dn("comp", "su2"), amf.HAState.STANDBY)]
    h.protection_group_track(dn("csi", "si1"), amf.TRACK_CHANGES_ONLY)
    comps.kill(dn("comp", "su1"))
    comps.settle()
    h.run_callbacks()
    changes = [(n.member.comp_name, n.change) for _csi, notes, _n, _e in seen for n in notes]
    assert (dn("comp", "su1"), amf.ProtectionGroupChanges.REMOVED) in changes
    assert (dn("comp", "su2"), amf.ProtectionGroupChanges.STATE_CHANGE) in changes
    removed_at = next(i for i, c in enumerate(changes) if c[1] == amf.ProtectionGroupChanges.REMOVED)
    active_at = next(i for i, c in enumerate(changes) if c == (dn("comp", "su2"),
                                                              amf.ProtectionGroupChanges.STATE_CHANGE))
    assert removed_at <= active_at
    h.protection_group_track_stop(dn("csi", "si1"))
    with pytest.raises(AisError) as err:
        h.protection_group_track_stop(dn("csi", "si1"))
    assert err.value.code == SaAisError.NOT_EXIST


def test_node_with_a_different_model_takes_no_part():
    good = model.parse(sg_conf("2n", sus=3, nodes=3), "t")
    bad = model.parse(sg_conf("2n", sus=3, nodes=3, sg_extra="saAmfSGCompRestartMax = 3"), "t")
    assert good.digest != bad.digest
    models = iter([good, good, bad])
    cluster = ServiceCluster([lambda: AmfEngine(next(models), FakeLifecycle)], nodes=[1, 2, 3])
    comps = Components(cluster)
    comps.settle()
    assert cluster.engine(3, amf.SERVICE_ID).excluded
    cluster.advance(4.0)  # node 3 never counts as an AMF member: the startup timeout starts assignment
    comps.settle()
    doc = status(cluster, 1)
    node3 = next(n for n in doc["nodes"] if n["name"].startswith("safAmfNode=n3"))
    assert not node3["member"]
    assert roles(cluster) == {"su1": "ACTIVE", "su2": "STANDBY"}
    with pytest.raises(AisError) as err:
        BridgedHandle(cluster, 3).ha_state_get(dn("comp", "su1"), dn("csi", "si1"))
    assert err.value.code == SaAisError.NOT_EXIST


def test_auto_adjust_fails_back_after_the_probation():
    conf = sg_conf("2n", sus=2, nodes=2, sg_extra="saAmfSGAutoAdjust = true\nsaAmfSGAutoAdjustProb = 2000",
                   comp_extra="saAmfCompRecoveryOnError = component_failover")
    cluster, comps = make(conf, nodes=(1, 2))
    comps.kill(dn("comp", "su1"))
    comps.settle()
    assert roles(cluster) == {"su2": "ACTIVE", "su1": "STANDBY"}
    cluster.advance(1.0)
    comps.settle()
    assert roles(cluster) == {"su2": "ACTIVE", "su1": "STANDBY"}
    cluster.advance(1.5)
    comps.settle()
    assert roles(cluster) == {"su1": "ACTIVE", "su2": "STANDBY"}
    back = [e for e in comps.events if e[0] == "set" and e[1] == dn("comp", "su1") and e[2] == amf.HAState.ACTIVE]
    assert back[-1][3].csi_state_descriptor.transition_descriptor == amf.CSITransitionDescriptor.QUIESCED


def test_proxied_component_through_its_proxy():
    from tests.test_amf_state import DEV, PROXY1, PROXY2, PROXY_CONF

    cluster, comps = make(PROXY_CONF, nodes=(1, 2))
    assert roles(cluster, 2, "safSi=pd-si,safApp=app") == {"dev1": "ACTIVE"}
    assert ("proxied_instantiate", PROXY1, DEV) in comps.events
    dev_sets = [e for e in comps.events if e[0] == "set" and e[1] == DEV]
    assert dev_sets and dev_sets[0][2] == amf.HAState.ACTIVE
    comps.kill(PROXY1)  # the proxy dies: the standby proxy takes over and instantiates the proxied one again
    comps.settle()
    assert roles(cluster, 2, "safSi=px-si,safApp=app")["su2"] == "ACTIVE"
    assert ("proxied_instantiate", PROXY2, DEV) in comps.events
    assert roles(cluster, 1, "safSi=pd-si,safApp=app") == {"dev1": "ACTIVE"}
    doc = status(cluster, 1)
    dev = next(c for c in doc["components"] if c["name"] == DEV)
    assert dev["registered"] and dev["presence_state"] == "INSTANTIATED"


def test_dependent_si_removed_after_the_tolerance_time():
    conf = sg_conf("2n", sus=2, nodes=2, sis=2).replace(
        "        safSi = si2 {\n", "        safSi = si2 {\n            safDepend = si1 {\n"
        "                saAmfToleranceTime = 2000\n            }\n")
    cluster, comps = make(conf, nodes=(1, 2))
    h = BridgedHandle(cluster, 2)
    h.pump = comps.settle
    si2 = "safSi=si2,safApp=app"
    h.admin_operation(dn("si", "si1"), amf.AdminOperation.LOCK)
    comps.settle()
    assert roles(cluster, 1, si2) == {"su1": "ACTIVE", "su2": "STANDBY"}
    cluster.advance(1.0)
    comps.settle()
    assert roles(cluster, 1, si2) == {"su1": "ACTIVE", "su2": "STANDBY"}
    cluster.advance(1.5)
    comps.settle()
    assert roles(cluster, 1, si2) == {} and roles(cluster, 2, si2) == {}
    h.admin_operation(dn("si", "si1"), amf.AdminOperation.UNLOCK)
    comps.settle()
    assert roles(cluster, 1, si2) == {"su1": "ACTIVE", "su2": "STANDBY"}
