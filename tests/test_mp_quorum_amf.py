"""AMF honours quorum across real executives: the side without quorum gives its ACTIVE work up, the quorate
side takes it over, and the components' own records never show two ACTIVE assignments of the SI at once."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytest

from aisexec.localcluster import LocalCluster
from openais import amf
from tests.amf_components.confgen import multi_conf
from tests.mp_helpers import fault_env, heal, partition
from tests.test_mp_quorum import wait_quorum

pytestmark = pytest.mark.multiprocess

COMP = str(Path(__file__).resolve().parent / "amf_components" / "comp.py")
ROOT = str(Path(__file__).resolve().parent.parent)
SI = "safSi=q-si1,safApp=app"
GROUPS = [dict(name="q", model="2n", sus=3, sis=1, sg_extra="saAmfSGNumPrefInserviceSUs = 3",
               comp_extra="saAmfCompRecoveryOnError = component_failover")]


def roles(cluster: LocalCluster, index: int) -> dict[str, str]:
    """SU name -> HA state of the SI, as node ``index`` sees it ({} if it cannot tell)."""
    with contextlib.suppress(Exception), amf.initialize(path=str(cluster.nodes[index - 1].socket)) as h:
        doc = h.cluster_state()
        entry = next(s for s in doc["sis"] if s["name"] == SI)
        return {a["su"].split(",")[0][6:]: a["ha_state"] for a in entry["assignments"]}
    return {}


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def active_intervals(events: list[dict]) -> list[tuple[str, float, float]]:
    """(component, from, to) of every span in which a component held the CSI ACTIVE, by its own records."""
    spans: list[tuple[str, float, float]] = []
    since: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        comp = e["comp"]
        if e["event"] == "csi_set" and e.get("ha") == "ACTIVE":
            since.setdefault(comp, e["t"])
        elif comp in since and (e["event"] in ("csi_remove", "terminate", "exit", "lost")
                                or (e["event"] == "csi_set" and e.get("ha") != "ACTIVE")):
            spans.append((comp, since.pop(comp), e["t"]))
    spans += [(comp, t, float("inf")) for comp, t in since.items()]
    return spans


def test_the_minority_stops_and_the_majority_takes_over_without_two_actives(tmp_path):
    events = tmp_path / "events.jsonl"
    conf = tmp_path / "amf.conf"
    conf.write_text(multi_conf(GROUPS, command=sys.executable, argv=COMP, startup_ms=20000,
                               env={"AMF_TEST_EVENTS": str(events), "PYTHONPATH": ROOT}))
    with LocalCluster(tmp_path, 3, transport="udpu", secauth=False, env={"OPENAIS_AMF_CONFIG_FILE": str(conf)},
                      sections={"amf": {"mode": "enabled"}, "quorum": {}}) as cluster:
        for index in (1, 2, 3):
            cluster.start(index, env=fault_env(cluster, index))
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        wait_for(lambda: roles(cluster, 2).get("su1") == "ACTIVE" and roles(cluster, 2).get("su2") == "STANDBY",
                 "su1 ACTIVE on node 1, su2 STANDBY")
        # node 1, holding the ACTIVE, is cut off alone
        partition(cluster, [1], [2, 3])
        wait_quorum(cluster, 1, False)
        wait_quorum(cluster, 2, True)
        wait_for(lambda: roles(cluster, 2).get("su2") == "ACTIVE", "su2 ACTIVE on the quorate side")
        wait_for(lambda: "su1" not in roles(cluster, 1) or roles(cluster, 1)["su1"] != "ACTIVE",
                 "no ACTIVE left on the minority")
        time.sleep(1.0)
        # heal: one consistent state, still one ACTIVE
        heal(cluster)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        wait_quorum(cluster, 1, True, total_votes=3)
        final = wait_for(lambda: (r := roles(cluster, 1)) and r == roles(cluster, 3)
                         and list(r.values()).count("ACTIVE") == 1 and r, "one consistent state")
        assert list(final.values()).count("ACTIVE") == 1
        # the quorate side's assignment wins the merge: su2 stays ACTIVE, no second failover back to node 1
        assert final.get("su2") == "ACTIVE", final
        time.sleep(1.0)
        assert roles(cluster, 2).get("su2") == "ACTIVE"
        assert "AMF merge: the assignments of node 2's side win (it was quorate)" in cluster.log(1)
    records = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    spans = active_intervals(records)
    assert len({comp for comp, _a, _b in spans}) >= 2, spans  # the work did move
    for i, (comp_a, a0, a1) in enumerate(spans):
        for comp_b, b0, b1 in spans[i + 1:]:
            if comp_a != comp_b:
                assert a1 <= b0 or b1 <= a0, f"two ACTIVE at once: {comp_a} {a0}-{a1} and {comp_b} {b0}-{b1}"
