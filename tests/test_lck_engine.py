"""The LCK engine on an in-process 3-node cluster: grants across nodes, faults, timeouts, partitions, merges."""

from __future__ import annotations

import json

import pytest

from aisexec.testing import FakeConnection, ServiceCluster
from openais import lck
from openais.errors import SaAisError
from openais.lck import Callback, LockMode, LockStatus, Request
from plugins.lck import messages as m
from plugins.lck.engine import LockEngine
from plugins.lck.messages import Exec

OK = int(SaAisError.OK)
LCK = lck.SERVICE_ID


def make_cluster(nodes: list[int] | None = None) -> ServiceCluster:
    """A quiet cluster of LCK engines."""
    cluster = ServiceCluster([LockEngine], nodes=nodes or [1, 2, 3])
    cluster.run()
    return cluster


class Client:
    """One library connection on one node, speaking the LCK IPC messages."""

    def __init__(self, cluster: ServiceCluster, node: int, pid: int = 1000) -> None:
        self.cluster = cluster
        self.node = node
        self.conn: FakeConnection = cluster.connect(node, LCK, pid=pid)

    def send(self, msg_id: int, payload: bytes) -> int:
        """Send without running the cluster; return the request id."""
        return self.cluster.request(self.conn, msg_id, payload)

    def answer(self, rid: int) -> tuple[int, bytes] | None:
        """(error, payload) of request ``rid``, or None while unanswered."""
        try:
            return self.conn.response(rid)
        except KeyError:
            return None

    def call(self, msg_id: int, payload: bytes) -> tuple[int, bytes]:
        rid = self.send(msg_id, payload)
        self.cluster.run()
        result = self.answer(rid)
        assert result is not None, f"request {msg_id} unanswered"
        return result

    def open(self, name: str = "r", flags: int = lck.RESOURCE_CREATE, timeout_ns: int = -1) -> int:
        error, payload = self.call(Request.RESOURCE_OPEN, lck.OpenRequest.pack(flags, timeout_ns, None, name))
        assert error == OK, SaAisError(error)
        return lck.OpenAnswer.decode(payload).res_handle

    def lock_send(self, res: int, mode: int, flags: int = 0, signal: int = 0, timeout_ns: int = -1,
                  invocation: int | None = None) -> int:
        return self.send(Request.LOCK, lck.LockRequest.pack(res, mode, flags, signal, timeout_ns, invocation))

    def lock_result(self, rid: int) -> tuple[int, int | None] | int | None:
        """(lock_id, status) of a sync lock, the error code if it failed, None while queued."""
        result = self.answer(rid)
        if result is None:
            return None
        error, payload = result
        if error != OK:
            return error
        answer = lck.LockAnswer.decode(payload)
        return answer.lock_id, answer.status

    def lock(self, res: int, mode: int, flags: int = 0, signal: int = 0) -> tuple[int, int | None] | int | None:
        rid = self.lock_send(res, mode, flags, signal)
        self.cluster.run()
        return self.lock_result(rid)

    def unlock(self, res: int, lock_id: int, invocation: int | None = None) -> int:
        return self.call(Request.UNLOCK, lck.UnlockRequest.pack(res, lock_id, invocation))[0]

    def close(self, res: int) -> int:
        return self.call(Request.RESOURCE_CLOSE, lck.HandleRequest.pack(res))[0]

    def purge(self, res: int) -> int:
        return self.call(Request.PURGE, lck.HandleRequest.pack(res))[0]

    def callbacks(self, kind: Callback) -> list:
        decoder = {Callback.LOCK_GRANT: lck.GrantCallback, Callback.LOCK_WAITER: lck.WaiterCallback,
                   Callback.RESOURCE_UNLOCK: lck.UnlockCallback, Callback.RESOURCE_OPEN: lck.OpenCallback}[kind]
        return [decoder.decode(p) for m, p in self.conn.dispatched if m == kind]

    def exit(self) -> None:
        self.cluster.disconnect(self.conn)
        self.cluster.run()


def table(cluster: ServiceCluster, node: int) -> dict:
    """The tool's view of the table on ``node``, without timestamps."""
    view = cluster.engine(node, LCK).table()
    view.pop("nodeid")
    for res in view["resources"]:
        for item in res["holders"] + res["waiters"]:
            item.pop("since")
    return view


def assert_replicas_equal(cluster: ServiceCluster, nodes: list[int]) -> None:
    """Every node in ``nodes`` holds the same table, and it is self-consistent."""
    first = table(cluster, nodes[0])
    for node in nodes:
        cluster.engine(node, LCK).state.check_invariants()
        assert table(cluster, node) == first, f"node {node} differs from node {nodes[0]}"


PR, EX = LockMode.PR, LockMode.EX
GRANTED = int(LockStatus.GRANTED)


@pytest.fixture
def cluster():
    return make_cluster()


def test_ex_excludes_across_nodes_and_waiter_is_granted_on_unlock(cluster):
    a, b = Client(cluster, 1, pid=11), Client(cluster, 2, pid=22)
    ra, rb = a.open(), b.open()
    lid, status = a.lock(ra, EX, signal=1)
    assert status == GRANTED
    rid = b.lock_send(rb, PR, signal=42)
    cluster.run()
    assert b.lock_result(rid) is None
    waiters = a.callbacks(Callback.LOCK_WAITER)
    assert [(w.waiter_signal, w.lock_id, w.mode_held, w.mode_requested) for w in waiters] == [(42, lid, EX, PR)]
    assert a.unlock(ra, lid) == OK
    assert b.lock_result(rid)[1] == GRANTED
    assert_replicas_equal(cluster, [1, 2, 3])


def test_pr_shared_by_three_nodes(cluster):
    clients = [Client(cluster, n) for n in (1, 2, 3)]
    for c in clients:
        assert c.lock(c.open(), PR)[1] == GRANTED
    assert len(cluster.engine(2, LCK).state.resources["r"].granted) == 3


def test_open_without_create_and_bad_handles(cluster):
    a = Client(cluster, 1)
    error, _ = a.call(Request.RESOURCE_OPEN, lck.OpenRequest.pack(0, -1, None, "nope"))
    assert error == SaAisError.NOT_EXIST
    error, _ = a.call(Request.RESOURCE_OPEN, lck.OpenRequest.pack(2, -1, None, "x"))
    assert error == SaAisError.BAD_FLAGS
    assert a.lock(999, EX) == SaAisError.BAD_HANDLE
    res = a.open()
    assert a.lock(res, 3) == SaAisError.INVALID_PARAM
    assert a.lock(res, EX, flags=4) == SaAisError.BAD_FLAGS
    assert a.close(res) == OK
    assert a.close(res) == SaAisError.BAD_HANDLE
    b = Client(cluster, 1)
    other = a.open()
    assert b.lock(other, EX) == SaAisError.BAD_HANDLE  # another connection's resource
    assert a.call(Request.LOCK, b"\x00")[0] == SaAisError.INVALID_PARAM  # malformed


def test_async_lock_grant_callback_and_withdrawal(cluster):
    a, b = Client(cluster, 1), Client(cluster, 3)
    ra, rb = a.open(), b.open()
    held, _ = a.lock(ra, EX)
    rid = b.lock_send(rb, EX, invocation=7)
    cluster.run()
    err, payload = b.answer(rid)
    pending = lck.LockAnswer.decode(payload)
    assert err == OK and pending.status == 0
    assert b.unlock(rb, pending.lock_id) == OK  # withdraw
    grants = b.callbacks(Callback.LOCK_GRANT)
    assert [(g.invocation, g.status, g.error) for g in grants] == [(7, 0, SaAisError.NOT_EXIST)]
    rid = b.lock_send(rb, EX, invocation=8)
    cluster.run()
    a.unlock(ra, held)
    grants = b.callbacks(Callback.LOCK_GRANT)
    assert (grants[-1].invocation, grants[-1].status, grants[-1].error) == (8, GRANTED, OK)
    assert b.unlock(rb, grants[-1].lock_id, invocation=9) == OK
    assert [(u.invocation, u.error) for u in b.callbacks(Callback.RESOURCE_UNLOCK)] == [(9, OK)]


def test_open_async_callback(cluster):
    a = Client(cluster, 2)
    error, _ = a.call(Request.RESOURCE_OPEN, lck.OpenRequest.pack(0, -1, 5, "absent"))
    assert error == OK
    error, _ = a.call(Request.RESOURCE_OPEN, lck.OpenRequest.pack(1, -1, 6, "there"))
    got = [(c.invocation, c.error, c.name, c.res_handle != 0) for c in a.callbacks(Callback.RESOURCE_OPEN)]
    assert got == [(5, SaAisError.NOT_EXIST, "absent", False), (6, OK, "there", True)]


def test_lock_timeout_withdraws_the_request_everywhere(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    ra, rb = a.open(), b.open()
    a.lock(ra, EX)
    rid = b.lock_send(rb, EX, timeout_ns=500_000_000)
    cluster.run()
    cluster.advance(0.4)
    cluster.run()
    assert b.lock_result(rid) is None
    cluster.advance(0.2)
    cluster.run()
    assert b.lock_result(rid) == SaAisError.TIMEOUT
    for node in (1, 2, 3):
        assert not cluster.engine(node, LCK).state.resources["r"].queue


def test_timeout_after_grant_keeps_the_grant(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    ra, rb = a.open(), b.open()
    held, _ = a.lock(ra, EX)
    rid = b.lock_send(rb, EX, timeout_ns=500_000_000)
    cluster.run()
    a.unlock(ra, held)
    cluster.advance(1.0)
    cluster.run()
    assert b.lock_result(rid)[1] == GRANTED


def test_open_timeout_closes_a_late_open(cluster):
    a = Client(cluster, 1)
    rid = a.send(Request.RESOURCE_OPEN, lck.OpenRequest.pack(1, 100_000_000, None, "late"))
    cluster.advance(0.2)  # the timer fires before the OPEN is delivered
    assert a.answer(rid)[0] == SaAisError.TIMEOUT
    cluster.run()
    for node in (1, 2, 3):
        assert "late" not in cluster.engine(node, LCK).state.resources


def test_client_death_releases_its_locks_and_keeps_orphans(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    ra, rb = a.open(), b.open()
    a.lock(ra, EX)
    orphan_res = a.open("o")
    a.lock(orphan_res, EX, lck.LOCK_ORPHAN)
    rid = b.lock_send(rb, EX)
    cluster.run()
    a.exit()
    assert b.lock_result(rid)[1] == GRANTED
    ro = b.open("o", flags=0)  # the orphan keeps "o" alive
    assert b.lock(ro, EX, lck.LOCK_ORPHAN)[1] == int(LockStatus.ORPHANED)
    rid = b.lock_send(ro, PR)
    cluster.run()
    assert b.lock_result(rid) is None
    assert b.purge(ro) == OK
    assert b.lock_result(rid)[1] == GRANTED
    assert_replicas_equal(cluster, [1, 2, 3])


def test_node_loss_grants_the_waiter_and_queued_requests_keep_their_order(cluster):
    a, b, c = Client(cluster, 1), Client(cluster, 2), Client(cluster, 3)
    ra, rb, rc = a.open(), b.open(), c.open()
    a.lock(ra, EX)
    r1 = b.lock_send(rb, EX)
    cluster.run()
    r2 = c.lock_send(rc, EX)
    cluster.run()
    cluster.crash(1)
    cluster.run()
    assert b.lock_result(r1)[1] == GRANTED
    assert c.lock_result(r2) is None
    assert_replicas_equal(cluster, [2, 3])
    cluster.restart(1)
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3])
    lid = b.lock_result(r1)[0]
    b.unlock(rb, lid)
    assert c.lock_result(r2)[1] == GRANTED


def test_joining_node_gets_the_table(cluster):
    a = Client(cluster, 1)
    ra = a.open("kept")
    a.lock(ra, PR)
    cluster.crash(3)
    cluster.run()
    cluster.restart(3)
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3])
    d = Client(cluster, 3)
    assert d.lock(d.open("kept", flags=0), EX, lck.LOCK_NO_QUEUE)[1] == int(LockStatus.NOT_QUEUED)


def test_partition_and_merge_unite_tables_and_keep_every_grant(cluster):
    a, b, c = Client(cluster, 1), Client(cluster, 2), Client(cluster, 3)
    ra, rb, rc = a.open(), b.open(), c.open()
    cluster.partition([[1], [2, 3]])
    cluster.run()
    la = a.lock(ra, EX)
    lb = b.lock(rb, EX)
    assert la[1] == GRANTED and lb[1] == GRANTED  # each side grants within its membership
    rq = c.lock_send(rc, PR)
    cluster.run()
    assert c.lock_result(rq) is None
    cluster.heal()
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3])
    res = cluster.engine(1, LCK).state.resources["r"]
    assert sorted(res.granted) == sorted([la[0], lb[0]])  # both holders keep their lock
    assert b.unlock(rb, lb[0]) == OK
    assert c.lock_result(rq) is None  # a's EX still excludes
    assert a.unlock(ra, la[0]) == OK
    assert c.lock_result(rq)[1] == GRANTED


def test_merge_queue_order_lowest_side_first(cluster):
    a, b, c = Client(cluster, 1), Client(cluster, 2), Client(cluster, 3)
    ra, rb, rc = a.open(), b.open(), c.open()
    cluster.partition([[1, 2], [3]])
    cluster.run()
    held = c.lock(rc, EX)  # side {3}
    qa = a.lock_send(ra, EX)  # side {1,2}: granted there
    cluster.run()
    qb = b.lock_send(rb, EX)
    cluster.run()
    cluster.heal()
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3])
    res = cluster.engine(3, LCK).state.resources["r"]
    granted_ids = sorted(res.granted)
    assert a.lock_result(qa)[0] in granted_ids and held[0] in granted_ids
    assert [r.lock_id >> 32 for r in res.queue] == [2]
    assert b.lock_result(qb) is None


def test_two_node_two_resource_deadlock(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    a_x, a_y = a.open("x"), a.open("y")
    b_x, b_y = b.open("x"), b.open("y")
    a.lock(a_x, EX)
    b.lock(b_y, EX)
    first = a.lock_send(a_y, EX)
    second = b.lock_send(b_x, EX)  # sent together: the ring orders them
    cluster.run()
    assert a.lock_result(first) is None
    assert b.lock_result(second)[1] == int(LockStatus.DEADLOCK)


def test_sync_partial_state_is_consistent_under_retries(cluster):
    cluster.queue_limit = 3  # a tiny ring: sync and cleanups must retry
    clients = [Client(cluster, n) for n in (1, 2, 3)]
    cluster.queue_limit = None
    handles = [c.open(f"r{i}") for i, c in enumerate(clients)]
    for c, h in zip(clients, handles, strict=True):
        c.lock(h, EX)
    cluster.queue_limit = 2
    cluster.partition([[1], [2, 3]])
    cluster.heal()
    for _ in range(50):
        cluster.advance(0.1)
        cluster.run()
    cluster.queue_limit = None
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3])


def test_malformed_cluster_message_is_dropped(cluster):
    engine = cluster.engine(1, LCK)
    engine.api.mcast(LCK, Exec.LOCK, b"\x01\x02")
    engine.api.mcast(LCK, Exec.LOCK, m.LockMsg.pack(0, 1, 1, 9, 0, 0, 0))  # mode 9
    engine.api.mcast(LCK, Exec.SYNC, b"junk")
    cluster.run()
    assert all(cluster.engine(n, LCK).malformed >= 2 for n in (1, 2, 3))
    a = Client(cluster, 1)
    assert a.lock(a.open(), EX)[1] == GRANTED


def test_try_again_while_the_ring_is_full(cluster):
    a = Client(cluster, 1)
    cluster.queue_limit = 0
    rid = a.send(Request.RESOURCE_OPEN, lck.OpenRequest.pack(1, -1, None, "full"))
    assert a.answer(rid)[0] == SaAisError.TRY_AGAIN
    cluster.queue_limit = None


def test_dump_request_lists_holders_and_waiters(cluster):
    a, b = Client(cluster, 1, pid=5), Client(cluster, 2, pid=6)
    ra, rb = a.open("t"), b.open("t")
    a.lock(ra, EX)
    b.lock_send(rb, PR)
    cluster.run()
    error, payload = b.call(Request.DUMP, lck.DumpRequest.pack(10, ""))
    assert error == OK

    view = json.loads(lck.DumpAnswer.decode(payload).data)
    (res,) = view["resources"]
    assert [(h["node"], h["pid"], h["mode"]) for h in res["holders"]] == [(1, 5, "EX")]
    assert [(w["node"], w["pid"], w["mode"]) for w in res["waiters"]] == [(2, 6, "PR")]


@pytest.mark.parametrize("seed", range(6))
def test_random_faults_keep_replicas_identical_and_answer_every_request(seed):
    """Random lock traffic with partitions, heals, crashes, restarts and client deaths.

    At every quiet point each component's replicas are identical and self-consistent; in the end, after a
    heal and with every client gone, every request was answered exactly once and the table is empty.
    """
    import random

    rng = random.Random(seed)
    cluster = make_cluster([1, 2, 3, 4])
    clients: list[tuple[Client, list[int]]] = []
    sent: list[tuple[Client, int]] = []
    names = ["a", "b", "c"]
    for _ in range(400):
        op = rng.random()
        live = sorted(cluster._live)
        if op < 0.15 or not clients:
            node = rng.choice(live)
            c = Client(cluster, node, pid=rng.randint(1, 10**6))
            clients.append((c, []))
        elif op < 0.3:
            c, handles = rng.choice(clients)
            if not c.conn.closed:
                rid = c.send(Request.RESOURCE_OPEN, lck.OpenRequest.pack(1, -1, None, rng.choice(names)))
                cluster.run()
                result = c.answer(rid)
                if result is not None and result[0] == OK:
                    handles.append(lck.OpenAnswer.decode(result[1]).res_handle)
        elif op < 0.65:
            c, handles = rng.choice(clients)
            if handles and not c.conn.closed:
                flags = rng.choice([0, 0, lck.LOCK_NO_QUEUE, lck.LOCK_ORPHAN])
                sent.append((c, c.lock_send(rng.choice(handles), rng.choice([PR, EX]), flags)))
        elif op < 0.8:
            c, handles = rng.choice(clients)
            state = cluster.engine(c.node, LCK).state
            mine = [r for r in state.locks.values() if r.owner == (c.node, c.conn.id)]
            if mine and not c.conn.closed:
                rec = rng.choice(mine)
                c.send(Request.UNLOCK, lck.UnlockRequest.pack(rec.opener[1], rec.lock_id, None))
        elif op < 0.85:
            c, _ = rng.choice(clients)
            cluster.disconnect(c.conn)
        elif op < 0.9 and len(live) > 1:
            nodes = list(live)
            rng.shuffle(nodes)
            cut = rng.randint(1, len(nodes) - 1)
            cluster.partition([nodes[:cut], nodes[cut:]])
        elif op < 0.94:
            cluster.heal()
        elif op < 0.97 and len(live) > 2:
            cluster.crash(rng.choice(live))
        else:
            dead = sorted({1, 2, 3, 4} - cluster._live)
            if dead:
                cluster.restart(rng.choice(dead))
        cluster.run()
        if rng.random() < 0.2:
            cluster.advance(0.1)
            cluster.run()
        for comp in cluster._components:
            assert_replicas_equal(cluster, sorted(comp))
    for dead in sorted({1, 2, 3, 4} - cluster._live):
        cluster.restart(dead)
    cluster.heal()
    cluster.run()
    assert_replicas_equal(cluster, [1, 2, 3, 4])
    for c, _ in clients:
        if not c.conn.closed:
            # every request of a live client is answered, or still queued in the table
            unanswered = [rid for cc, rid in sent if cc is c and c.answer(rid) is None]
            state = cluster.engine(c.node, LCK).state
            queued = [r for r in state.locks.values() if r.owner == (c.node, c.conn.id) and not r.granted]
            assert len(unanswered) == len(queued), (unanswered, queued)
        cluster.disconnect(c.conn)
        cluster.run()
    for node in (1, 2, 3, 4):
        engine = cluster.engine(node, LCK)
        assert not any(r.owner for r in engine.state.locks.values()), "a lock of a gone client survived"
        assert not engine.state.openers
    for c, rid in sent:
        assert len([r for r in c.conn.responses if r[1] == rid]) <= 1


def test_a_second_unlock_while_the_first_is_on_its_way_is_not_exist(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    ra, rb = a.open(), b.open()
    lid, _ = a.lock(ra, EX)
    waiting = b.lock_send(rb, EX)
    cluster.run()
    rid = a.send(Request.UNLOCK, lck.UnlockRequest.pack(ra, lid, None))
    assert a.answer(rid) is None  # answered when the ring delivered it: unlock is linearizable
    again = a.send(Request.UNLOCK, lck.UnlockRequest.pack(ra, lid, None))
    assert a.answer(again)[0] == SaAisError.NOT_EXIST
    cluster.run()
    assert a.answer(rid)[0] == OK
    assert b.lock_result(waiting)[1] == GRANTED
    assert_replicas_equal(cluster, [1, 2, 3])
