"""The CPG engine on a 3-node in-process cluster: order, membership, reasons, sync, error codes."""

from __future__ import annotations

import struct

import pytest

from aisexec.testing import FakeConnection, ServiceCluster
from openais import cpg
from openais.cpg import Callback, Member, Reason, Request
from openais.errors import SaAisError
from plugins.cpg import engine as cpg_engine
from plugins.cpg.engine import CpgEngine

CPG = cpg.SERVICE_ID
OK = int(SaAisError.OK)


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([CpgEngine], nodes=[1, 2, 3])
    c.run()
    return c


def answer(cluster: ServiceCluster, conn: FakeConnection, msg_id: int, payload: bytes = b"") -> tuple[int, bytes]:
    """Send a request, run the cluster, return (error, payload) of its answer."""
    rid = cluster.request(conn, msg_id, payload)
    cluster.run()
    return conn.response(rid)


def join(cluster: ServiceCluster, node: int, group: str, pid: int) -> FakeConnection:
    """Connect a process on ``node`` and join ``group``; asserts success."""
    conn = cluster.connect(node, CPG, pid=pid)
    assert answer(cluster, conn, Request.JOIN, cpg.GroupRequest.pack(group))[0] == OK
    return conn


def mcast(cluster: ServiceCluster, conn: FakeConnection, data: bytes) -> int:
    """Queue an MCAST request (not run); return its request id."""
    return cluster.request(conn, Request.MCAST, cpg.McastRequest.pack(cpg.AGREED, data))


def delivered(conn: FakeConnection) -> list[tuple[str, int, int, bytes]]:
    return [(g, n, p, bytes(d)) for g, n, p, d in (cpg.Deliver.decode(f) for m, f in conn.dispatched
                                                  if m == Callback.DELIVER)]


def confchgs(conn: FakeConnection) -> list[tuple[str, list[Member], list[Member], list[Member]]]:
    return [cpg.Confchg.decode(p) for m, p in conn.dispatched if m == Callback.CONFCHG]


def membership(cluster: ServiceCluster, node: int, group: str) -> list[Member]:
    probe = cluster.connect(node, CPG, pid=99999)
    error, payload = answer(cluster, probe, Request.MEMBERSHIP, cpg.GroupRequest.pack(group))
    cluster.disconnect(probe)
    assert error == OK
    return cpg.MemberList.decode(payload).members


def test_join_reports_confchg_to_every_member_and_membership_agrees(cluster):
    a = join(cluster, 1, "g", 100)
    b = join(cluster, 2, "g", 200)
    # a saw itself join, then b; b saw itself join with a already there.
    assert [(ms, j) for _, ms, _, j in confchgs(a)] == [
        ([Member(1, 100)], [Member(1, 100, Reason.JOIN)]),
        ([Member(1, 100), Member(2, 200)], [Member(2, 200, Reason.JOIN)]),
    ]
    assert confchgs(b) == [("g", [Member(1, 100), Member(2, 200)], [], [Member(2, 200, Reason.JOIN)])]
    for node in (1, 2, 3):
        assert membership(cluster, node, "g") == [Member(1, 100), Member(2, 200)]


def test_concurrent_senders_get_one_identical_order_everywhere(cluster):
    conns = [join(cluster, n, "order", 1000 + n) for n in (1, 2, 3)]
    for i in range(30):
        for conn in conns:
            mcast(cluster, conn, f"{conn.node}:{i}".encode())
    cluster.run()
    sequences = [[(n, d) for _, n, _, d in delivered(c)] for c in conns]
    assert len(sequences[0]) == 90
    assert sequences[0] == sequences[1] == sequences[2]
    for sender in (1, 2, 3):  # per-sender FIFO, sender included
        assert [d for n, d in sequences[0] if n == sender] == [f"{sender}:{i}".encode() for i in range(30)]
    assert all(error == OK for c in conns for _, _, error, _ in c.responses)


def test_messages_reach_only_the_group(cluster):
    a = join(cluster, 1, "one", 1)
    b = join(cluster, 2, "two", 2)
    mcast(cluster, a, b"for one")
    cluster.run()
    assert delivered(a) == [("one", 1, 1, b"for one")]
    assert delivered(b) == []


def test_leave_notifies_members_and_the_leaver(cluster):
    a = join(cluster, 1, "g", 10)
    b = join(cluster, 3, "g", 30)
    assert answer(cluster, b, Request.LEAVE, cpg.GroupRequest.pack("g"))[0] == OK
    expected = ("g", [Member(1, 10)], [Member(3, 30, Reason.LEAVE)], [])
    assert confchgs(a)[-1] == expected
    assert confchgs(b)[-1] == expected
    assert membership(cluster, 2, "g") == [Member(1, 10)]
    # After leaving, b may join again.
    assert answer(cluster, b, Request.JOIN, cpg.GroupRequest.pack("g"))[0] == OK


def test_disconnect_without_leave_gives_procdown(cluster):
    a = join(cluster, 1, "g", 10)
    b = join(cluster, 2, "g", 20)
    cluster.disconnect(b)
    cluster.run()
    assert confchgs(a)[-1] == ("g", [Member(1, 10)], [Member(2, 20, Reason.PROCDOWN)], [])
    for node in (1, 2, 3):
        assert membership(cluster, node, "g") == [Member(1, 10)]


def test_procdown_is_retried_when_the_ring_is_full(cluster):
    a = join(cluster, 1, "g", 10)
    b = join(cluster, 2, "g", 20)
    cluster.queue_limit = 0
    cluster.disconnect(b)
    cluster.run()
    assert membership(cluster, 1, "g") == [Member(1, 10), Member(2, 20)]
    cluster.queue_limit = None
    cluster.advance(1.0)
    cluster.run()
    assert confchgs(a)[-1][2] == [Member(2, 20, Reason.PROCDOWN)]
    assert membership(cluster, 3, "g") == [Member(1, 10)]


def test_crash_gives_nodedown_for_every_process_of_the_node(cluster):
    a = join(cluster, 1, "g", 10)
    join(cluster, 3, "g", 30)
    join(cluster, 3, "g", 31)
    cluster.crash(3)
    cluster.run()
    assert confchgs(a)[-1] == ("g", [Member(1, 10)],
                               [Member(3, 30, Reason.NODEDOWN), Member(3, 31, Reason.NODEDOWN)], [])
    assert membership(cluster, 2, "g") == [Member(1, 10)]


def test_partition_and_merge_give_nodedown_then_nodeup_and_identical_tables(cluster):
    a = join(cluster, 1, "g", 10)
    c = join(cluster, 3, "g", 30)
    cluster.partition([[1, 2], [3]])
    cluster.run()
    assert confchgs(a)[-1] == ("g", [Member(1, 10)], [Member(3, 30, Reason.NODEDOWN)], [])
    assert confchgs(c)[-1] == ("g", [Member(3, 30)], [Member(1, 10, Reason.NODEDOWN)], [])
    # Each side changes on its own while apart.
    join(cluster, 2, "g", 20)
    d = join(cluster, 3, "g", 31)
    join(cluster, 3, "solo", 32)
    cluster.heal()
    cluster.run()
    full = [Member(1, 10), Member(2, 20), Member(3, 30), Member(3, 31)]
    assert confchgs(a)[-1] == ("g", full, [], [Member(3, 30, Reason.NODEUP), Member(3, 31, Reason.NODEUP)])
    assert confchgs(d)[-1] == ("g", full, [], [Member(1, 10, Reason.NODEUP), Member(2, 20, Reason.NODEUP)])
    for node in (1, 2, 3):
        assert membership(cluster, node, "g") == full
        assert membership(cluster, node, "solo") == [Member(3, 32)]
    # Messages after the merge are seen by all in one order.
    mcast(cluster, a, b"x")
    mcast(cluster, d, b"y")
    cluster.run()
    assert delivered(a)[-2:] == delivered(c)[-2:] == delivered(d)[-2:]


def test_restarted_node_learns_groups_and_its_processes_are_gone(cluster):
    a = join(cluster, 1, "g", 10)
    join(cluster, 3, "g", 30)
    cluster.crash(3)
    cluster.restart(3)
    cluster.run()
    assert membership(cluster, 3, "g") == [Member(1, 10)]
    join(cluster, 3, "g", 31)
    assert confchgs(a)[-1] == ("g", [Member(1, 10), Member(3, 31)], [], [Member(3, 31, Reason.JOIN)])


def test_iterate_lists_every_group(cluster):
    join(cluster, 1, "b", 1)
    join(cluster, 2, "a", 2)
    join(cluster, 3, "a", 3)
    probe = cluster.connect(2, CPG, pid=5)
    error, payload = answer(cluster, probe, Request.ITERATE)
    assert error == OK
    assert cpg.group_dict(cpg.GroupList.decode(payload)) == {"a": [Member(2, 2), Member(3, 3)], "b": [Member(1, 1)]}
    error, payload = answer(cluster, probe, Request.LOCAL_NODEID)
    assert cpg.NodeId.decode(payload).nodeid == 2


def test_error_codes(cluster):
    conn = cluster.connect(1, CPG, pid=7)
    group = cpg.GroupRequest.pack("g")
    assert answer(cluster, conn, Request.LEAVE, group)[0] == SaAisError.NOT_EXIST
    assert answer(cluster, conn, Request.MCAST, cpg.McastRequest.pack(cpg.AGREED, b"x"))[0] == SaAisError.NOT_EXIST
    assert answer(cluster, conn, Request.JOIN, group)[0] == OK
    assert answer(cluster, conn, Request.JOIN, group)[0] == SaAisError.EXIST
    assert answer(cluster, conn, Request.JOIN, cpg.GroupRequest.pack("h"))[0] == SaAisError.EXIST
    assert answer(cluster, conn, Request.LEAVE, cpg.GroupRequest.pack("h"))[0] == SaAisError.NOT_EXIST
    too_long = struct.pack("!H", 129) + b"n" * 129
    assert answer(cluster, conn, Request.JOIN, too_long)[0] == SaAisError.INVALID_PARAM
    big = b"\0" * (1 + cpg.MAX_MESSAGE + 1)  # the guarantee byte, one byte too many
    assert answer(cluster, conn, Request.MCAST, big)[0] == SaAisError.TOO_BIG
    assert answer(cluster, conn, Request.MCAST, b"\x07")[0] == SaAisError.INVALID_PARAM
    # The largest message is fine.
    assert answer(cluster, conn, Request.MCAST, cpg.McastRequest.pack(cpg.AGREED, b"\1" * cpg.MAX_MESSAGE))[0] == OK
    assert delivered(conn)[-1][3] == b"\1" * cpg.MAX_MESSAGE


def test_same_process_cannot_join_one_group_twice(cluster):
    join(cluster, 1, "g", 7)
    other = cluster.connect(1, CPG, pid=7)
    assert answer(cluster, other, Request.JOIN, cpg.GroupRequest.pack("g"))[0] == SaAisError.EXIST
    assert answer(cluster, other, Request.JOIN, cpg.GroupRequest.pack("h"))[0] == OK


def test_full_queue_answers_try_again(cluster):
    conn = join(cluster, 1, "g", 7)
    cluster.queue_limit = 0
    engine = cluster.engine(1, CPG)
    engine.lib_handlers[Request.MCAST].fn(conn, 4242, cpg.McastRequest.pack(cpg.AGREED, b"x"))
    assert conn.response(4242)[0] == SaAisError.TRY_AGAIN
    # The IPC layer itself refuses cluster requests when there is no room.
    assert answer(cluster, conn, Request.MCAST, cpg.McastRequest.pack(cpg.AGREED, b"x"))[0] == SaAisError.TRY_AGAIN
    cluster.queue_limit = None
    assert answer(cluster, conn, Request.MCAST, cpg.McastRequest.pack(cpg.AGREED, b"x"))[0] == OK


def test_requests_during_sync_answer_try_again(cluster):
    conn = cluster.connect(1, CPG, pid=7)
    cluster.partition([[1], [2, 3]])
    rid = cluster.request(conn, Request.JOIN, cpg.GroupRequest.pack("g"))
    assert conn.response(rid)[0] == SaAisError.TRY_AGAIN
    cluster.run()
    assert answer(cluster, conn, Request.JOIN, cpg.GroupRequest.pack("g"))[0] == OK


def test_dump_describes_groups(cluster):
    join(cluster, 2, "g", 20)
    dump = cluster.engine(1, CPG).dump()
    assert dump["groups"] == {"g": [[2, 20]]}


def test_sync_in_many_shares_survives_an_aborted_round(cluster, monkeypatch):
    monkeypatch.setattr(cpg_engine, "SYNC_ENTRIES_PER_MESSAGE", 2)
    cluster.partition([[1], [2, 3]])
    cluster.run()
    left_side = [join(cluster, 1, f"g{i % 3}", 100 + i) for i in range(7)]
    for i in range(5):
        join(cluster, 3, f"g{i % 3}", 300 + i)
    cluster.heal()  # the merge's sync round starts ...
    cluster.partition([[1], [2, 3]])  # ... and is aborted half way
    assert all(cluster.node(n).sync.stats.rounds_aborted for n in (1, 2, 3))
    cluster.run()
    assert membership(cluster, 2, "g0") == [Member(3, 300), Member(3, 303)]
    cluster.heal()
    cluster.run()
    expected = {f"g{k}": sorted([Member(1, 100 + i) for i in range(7) if i % 3 == k]
                                + [Member(3, 300 + i) for i in range(5) if i % 3 == k]) for k in range(3)}
    for node in (1, 2, 3):
        for group, members in expected.items():
            assert membership(cluster, node, group) == members
    for conn in left_side:  # every handle's last view is the full group
        group = confchgs(conn)[-1][0]
        assert confchgs(conn)[-1][1] == expected[group]


@pytest.mark.parametrize("seed", range(4))
def test_random_history_converges_to_the_live_processes(seed):
    import random

    rng = random.Random(seed)
    cluster = ServiceCluster([CpgEngine], nodes=[1, 2, 3])
    cluster.run()
    live = {1, 2, 3}
    joined: dict[FakeConnection, str] = {}
    idle: list[FakeConnection] = []
    next_pid = 1
    for _ in range(60):
        op = rng.random()
        if op < 0.35:
            conn = cluster.connect(rng.choice(sorted(live)), CPG, pid=next_pid)
            next_pid += 1
            group = rng.choice("abc")
            if answer(cluster, conn, Request.JOIN, cpg.GroupRequest.pack(group))[0] == OK:
                joined[conn] = group
        elif op < 0.5 and joined:
            conn = rng.choice(list(joined))
            assert answer(cluster, conn, Request.LEAVE, cpg.GroupRequest.pack(joined.pop(conn)))[0] == OK
            idle.append(conn)
        elif op < 0.65 and joined:
            conn = rng.choice(list(joined))
            del joined[conn]
            cluster.disconnect(conn)
            cluster.run()
        elif op < 0.75 and joined:
            conn = rng.choice(list(joined))
            mcast(cluster, conn, b"m")
            cluster.run()
        elif op < 0.85:
            nodes = sorted(live)
            rng.shuffle(nodes)
            cut = rng.randint(1, len(nodes))
            cluster.partition([nodes[:cut], nodes[cut:]])
            cluster.run()
        elif op < 0.92 and len(live) > 1:
            victim = rng.choice(sorted(live))
            live.discard(victim)
            joined = {c: g for c, g in joined.items() if c.node != victim}
            cluster.crash(victim)
            cluster.run()
        elif len(live) < 3:
            back = min({1, 2, 3} - live)
            live.add(back)
            cluster.restart(back)
            cluster.run()
        else:
            cluster.heal()
            cluster.run()
    cluster.heal()
    cluster.run()
    expected: dict[str, set[tuple[int, int]]] = {}
    for conn, group in joined.items():
        expected.setdefault(group, set()).add((conn.node, conn.pid))
    for node in live:
        assert cluster.engine(node, CPG).groups == expected
    # Every joined handle's last configuration change shows its group as it is now.
    for conn, group in joined.items():
        assert confchgs(conn)[-1][1] == [Member(n, p) for n, p in sorted(expected[group])]


def test_plugins_provide_engines_through_the_discovery_hook():
    import pluggy

    import plugins.cpg
    import plugins.evs
    from aisexec import hookspecs
    from aisexec.service import EngineHost

    for module, service_id, name in ((plugins.cpg, 8, "CPG"), (plugins.evs, 0, "EVS")):
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs.ServiceDiscoverySpec)
        pm.register(module)
        engine = pm.hook.openais_service_engine()
        assert (engine.id, engine.name) == (service_id, name)
        EngineHost(engine)  # fits the engine contract
