"""The EVS engine on a 3-node in-process cluster: group addressing, order, ring membership callbacks."""

from __future__ import annotations

import pytest

from aisexec.testing import FakeConnection, ServiceCluster
from openais import evs
from openais.errors import SaAisError
from openais.evs import Callback, Request
from plugins.evs.engine import EvsEngine

EVS = evs.SERVICE_ID
OK = int(SaAisError.OK)


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([EvsEngine], nodes=[1, 2, 3])
    c.run()
    return c


def answer(cluster: ServiceCluster, conn: FakeConnection, msg_id: int, payload: bytes = b"") -> int:
    rid = cluster.request(conn, msg_id, payload)
    cluster.run()
    return conn.response(rid)[0]


def handle(cluster: ServiceCluster, node: int, groups: list[str]) -> FakeConnection:
    conn = cluster.connect(node, EVS, pid=node * 100)
    if groups:
        assert answer(cluster, conn, Request.JOIN, evs.GroupRequest.pack(groups)) == OK
    return conn


def delivered(conn: FakeConnection) -> list[tuple[int, bytes]]:
    return [(n, bytes(d)) for n, d in (evs.Deliver.decode(p) for m, p in conn.dispatched if m == Callback.DELIVER)]


def confchgs(conn: FakeConnection) -> list[tuple[list[int], list[int], list[int]]]:
    return [evs.Confchg.decode(p) for m, p in conn.dispatched if m == Callback.CONFCHG]


def test_messages_reach_handles_joined_to_any_named_group_in_one_order(cluster):
    a = handle(cluster, 1, ["red", "blue"])
    b = handle(cluster, 2, ["blue"])
    c = handle(cluster, 3, ["green"])
    for i in range(10):
        cluster.request(a, Request.MCAST_JOINED, evs.McastJoinedRequest.pack(evs.AGREED, f"a{i}".encode()))
        cluster.request(b, Request.MCAST_JOINED, evs.McastJoinedRequest.pack(evs.SAFE, f"b{i}".encode()))
    cluster.request(c, Request.MCAST_GROUPS, evs.McastGroupsRequest.pack(evs.AGREED, ["red", "green"], b"c"))
    cluster.run()
    assert len(delivered(a)) == 21
    assert delivered(b) == [m for m in delivered(a) if m[1] != b"c"]
    assert delivered(c) == [(3, b"c")]
    assert all(error == OK for conn in (a, b, c) for _, _, error, _ in conn.responses)


def test_leave_and_error_codes(cluster):
    a = handle(cluster, 1, ["x"])
    assert answer(cluster, a, Request.LEAVE, evs.GroupRequest.pack(["x", "y"])) == SaAisError.NOT_EXIST
    assert answer(cluster, a, Request.LEAVE, evs.GroupRequest.pack(["x"])) == OK
    assert answer(cluster, a, Request.JOIN, b"\0\1\0") == SaAisError.INVALID_PARAM
    big = b"\0" * (1 + evs.MAX_MESSAGE + 1)  # the guarantee byte, one byte too many
    assert answer(cluster, a, Request.MCAST_JOINED, big) == SaAisError.TOO_BIG
    cluster.request(a, Request.MCAST_GROUPS, evs.McastGroupsRequest.pack(evs.AGREED, ["x"], b"gone"))
    cluster.run()
    assert delivered(a) == []


def test_join_limit_answers_no_space(cluster):
    a = handle(cluster, 1, [f"g{i}" for i in range(evs.MAX_GROUPS)])
    assert answer(cluster, a, Request.JOIN, evs.GroupRequest.pack(["one-more"])) == SaAisError.NO_SPACE
    assert answer(cluster, a, Request.JOIN, evs.GroupRequest.pack(["g0"])) == OK


def test_ring_changes_reach_every_handle(cluster):
    a = handle(cluster, 1, [])
    c = handle(cluster, 3, ["x"])
    cluster.crash(2)
    cluster.run()
    assert confchgs(a)[-1] == ([1, 3], [2], [])
    assert confchgs(c)[-1] == ([1, 3], [2], [])
    cluster.restart(2)
    cluster.run()
    assert confchgs(a)[-1] == ([1, 2, 3], [], [2])
    assert answer(cluster, a, Request.MEMBERSHIP) == OK
    assert evs.MembershipResponse.decode(a.responses[-1][3]) == (1, [1, 2, 3])


def test_full_queue_answers_try_again(cluster):
    a = handle(cluster, 1, ["x"])
    cluster.queue_limit = 0
    cluster.engine(1, EVS).lib_handlers[Request.MCAST_JOINED].fn(a, 77, evs.McastJoinedRequest.pack(evs.AGREED, b"x"))
    assert a.response(77)[0] == SaAisError.TRY_AGAIN
