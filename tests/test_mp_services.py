"""CPG and CLM across real executives: process and node failures, rejoin, and partitions made by the fault layer."""

from __future__ import annotations

import queue
import subprocess
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster
from tests.agents import CpgAgent
from tests.mp_helpers import JsonLinesProcess, closing, heal, partition, running_cluster, start_node

pytestmark = pytest.mark.multiprocess

GROUP = "svc"


@pytest.fixture
def cluster3(tmp_path):
    with running_cluster(tmp_path, wait=30) as cluster:
        yield cluster


@pytest.fixture
def agents():
    """A list the test appends its agents to; every one is closed (or killed) at the end."""
    started: list[CpgAgent] = []
    yield started
    closing(started)


def join_all(agents: list[CpgAgent], group: str = GROUP) -> None:
    """Join every agent to ``group`` and wait until each sees all of them."""
    for agent in agents:
        agent.command(f"join {group}")
        agent.wait_for(lambda e: e.get("ok") == "join")
    for agent in agents:
        agent.wait_for(lambda e: e.get("ev") == "confchg" and len(e["members"]) == len(agents), timeout=20)


def left_event(reason: str, nodeid: int, pid: int):
    """Predicate: a confchg whose left list is exactly one member (nodeid, pid) with ``reason``."""
    return lambda e: e.get("ev") == "confchg" and e["left"] == [[nodeid, pid, reason]]


def wait_deliveries(agents: list[CpgAgent], count: int, timeout: float = 20.0) -> list[list[str]]:
    """Wait until each agent delivered at least ``count`` messages; return their deliveries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and min(len(a.deliveries()) for a in agents) < count:
        time.sleep(0.1)
    return [a.deliveries() for a in agents]


# -- a. PROCDOWN ------------------------------------------------------------------------------


def test_killed_client_process_leaves_its_group_with_procdown(cluster3, agents):
    watcher, victim = CpgAgent(cluster3, 1), CpgAgent(cluster3, 2)
    agents += [watcher, victim]
    join_all([watcher, victim])
    pid = victim.proc.pid
    victim.kill()
    event = watcher.wait_for(left_event("PROCDOWN", 2, pid), timeout=10)
    assert [m[:2] for m in event["members"]] == [[1, watcher.proc.pid]]
    assert event["joined"] == []


# -- b. NODEDOWN and NODEUP ------------------------------------------------------------------------


def test_node_loss_gives_nodedown_and_a_restarted_node_joins_again(cluster3, agents):
    one, two, three = (CpgAgent(cluster3, i) for i in (1, 2, 3))
    agents += [one, two, three]
    join_all([one, two, three])
    pid3 = three.proc.pid
    cluster3.kill(3)
    for survivor in (one, two):
        event = survivor.wait_for(left_event("NODEDOWN", 3, pid3), timeout=15)
        assert sorted(m[0] for m in event["members"]) == [1, 2]
    three.kill()
    start_node(cluster3, 3)
    cluster3.wait_members([1, 2, 3], [1, 2, 3], timeout=30)
    again = CpgAgent(cluster3, 3)
    agents.append(again)
    again.command(f"join {GROUP}")
    for survivor in (one, two):
        event = survivor.wait_for(lambda e: e.get("ev") == "confchg" and any(m[0] == 3 for m in e["joined"]),
                                  timeout=15)
        assert event["joined"] == [[3, again.proc.pid, "JOIN"]]
        assert sorted(m[0] for m in event["members"]) == [1, 2, 3]
    again.wait_for(lambda e: e.get("ev") == "confchg" and len(e["members"]) == 3, timeout=15)


# -- c. partition and merge through the fault layer ---------------------------------------------------


def test_partition_by_fault_files_splits_the_ring_and_clearing_them_merges_it(cluster3, agents):
    one, two, three = (CpgAgent(cluster3, i) for i in (1, 2, 3))
    agents += [one, two, three]
    join_all([one, two, three])
    partition(cluster3, [1, 2], [3])
    cluster3.wait_members([1, 2], [1, 2], timeout=20)
    cluster3.wait_members([3], [3], timeout=20)
    for agent in (one, two):
        agent.wait_for(left_event("NODEDOWN", 3, three.proc.pid), timeout=15)
    three.wait_for(lambda e: e.get("ev") == "confchg" and [m[0] for m in e["members"]] == [3], timeout=15)

    assert [a.deliveries() for a in (one, two, three)] == [[], [], []]
    one.command("send 30 a")
    two.command("send 30 b")
    three.command("send 30 c")
    side12 = wait_deliveries([one, two], 60)
    side3 = wait_deliveries([three], 30)[0]
    assert side12[0] == side12[1], "the two nodes of one side delivered different orders"
    assert side12[0], f"nothing delivered in partition [1, 2]: {[a.events[-4:] for a in (one, two, three)]}"
    assert sorted(side12[0]) == sorted([f"a:{i}" for i in range(30)] + [f"b:{i}" for i in range(30)])
    assert side3 == [f"c:{i}" for i in range(30)]

    heal(cluster3)
    status = cluster3.wait_members([1, 2, 3], [1, 2, 3], timeout=20)
    assert len({s["ring_id"] for s in status.values()}) == 1
    merged = {}
    for agent in (one, two, three):
        merged[agent] = agent.wait_for(lambda e: e.get("ev") == "confchg" and len(e["members"]) == 3, timeout=15)
    # processes that appear through a merge are reported NODEUP (corosync semantics)
    assert merged[one]["joined"] == [[3, three.proc.pid, "NODEUP"]]
    assert sorted(merged[three]["joined"]) == sorted([[1, one.proc.pid, "NODEUP"], [2, two.proc.pid, "NODEUP"]])
    views = []
    for agent in (one, two, three):
        agent.command(f"members {GROUP}")
        views.append(sorted(tuple(m[:2]) for m in agent.wait_for(lambda e: e.get("ok") == "members")["members"]))
    expected = sorted((a.nodeid, a.proc.pid) for a in (one, two, three))
    assert views == [expected, expected, expected]
    time.sleep(0.5)  # nothing sent in one partition reaches the other after the merge
    assert not [d for a in (one, two) for d in a.deliveries() if d.startswith("c:")]
    assert not [d for d in three.deliveries() if d[:2] in ("a:", "b:")]


# -- d. CLM tracking -------------------------------------------------------------------------------------

_CLM_TRACKER = """
import json, select, sys
import openais
from openais import clm

def track(buffer, number_of_members, error):
    print(json.dumps({"view": buffer.view_number, "members": number_of_members, "error": int(error),
                      "notes": [[n.node.node_id, n.cluster_change.name, n.node.member]
                                for n in buffer.notifications]}), flush=True)

with clm.initialize(track=track) as handle:
    handle.track(clm.TRACK_CURRENT | clm.TRACK_CHANGES)
    print(json.dumps({"ok": "track"}), flush=True)
    while True:
        readable, _, _ = select.select([handle, sys.stdin], [], [], 1.0)
        if handle in readable:
            handle.dispatch(openais.DISPATCH_ALL)
        if sys.stdin in readable and not sys.stdin.readline():
            break
"""


class ClmTracker(JsonLinesProcess):
    """A client process on one node tracking CLM changes; its callbacks arrive as JSON lines."""

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        super().__init__([sys.executable, "-c", _CLM_TRACKER], cluster.environ(index), name="CLM tracker",
                         line_buffered=False)

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        """The next line satisfying ``predicate`` (earlier ones are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("CLM tracker: no matching callback") from None
            if event is None:
                raise self.exited()
            if predicate(event):
                return event

    def close(self) -> None:
        """End the tracker (closing stdin), killing it if it does not go."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


def _change(node: int, change: str):
    return lambda e: "notes" in e and any(n[0] == node and n[1] == change for n in e["notes"])


def test_clm_tracking_reports_node_loss_and_rejoin_with_rising_view_numbers(cluster3):
    tracker = ClmTracker(cluster3, 1)
    try:
        tracker.wait_for(lambda e: e.get("ok") == "track")
        current = tracker.wait_for(lambda e: "notes" in e)
        assert sorted(n[0] for n in current["notes"]) == [1, 2, 3]
        assert current["members"] == 3
        cluster3.kill(3)
        left = tracker.wait_for(_change(3, "LEFT"), timeout=15)
        assert left["view"] > current["view"]
        assert left["members"] == 2
        assert [n[2] for n in left["notes"] if n[0] == 3] == [False]
        start_node(cluster3, 3)
        joined = tracker.wait_for(_change(3, "JOINED"), timeout=30)
        assert joined["view"] > left["view"]
        assert joined["members"] == 3
        assert sorted(n[0] for n in joined["notes"] if n[2]) == [1, 2, 3]
    finally:
        tracker.close()


# -- e. the fault layer's own start-up check ----------------------------------------------------------------


def test_bad_fault_specification_stops_the_executive_with_the_item_named(tmp_path):
    with LocalCluster(tmp_path, 1, transport="udpu", secauth=True) as cluster:
        proc = cluster.start(1, env={"OPENAIS_FAULTS": "loss=0.1,bogus=1"})
        assert proc.wait(timeout=20) != 0
        assert "fault item 'bogus=1': unknown key 'bogus'" in cluster.log(1)


# -- f. a lossy, duplicating, jittery network -----------------------------------------------------------------

LOSSY = "loss=0.05,dup=0.05,delay=3,jitter=2"


def test_ordering_holds_with_loss_duplication_and_jitter_on_every_node(tmp_path, agents):
    with LocalCluster(tmp_path, 3, transport="udpu", secauth=True, env={"OPENAIS_FAULTS": LOSSY}) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=30)
        members = [CpgAgent(cluster, i) for i in (1, 2, 3)]
        agents += members
        join_all(members)
        for agent, tag in zip(members, "xyz", strict=True):
            agent.command(f"send 100 {tag}")
        orders = wait_deliveries(members, 300, timeout=25)
        assert [len(o) for o in orders] == [300, 300, 300]
        assert orders[0] == orders[1] == orders[2]
        for tag in "xyz":
            assert [d for d in orders[0] if d[0] == tag] == [f"{tag}:{i}" for i in range(100)]
        assert "fault injection active: " + LOSSY in cluster.log(1)
