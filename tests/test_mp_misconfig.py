"""A misconfigured node is kept out of a healthy ring, loudly on both sides, and the ring stays stable."""

from __future__ import annotations

import time

import pytest

from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess


def ring_ids(cluster: LocalCluster, indexes: list[int]) -> dict[int, str | None]:
    return {i: (cluster.status(i) or {}).get("ring_id") for i in indexes}


def wait_log(cluster: LocalCluster, index: int, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in cluster.log(index):
        assert time.monotonic() < deadline, f"node {index} never logged {text!r}:\n{cluster.log(index)[-3000:]}"
        time.sleep(0.2)


def assert_stable(cluster: LocalCluster, indexes: list[int], seconds: float) -> None:
    before = ring_ids(cluster, indexes)
    assert len(set(before.values())) == 1 and None not in before.values(), before
    time.sleep(seconds)
    after = ring_ids(cluster, indexes)
    assert after == before, f"the healthy ring re-formed: {before} -> {after}"


def test_a_node_missing_from_the_others_member_lists_is_kept_out(tmp_path):
    with LocalCluster(tmp_path, 4, transport="udpu", secauth=True) as cluster:
        for index in (1, 2, 3):  # the healthy nodes do not list 127.0.0.4
            conf = cluster.nodes[index - 1].config_file
            conf.write_text(conf.read_text().replace("\t\tmember {\n\t\t\tmemberaddr: 127.0.0.4\n\t\t}\n", ""))
        for index in (1, 2, 3):
            cluster.start(index)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=40)
        cluster.start(4)
        wait_log(cluster, 1, "packets from 127.0.0.4 (node 4) are ignored")
        assert_stable(cluster, [1, 2, 3], 4.0)
        assert cluster.status(4)["members"] == [4]
        wait_log(cluster, 4, "check that 127.0.0.4 is in their member lists", timeout=40)


def test_a_duplicate_nodeid_is_kept_out_and_both_sides_say_so(tmp_path):
    with LocalCluster(tmp_path, 4, transport="udpu", secauth=True) as cluster:
        conf = cluster.nodes[3].config_file
        conf.write_text(conf.read_text().replace("nodeid: 4", "nodeid: 2"))
        for index in (1, 2, 3):
            cluster.start(index)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=40)
        cluster.start(4)
        wait_log(cluster, 1, "two nodes use nodeid 2; keeping 127.0.0.2, ignoring 127.0.0.4")
        assert_stable(cluster, [1, 2, 3], 4.0)
        assert cluster.status(1)["members"] == [1, 2, 3]
        wait_log(cluster, 4, "Duplicate nodeid 2")
