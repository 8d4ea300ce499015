"""Test your own application against real executives: a pytest plugin (entry point ``pytest11``).

Installing openais-py makes these fixtures available to any pytest run::

    def test_my_service_fails_over(openais_cluster):
        cluster = openais_cluster(3)                       # 3 executives on 127.0.0.1..3, synced
        env = cluster.environ(1)                           # OPENAIS_IPC_SOCKET etc. of node 1
        subprocess.run([sys.executable, "my_client.py"], env=env, check=True)
        cluster.kill(2)                                    # SIGKILL node 2's executive
        cluster.wait_members([1, 3], [1, 3])

``openais_cluster(nodes=3, *, sections=None, secauth=True, transport="udpu", **options)``
returns a :class:`aisexec.localcluster.LocalCluster` whose nodes are started and
synced; ``sections`` adds openais.conf sections (``{"amf": {"mode": "enabled"}}``).
Every process the fixture started is killed when the test ends.  The clusters
live under pytest's temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aisexec.localcluster import LocalCluster

__all__ = ["LocalCluster", "openais_cluster"]


@pytest.fixture
def openais_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalCluster]]:
    """A factory of started, synced loopback clusters; all are torn down after the test."""
    clusters: list[LocalCluster] = []

    def make(nodes: int = 3, *, timeout: float = 40.0, env: dict[str, str] | None = None,
             **options: Any) -> LocalCluster:
        options.setdefault("transport", "udpu")
        options.setdefault("secauth", True)
        cluster = LocalCluster(tmp_path_factory.mktemp("openais"), nodes, env=env, **options)
        clusters.append(cluster)
        cluster.start_all()
        everyone = list(range(1, nodes + 1))
        cluster.wait_members(everyone, everyone, timeout=timeout)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()
