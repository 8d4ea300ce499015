"""The ``openais_cluster`` fixture users get from the installed pytest plugin."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.multiprocess


def test_the_fixture_starts_a_synced_cluster_and_kills_it_afterwards(openais_cluster):
    cluster = openais_cluster(2, secauth=False)
    statuses = [cluster.status(i) for i in (1, 2)]
    assert all(s["synced"] and s["members"] == [1, 2] for s in statuses)
    out = cluster.client(2, "from openais import cpg\nimport json\nwith cpg.initialize() as h:\n"
                            "    print(json.dumps(h.local_nodeid()))")
    assert out.returncode == 0 and json.loads(out.stdout) == 2
    pids = [p.pid for p in cluster.procs.values()]
    assert len(pids) == 2
    cluster.kill(2)
    cluster.wait_members([1], [1], timeout=30)


def test_the_plugin_is_registered_by_entry_point():
    from importlib import metadata

    names = {ep.value for ep in metadata.entry_points(group="pytest11")}
    assert "openais.testing" in names
