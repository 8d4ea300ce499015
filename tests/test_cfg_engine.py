"""CFG engine on the in-process cluster: status, members, readiness, shutdown."""

from __future__ import annotations

import os

import pytest

from aisexec.testing import ServiceCluster
from openais import cfg
from openais.cfg import Request
from openais.errors import SaAisError
from plugins.cfg.engine import SHUTDOWN_DELAY, CfgEngine
from plugins.clm.engine import ClmEngine

SID = cfg.SERVICE_ID


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([CfgEngine, ClmEngine], nodes=[1, 2, 3])
    c.run()
    return c


def ask(c: ServiceCluster, conn, msg_id: int) -> tuple[int, bytes]:
    return conn.response(c.request(conn, msg_id))


def test_ring_status(cluster):
    conn = cluster.connect(2, SID)
    error, payload = ask(cluster, conn, Request.RING_STATUS)
    assert error == SaAisError.OK
    status = cfg.RingStatus.decode(payload)
    ring_id = str(cluster.node(2).ring_id())
    assert status.nodeid == 2 and status.members == [1, 2, 3] and status.synced
    assert status.rings == [cfg.Ring(0, ring_id, "127.0.0.2", "active")]


def test_members_and_state_follow_the_ring(cluster):
    conn = cluster.connect(1, SID)
    membership = cfg.Membership.decode(ask(cluster, conn, Request.MEMBERS)[1])
    assert [m.nodeid for m in membership.members] == [1, 2, 3]
    assert membership.members[2].address == "127.0.0.3"
    assert membership.ring_id == str(cluster.node(1).ring_id())
    assert cfg.State.decode(ask(cluster, conn, Request.STATE)[1]) == (1, True)
    cluster.crash(3)
    assert cfg.State.decode(ask(cluster, conn, Request.STATE)[1]) == (1, False)  # sync not yet run
    cluster.run()
    assert cfg.State.decode(ask(cluster, conn, Request.STATE)[1]) == (1, True)
    after = cfg.Membership.decode(ask(cluster, conn, Request.MEMBERS)[1])
    assert [m.nodeid for m in after.members] == [1, 2] and after.ring_seq > membership.ring_seq


def test_shutdown_is_answered_then_requested(cluster):
    conn = cluster.connect(3, SID, uid=os.getuid())
    assert ask(cluster, conn, Request.SHUTDOWN) == (SaAisError.OK, b"")
    assert not cluster.host(3).shutdown_requested
    cluster.advance(SHUTDOWN_DELAY)
    assert cluster.host(3).shutdown_requested
    assert not cluster.host(1).shutdown_requested


def test_shutdown_refused_for_other_users(cluster):
    conn = cluster.connect(1, SID, uid=os.getuid() + 1)
    assert ask(cluster, conn, Request.SHUTDOWN)[0] == SaAisError.ACCESS
    cluster.advance(1.0)
    assert not cluster.host(1).shutdown_requested


def test_ring_status_normalises_what_the_executive_reports():
    class Api:
        nodeid = 4

        def ring_status(self):
            return {"nodeid": 4, "state": "GATHER", "rings": [{"ringnumber": 0, "address": None}],
                    "members": [], "synced": False, "stats": {"tokens": 9}, "ipc": {"conns": 2}, "pending": 3}

        def ring_id(self):
            from aisexec.totem.api import RingId
            return RingId(4, 0x10)

    engine = CfgEngine()
    engine.exec_init(Api())
    status = cfg.RingStatus.decode(engine.ring_status().encode())
    assert status.rings == [cfg.Ring(0, "4.10", "", "faulty")] and status.faulty
    assert (status.nodeid, status.state, status.synced) == (4, "GATHER", False)
    assert status.stats == {"totem": {"tokens": 9}, "ipc": {"conns": 2}, "pending": 3}
