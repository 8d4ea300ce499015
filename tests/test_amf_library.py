"""The openais.amf contract's error rows: client-side checks and the engine's answers (in-process cluster)."""

from __future__ import annotations

import pytest

from aisexec.testing import ServiceCluster
from openais import amf
from openais.errors import (
    AisError,
    BadFlags,
    BadHandle,
    BadOperation,
    Exist,
    Init,
    InvalidParam,
    NameTooLong,
    NotExist,
    SaAisError,
    Version,
)
from plugins.amf import model
from plugins.amf.engine import AmfEngine
from tests.amf_components.bridge import BridgedHandle, Components, FakeLifecycle
from tests.amf_components.confgen import dn, sg_conf

COMP1, COMP2 = dn("comp", "su1"), dn("comp", "su2")
CSI = dn("csi", "si1")
Rec = amf.RecommendedRecovery
HC = amf.HealthcheckInvocation


@pytest.fixture
def env():
    m = model.parse(sg_conf("2n", sus=3, nodes=2), "t")
    cluster = ServiceCluster([lambda: AmfEngine(m, FakeLifecycle)], nodes=[1, 2])
    comps = Components(cluster)
    comps.settle()
    return cluster, comps


def full(cluster, node=1, **extra):
    cb = dict(csi_set=lambda *a: None, csi_remove=lambda *a: None, component_terminate=lambda *a: None)
    cb.update(extra)
    return BridgedHandle(cluster, node, **cb)


def test_initialize_version():
    for bad in (("A", 1, 1), ("B", 2, 1), ("B", 1), "B.01.01"):
        with pytest.raises(Version):
            amf.initialize(version=bad)


def test_component_name_get(env, monkeypatch):
    cluster, _ = env
    h = BridgedHandle(cluster, 1)
    monkeypatch.delenv("SA_AMF_COMPONENT_NAME", raising=False)
    with pytest.raises(NotExist):
        h.component_name_get()
    monkeypatch.setenv("SA_AMF_COMPONENT_NAME", COMP1)
    assert h.component_name_get() == COMP1


def test_register_errors(env):
    cluster, _comps = env
    with pytest.raises(NameTooLong):
        BridgedHandle(cluster, 1).component_register("x" * 257)
    with pytest.raises(Init):
        BridgedHandle(cluster, 1, csi_set=lambda *a: None).component_register(COMP1)
    h = full(cluster)
    with pytest.raises(NotExist):
        h.component_register("safComp=zz,safSu=su1,safSg=g,safApp=app")
    with pytest.raises(NotExist):
        h.component_register(COMP2)  # hosted on node 2
    with pytest.raises(Exist):
        h.component_register(COMP1)  # registered by its own process already
    with pytest.raises(Init):
        h.component_register(dn("comp", "su3"), COMP1)  # a proxy needs proxied_component_cleanup
    with pytest.raises(NotExist):  # the proxy is not registered through this handle
        full(cluster, proxied_component_cleanup=lambda *a: None).component_register(dn("comp", "su3"), COMP1)
    with pytest.raises(InvalidParam):
        h.component_register(3)


def test_register_bad_operation_when_uninstantiated(env):
    cluster, comps = env
    admin = BridgedHandle(cluster, 1)
    admin.pump = comps.settle
    su3 = dn("su", "su3")
    admin.admin_operation(su3, amf.AdminOperation.LOCK)
    admin.admin_operation(su3, amf.AdminOperation.LOCK_INSTANTIATION)
    with pytest.raises(BadOperation):
        full(cluster).component_register(dn("comp", "su3"))


def test_unregister_errors(env):
    cluster, comps = env
    with pytest.raises(NotExist):
        full(cluster).component_unregister(COMP1)
    with pytest.raises(BadOperation):
        comps.handles[COMP1].component_unregister(COMP1)  # holds the ACTIVE assignment


def test_pm_errors(env):
    _cluster, comps = env
    h = comps.handles[COMP1]
    for args in ((0, 0, Rec.COMPONENT_RESTART), (8, 0, Rec.COMPONENT_RESTART), (amf.PM_ALL_ERRORS, -2,
                                                                                  Rec.COMPONENT_RESTART),
                 (amf.PM_ALL_ERRORS, 0, 99)):
        with pytest.raises(InvalidParam):
            h.pm_start(COMP1, 1234, args[1], args[0], args[2])
    with pytest.raises(NotExist):
        h.pm_start(COMP2, 1234, 0, amf.PM_ALL_ERRORS, Rec.COMPONENT_RESTART)
    with pytest.raises(NotExist):
        h.pm_start(COMP1, 999999, 0, amf.PM_ALL_ERRORS, Rec.COMPONENT_RESTART)
    h.pm_start(COMP1, 1234, 0, amf.PM_ALL_ERRORS, Rec.COMPONENT_RESTART)
    with pytest.raises(Exist):
        h.pm_start(COMP1, 1234, 0, amf.PM_ALL_ERRORS, Rec.COMPONENT_RESTART)
    with pytest.raises(InvalidParam):
        h.pm_stop(COMP1, 9, 1234, amf.PM_ALL_ERRORS)
    with pytest.raises(InvalidParam):
        h.pm_stop(COMP1, amf.PmStopQualifier.PROC, 1234, 0)


def test_healthcheck_errors(env):
    cluster, comps = env
    h = comps.handles[COMP1]
    for key in (b"", b"x" * 33):
        with pytest.raises(InvalidParam):
            h.healthcheck_start(COMP1, key, HC.AMF_INVOKED, Rec.NO_RECOMMENDATION)
    with pytest.raises(InvalidParam):
        h.healthcheck_start(COMP1, b"alive", 7, Rec.NO_RECOMMENDATION)
    with pytest.raises(InvalidParam):
        h.healthcheck_start(COMP1, b"alive", HC.AMF_INVOKED, 42)
    with pytest.raises(Init):
        full(cluster).healthcheck_start(COMP1, b"alive", HC.AMF_INVOKED, Rec.NO_RECOMMENDATION)
    with pytest.raises(NotExist):
        h.healthcheck_start(COMP1, b"other", HC.AMF_INVOKED, Rec.NO_RECOMMENDATION)
    with pytest.raises(NotExist):
        h.healthcheck_start(COMP2, b"alive", HC.AMF_INVOKED, Rec.NO_RECOMMENDATION)
    h.healthcheck_start(COMP1, "alive", HC.COMPONENT_INVOKED, Rec.NO_RECOMMENDATION)
    with pytest.raises(Exist):
        h.healthcheck_start(COMP1, b"alive", HC.COMPONENT_INVOKED, Rec.NO_RECOMMENDATION)
    h.healthcheck_confirm(COMP1, b"alive")
    with pytest.raises(NotExist):
        full(cluster).healthcheck_confirm(COMP1, b"alive")
    with pytest.raises(NotExist):
        full(cluster).healthcheck_stop(COMP1, b"alive")
    h.healthcheck_stop(COMP1, b"alive")
    with pytest.raises(NotExist):
        h.healthcheck_stop(COMP1, b"alive")


def test_amf_invoked_healthcheck_timeout_recovers(env):
    cluster, comps = env
    h = comps.handles[COMP1]
    h._callbacks["healthcheck"] = lambda inv, comp, key: None  # never answers
    h.healthcheck_start(COMP1, b"alive", HC.AMF_INVOKED, Rec.COMPONENT_FAILOVER)
    cluster.advance(0.6)  # period: the callback goes out
    comps.settle()
    cluster.advance(1.1)  # max duration: no answer
    comps.settle()
    doc = cluster.engine(1, amf.SERVICE_ID).status()
    si = next(s for s in doc["sis"] if s["name"] == dn("si", "si1"))
    assert {"su": dn("su", "su2"), "ha_state": "ACTIVE"} in si["assignments"]


def test_state_queries_and_answers(env):
    cluster, _comps = env
    h = full(cluster, 2)
    assert h.ha_state_get(COMP1, CSI) == amf.HAState.ACTIVE
    assert h.ha_state_get(COMP2, CSI) == amf.HAState.STANDBY
    with pytest.raises(NotExist):
        h.ha_state_get(dn("comp", "su3"), CSI)
    with pytest.raises(NotExist):
        h.ha_state_get(COMP1, "safCsi=none,safSi=si1,safApp=app")
    with pytest.raises(InvalidParam):
        h.csi_quiescing_complete(12345)
    with pytest.raises(InvalidParam):
        h.response(12345)
    with pytest.raises(InvalidParam):
        h.response(-1)
    with pytest.raises(InvalidParam):
        h.response(1, error=77)


def test_response_twice_is_invalid(env):
    cluster, comps = env
    comps.mute.add(COMP2)
    comps.handles[COMP2].component_error_report(COMP1, amf.TIME_UNKNOWN, Rec.COMPONENT_FAILOVER)
    comps.settle()
    pending = [e for e in comps.events if e[0] == "set" and e[1] == COMP2 and e[2] == amf.HAState.ACTIVE]
    assert pending
    h2 = comps.handles[COMP2]
    inv = cluster.engine(2, amf.SERVICE_ID).state.rt.comps[COMP2].queue[0].invocation
    h2.response(inv)
    with pytest.raises(InvalidParam):
        h2.response(inv)


def test_protection_group_errors(env):
    cluster, _ = env
    h = BridgedHandle(cluster, 1)
    for flags in (0, 8, amf.TRACK_CHANGES | amf.TRACK_CHANGES_ONLY, True):
        with pytest.raises(BadFlags):
            h.protection_group_track(CSI, flags)
    with pytest.raises(Init):
        h.protection_group_track(CSI, amf.TRACK_CHANGES)
    with pytest.raises(Init):
        h.protection_group_track(CSI, amf.TRACK_CURRENT, buffer=False)
    assert [n.member.comp_name for n in h.protection_group_track(CSI, amf.TRACK_CURRENT)] == [COMP1, COMP2]
    with pytest.raises(NotExist):
        h.protection_group_track("safCsi=x,safSi=si1,safApp=app", amf.TRACK_CURRENT)
    with pytest.raises(NotExist):
        h.protection_group_track_stop(CSI)


def test_error_report_and_clear_errors(env):
    cluster, _ = env
    h = BridgedHandle(cluster, 2)
    with pytest.raises(NotExist):
        h.component_error_report("safComp=x,safSu=su1,safSg=g,safApp=app", amf.TIME_UNKNOWN, Rec.COMPONENT_RESTART)
    with pytest.raises(InvalidParam):
        h.component_error_report(COMP1, amf.TIME_UNKNOWN, 0)
    with pytest.raises(NotExist):
        h.component_error_clear("safComp=x,safSu=su1,safSg=g,safApp=app")
    h.error_cancel_all(COMP1)
    h.error_report(COMP1, amf.TIME_UNKNOWN, Rec.COMPONENT_RESTART)


def test_admin_errors_and_finalize(env):
    cluster, comps = env
    h = BridgedHandle(cluster, 2)
    h.pump = comps.settle
    with pytest.raises(NotExist):
        h.admin_operation("safSu=x,safSg=g,safApp=app", amf.AdminOperation.LOCK)
    with pytest.raises(BadOperation):
        h.admin_operation(dn("su", "su1"), amf.AdminOperation.SI_SWAP)
    with pytest.raises(BadOperation):
        h.admin_operation(dn("su", "su1"), amf.AdminOperation.UNLOCK)
    with pytest.raises(InvalidParam):
        h.admin_operation(dn("su", "su1"), 8)
    h.finalize()
    with pytest.raises(BadHandle):
        h.cluster_state()
    with pytest.raises(BadHandle):
        h.finalize()


def test_disabled_amf_answers_not_exist():
    cluster = ServiceCluster([AmfEngine], nodes=[1])
    cluster.run()
    h = BridgedHandle(cluster, 1, csi_set=lambda *a: None, csi_remove=lambda *a: None,
                      component_terminate=lambda *a: None)
    doc = h.cluster_state()
    assert doc["enabled"] is False and doc["sus"] == []
    for call in (lambda: h.component_register(COMP1), lambda: h.ha_state_get(COMP1, CSI),
                 lambda: h.admin_operation(COMP1, amf.AdminOperation.LOCK),
                 lambda: h.component_error_report(COMP1, 0, Rec.COMPONENT_RESTART)):
        with pytest.raises(AisError) as err:
            call()
        assert err.value.code == SaAisError.NOT_EXIST


def test_malformed_requests_are_refused_and_lose_nothing(env):
    cluster, comps = env
    conn = cluster.connect(1, amf.SERVICE_ID)
    before = cluster.engine(1, amf.SERVICE_ID).status()
    for req in amf.Request:
        if req == amf.Request.CLUSTER_STATE:
            continue
        for junk in (b"\xff", b"\x00\x00\x00\x05abc", b"\x00" * 3):
            rid = cluster.request(conn, req, junk)
            cluster.run()
            error, _ = conn.response(rid)
            assert error not in (SaAisError.OK, SaAisError.LIBRARY), (req, junk)  # refused, never a crash
    assert cluster.engine(1, amf.SERVICE_ID).status() == before
    cluster.disconnect(conn)  # a client dying mid-way costs nothing either
    comps.settle()
    assert cluster.engine(1, amf.SERVICE_ID).status()["sis"] == before["sis"]
