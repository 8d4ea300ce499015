"""The CPG library over the engine: handles on three nodes, callbacks and exceptions, without a daemon.

The handle's transport is replaced by a bridge into the in-process cluster,
so requests reach the real engine and callbacks come back through
``_on_dispatch`` exactly as ``dispatch`` would run them.
"""

from __future__ import annotations

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import cpg
from openais.cpg import Member, Reason
from openais.errors import AisError
from plugins.cpg.engine import CpgEngine


class BridgedHandle(cpg.CpgHandle):
    """A CpgHandle whose requests go to one node of a ServiceCluster (the cluster runs after each)."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, pid: int) -> None:  # no socket
        self.events: list[tuple] = []
        self._deliver_fn = lambda *args: self.events.append(("deliver", *args))
        self._confchg_fn = lambda *args: self.events.append(("confchg", *args))
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, cpg.SERVICE_ID, pid=pid)

    def _send_pipelined(self, msg_id: int, payload: bytes, timeout: float | None = None) -> None:
        self._call(msg_id, payload)

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        rid = self.cluster.request(self.conn, msg_id, payload)
        self.cluster.run()
        error, answer = self.conn.response(rid)
        if error != openais.SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def run_callbacks(self) -> list[tuple]:
        pending, self.conn.dispatched[:] = list(self.conn.dispatched), []
        for msg_id, payload in pending:
            self._on_dispatch(msg_id, payload)
        events, self.events = self.events, []
        return events


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([CpgEngine], nodes=[1, 2, 3])
    c.run()
    return c


def test_three_handles_see_the_same_story(cluster):
    handles = [BridgedHandle(cluster, n, 100 * n) for n in (1, 2, 3)]
    assert [h.local_nodeid() for h in handles] == [1, 2, 3]
    for h in handles:
        h.join("workers")
    for h in handles:
        h.mcast(f"from {h.conn.node}".encode())
    stories = [[e for e in h.run_callbacks() if e[0] == "deliver"] for h in handles]
    assert stories[0] == stories[1] == stories[2] == [
        ("deliver", "workers", n, 100 * n, f"from {n}".encode()) for n in (1, 2, 3)
    ]
    assert handles[2].membership("workers") == [Member(1, 100), Member(2, 200), Member(3, 300)]
    assert handles[0].iteration() == {"workers": [Member(1, 100), Member(2, 200), Member(3, 300)]}
    handles[1].leave("workers")
    assert handles[0].run_callbacks()[-1] == (
        "confchg", "workers", [Member(1, 100), Member(3, 300)], [Member(2, 200, Reason.LEAVE)], [])


def test_errors_are_the_right_exceptions(cluster):
    h = BridgedHandle(cluster, 1, 7)
    with pytest.raises(openais.NotExist):
        h.mcast(b"x")
    with pytest.raises(openais.NotExist):
        h.leave("g")
    h.join("g")
    with pytest.raises(openais.Exist):
        h.join("g")
    with pytest.raises(openais.InvalidParam):
        h.join("n" * 129)
    with pytest.raises(openais.TooBig):
        h.mcast(b"\0" * (cpg.MAX_MESSAGE + 1))
    cluster.queue_limit = 0
    with pytest.raises(openais.TryAgain):
        h.mcast(b"x")
    cluster.queue_limit = None
    h.mcast(b"x", guarantee=cpg.SAFE)
    assert h.run_callbacks()[-1] == ("deliver", "g", 1, 7, b"x")


def test_crash_and_merge_reasons_reach_the_callbacks(cluster):
    a = BridgedHandle(cluster, 1, 10)
    c = BridgedHandle(cluster, 3, 30)
    a.join("g")
    c.join("g")
    a.run_callbacks()
    cluster.partition([[1, 2], [3]])
    cluster.run()
    assert a.run_callbacks() == [("confchg", "g", [Member(1, 10)], [Member(3, 30, Reason.NODEDOWN)], [])]
    cluster.heal()
    cluster.run()
    assert a.run_callbacks() == [("confchg", "g", [Member(1, 10), Member(3, 30)], [],
                                  [Member(3, 30, Reason.NODEUP)])]
    cluster.disconnect(c.conn)
    cluster.run()
    assert a.run_callbacks() == [("confchg", "g", [Member(1, 10)], [Member(3, 30, Reason.PROCDOWN)], [])]
