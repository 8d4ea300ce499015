"""The EVS library over the engine (bridged into the in-process cluster, no daemon)."""

from __future__ import annotations

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import evs
from openais.errors import AisError
from plugins.evs.engine import EvsEngine


class BridgedHandle(evs.EvsHandle):
    """An EvsHandle whose requests go to one node of a ServiceCluster (the cluster runs after each)."""

    def __init__(self, cluster: ServiceCluster, nodeid: int) -> None:  # no socket
        self.events: list[tuple] = []
        self._deliver_fn = lambda *args: self.events.append(("deliver", *args))
        self._confchg_fn = lambda *args: self.events.append(("confchg", *args))
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, evs.SERVICE_ID, pid=nodeid)

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


def test_groups_membership_and_errors():
    cluster = ServiceCluster([EvsEngine], nodes=[1, 2, 3])
    cluster.run()
    a, b = BridgedHandle(cluster, 1), BridgedHandle(cluster, 2)
    a.join(["x", "y"])
    b.join(["y"])
    a.mcast_joined(b"1")
    b.mcast_groups(["x"], b"2", evs.SAFE)
    assert a.run_callbacks() == [("deliver", 1, b"1"), ("deliver", 2, b"2")]
    assert b.run_callbacks() == [("deliver", 1, b"1")]
    assert b.membership() == (2, [1, 2, 3])
    with pytest.raises(openais.NotExist):
        b.leave(["x"])
    b.leave(["y"])
    cluster.crash(3)
    cluster.run()
    assert a.run_callbacks() == [("confchg", [1, 2], [3], [])]
