"""AMF with real executives: 3 nodes on 127.0.0.x, Python components started by AMF's CLC-CLI.

One cluster for the module (one amf.conf with an SG per scenario); the node
SIGKILL test runs last.  Every wait polls with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aisexec.localcluster import LocalCluster
from openais import amf
from tests.amf_components.confgen import multi_conf
from tests.mp_helpers import ROOT, run_tool

pytestmark = pytest.mark.multiprocess

COMP = str(Path(__file__).resolve().parent / "amf_components" / "comp.py")
FO = "saAmfCompRecoveryOnError = component_failover"
GROUPS = [
    dict(name="g2n", model="2n", sus=2, sis=1, comp_extra=FO),
    dict(name="gres", model="2n", sus=2, sis=1,
         sg_extra="saAmfSGCompRestartMax = 1\nsaAmfSGCompRestartProb = 60000\nsaAmfSGSuRestartMax = 0"),
    dict(name="npm", model="nplusm", sus=3, sis=2, sg_extra="saAmfSGNumPrefActiveSUs = 2"),
    dict(name="nway", model="nway", sus=3, sis=3),
    dict(name="nwa", model="nwayactive", sus=3, sis=1, si_extra="saAmfSIPrefActiveAssignments = 2"),
    dict(name="nored", model="noredundancy", sus=3, sis=2, capability="x_active"),
    dict(name="gadm", model="2n", sus=3, sis=1, sg_extra="saAmfSGNumPrefInserviceSUs = 3"),
    dict(name="ghc", model="2n", sus=2, sis=1, comp_extra=FO, env={"AMF_TEST_HC": "amf"}),
    dict(name="gpm", model="2n", sus=2, sis=1, env={"AMF_TEST_PM": "child"}),
]
WAIT = 60.0


def su(g: str, n: int) -> str:
    """DN of SU ``n`` of SG ``g``."""
    return f"safSu=su{n},safSg={g},safApp=app"


def comp_dn(g: str, n: int) -> str:
    """DN of the component of SU ``n`` of SG ``g``."""
    return f"safComp=c1,{su(g, n)}"


def si(g: str, n: int = 1) -> str:
    """DN of SI ``n`` of SG ``g``."""
    return f"safSi={g}-si{n},safApp=app"


class Amf:
    """The cluster, its event log and library handles to its nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.events = root / "events.jsonl"
        conf = root / "amf.conf"
        conf.write_text(multi_conf(GROUPS, command=sys.executable, argv=COMP, startup_ms=30000,
                                   env={"AMF_TEST_EVENTS": str(self.events), "PYTHONPATH": ROOT}))
        self.cluster = LocalCluster(root, 3, sections={"amf": {"mode": "enabled"}},
                                    env={"OPENAIS_AMF_CONFIG_FILE": str(conf)})
        self.handles: dict[int, amf.AmfHandle] = {}

    def handle(self, index: int) -> amf.AmfHandle:
        """A library handle to node ``index`` (reconnected when needed)."""
        h = self.handles.get(index)
        if h is None:
            h = amf.initialize(path=str(self.cluster.nodes[index - 1].socket))
            self.handles[index] = h
        return h

    def state(self, index: int = 1) -> dict:
        """cluster_state() of node ``index``."""
        try:
            return self.handle(index).cluster_state()
        except amf.AisError:
            self.handles.pop(index, None)
            return self.handle(index).cluster_state()

    def roles(self, si_dn: str, index: int = 1) -> dict[str, str]:
        """SU name -> HA state for one SI."""
        doc = self.state(index)
        entry = next(s for s in doc["sis"] if s["name"] == si_dn)
        return {a["su"].split(",")[0][6:]: a["ha_state"] for a in entry["assignments"]}

    def wait(self, predicate, what: str, timeout: float = WAIT):
        """Poll ``predicate`` until it returns something true."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                last = predicate()
                if last:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    def pid(self, comp: str, index: int = 1) -> int:
        """The registered pid of ``comp``."""
        return next(c["pid"] for c in self.state(index)["components"] if c["name"] == comp)

    def log(self) -> list[dict]:
        """Every event the components wrote so far."""
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]


def _started(tmp_path_factory) -> Amf:
    """A formed 3-node cluster with every SI assigned (a second try on a fresh port if the ring did not form)."""
    for attempt in (1, 2):
        env = Amf(tmp_path_factory.mktemp("amf"))
        env.cluster.start_all()
        try:
            env.cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=WAIT)
            return env
        except TimeoutError:
            env.cluster.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    env = _started(tmp_path_factory)
    with env.cluster:
        env.wait(lambda: all(s["assignment_state"] != "UNASSIGNED" for s in env.state()["sis"]),
                 "every SI assigned")
        yield env
        for h in env.handles.values():
            with contextlib.suppress(Exception):
                h.finalize()


def test_every_redundancy_model_assigns(cl):
    assert cl.state()["cluster"]["started"]
    assert cl.wait(lambda: cl.roles(si("g2n")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "2n")
    cl.wait(lambda: cl.roles(si("npm", 1)) == {"su1": "ACTIVE", "su3": "STANDBY"}
            and cl.roles(si("npm", 2)) == {"su2": "ACTIVE", "su3": "STANDBY"}, "nplusm")
    cl.wait(lambda: sorted(next(u for u, h in cl.roles(si("nway", i)).items() if h == "ACTIVE")
                           for i in (1, 2, 3)) == ["su1", "su2", "su3"], "nway actives spread")
    for i in (1, 2, 3):
        assert sorted(cl.roles(si("nway", i)).values()) == ["ACTIVE", "STANDBY"]
    assert cl.roles(si("nwa")) == {"su1": "ACTIVE", "su2": "ACTIVE"}
    assert cl.roles(si("nored", 1)) == {"su1": "ACTIVE"} and cl.roles(si("nored", 2)) == {"su2": "ACTIVE"}
    # every node has the same view (once the same messages were delivered everywhere)
    cl.wait(lambda: cl.state(2)["sis"] == cl.state(1)["sis"] == cl.state(3)["sis"], "identical views")
    # the component saw its CSI attributes, descriptor and exact environment
    sets = [e for e in cl.log() if e["event"] == "csi_set" and e["comp"] == comp_dn("g2n", 2)]
    assert sets[0]["ha"] == "STANDBY" and sets[0]["other"] == comp_dn("g2n", 1)
    reg = next(e for e in cl.log() if e["event"] == "registered" and e["comp"] == comp_dn("g2n", 1))
    assert {"SA_AMF_COMPONENT_NAME", "OPENAIS_IPC_SOCKET", "AMF_TEST_EVENTS", "PYTHONPATH"} <= set(reg["env"])
    assert "HOME" not in reg["env"] and "PATH" not in reg["env"]
    h = cl.handle(2)
    assert h.ha_state_get(comp_dn("g2n", 1), f"safCsi=csi1,{si('g2n')}") == amf.HAState.ACTIVE


def test_component_sigkill_fails_over_to_the_standby(cl):
    cl.wait(lambda: cl.roles(si("g2n")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "2n ready")
    victim = cl.pid(comp_dn("g2n", 1))
    t0 = time.time()
    os.kill(victim, signal.SIGKILL)
    ev = cl.wait(lambda: next((e for e in cl.log() if e["event"] == "csi_set" and e["comp"] == comp_dn("g2n", 2)
                               and e["ha"] == "ACTIVE"), None), "standby ACTIVE")
    assert ev["transition"] == "NOT_QUIESCED" and ev["other"] == comp_dn("g2n", 1)
    assert ev["t"] - t0 < 5.0
    # the failed component is instantiated again and becomes the standby
    cl.wait(lambda: cl.roles(si("g2n")) == {"su2": "ACTIVE", "su1": "STANDBY"}, "old active back as standby")
    assert cl.pid(comp_dn("g2n", 1)) != victim


def test_restart_then_escalation_to_su_failover(cl):
    cl.wait(lambda: cl.roles(si("gres")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "gres ready")
    first = cl.pid(comp_dn("gres", 1))
    os.kill(first, signal.SIGKILL)
    # component restart: same SU keeps ACTIVE, new process
    cl.wait(lambda: cl.pid(comp_dn("gres", 1)) not in (None, first)
            and cl.roles(si("gres")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "restarted in place")
    comp = next(c for c in cl.state()["components"] if c["name"] == comp_dn("gres", 1))
    assert comp["restart_count"] == 1
    os.kill(cl.pid(comp_dn("gres", 1)), signal.SIGKILL)
    # second failure within the probation: SU restart is not allowed (max 0) -> SU failover
    cl.wait(lambda: cl.roles(si("gres")).get("su2") == "ACTIVE", "escalated to SU failover")


def test_healthcheck_timeout_fails_over(cl):
    cl.wait(lambda: cl.roles(si("ghc")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "ghc ready")
    pid = cl.pid(comp_dn("ghc", 1))
    Path(f"{cl.events}.hang.{pid}").touch()
    cl.wait(lambda: cl.roles(si("ghc")).get("su2") == "ACTIVE", "health check failure -> failover")


def test_passive_monitoring_fails_over(cl):
    cl.wait(lambda: cl.roles(si("gpm")) == {"su1": "ACTIVE", "su2": "STANDBY"}, "gpm ready")
    pid = cl.pid(comp_dn("gpm", 1))
    child = next(e["child"] for e in cl.log() if e["event"] == "pm_child" and e["pid"] == pid)
    os.kill(child, signal.SIGKILL)  # the monitored process ends: recovery given to pm_start (failover)
    cl.wait(lambda: cl.roles(si("gpm")).get("su2") == "ACTIVE", "passive monitoring -> failover")
    assert cl.pid(comp_dn("gpm", 1)) != pid or not cl.roles(si("gpm")).get("su1")


def _tool(cl, *args: str) -> subprocess.CompletedProcess:
    return run_tool(cl.cluster, 1, "amftool", *args, timeout=60)


def test_admin_operations_through_the_tool(cl):
    target = si("gadm")
    roles = cl.wait(lambda: (r := cl.roles(target)) and sorted(r.values()) == ["ACTIVE", "STANDBY"] and r,
                    "gadm ready")
    act = next(int(u[2:]) for u, h in roles.items() if h == "ACTIVE")
    std = next(int(u[2:]) for u, h in roles.items() if h == "STANDBY")
    spare = ({1, 2, 3} - {act, std}).pop()
    out = _tool(cl, "si-swap", target, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"version": 1, "operation": "si-swap", "target": target, "result": "OK"}
    assert cl.roles(target) == {f"su{std}": "ACTIVE", f"su{act}": "STANDBY"}
    assert _tool(cl, "lock", su("gadm", std)).returncode == 0
    assert cl.roles(target) == {f"su{act}": "ACTIVE", f"su{spare}": "STANDBY"}
    assert _tool(cl, "lock", su("gadm", std)).returncode == 1  # already LOCKED: refused
    h = cl.handle(2)  # the same operations through the library, from another node
    h.admin_operation(su("gadm", std), amf.AdminOperation.LOCK_INSTANTIATION)
    doc = cl.state(2)  # a status query on the node that ran the operation shows its result
    assert next(s for s in doc["sus"] if s["name"] == su("gadm", std))["presence_state"] == "UNINSTANTIATED"
    assert any(e["event"] == "terminate" and e["comp"] == comp_dn("gadm", std) for e in cl.log())
    h.admin_operation(su("gadm", std), amf.AdminOperation.UNLOCK_INSTANTIATION)
    h.admin_operation(su("gadm", std), amf.AdminOperation.UNLOCK)
    h.admin_operation(su("gadm", act), amf.AdminOperation.SHUTDOWN)
    roles = cl.roles(target, 2)
    assert f"su{act}" not in roles and roles.get(f"su{spare}") == "ACTIVE"
    assert any(e["event"] == "csi_set" and e["ha"] == "QUIESCING" and e["comp"] == comp_dn("gadm", act)
               for e in cl.log())
    h.admin_operation(su("gadm", act), amf.AdminOperation.UNLOCK)
    before = cl.pid(comp_dn("gadm", spare), 2)
    h.admin_operation(su("gadm", spare), amf.AdminOperation.RESTART)
    assert cl.pid(comp_dn("gadm", spare), 2) != before and cl.roles(target, 2).get(f"su{spare}") == "ACTIVE"
    missing = _tool(cl, "lock", "safSu=nope,safSg=gadm,safApp=app", "--json")
    assert missing.returncode == 3 and json.loads(missing.stdout)["result"] == "NOT_EXIST"
    status = _tool(cl, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["version"] == 1
    plain = _tool(cl)
    assert plain.returncode == 0 and "safSg=gadm,safApp=app" in plain.stdout


def _g2n_roles(cl, index: int) -> tuple[int, int]:
    """(SU number of the ACTIVE, SU number of the STANDBY) of g2n, once it has both (su1 on node 1, su2 on node 2)."""
    roles = cl.wait(lambda: (r := cl.roles(si("g2n"), index)) and sorted(r.values()) == ["ACTIVE", "STANDBY"]
                    and r, "g2n with an ACTIVE and a STANDBY")
    act = next(int(u[2:]) for u, h in roles.items() if h == "ACTIVE")
    return act, 3 - act


def test_node_sigkill_fails_over_to_another_node(cl):
    act, std = _g2n_roles(cl, 3)  # the SU number is its node number
    cl.cluster.kill(act)
    cl.wait(lambda: cl.roles(si("g2n"), 3).get(f"su{std}") == "ACTIVE", f"failover to node {std}")
    doc = cl.state(3)
    dead = next(n for n in doc["nodes"] if n["name"].startswith(f"safAmfNode=n{act}"))
    assert not dead["member"]
    if act == 2:
        assert cl.roles(si("npm", 2), 3).get("su3") == "ACTIVE"
    # the node comes back: its SUs are instantiated again and take roles (no fail-back)
    cl.cluster.start(act)
    cl.wait(lambda: cl.roles(si("g2n"), 3) == {f"su{std}": "ACTIVE", f"su{act}": "STANDBY"},
            f"node {act} back as standby")
    cl.wait(lambda: cl.state(act)["sis"] == cl.state(3)["sis"], f"node {act} has the same view")


def test_clean_stop_switches_over(cl):
    act, std = _g2n_roles(cl, 3)
    proc = cl.cluster.procs[act]
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    stop_s = time.time() - t0
    ev = cl.wait(lambda: next((e for e in cl.log() if e["event"] == "csi_set" and e["comp"] == comp_dn("g2n", std)
                               and e["ha"] == "ACTIVE" and e["t"] >= t0), None), f"switchover to node {std}")
    assert ev["transition"] == "QUIESCED" and ev["other"] == comp_dn("g2n", act)
    assert stop_s < 15
    cl.cluster.procs.pop(act, None)
    cl.handles.pop(act, None)
    cl.wait(lambda: cl.roles(si("g2n"), 3) == {f"su{std}": "ACTIVE"}, f"node {act} gone")
