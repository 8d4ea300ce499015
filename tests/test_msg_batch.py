"""SEND_BATCH: the sends of one connection read in one hub turn travel as one cluster message.

The wire form is decoded strictly; a batch is applied exactly as its sends one by one (order per
sender, exactly once, QueueFull per message, thresholds), on every node alike; and the cached usage
totals of a queue always equal the sum over its holders.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable

import pytest

from aisexec.testing import FakeConnection, ServiceCluster
from openais import msg
from openais.errors import SaAisError
from openais.message import MessageError
from openais.msg import Callback, Request, SendKind
from plugins.msg import messages as m
from plugins.msg import state as st
from plugins.msg.engine import MessageEngine

MSG = msg.SERVICE_ID
OK = SaAisError.OK
FOREVER = -1
ASYNC, SYNC, SR = int(SendKind.ASYNC), int(SendKind.SYNC), int(SendKind.SEND_RECEIVE)
_req = itertools.count(1)


def body(data: bytes = b"x", priority: int = 3, sender_name: str | None = None) -> bytes:
    return msg.encode_body(msg.Message(data=data, priority=priority, sender_name=sender_name))


def entry(data: bytes = b"x", priority: int = 3, kind: int = ASYNC, sender_id: int = 0, ack: int = 0) -> tuple:
    return (kind, next(_req), 7, ack, sender_id, 123, body(data, priority))


# -- the wire form -------------------------------------------------------------------------------------


def test_batch_round_trip() -> None:
    entries = [entry(b"a", 0), entry(b"bb" * 100, 3, SR, sender_id=(1 << 40) | 5),
               (SYNC, 9, 0, 1, 0, -4, body(b"", 2, "snd"))]
    payload = m.pack_send_batch(42, 77, "dest-é".encode(), entries)
    time_ns, conn, dest, got = m.decode_send_batch(payload)
    assert (time_ns, conn, dest) == (42, 77, "dest-é")
    assert [(e.kind, e.request, e.invocation, e.ack, e.sender_id, e.send_time, bytes(e.body)) for e in got] == entries
    assert [(e.priority, e.length) for e in got] == [(0, 1), (3, 200), (2, 0)]


def _good() -> bytes:
    return m.pack_send_batch(1, 2, b"q", [entry(b"abc"), entry(b"de")])


@pytest.mark.parametrize("mutate", [
    lambda p: p[:5],  # truncated header
    lambda p: p[:-1],  # truncated body
    lambda p: p + b"\x00",  # trailing garbage (a truncated send)
    lambda p: p + b"\x00" * 40,  # a send with a malformed body
    lambda p: p[:16] + struct.pack("!H", 0) + p[18:],  # empty destination
    lambda p: p[:16] + struct.pack("!H", 300) + p[18:],  # destination longer than the payload
    lambda p: p[:18] + b"\xff" + p[19:],  # destination not UTF-8
    lambda p: p[:19] + b"\x09" + p[20:],  # unknown kind
    lambda p: p[:19] + p[19:32] + b"\x02" + p[33:],  # ack not 0/1
    lambda p: p[:33] + struct.pack("!Q", 5) + p[41:],  # a reply id on an ASYNC send
    lambda p: p[:19 + 34 + 8] + b"\x07" + p[19 + 34 + 9:],  # body priority 7
    lambda p: p[:19 + 34 + 9] + b"\x05" + p[19 + 34 + 10:],  # body sender-name flag 5
    lambda p: p[:19],  # no send at all
], ids=["header", "body", "trailing", "bad-body", "empty-dest", "long-dest", "utf8", "kind", "ack", "reply-id",
        "priority", "name-flag", "empty"])
def test_batch_decode_is_strict(mutate: Callable[[bytes], bytes]) -> None:
    m.decode_send_batch(_good())
    with pytest.raises(MessageError):
        m.decode_send_batch(mutate(_good()))


def test_batch_decode_refuses_a_send_receive_without_reply_id_and_too_many_sends() -> None:
    with pytest.raises(MessageError):
        m.decode_send_batch(m.pack_send_batch(1, 2, b"q", [entry(kind=SR, sender_id=0)]))
    with pytest.raises(MessageError):
        m.decode_send_batch(m.pack_send_batch(1, 2, b"q", [entry(b"")] * (m.MAX_BATCH + 1)))
    assert len(m.decode_send_batch(m.pack_send_batch(1, 2, b"q", [entry(b"")] * m.MAX_BATCH))[3]) == m.MAX_BATCH


# -- the state: a batch is its sends one by one ---------------------------------------------------------------


def _open(s: st.MsgState, name: str, node: int, size: tuple = (1000,) * 4, conn: int = 1,
          retention: int = 0) -> None:
    effects = s.apply_open(node, m.Open(1, conn, next(_req), 0, False, name, True, 0, list(size), retention,
                                        msg.QUEUE_CREATE, 1))
    assert [e.error for e in effects if isinstance(e, st.OpenResult)] == [OK]


def _check_totals(s: st.MsgState) -> None:
    for q in s.queues.values():
        want = [[sum(h[p][0] for h in q.holders.values()), sum(h[p][1] for h in q.holders.values())] for p in range(4)]
        assert q.tot == want, (q.name, q.tot, want)


def _outcomes(effects: list) -> tuple[list, list]:
    """(stored messages in order, per-send errors in order) from batch or single-send effects."""
    stored: list = []
    errors: list = []
    for e in effects:
        if isinstance(e, st.StoreMany):
            stored += [(p, bytes(b)) for p, _t, _sid, b, _c in e.items]
        elif isinstance(e, st.Store):
            stored.append((e.priority, bytes(e.body)))
        elif isinstance(e, st.BatchResult):
            errors += [OK if e.errors is None else e.errors[i] for i in range(len(e.entries))]
        elif isinstance(e, st.SendResult):
            errors.append(e.error)
    return stored, errors


@pytest.mark.parametrize("seed", range(6))
def test_batch_equals_its_sends_one_by_one(seed: int) -> None:
    rnd = random.Random(seed)
    one, many = st.MsgState(), st.MsgState()
    for s in (one, many):
        _open(s, "q", node=2, size=(600, 300, 0, 2000))
        s.queues[s.names["q"]].reached = [500, 250, 0, 1500]
    for _round in range(8):
        entries = [entry(bytes(rnd.randrange(0, 200)), rnd.randrange(4), ack=rnd.randrange(2))
                   for _ in range(rnd.randrange(1, 30))]
        payload = m.pack_send_batch(5, 9, b"q", entries)
        batch_effects = many.send_batch(1, *m.decode_send_batch(payload))
        single_effects: list = []
        for kind, request, invocation, ack, sid, send_time, b in entries:
            single_effects += one.send(1, 5, 9, request, kind, invocation, ack, sid, send_time, "q", b)
        assert _outcomes(batch_effects) == _outcomes(single_effects)
        caps = [(e.priority, e.reached) for e in batch_effects if isinstance(e, st.Capacity)]
        assert caps == [(e.priority, e.reached) for e in single_effects if isinstance(e, st.Capacity)]
        qa, qb = one.queues[one.names["q"]], many.queues[many.names["q"]]
        assert qa.holders == qb.holders and qa.tot == qb.tot and qa.reached_flags == qb.reached_flags
        _check_totals(many)
        # the holder hands some out: CONSUMED lowers the replicated usage on both
        prios = [p for p in range(4) for _ in range(qb.holders[2][p][1])][: rnd.randrange(0, 10)]
        charges = [64 + rnd.randrange(0, 1) for _ in prios]
        for s in (one, many):
            s.apply_consumed(2, m.Consumed(6, *s.names["q"], prios, charges))
        _check_totals(many)


def test_queue_full_in_a_batch_refuses_only_what_does_not_fit() -> None:
    s = st.MsgState()
    _open(s, "q", node=2, size=(0, 0, 0, 300))
    sizes = [100, 100, 10, 50, 0]  # charged 164; +164 does not fit; +74 fits (238); +114 and +64 do not
    entries = [entry(bytes(n)) for n in sizes]
    effects = s.send_batch(1, *m.decode_send_batch(m.pack_send_batch(5, 9, b"q", entries)))
    stored, errors = _outcomes(effects)
    assert errors == [OK, SaAisError.QUEUE_FULL, OK, SaAisError.QUEUE_FULL, SaAisError.QUEUE_FULL]
    assert [len(b) for _p, b in stored] == [msg.encode_body(msg.Message(data=bytes(n))).__len__() for n in (100, 10)]
    assert s.queue("q").used(3) == 164 + 74  # type: ignore[union-attr]


def test_batch_to_an_unavailable_queue_or_a_group_takes_the_one_by_one_path() -> None:
    s = st.MsgState()
    _open(s, "a", node=2, retention=FOREVER)
    _open(s, "b", node=3, conn=2)
    s.apply_group(1, m.Group(1, 1, next(_req), int(m.GroupOp.CREATE), "g", int(msg.QueueGroupPolicy.ROUND_ROBIN), ""))
    for name in ("a", "b"):
        s.apply_group(1, m.Group(1, 1, next(_req), int(m.GroupOp.INSERT), "g", 0, name))
    effects = s.send_batch(1, *m.decode_send_batch(m.pack_send_batch(5, 9, b"g", [entry(b"1"), entry(b"2")])))
    assert sorted(e.node for e in effects if isinstance(e, st.Store)) == [2, 3]  # round robin per message
    s.nodes_left((2,))
    effects = s.send_batch(1, *m.decode_send_batch(m.pack_send_batch(5, 9, b"a", [entry(b"1"), entry(kind=SYNC)])))
    assert _outcomes(effects) == ([], [SaAisError.QUEUE_NOT_AVAILABLE] * 2)
    effects = s.send_batch(1, *m.decode_send_batch(m.pack_send_batch(5, 9, b"nope", [entry(b"1")])))
    assert _outcomes(effects) == ([], [SaAisError.NOT_EXIST])


def test_send_receive_in_a_batch_waits_for_its_reply() -> None:
    s = st.MsgState()
    _open(s, "q", node=2)
    sid = (1 << 40) | 3
    effects = s.send_batch(1, *m.decode_send_batch(m.pack_send_batch(5, 9, b"q", [entry(kind=SR, sender_id=sid)])))
    assert _outcomes(effects)[1] == [OK] and sid in s.waits
    [item] = next(e for e in effects if isinstance(e, st.StoreMany)).items
    assert item[2] == sid  # the getter sees the reply id
    s.nodes_left((2,))
    assert sid not in s.waits


# -- the engine: batches on the in-process cluster ---------------------------------------------------------


class Turn:
    """Stands in for the hub: work deferred to the end of the turn runs when :meth:`end` is called."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> bool:
        self.due.append(fn)
        return True

    def end(self) -> None:
        due, self.due = self.due, []
        for fn in due:
            fn()


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([MessageEngine], nodes=[1, 2, 3])
    c.run()
    return c


def _batched(c: ServiceCluster, node: int) -> Turn:
    turn = Turn()
    c.engine(node, MSG).defer = turn  # type: ignore[attr-defined]
    return turn


def _send_payload(dest: str, data: bytes, kind: SendKind = SendKind.ASYNC, invocation: int = 0, ack: int = 0,
                  priority: int = 3) -> bytes:
    return msg.SendRequest.pack(int(kind), invocation, ack, FOREVER, 123, dest, body(data, priority))


def _open_queue(c: ServiceCluster, conn: FakeConnection, name: str, size: tuple = (1 << 16,) * 4,
                retention: int = 0) -> int:
    payload = msg.OpenRequest.pack(0, False, name, True, 0, list(size), retention, msg.QUEUE_CREATE, FOREVER)
    rid = c.request(conn, Request.QUEUE_OPEN, payload)
    c.run()
    error, answer = conn.response(rid)
    assert error == OK
    return msg.OpenAnswer.decode(answer).queue


def _drain(c: ServiceCluster, conn: FakeConnection, handle: int) -> list[bytes]:
    got = []
    while True:
        rid = c.request(conn, Request.GET, msg.GetRequest.pack(handle, 0))
        c.run()
        error, answer = conn.response(rid)
        if error != OK:
            assert error == SaAisError.TIMEOUT
            return got
        got.append(msg.decode_got(answer).message.data)


def _count_batches(c: ServiceCluster) -> Callable[[], int]:
    engine = c.engine(3, MSG)
    seen = [0]
    handler = engine.exec_handlers[m.Exec.SEND_BATCH]
    real = handler.fn

    def counting(sender: int, payload: bytes) -> None:
        seen[0] += 1
        real(sender, payload)

    object.__setattr__(handler, "fn", counting)
    return lambda: seen[0]


def test_sends_of_one_turn_travel_in_one_batch_in_order_exactly_once(cluster: ServiceCluster) -> None:
    reader = cluster.connect(2, MSG)
    qa, qb = _open_queue(cluster, reader, "a"), _open_queue(cluster, reader, "b")
    batches = _count_batches(cluster)
    turn = _batched(cluster, 1)
    s1, s2 = cluster.connect(1, MSG), cluster.connect(1, MSG)
    expect: dict[str, list[bytes]] = {"a": [], "b": []}
    sync_rids = []
    for i in range(40):
        for conn, dest in ((s1, "a"), (s2, "a"), (s1, "b")) if i % 8 == 7 else ((s1, "a"), (s2, "a")):
            data = f"{conn.id}-{dest}-{i}".encode()
            expect[dest].append(data)
            if i % 10 == 9 and conn is s2:
                sync_rids.append(cluster.request(conn, Request.SEND, _send_payload(dest, data, SendKind.SYNC)))
            else:
                cluster.request(conn, Request.SEND, _send_payload(dest, data))
        if i % 20 == 19:
            turn.end()  # two hub turns
    turn.end()
    cluster.run()
    for rid in sync_rids:
        assert s2.response(rid)[0] == OK
    got = {"a": _drain(cluster, reader, qa), "b": _drain(cluster, reader, qb)}
    for dest in ("a", "b"):
        assert sorted(got[dest]) == sorted(expect[dest])  # none lost, none twice
        for conn in (s1, s2):  # each sender's order kept across batches and destinations
            mine = [d for d in got[dest] if d.startswith(f"{conn.id}-".encode())]
            assert mine == [d for d in expect[dest] if d.startswith(f"{conn.id}-".encode())]
    # a batch per connection and run of one destination per turn: far fewer cluster messages than sends
    assert batches() <= 20, batches()  # 85 sends; s1 switches destination 10 times, 4 sync sends leave at once


def test_queue_full_and_acks_under_batching(cluster: ServiceCluster) -> None:
    reader = cluster.connect(3, MSG)
    handle = _open_queue(cluster, reader, "small", size=(0, 0, 0, 1000))
    turn = _batched(cluster, 1)
    sender = cluster.connect(1, MSG)
    sizes = [300, 300, 300, 300, 10, 500, 0]  # each charged 64 more: two fit, then only the small ones
    for i, n in enumerate(sizes):
        cluster.request(sender, Request.SEND, _send_payload("small", bytes([i]) * n, invocation=100 + i, ack=1))
    turn.end()
    cluster.run()
    acks = [msg.DeliveredCallback.decode(p) for cb, p in sender.dispatched if cb == Callback.DELIVERED]
    used, want = 0, []
    for n in sizes:
        if used + n + msg.METADATA_SIZE <= 1000:
            used += n + msg.METADATA_SIZE
            want.append(OK)
        else:
            want.append(SaAisError.QUEUE_FULL)
    assert [(a.invocation, a.error) for a in acks] == [(100 + i, w) for i, w in enumerate(want)]
    assert [len(d) for d in _drain(cluster, reader, handle)] == [n for n, w in zip(sizes, want, strict=True)
                                                                if w == OK]
    for n in (1, 2, 3):
        q = cluster.engine(n, MSG).state.queue("small")  # type: ignore[attr-defined]
        assert q.tot[3] == [0, 0] or q.tot == cluster.engine(1, MSG).state.queue("small").tot  # type: ignore


def test_malformed_batch_is_dropped_everywhere(cluster: ServiceCluster) -> None:
    from aisexec.routing import encode

    reader = cluster.connect(2, MSG)
    handle = _open_queue(cluster, reader, "q")
    bad = m.pack_send_batch(1, 5, b"q", [entry(b"lost")]) + b"\x00"
    cluster.host(1).send(encode(MSG, m.Exec.SEND_BATCH, bad), False)
    cluster.run()
    assert _drain(cluster, reader, handle) == []
    sender = cluster.connect(1, MSG)
    rid = cluster.request(sender, Request.SEND, _send_payload("q", b"fine", SendKind.SYNC))
    cluster.run()
    assert sender.response(rid)[0] == OK
    assert _drain(cluster, reader, handle) == [b"fine"]


def test_batch_in_flight_when_the_queue_node_is_lost(cluster: ServiceCluster) -> None:
    reader = cluster.connect(2, MSG)
    _open_queue(cluster, reader, "q", retention=FOREVER)
    turn = _batched(cluster, 1)
    sender = cluster.connect(1, MSG)
    for i in range(3):
        cluster.request(sender, Request.SEND, _send_payload("q", b"a", invocation=5 + i, ack=1))
    cluster.crash(2)  # the queue's node goes before the batch leaves
    turn.end()
    cluster.run()
    acks = [msg.DeliveredCallback.decode(p) for cb, p in sender.dispatched if cb == Callback.DELIVERED]
    assert [(a.invocation, a.error) for a in acks] == [(5 + i, SaAisError.QUEUE_NOT_AVAILABLE) for i in range(3)]
    sync = cluster.request(sender, Request.SEND, _send_payload("q", b"s", SendKind.SYNC))  # leaves at once
    cluster.run()
    assert sender.response(sync)[0] == SaAisError.QUEUE_NOT_AVAILABLE


def test_send_receive_round_trip_through_a_batch(cluster: ServiceCluster) -> None:
    server = cluster.connect(2, MSG)
    handle = _open_queue(cluster, server, "rpc")
    turn = _batched(cluster, 1)
    client = cluster.connect(1, MSG)
    rid = cluster.request(client, Request.SEND, _send_payload("rpc", b"ping", SendKind.SEND_RECEIVE))
    turn.end()
    cluster.run()
    grid = cluster.request(server, Request.GET, msg.GetRequest.pack(handle, 0))
    cluster.run()
    got = msg.decode_got(server.response(grid)[1])
    assert got.message.data == b"ping" and got.sender_id
    reply = msg.ReplyRequest.pack(False, 0, 0, got.sender_id, 9, body(b"pong"))
    cluster.request(server, Request.REPLY, reply)
    cluster.run()
    error, answer = client.response(rid)
    assert error == OK and msg.decode_got(answer).message.data == b"pong"
