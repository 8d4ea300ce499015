"""The MSG engine on a 3-node in-process cluster: queues, sends, gets, groups, node loss, merges."""

from __future__ import annotations

import os

import pytest

from aisexec.testing import FakeConnection, ServiceCluster
from openais import msg
from openais.errors import SaAisError
from openais.msg import Callback, Request, SendKind
from plugins.msg.engine import MessageEngine

MSG = msg.SERVICE_ID
OK = SaAisError.OK
FOREVER = -1
#: Seeds of the randomized partition/merge test (MSG_SEEDS=200 for a longer run).
SEEDS = int(os.environ.get("MSG_SEEDS", "4"))


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([MessageEngine], nodes=[1, 2, 3])
    c.run()
    return c


def ask(c: ServiceCluster, conn: FakeConnection, req: int, payload: bytes) -> tuple[int, bytes]:
    rid = c.request(conn, req, payload)
    c.run()
    return conn.response(rid)


def open_queue(c: ServiceCluster, conn: FakeConnection, name: str, create: bool = True, flags: int = 0,
               size: tuple = (4096,) * 4, retention: int = 0, cflags: int = 0) -> tuple[int, int]:
    payload = msg.OpenRequest.pack(0, False, name, create, cflags, list(size) if create else [0, 0, 0, 0], retention,
                                   flags | (msg.QUEUE_CREATE if create else 0), FOREVER)
    error, answer = ask(c, conn, Request.QUEUE_OPEN, payload)
    return error, (msg.OpenAnswer.decode(answer).queue if error == OK else 0)


def send_payload(dest: str, data: bytes, priority: int = 3, kind: SendKind = SendKind.SYNC, invocation: int = 0,
                 ack: int = 0, timeout: int = FOREVER) -> bytes:
    body = msg.encode_body(msg.Message(data=data, priority=priority))
    return msg.SendRequest.pack(int(kind), invocation, ack, timeout, 123, dest, body)


def send(c: ServiceCluster, conn: FakeConnection, dest: str, data: bytes, priority: int = 3) -> int:
    return ask(c, conn, Request.SEND, send_payload(dest, data, priority))[0]


def get(c: ServiceCluster, conn: FakeConnection, handle: int,
        timeout: int = 0) -> tuple[int, msg.ReceivedMessage | None]:
    error, answer = ask(c, conn, Request.GET, msg.GetRequest.pack(handle, timeout))
    return error, (msg.decode_got(answer) if error == OK else None)


def group(c: ServiceCluster, conn: FakeConnection, req: Request, name: str, policy: int = 0, queue: str = "") -> int:
    return ask(c, conn, req, msg.GroupRequest.pack(name, policy, queue))[0]


def test_open_send_get_across_nodes(cluster: ServiceCluster) -> None:
    reader = cluster.connect(1, MSG)
    error, handle = open_queue(cluster, reader, "q")
    assert error == OK
    senders = [cluster.connect(n, MSG) for n in (1, 2, 3)]
    for i in range(3):
        for s in senders:
            assert send(cluster, s, "q", f"{s.node}-{i}".encode()) == OK
    got = [get(cluster, reader, handle)[1].message.data for _ in range(9)]  # type: ignore[union-attr]
    for n in (1, 2, 3):
        assert [g for g in got if g.startswith(f"{n}-".encode())] == [f"{n}-{i}".encode() for i in range(3)]
    assert get(cluster, reader, handle)[0] == SaAisError.TIMEOUT


def test_priority_order_and_queue_full(cluster: ServiceCluster) -> None:
    reader = cluster.connect(2, MSG)
    _, handle = open_queue(cluster, reader, "q", size=(300, 200, 200, 200))
    sender = cluster.connect(3, MSG)
    assert send(cluster, sender, "q", b"low", 3) == OK
    assert send(cluster, sender, "q", b"high", 0) == OK
    assert send(cluster, sender, "q", b"x" * 100, 0) == OK
    assert send(cluster, sender, "q", b"y" * 100, 0) == SaAisError.QUEUE_FULL
    assert get(cluster, reader, handle)[1].message.data == b"high"  # type: ignore[union-attr]
    status = ask(cluster, sender, Request.STATUS_GET, msg.NameRequest.pack("q"))
    assert status[0] == OK


def test_blocked_get_woken_by_send_and_cancel(cluster: ServiceCluster) -> None:
    reader = cluster.connect(1, MSG)
    _, handle = open_queue(cluster, reader, "q")
    rid = cluster.request(reader, Request.GET, msg.GetRequest.pack(handle, FOREVER))
    cluster.run()
    with pytest.raises(KeyError):
        reader.response(rid)
    send(cluster, cluster.connect(3, MSG), "q", b"wake")
    assert msg.decode_got(reader.response(rid)[1]).message.data == b"wake"
    rid = cluster.request(reader, Request.GET, msg.GetRequest.pack(handle, FOREVER))
    assert ask(cluster, reader, Request.CANCEL, msg.QueueRequest.pack(handle))[0] == OK
    assert reader.response(rid)[0] == SaAisError.INTERRUPT
    assert ask(cluster, reader, Request.CANCEL, msg.QueueRequest.pack(handle))[0] == SaAisError.NOT_EXIST


def test_send_receive_and_reply(cluster: ServiceCluster) -> None:
    reader = cluster.connect(1, MSG)
    _, handle = open_queue(cluster, reader, "q")
    asker = cluster.connect(3, MSG)
    rid = cluster.request(asker, Request.SEND, send_payload("q", b"ping", kind=SendKind.SEND_RECEIVE))
    cluster.run()
    got = get(cluster, reader, handle)[1]
    assert got is not None and got.sender_id != 0
    replier = cluster.connect(2, MSG)
    body = msg.encode_body(msg.Message(data=b"pong"))
    assert ask(cluster, replier, Request.REPLY, msg.ReplyRequest.pack(False, 0, 0, got.sender_id, 5, body))[0] == OK
    reply = msg.decode_got(asker.response(rid)[1])
    assert reply.message.data == b"pong" and reply.sender_id == 0
    again = ask(cluster, replier, Request.REPLY, msg.ReplyRequest.pack(False, 0, 0, got.sender_id, 5, body))
    assert again[0] == SaAisError.NOT_EXIST


def test_reopen_elsewhere_moves_messages(cluster: ServiceCluster) -> None:
    first = cluster.connect(1, MSG)
    _, handle = open_queue(cluster, first, "q", size=(1 << 20,) * 4, retention=FOREVER)
    sender = cluster.connect(2, MSG)
    for i in range(5):
        assert send(cluster, sender, "q", b"m%d" % i + b"z" * 200_000) == OK
    assert ask(cluster, first, Request.QUEUE_CLOSE, msg.QueueRequest.pack(handle))[0] == OK
    assert send(cluster, sender, "q", b"after-close") == OK
    second = cluster.connect(3, MSG)
    error, h2 = open_queue(cluster, second, "q", create=False)
    assert error == OK
    datas = [get(cluster, second, h2)[1].message.data[:11] for _ in range(6)]  # type: ignore[union-attr]
    assert datas[:5] == [b"m%d" % i + b"z" * 9 for i in range(5)]
    assert datas[5] == b"after-close"
    assert 1 not in [n for n, in [(k,) for k in cluster.engine(1, MSG).stores]] or not cluster.engine(1, MSG).stores


def test_node_loss_makes_queue_unavailable(cluster: ServiceCluster) -> None:
    reader = cluster.connect(3, MSG)
    _, _handle = open_queue(cluster, reader, "q", retention=FOREVER)
    sender = cluster.connect(1, MSG)
    assert send(cluster, sender, "q", b"x") == OK
    cluster.crash(3)
    cluster.run()
    assert send(cluster, sender, "q", b"y") == SaAisError.QUEUE_NOT_AVAILABLE
    other = cluster.connect(2, MSG)
    error, h2 = open_queue(cluster, other, "q", create=False)
    assert error == OK
    assert get(cluster, other, h2)[0] == SaAisError.TIMEOUT
    assert send(cluster, sender, "q", b"z") == OK


def test_groups_round_robin_and_broadcast(cluster: ServiceCluster) -> None:
    admin = cluster.connect(1, MSG)
    readers = {}
    for n in (1, 2, 3):
        conn = cluster.connect(n, MSG)
        readers[n] = (conn, open_queue(cluster, conn, f"q{n}")[1])
    assert group(cluster, admin, Request.GROUP_CREATE, "g", msg.QueueGroupPolicy.ROUND_ROBIN) == OK
    assert group(cluster, admin, Request.GROUP_CREATE, "b", msg.QueueGroupPolicy.BROADCAST) == OK
    for n in (1, 2, 3):
        assert group(cluster, admin, Request.GROUP_INSERT, "g", queue=f"q{n}") == OK
        assert group(cluster, admin, Request.GROUP_INSERT, "b", queue=f"q{n}") == OK
    assert group(cluster, admin, Request.GROUP_INSERT, "g", queue="q1") == SaAisError.EXIST
    for i in range(3):
        assert send(cluster, admin, "g", b"%d" % i) == OK
    assert sorted(get(cluster, c, h)[1].message.data for c, h in readers.values()) == [b"0", b"1", b"2"]  # type: ignore
    assert send(cluster, admin, "b", b"all") == OK
    assert [get(cluster, c, h)[1].message.data for c, h in readers.values()] == [b"all"] * 3  # type: ignore
    rid = cluster.request(admin, Request.SEND, send_payload("b", b"x", kind=SendKind.SEND_RECEIVE))
    cluster.run()
    assert admin.response(rid)[0] == SaAisError.INVALID_PARAM


def test_partition_merge_unites_groups(cluster: ServiceCluster) -> None:
    admin = cluster.connect(1, MSG)
    assert group(cluster, admin, Request.GROUP_CREATE, "g", msg.QueueGroupPolicy.ROUND_ROBIN) == OK
    cluster.partition([[1], [2, 3]])
    cluster.run()
    far = cluster.connect(3, MSG)
    assert group(cluster, far, Request.GROUP_CREATE, "h", msg.QueueGroupPolicy.BROADCAST) == OK
    cluster.heal()
    cluster.run()
    for n in (1, 2, 3):
        assert sorted(cluster.engine(n, MSG).state.groups) == ["g", "h"]


def test_merge_keeps_lowest_copy_other_opener_gets_bad_handle(cluster: ServiceCluster) -> None:
    c1 = cluster.connect(1, MSG)
    _, h1 = open_queue(cluster, c1, "both", retention=FOREVER)
    assert ask(cluster, c1, Request.QUEUE_CLOSE, msg.QueueRequest.pack(h1))[0] == OK
    cluster.partition([[1], [2, 3]])
    cluster.run()
    a = cluster.connect(1, MSG)
    _, ha = open_queue(cluster, a, "both", create=False)
    b = cluster.connect(3, MSG)
    error, hb = open_queue(cluster, b, "both", create=False)
    assert error == OK  # node 1's copy is unavailable on this side: reopened empty here
    assert send(cluster, cluster.connect(2, MSG), "both", b"right") == OK
    assert send(cluster, a, "both", b"left") == OK
    cluster.heal()
    cluster.run()
    assert any(mid == Callback.QUEUE_LOST for mid, _ in b.dispatched)
    assert get(cluster, b, hb)[0] == SaAisError.BAD_HANDLE
    assert get(cluster, a, ha)[1].message.data == b"left"  # type: ignore[union-attr]
    assert not cluster.engine(3, MSG).stores
    for n in (1, 2, 3):
        q = cluster.engine(n, MSG).state.queue("both")
        assert q is not None and q.opener == (1, a.id)


def test_client_death_closes_its_queue_and_drops_its_wait(cluster: ServiceCluster) -> None:
    reader = cluster.connect(2, MSG)
    _, handle = open_queue(cluster, reader, "q", retention=FOREVER)
    asker = cluster.connect(1, MSG)
    cluster.request(asker, Request.SEND, send_payload("q", b"ping", kind=SendKind.SEND_RECEIVE))
    cluster.run()
    sid = get(cluster, reader, handle)[1].sender_id  # type: ignore[union-attr]
    cluster.disconnect(asker)
    cluster.disconnect(reader)
    cluster.run()
    replier = cluster.connect(3, MSG)
    body = msg.encode_body(msg.Message())
    assert ask(cluster, replier, Request.REPLY, msg.ReplyRequest.pack(False, 0, 0, sid, 1, body))[0] == \
        SaAisError.NOT_EXIST
    other = cluster.connect(3, MSG)
    assert open_queue(cluster, other, "q", create=False)[0] == OK


def test_retention_expiry_is_decided_once(cluster: ServiceCluster) -> None:
    conn = cluster.connect(2, MSG)
    _, handle = open_queue(cluster, conn, "q", retention=1_000_000_000)
    ask(cluster, conn, Request.QUEUE_CLOSE, msg.QueueRequest.pack(handle))
    for n in (1, 2, 3):
        assert cluster.engine(n, MSG).state.queue("q") is not None
    cluster.advance(2.0)
    cluster.run()
    for n in (1, 2, 3):
        assert cluster.engine(n, MSG).state.queue("q") is None


def test_malformed_cluster_message_is_dropped(cluster: ServiceCluster) -> None:
    from aisexec.routing import encode
    from plugins.msg.messages import Exec

    for exec_id in (Exec.SEND, Exec.OPEN, Exec.FRAGMENT, Exec.MOVE, Exec.SYNC, Exec.TRACK):
        cluster.host(1).send(encode(MSG, exec_id, b"\x01\x02garbage"), False)
    cluster.run()
    conn = cluster.connect(1, MSG)
    assert open_queue(cluster, conn, "still-works")[0] == OK


def test_large_message_travels_in_fragments(cluster: ServiceCluster) -> None:
    reader = cluster.connect(1, MSG)
    _, handle = open_queue(cluster, reader, "big", size=(4 << 20,) * 4)
    data = bytes(range(256)) * 4096
    sender = cluster.connect(3, MSG)
    assert send(cluster, sender, "big", data) == OK
    assert send(cluster, sender, "big", b"small-after") == OK
    assert get(cluster, reader, handle)[1].message.data == data  # type: ignore[union-attr]
    assert get(cluster, reader, handle)[1].message.data == b"small-after"  # type: ignore[union-attr]


def test_large_message_cut_by_a_sync_round_is_sent_again_whole_and_delivered_once(cluster: ServiceCluster) -> None:
    cluster.crash(3)
    cluster.run()
    reader = cluster.connect(1, MSG)
    _, handle = open_queue(cluster, reader, "big", size=(4 << 20,) * 4)
    data = bytes(range(256)) * 4096
    sender = cluster.connect(2, MSG)
    cluster.queue_limit = 1  # the ring takes the first piece only; the others wait in the outbox
    rid = cluster.request(sender, Request.SEND, send_payload("big", data))
    cluster.run()  # every node holds the first piece
    assert len(cluster.engine(2, MSG).outbox) > 0
    cluster.queue_limit = None
    cluster.restart(3)  # a sync round: every node forgets the piece, the sender starts over
    cluster.run()
    cluster.advance(0.1)
    cluster.run()
    assert sender.response(rid)[0] == OK
    assert get(cluster, reader, handle)[1].message.data == data  # type: ignore[union-attr]
    assert get(cluster, reader, handle)[0] == SaAisError.TIMEOUT


def test_try_again_while_ring_full(cluster: ServiceCluster) -> None:
    conn = cluster.connect(1, MSG)
    cluster.queue_limit = 0
    rid = cluster.request(conn, Request.SEND, send_payload("q", b"x"))
    assert conn.response(rid)[0] == SaAisError.TRY_AGAIN
    cluster.queue_limit = None


def test_tracking_sees_state_changes(cluster: ServiceCluster) -> None:
    admin = cluster.connect(1, MSG)
    assert group(cluster, admin, Request.GROUP_CREATE, "g", msg.QueueGroupPolicy.ROUND_ROBIN) == OK
    tracker = cluster.connect(2, MSG)
    assert ask(cluster, tracker, Request.GROUP_TRACK, msg.TrackRequest.pack("g", msg.TRACK_CHANGES, False))[0] == OK
    owner = cluster.connect(3, MSG)
    _, h = open_queue(cluster, owner, "m", retention=FOREVER)
    group(cluster, admin, Request.GROUP_INSERT, "g", queue="m")
    ask(cluster, owner, Request.QUEUE_CLOSE, msg.QueueRequest.pack(h))
    cluster.crash(3)
    cluster.run()
    notes = [msg.TrackNotice.decode(p) for mid, p in tracker.dispatched if mid == Callback.GROUP_TRACK]
    assert [[(n.member, n.change) for n in t.notes] for t in notes] == [
        [("m", msg.QueueGroupChange.ADDED)], [("m", msg.QueueGroupChange.STATE_CHANGED)]]
    group(cluster, admin, Request.GROUP_DELETE, "g")
    last = msg.TrackNotice.decode([p for mid, p in tracker.dispatched if mid == Callback.GROUP_TRACK][-1])
    assert last.error == SaAisError.NOT_EXIST and last.members == 0


def test_restarted_node_receives_state_in_sync(cluster: ServiceCluster) -> None:
    admin = cluster.connect(1, MSG)
    _, h = open_queue(cluster, admin, "persist", retention=FOREVER, cflags=msg.QUEUE_PERSISTENT)
    assert group(cluster, admin, Request.GROUP_CREATE, "g", msg.QueueGroupPolicy.BROADCAST) == OK
    assert group(cluster, admin, Request.GROUP_INSERT, "g", queue="persist") == OK
    assert send(cluster, cluster.connect(2, MSG), "persist", b"kept") == OK
    cluster.crash(3)
    cluster.run()
    cluster.restart(3)
    cluster.run()
    fresh = cluster.engine(3, MSG).state
    q = fresh.queue("persist")
    assert q is not None and q.opener == (1, admin.id) and q.count(3) == 1
    assert fresh.groups["g"].members == ["persist"]
    late = cluster.connect(3, MSG)
    assert send(cluster, late, "g", b"from-3") == OK
    assert [get(cluster, admin, h)[1].message.data for _ in range(2)] == [b"kept", b"from-3"]  # type: ignore


def test_open_that_timed_out_is_closed_again(cluster: ServiceCluster) -> None:
    conn = cluster.connect(1, MSG)
    payload = msg.OpenRequest.pack(0, False, "slow", True, 0, [100] * 4, FOREVER, msg.QUEUE_CREATE, 1_000_000_000)
    rid = cluster.request(conn, Request.QUEUE_OPEN, payload)
    cluster.advance(1.5)
    assert conn.response(rid)[0] == SaAisError.TIMEOUT
    cluster.run()
    cluster.run()
    q = cluster.engine(2, MSG).state.queue("slow")
    assert q is not None and q.opener is None  # created, then closed: nobody holds it
    other = cluster.connect(2, MSG)
    assert open_queue(cluster, other, "slow", create=False)[0] == OK


def test_move_redirected_when_the_queue_goes_elsewhere_meanwhile(cluster: ServiceCluster) -> None:
    first = cluster.connect(1, MSG)
    _, h1 = open_queue(cluster, first, "q", retention=FOREVER)
    for i in range(3):
        assert send(cluster, cluster.connect(2, MSG), "q", b"m%d" % i) == OK
    ask(cluster, first, Request.QUEUE_CLOSE, msg.QueueRequest.pack(h1))
    doomed = cluster.connect(3, MSG)
    payload = msg.OpenRequest.pack(0, False, "q", False, 0, [0] * 4, 0, 0, FOREVER)
    cluster.request(doomed, Request.QUEUE_OPEN, payload)
    cluster.step()  # the OPEN is delivered: node 1 starts moving to node 3
    cluster.disconnect(doomed)  # ... and the opener dies before the move is done
    second = cluster.connect(2, MSG)
    rid = cluster.request(second, Request.QUEUE_OPEN, payload)
    cluster.run()
    error, answer = second.response(rid)
    assert error == OK
    h2 = msg.OpenAnswer.decode(answer).queue
    assert [get(cluster, second, h2)[1].message.data for _ in range(3)] == [b"m0", b"m1", b"m2"]  # type: ignore


def _view(cluster: ServiceCluster, node: int) -> tuple:
    s = cluster.engine(node, MSG).state
    queues = sorted((q.name, q.named, q.status.name, q.home, q.opener_conn, tuple(q.size),
                     tuple((p, q.used(p), q.count(p)) for p in range(4))) for q in s.queues.values())
    groups = sorted((g.name, g.policy.name, tuple(g.members), g.last) for g in s.groups.values())
    return queues, groups, sorted(s.waits)


@pytest.mark.parametrize("batched", [False, True], ids=["one-per-send", "batched"])
@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_node_agrees_after_random_partitions_merges_and_crashes(seed: int, batched: bool) -> None:
    import random

    rng = random.Random(seed)
    c = ServiceCluster([MessageEngine], nodes=[1, 2, 3, 4])
    c.run()
    turn: list = []  # with ``batched``: sends wait for the end of the "hub turn" (several requests)
    if batched:
        for n in (1, 2, 3, 4):
            c.engine(n, MSG).defer = lambda fn: turn.append(fn) or True  # type: ignore[attr-defined]
    live = {1, 2, 3, 4}
    conns: dict[int, list] = {n: [] for n in live}
    for _step in range(40):
        action = rng.random()
        if action < 0.1 and len(live) > 2:
            split = sorted(live)
            rng.shuffle(split)
            cut = rng.randint(1, len(split) - 1)
            c.partition([split[:cut], split[cut:]])
        elif action < 0.2:
            c.heal()
        elif action < 0.25 and len(live) > 2:
            victim = rng.choice(sorted(live))
            c.crash(victim)
            live.discard(victim)
            conns[victim] = []
        elif action < 0.3 and len(live) < 4:
            back = rng.choice(sorted({1, 2, 3, 4} - live))
            c.restart(back)
            live.add(back)
        else:
            node = rng.choice(sorted(live))
            conn = c.connect(node, MSG)
            conns[node].append(conn)
            name = f"q{rng.randint(0, 4)}"
            op = rng.random()
            if op < 0.3:
                c.request(conn, Request.QUEUE_OPEN, msg.OpenRequest.pack(
                    0, False, name, True, 0, [2000] * 4, rng.choice([FOREVER, 0]), msg.QUEUE_CREATE, FOREVER))
            elif op < 0.5:
                c.request(conn, Request.GROUP_CREATE, msg.GroupRequest.pack(f"g{rng.randint(0, 2)}",
                                                                            rng.randint(1, 4), ""))
            elif op < 0.65:
                c.request(conn, Request.GROUP_INSERT, msg.GroupRequest.pack(f"g{rng.randint(0, 2)}", 0, name))
            elif op < 0.95:
                dest = name if rng.random() < 0.5 else f"g{rng.randint(0, 2)}"
                c.request(conn, Request.SEND, send_payload(dest, b"d" * rng.randint(0, 200), rng.randint(0, 3)))
            elif conns[node]:
                c.disconnect(rng.choice(conns[node]))
        if not batched or rng.random() < 0.3:
            while turn:
                turn.pop(0)()
            c.run()
    while turn:
        turn.pop(0)()
    c.heal()
    c.run()
    views = {n: _view(c, n) for n in sorted(live)}
    first = views[min(live)]
    assert all(v == first for v in views.values()), views
    for n in live:  # what a node holds matches the replicated usage of the queues it holds
        engine = c.engine(n, MSG)
        for qid, store in engine.stores.items():
            q = engine.state.queues[qid]
            assert q.holders.get(n) is not None and sum(a[1] for a in q.holders[n]) >= len(store)
        for q in engine.state.queues.values():  # the running totals are the sums over the holders
            assert q.tot == [[sum(h[p][0] for h in q.holders.values()), sum(h[p][1] for h in q.holders.values())]
                             for p in range(4)], q.name
