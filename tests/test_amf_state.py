"""The replicated AMF state alone: assignment by every redundancy model, failover, escalation, admin."""

from __future__ import annotations

from openais.amf import AdminOperation as Op
from openais.amf import AdminState, PresenceState
from openais.amf import RecommendedRecovery as Rec
from tests.amf_components.confgen import dn, sg_conf
from tests.amf_components.sim import Sim

A, S, Q = 1, 2, 3


def test_2n_initial_assignment_and_failover():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.st.rt.started
    assert sim.roles() == {"su1": A, "su2": S}
    sets = [op for c, op in sim.sent if op.kind == "set"]
    assert sets[0].ha == A and sets[0].transition == 1 and sets[0].flags == 1
    assert sets[1].ha == S and sets[1].other == dn("comp", "su1")
    sim.error(dn("comp", "su1"), Rec.COMPONENT_FAILOVER)
    assert sim.roles() == {"su2": A, "su1": S}
    promo = next(op for c, op in sim.sent if c == dn("comp", "su2") and op.ha == A)
    assert promo.transition == 3 and promo.other == dn("comp", "su1")


def test_2n_node_loss_fails_over_and_returns_as_standby():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    sim.leave((2,))
    assert sim.roles() == {"su2": A}
    assert sim.st.su_presence(dn("su", "su1")) == PresenceState.UNINSTANTIATED
    sim.leave((1, 2))
    assert sim.roles() == {"su2": A, "su1": S}


def test_component_restart_then_escalation_to_su_failover():
    conf = sg_conf("2n", sus=2, nodes=2, sg_extra="saAmfSGCompRestartMax = 2\nsaAmfSGSuRestartMax = 0")
    sim = Sim(conf, members=(1, 2))
    comp = dn("comp", "su1")
    sim.error(comp, Rec.COMPONENT_RESTART)
    assert sim.roles() == {"su1": A, "su2": S}
    assert sim.st.rt.comps[comp].restart_count == 1
    sim.error(comp, Rec.COMPONENT_RESTART, dt=0.1)
    assert sim.roles() == {"su1": A, "su2": S}
    sim.error(comp, Rec.COMPONENT_RESTART, dt=0.1)  # third within probation: SU failover
    assert sim.roles() == {"su2": A, "su1": S}


def test_probation_expiry_resets_the_count():
    conf = sg_conf("2n", sus=2, nodes=2, sg_extra="saAmfSGCompRestartMax = 1\nsaAmfSGCompRestartProb = 1000\n"
                                                  "saAmfSGSuRestartMax = 0")
    sim = Sim(conf, members=(1, 2))
    comp = dn("comp", "su1")
    for _ in range(3):
        sim.error(comp, Rec.COMPONENT_RESTART, dt=2.0)
        assert sim.roles() == {"su1": A, "su2": S}
    sim.error(comp, Rec.COMPONENT_RESTART, dt=0.1)
    assert sim.roles() == {"su2": A, "su1": S}


def test_nplusm_assignment_and_failover():
    conf = sg_conf("nplusm", sus=3, nodes=3, sis=2, sg_extra="saAmfSGNumPrefActiveSUs = 2")
    sim = Sim(conf)
    r1, r2 = sim.roles(dn("si", "si1")), sim.roles(dn("si", "si2"))
    assert r1 == {"su1": A, "su3": S} and r2 == {"su2": A, "su3": S}
    sim.leave((2, 3))
    r1 = sim.roles(dn("si", "si1"))
    assert r1.get("su3") == A
    assert sim.roles(dn("si", "si2")).get("su2") == A


def test_nway_assignment():
    conf = sg_conf("nway", sus=3, nodes=3, sis=3)
    sim = Sim(conf)
    actives = [next(u for u, h in sim.roles(dn("si", f"si{i}")).items() if h == A) for i in (1, 2, 3)]
    assert sorted(actives) == ["su1", "su2", "su3"]
    for i in (1, 2, 3):
        assert list(sim.roles(dn("si", f"si{i}")).values()).count(S) == 1
    sim.leave((2, 3))
    for i in (1, 2, 3):
        assert A in sim.roles(dn("si", f"si{i}")).values()


def test_nwayactive_assignment():
    conf = sg_conf("nwayactive", sus=3, nodes=3, sis=1, si_extra="saAmfSIPrefActiveAssignments = 2")
    sim = Sim(conf)
    assert sim.roles() == {"su1": A, "su2": A}
    sim.leave((2, 3))
    assert sim.roles() == {"su2": A, "su3": A}


def test_noredundancy_assignment():
    conf = sg_conf("noredundancy", sus=3, nodes=3, sis=2, capability="x_active")
    sim = Sim(conf)
    assert sim.roles(dn("si", "si1")) == {"su1": A}
    assert sim.roles(dn("si", "si2")) == {"su2": A}
    sim.leave((2, 3))
    assert sim.roles(dn("si", "si1")) == {"su3": A}


def test_admin_lock_unlock_su_switches_over():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.admin(dn("su", "su1"), Op.LOCK) == 1
    assert sim.roles() == {"su2": A}
    promo = [op for c, op in sim.sent if c == dn("comp", "su2") and op.ha == A][-1]
    assert promo.transition == 2
    assert sim.admin(dn("su", "su1"), Op.LOCK) == 20  # BAD_OPERATION
    assert sim.admin(dn("su", "su1"), Op.UNLOCK) == 1
    assert sim.roles() == {"su2": A, "su1": S}


def test_admin_lock_instantiation_and_back():
    sim = Sim(sg_conf("2n", sus=3, nodes=3))
    su = dn("su", "su2")
    assert sim.admin(su, Op.LOCK_INSTANTIATION) == 20
    assert sim.admin(su, Op.LOCK) == 1
    assert sim.admin(su, Op.LOCK_INSTANTIATION) == 1
    assert sim.st.su_presence(su) == PresenceState.UNINSTANTIATED
    assert sim.admin(su, Op.UNLOCK_INSTANTIATION) == 1
    assert sim.admin(su, Op.UNLOCK) == 1
    assert sim.st.rt.sus[su].admin == AdminState.UNLOCKED


def test_admin_shutdown_quiesces_then_locks():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.admin(dn("su", "su1"), Op.SHUTDOWN) == 1
    assert any(op.ha == 4 for c, op in sim.sent if c == dn("comp", "su1"))
    assert sim.st.rt.sus[dn("su", "su1")].admin == AdminState.LOCKED
    assert sim.roles() == {"su2": A}


def test_admin_si_swap():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.admin(dn("si", "si1"), Op.SI_SWAP) == 1
    assert sim.roles() == {"su2": A, "su1": S}


def test_admin_restart_and_not_exist():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.admin(dn("su", "su1"), Op.RESTART) == 1
    assert sim.roles() == {"su1": A, "su2": S}
    assert sim.st.rt.sus[dn("su", "su1")].restart_count == 1
    assert sim.admin("safSu=nope,safSg=g,safApp=app", Op.LOCK) == 12
    assert sim.admin(dn("sg", ""), Op.RESTART) == 20


def test_instantiation_failure_disables_su_and_repaired():
    sim = Sim(sg_conf("2n", sus=3, nodes=3), members=(), start=False)
    sim.fail_inst.add(dn("comp", "su1"))
    sim.leave((1, 2, 3))
    assert sim.st.rt.comps[dn("comp", "su1")].presence == PresenceState.INSTANTIATION_FAILED
    assert sim.roles() == {"su2": A, "su3": S}
    sim.fail_inst.clear()
    assert sim.admin(dn("su", "su1"), Op.REPAIRED) == 1
    assert sim.st.rt.comps[dn("comp", "su1")].presence == PresenceState.INSTANTIATED


def test_busy_sg_answers_try_again():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    sim.hold.add(dn("comp", "su1"))
    sim.admin(dn("su", "su1"), Op.LOCK)
    assert sim.admin(dn("su", "su2"), Op.LOCK) == 6
    sim.release()
    assert sim.roles() == {"su2": A}


def test_identical_replicas_decide_identically():
    import json

    from plugins.amf.runtime import to_doc

    a = Sim(sg_conf("nway", sus=3, nodes=3, sis=3))
    b = Sim(sg_conf("nway", sus=3, nodes=3, sis=3))
    for s in (a, b):
        s.error(dn("comp", "su2"), Rec.COMPONENT_FAILOVER)
        s.leave((1, 3))
    assert json.dumps(to_doc(a.st.rt), sort_keys=True) == json.dumps(to_doc(b.st.rt), sort_keys=True)


LOCAL = "saAmfCompCategory = local\nsaAmfCompTerminateCmd = /bin/true"


def test_local_components_run_while_assigned():
    conf = sg_conf("noredundancy", sus=3, nodes=3, sis=2, capability="non_preinstantiable", comp_extra=LOCAL)
    sim = Sim(conf)
    assert sim.roles(dn("si", "si1")) == {"su1": A}
    assert sim.roles(dn("si", "si2")) == {"su2": A}
    assert sim.st.rt.comps[dn("comp", "su3")].presence == PresenceState.UNINSTANTIATED
    assert not any(c == dn("comp", "su1") for c, _op in sim.sent)  # no callbacks to local components
    assert sim.admin(dn("su", "su1"), Op.LOCK) == 1
    assert sim.roles(dn("si", "si1")) == {"su3": A}
    assert sim.st.rt.comps[dn("comp", "su1")].presence == PresenceState.UNINSTANTIATED
    sim.error(dn("comp", "su3"), Rec.COMPONENT_RESTART)
    assert sim.roles(dn("si", "si1")) == {"su3": A}
    assert sim.st.rt.comps[dn("comp", "su3")].restart_count == 1


def test_local_instantiation_failure_moves_the_si():
    conf = sg_conf("noredundancy", sus=3, nodes=3, sis=1, capability="non_preinstantiable", comp_extra=LOCAL)
    sim = Sim(conf, members=(), start=False)
    sim.fail_inst.add(dn("comp", "su1"))
    sim.leave((1, 2, 3))
    assert sim.st.rt.comps[dn("comp", "su1")].presence == PresenceState.INSTANTIATION_FAILED
    assert sim.roles() == {"su2": A}


def test_node_lock_and_node_failover_escalation():
    conf = sg_conf("2n", sus=3, nodes=3, node_extra="saAmfNodeSuFailoverMax = 1")
    sim = Sim(conf)
    assert sim.admin(dn("node", "n1"), Op.LOCK) == 1
    assert sim.roles() == {"su2": A, "su3": S}
    assert sim.admin(dn("node", "n1"), Op.UNLOCK) == 1
    comp = dn("comp", "su2")
    sim.error(comp, Rec.COMPONENT_FAILOVER)  # first SU failover of node 2: allowed
    assert sim.roles().get("su3") == A
    sim.error(dn("comp", "su3"), Rec.COMPONENT_FAILOVER)
    sim.error(dn("comp", "su2"), Rec.COMPONENT_FAILOVER, dt=0.1)  # second on node 2: node failover
    assert sim.st.rt.nodes[dn("node", "n2")].su_failovers == 0


def test_si_lock_and_shutdown():
    sim = Sim(sg_conf("2n", sus=2, nodes=2, sis=2), members=(1, 2))
    si2 = dn("si", "si2")
    assert sim.roles(si2) == {"su1": A, "su2": S}
    assert sim.admin(si2, Op.LOCK) == 1
    assert sim.roles(si2) == {}
    assert sim.roles(dn("si", "si1")) == {"su1": A, "su2": S}
    assert sim.admin(si2, Op.UNLOCK) == 1
    assert sim.roles(si2) == {"su1": A, "su2": S}
    assert sim.admin(si2, Op.SHUTDOWN) == 1
    assert sim.roles(si2) == {} and sim.st.rt.sis[si2].admin == AdminState.LOCKED
    assert sim.admin(si2, Op.LOCK_INSTANTIATION) == 20


def test_sg_lock_and_cleanup_failure():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    assert sim.admin(dn("sg", ""), Op.LOCK) == 1
    assert sim.roles() == {}
    assert sim.admin(dn("sg", ""), Op.UNLOCK) == 1
    assert sim.roles() == {"su1": A, "su2": S}


def test_clean_node_stop_switches_over_then_terminates():
    from plugins.amf.messages import Empty, Exec

    sim = Sim(sg_conf("2n", sus=3, nodes=3))
    sim.deliver(1, Exec.NODE_STOP, Empty())
    assert sim.roles() == {"su2": A, "su3": S}
    promo = [op for c, op in sim.sent if c == dn("comp", "su2") and op.ha == A][-1]
    assert promo.transition == 2  # QUIESCED: a switchover, not a failover
    assert sim.st.su_presence(dn("su", "su1")) == PresenceState.UNINSTANTIATED
    sim.leave((2, 3))
    assert sim.st.rt.nodes[dn("node", "n1")].admin == AdminState.UNLOCKED


def test_auto_adjust_moves_back_to_the_preferred_su():
    from plugins.amf.messages import Adjust, Exec

    conf = sg_conf("2n", sus=2, nodes=2, sg_extra="saAmfSGAutoAdjust = true\nsaAmfSGAutoAdjustProb = 1000",
                   comp_extra="saAmfCompRecoveryOnError = component_failover")
    sim = Sim(conf, members=(1, 2))
    assert not sim.adjusts
    sim.error(dn("comp", "su1"))
    assert sim.roles() == {"su2": A, "su1": S}
    _k, sg, epoch, step, prob = sim.adjusts[-1]
    assert prob == 1000
    sim.deliver(1, Exec.ADJUST, Adjust(sg, epoch - 1, step))  # disturbed since: ignored
    assert sim.roles() == {"su2": A, "su1": S}
    sim.deliver(1, Exec.ADJUST, Adjust(sg, epoch, step))
    assert sim.roles() == {"su1": A, "su2": S}
    n = len(sim.adjusts)
    sim.deliver(1, Exec.ADJUST, Adjust(sg, epoch, step))  # the same step again: idempotent
    assert sim.roles() == {"su1": A, "su2": S} and len(sim.adjusts) == n


def test_no_auto_adjust_by_default():
    conf = sg_conf("2n", sus=2, nodes=2, comp_extra="saAmfCompRecoveryOnError = component_failover")
    sim = Sim(conf, members=(1, 2))
    sim.error(dn("comp", "su1"))
    assert sim.roles() == {"su2": A, "su1": S} and not sim.adjusts


PROXY_CONF = """safAmfCluster = demo {
    safAmfNode = n1 {
        saAmfNodeClmNodeId = 1
    }
    safAmfNode = n2 {
        saAmfNodeClmNodeId = 2
    }
    safApp = app {
        safSg = px {
            saAmfSGRedundancyModel = 2n
            safSu = su1 {
                saAmfSUHostedByNode = n1
                saAmfSURank = 1
                safComp = proxy {
                    saAmfCompCategory = proxy
                    saAmfCompInstantiateCmd = /bin/true
                    saAmfCompRecoveryOnError = component_failover
                    saAmfCompCsTypes = pt
                }
            }
            safSu = su2 {
                saAmfSUHostedByNode = n2
                saAmfSURank = 2
                safComp = proxy {
                    saAmfCompCategory = proxy
                    saAmfCompInstantiateCmd = /bin/true
                    saAmfCompRecoveryOnError = component_failover
                    saAmfCompCsTypes = pt
                }
            }
        }
        safSg = pd {
            saAmfSGRedundancyModel = noredundancy
            safSu = dev1 {
                saAmfSUHostedByNode = n2
                safComp = dev {
                    saAmfCompCategory = proxied
                    saAmfCompCapability = x_active
                    saAmfCompProxyCsi = safCsi=pcsi,safSi=px-si,safApp=app
                    saAmfCompCsTypes = dt
                }
            }
        }
        safSi = px-si {
            saAmfSIProtectedbySG = px
            safCsi = pcsi {
                saAmfCSTypeName = pt
            }
        }
        safSi = pd-si {
            saAmfSIProtectedbySG = pd
            safCsi = dcsi {
                saAmfCSTypeName = dt
            }
        }
        safCSType = pt {
        }
        safCSType = dt {
        }
    }
}
"""
DEV = "safComp=dev,safSu=dev1,safSg=pd,safApp=app"
PROXY1, PROXY2 = "safComp=proxy,safSu=su1,safSg=px,safApp=app", "safComp=proxy,safSu=su2,safSg=px,safApp=app"


def test_proxied_component_runs_through_its_proxy_and_follows_a_proxy_failover():
    sim = Sim(PROXY_CONF, members=(1, 2))
    assert sim.roles("safSi=px-si,safApp=app") == {"su1": A, "su2": S}
    assert sim.roles("safSi=pd-si,safApp=app") == {"dev1": A}
    dev = sim.st.rt.comps[DEV]
    assert (dev.reg_node, dev.reg_conn) == (1, sim.st.rt.comps[PROXY1].reg_conn)
    assert any(c == PROXY1 and op.kind == "proxied_inst" and op.other == DEV for c, op in sim.sent)
    dev_sets = [op for c, op in sim.sent if c == DEV and op.kind == "set"]
    assert dev_sets and dev_sets[0].ha == A
    sim.error(PROXY1)
    assert sim.roles("safSi=px-si,safApp=app")["su2"] == A
    dev = sim.st.rt.comps[DEV]
    assert (dev.reg_node, dev.reg_conn) == (2, sim.st.rt.comps[PROXY2].reg_conn)
    assert sim.roles("safSi=pd-si,safApp=app") == {"dev1": A}
    assert any(c == PROXY2 and op.kind == "proxied_inst" and op.other == DEV for c, op in sim.sent)
    sim.error(DEV, Rec.COMPONENT_RESTART)  # cleanup through the proxy, then instantiate again
    assert any(c == PROXY2 and op.kind == "proxied_clean" and op.other == DEV for c, op in sim.sent)
    assert sim.roles("safSi=pd-si,safApp=app") == {"dev1": A}
    assert sim.st.rt.comps[DEV].restart_count >= 1


def test_si_dependency_tolerance():
    from plugins.amf.messages import DepExpired, Exec

    conf = sg_conf("2n", sus=2, nodes=2, sis=2).replace(
        "        safSi = si2 {\n", "        safSi = si2 {\n            safDepend = si1 {\n"
        "                saAmfToleranceTime = 2000\n            }\n")
    sim = Sim(conf, members=(1, 2))
    si1, si2 = dn("si", "si1"), dn("si", "si2")
    assert sim.roles(si2) == {"su1": A, "su2": S}
    assert sim.admin(si1, Op.LOCK) == 1  # the sponsor loses its active assignment
    assert sim.roles(si1) == {} and sim.roles(si2) == {"su1": A, "su2": S}  # tolerated for now
    window = sim.st.rt.dep_wait[si2]
    assert ("dep", si2, window, 2000) in sim.adjusts  # the owner times the tolerance
    sim.deliver(1, Exec.DEP_EXPIRED, DepExpired(si2, window + 5))  # another window: ignored
    assert sim.roles(si2) == {"su1": A, "su2": S}
    sim.deliver(1, Exec.DEP_EXPIRED, DepExpired(si2, window))
    assert sim.roles(si2) == {}
    assert sim.admin(si1, Op.UNLOCK) == 1
    assert sim.roles(si1) == {"su1": A, "su2": S} and sim.roles(si2) == {"su1": A, "su2": S}


def test_si_swap_fails_when_the_new_active_does_not_take_over():
    from plugins.amf.messages import Exec, Response

    conf = sg_conf("2n", sus=2, nodes=2, comp_extra="saAmfCompRecoveryOnError = component_failover")
    sim = Sim(conf, members=(1, 2))
    sim.hold.add(dn("comp", "su2"))
    assert sim.admin(dn("si", "si1"), Op.SI_SWAP) is None  # under way: su1 quiesced, su2 asked to be ACTIVE
    comp, op = sim.held[-1]
    assert comp == dn("comp", "su2") and op.ha == A
    sim.held.clear()
    sim.hold.clear()
    sim.deliver(2, Exec.RESPONSE, Response(op.invocation, 21))  # the new active refuses: an error of it
    answers = [a for a in sim.answers if a[4] == 15]
    assert answers[-1][5] == 21  # FAILED_OPERATION
    assert sim.roles() == {"su1": A, "su2": S}  # back on the old active


def test_node_switchover_moves_the_nodes_active_work():
    from tests.amf_components.confgen import multi_conf

    conf = multi_conf([dict(name="x", model="2n", sus=2, sis=1), dict(name="y", model="2n", sus=2, sis=1)], nodes=2)
    sim = Sim(conf, members=(1, 2))
    sx, sy = "safSi=x-si1,safApp=app", "safSi=y-si1,safApp=app"
    assert sim.roles(sx) == {"su1": A, "su2": S} and sim.roles(sy) == {"su1": A, "su2": S}
    sim.error("safComp=c1,safSu=su1,safSg=x,safApp=app", Rec.NODE_SWITCHOVER)
    assert sim.roles(sx) == {"su2": A, "su1": S}
    assert sim.roles(sy) == {"su2": A, "su1": S}  # the node's other SU switched over too
    promo = [op for c, op in sim.sent if c == "safComp=c1,safSu=su2,safSg=y,safApp=app" and op.ha == A][-1]
    assert promo.transition == 2  # by switchover (QUIESCED), not failover


def test_target_all_when_every_csi_of_a_component_changes_alike():
    conf = sg_conf("2n", sus=2, nodes=2, sis=2, comp_extra="saAmfCompRecoveryOnError = component_failover")
    sim = Sim(conf, members=(1, 2))
    n = len(sim.sent)
    sim.error(dn("comp", "su1"))
    promos = [op for c, op in sim.sent[n:] if c == dn("comp", "su2") and op.ha == A]
    assert len(promos) == 1 and promos[0].flags == 4 and promos[0].csi is None  # CSI_TARGET_ALL
    assert promos[0].transition == 3 and promos[0].other == dn("comp", "su1")
    assert sim.roles(dn("si", "si1")) == {"su2": A, "su1": S} and sim.roles(dn("si", "si2")) == {"su2": A, "su1": S}


def test_su_restart_cleans_up_in_reverse_instantiation_order():
    conf = sg_conf("2n", sus=2, nodes=2, comps_per_su=2, sg_extra="saAmfSGCompRestartMax = 0")
    conf = conf.replace("safComp = c2 {\n", "safComp = c2 {\n                    saAmfCompInstantiationLevel = 2\n")
    sim = Sim(conf, members=(1, 2))
    assert sim.roles() == {"su1": A, "su2": S}
    c1, c2 = dn("comp", "su1", "c1"), dn("comp", "su1", "c2")
    sim.cleans.clear()
    sim.error(c1, Rec.COMPONENT_RESTART)  # restart max 0: the SU is restarted
    assert sim.cleans == [c2, c1]
    assert sim.roles() == {"su1": A, "su2": S}
    assert sim.st.rt.sus[dn("su", "su1")].restart_count == 1
