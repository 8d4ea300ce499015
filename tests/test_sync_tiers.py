"""The service layer's per-service readiness during a sync round with a bulk service (priority tiers)."""

from __future__ import annotations

from aisexec.service import ExecHandler, ServiceEngine
from aisexec.servicelayer import BULK_RESERVE
from aisexec.sync import PRIORITY_BULK
from aisexec.testing import ServiceCluster


class Normal(ServiceEngine):
    """A CPG-like service: small state, one sync share."""

    id = 8
    name = "NORMAL"

    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.exec_handlers = {1: ExecHandler(lambda sender, payload: self.applied.append(bytes(payload)))}

    def sync_process(self) -> bool:
        return False


class Bulk(ServiceEngine):
    """A CKPT-like service: many sync shares, declared bulk."""

    id = 3
    name = "BULK"
    sync_priority = PRIORITY_BULK

    def __init__(self) -> None:
        self.left = 0
        self.exec_handlers = {}

    def sync_init(self, transitional, members, ring_id) -> None:
        self.left = 50

    def sync_process(self) -> bool:
        self.left -= 1
        return self.left > 0


def test_cluster_ready_per_service_while_the_bulk_tier_syncs():
    c = ServiceCluster([Normal, Bulk], nodes=[1, 2, 3])
    layer = c.node(1)
    assert not layer.cluster_ready(8) and not layer.cluster_ready(3) and not layer.cluster_ready(7)
    assert not layer.cluster_ready()
    for _ in range(200):
        if layer.sync.current_service == 3:
            break
        if not c.step():
            for n in (1, 2, 3):
                c.node(n).pump()
    for n in (1, 2, 3):
        node = c.node(n)
        assert node.sync.plan == (8, 3)  # the engine attribute reached the plan: bulk goes last
        assert node.cluster_ready(8) and node.cluster_ready(7)  # 7: not in the plan
        assert not node.cluster_ready(3) and not node.cluster_ready() and not node.ready()
    c.run()
    assert all(c.node(n).cluster_ready(3) and c.node(n).ready() for n in (1, 2, 3))


class Plain(ServiceEngine):
    """A service without sync hooks (like CFG): its ``api.ready()`` is the node's."""

    id = 7
    name = "PLAIN"

    def exec_init(self, api) -> None:
        self.api = api


class NormalWithApi(Normal):
    def exec_init(self, api) -> None:
        self.api = api


def test_each_engine_is_ready_when_its_own_tier_is_and_requests_leave_room_for_bulk():
    c = ServiceCluster([NormalWithApi, Bulk, Plain], nodes=[1, 2])
    layer = c.node(1)
    normal, plain = c.engine(1, 8), c.engine(1, 7)
    assert normal.api.nodeid == 1 and normal.api.members() == layer.members()  # the layer's, through the proxy
    assert not normal.api.ready() and not plain.api.ready()
    for _ in range(200):
        if layer.sync.current_service == 3:
            break
        if not c.step():
            for n in (1, 2):
                c.node(n).pump()
    assert normal.api.ready()  # CPG-like: served while the bulk tier syncs
    assert not plain.api.ready() and not layer.ready()  # no sync hooks: the node's whole round
    reserved: list[int] = []
    c.host(1).has_room = lambda size: reserved.append(size) or True
    assert layer.has_room(100) and reserved == [100 + BULK_RESERVE]
    c.run()
    assert normal.api.ready() and plain.api.ready() and layer.ready()
    assert layer.has_room(100) and reserved[-1] == 100
