"""Quorum across real executives: partitions made with the fault layer, node loss, the tool's answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from aisexec.localcluster import LocalCluster
from tests.mp_helpers import fault_env, heal, partition, start_node

pytestmark = pytest.mark.multiprocess


def quorumtool(cluster: LocalCluster, index: int, *args: str) -> tuple[int, dict | None, str]:
    """Run ``openais-quorumtool --json`` against node ``index``: (exit status, document, stderr)."""
    out = subprocess.run([sys.executable, "-m", "openais.tools.quorumtool", "--json", *args],
                         env=cluster.environ(index), capture_output=True, text=True, timeout=20)
    doc = json.loads(out.stdout) if out.stdout.strip().startswith("{") else None
    return out.returncode, doc, out.stderr


def wait_quorum(cluster: LocalCluster, index: int, quorate: bool, timeout: float = 30.0, **expect) -> dict:
    """Poll node ``index`` until its quorum is ``quorate`` (and every ``expect`` key matches)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rc, doc, _err = quorumtool(cluster, index)
        last = (rc, doc)
        if doc is not None and doc["quorate"] is quorate and all(doc.get(k) == v for k, v in expect.items()):
            assert rc == (0 if quorate else 1)
            return doc
        time.sleep(0.3)
    raise AssertionError(f"node {index} never reached quorate={quorate} {expect}: {last}")


def test_without_a_quorum_section_the_tool_says_none_is_configured(tmp_path):
    with LocalCluster(tmp_path, 1, transport="udpu", secauth=False) as cluster:
        start_node(cluster, 1)
        cluster.wait_members([1], [1], timeout=30)
        rc, doc, err = quorumtool(cluster, 1)
        assert rc == 2 and doc is None and "no quorum is configured" in err


def test_three_nodes_split_two_plus_one_then_heal(tmp_path):
    with LocalCluster(tmp_path, 3, transport="udpu", secauth=True, sections={"quorum": {}}) as cluster:
        start_node(cluster, 1, 2, 3)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=30)
        doc = wait_quorum(cluster, 1, True, total_votes=3)
        assert doc["expected_votes"] == 3 and doc["quorum"] == 2
        assert [n["node_id"] for n in doc["nodes"]] == [1, 2, 3]
        partition(cluster, [1, 2], [3])
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        cluster.wait_members([3], [3], timeout=30)
        assert wait_quorum(cluster, 1, True, total_votes=2)["quorum"] == 2
        wait_quorum(cluster, 2, True, total_votes=2)
        lone = wait_quorum(cluster, 3, False, total_votes=1)
        assert "Quorate" not in lone["flags"]
        assert "non-primary component" in cluster.log(3)
        heal(cluster)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=30)
        for index in (1, 2, 3):
            wait_quorum(cluster, index, True, total_votes=3)


@pytest.mark.parametrize("tie_breaker", [False, True])
def test_four_nodes_split_two_plus_two(tmp_path, tie_breaker):
    quorum = {"auto_tie_breaker": "on"} if tie_breaker else {}
    with LocalCluster(tmp_path, 4, transport="udpu", secauth=False, sections={"quorum": quorum}) as cluster:
        start_node(cluster, 1, 2, 3, 4)
        cluster.wait_members([1, 2, 3, 4], [1, 2, 3, 4], timeout=40)
        wait_quorum(cluster, 1, True, total_votes=4)
        partition(cluster, [1, 2], [3, 4])
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        cluster.wait_members([3, 4], [3, 4], timeout=30)
        wait_quorum(cluster, 1, tie_breaker, total_votes=2)
        wait_quorum(cluster, 2, tie_breaker, total_votes=2)
        wait_quorum(cluster, 3, False, total_votes=2)
        wait_quorum(cluster, 4, False, total_votes=2)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notifications(sock: socket.socket) -> list[str]:
    seen = []
    while True:
        try:
            seen.append(sock.recv(4096).decode())
        except (BlockingIOError, TimeoutError):
            return seen


def test_two_node_waits_for_all_at_first_start_then_survives_its_peer(tmp_path):
    port = _free_tcp_port()
    sections = {"quorum": {"two_node": 1}, "aisexec": {"metrics_port": port}}
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    with notify, LocalCluster(tmp_path / "c", 2, transport="udpu", secauth=False, sections=sections) as cluster:
        second = cluster.nodes[1].config_file  # the metrics port is node 1's alone
        second.write_text(second.read_text().replace(f"aisexec {{\n\tmetrics_port: {port}\n}}", ""))
        cluster.start(1, env={**fault_env(cluster, 1), "NOTIFY_SOCKET": notify_path})
        cluster.wait_members([1], [1], timeout=30)
        doc = wait_quorum(cluster, 1, False, total_votes=1)
        assert {"TwoNode", "WaitForAll"} <= set(doc["flags"])
        cfgtool = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "-s", "--json"],
                                 env=cluster.environ(1), capture_output=True, text=True, timeout=20)
        assert json.loads(cfgtool.stdout)["quorum"] == {"quorate": False, "expected_votes": 2, "total_votes": 1,
                                                        "quorum": 1}
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "openais_quorum_quorate 0" in metrics and "openais_quorum_expected_votes 2" in metrics
        early = "".join(_notifications(notify))
        assert "STATUS=waiting for quorum" in early and "READY=1" not in early
        start_node(cluster, 2)
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        wait_quorum(cluster, 1, True, total_votes=2)
        deadline = time.monotonic() + 10
        late = ""
        while "READY=1" not in late and time.monotonic() < deadline:
            late += "".join(_notifications(notify))
        assert "READY=1" in late
        plain = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "-s"], env=cluster.environ(1),
                               capture_output=True, text=True, timeout=20).stdout
        assert "Quorum: quorate (2 of 2 votes, quorum 1)" in plain
        cluster.kill(2)
        cluster.wait_members([1], [1], timeout=30)
        assert wait_quorum(cluster, 1, True, total_votes=1)["quorum"] == 1


def test_last_man_standing_shrinks_a_five_node_cluster_one_node_at_a_time(tmp_path):
    sections = {"quorum": {"last_man_standing": 1, "last_man_standing_window": 1000}}
    with LocalCluster(tmp_path, 5, transport="udpu", secauth=False, token=500,
                      sections=sections) as cluster:
        start_node(cluster, 1, 2, 3, 4, 5)
        alive = [1, 2, 3, 4, 5]
        cluster.wait_members(alive, alive, timeout=40)
        wait_quorum(cluster, 1, True, expected_votes=5)
        for victim in (5, 4, 3):
            cluster.kill(victim)
            alive.remove(victim)
            cluster.wait_members(alive, alive, timeout=30)
            doc = wait_quorum(cluster, 1, True, expected_votes=max(len(alive), 2), total_votes=len(alive))
            assert "LastManStanding" in doc["flags"]
        assert "last_man_standing: expected votes 3 -> 2" in cluster.log(1)


def test_set_expected_is_refused_below_the_votes_present_and_regains_quorum(tmp_path):
    with LocalCluster(tmp_path, 2, transport="udpu", secauth=False,
                      sections={"quorum": {"expected_votes": 3}}) as cluster:
        start_node(cluster, 1, 2)
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        wait_quorum(cluster, 1, True, total_votes=2)
        rc, _doc, err = quorumtool(cluster, 1, "-e", "1")  # two votes are present: refused by the executive
        assert rc == 2 and "INVALID_PARAM" in err, err
        cluster.kill(2)
        cluster.wait_members([1], [1], timeout=30)
        wait_quorum(cluster, 1, False, total_votes=1)
        rc, _doc, err = quorumtool(cluster, 1, "-e", "0")  # refused by the library
        assert rc == 2 and "expected votes must be" in err, err
        rc, doc, _err = quorumtool(cluster, 1, "-s", "-e", "1")
        assert rc == 0 and doc["quorate"] and doc["expected_votes"] == 1
