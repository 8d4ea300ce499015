"""The pure EVT pieces alone: filter matching, the delivery queue's rules, apply and merge."""

from __future__ import annotations

import random

import pytest

from openais import evt
from openais.errors import SaAisError
from openais.evt import FilterType, matches
from openais.message import MessageError
from plugins.evt import messages as m
from plugins.evt.delivery import DeliveryQueue
from plugins.evt.messages import Exec, RecordKind
from plugins.evt.state import (
    EXPIRED_TOMBSTONE_NS,
    Deliver,
    Drop,
    EventRecord,
    EvtState,
    Forgotten,
    Opened,
    Reply,
    Retain,
    Tombstone,
    merge,
)

P, S, E, A = FilterType.PREFIX, FilterType.SUFFIX, FilterType.EXACT, FilterType.PASS_ALL


@pytest.mark.parametrize(("filters", "patterns", "expected"), [
    ([], [], True),
    ([], [b"x"], True),
    ([(P, b"ab")], [b"abc"], True),
    ([(P, b"ab")], [b"xab"], False),
    ([(S, b"bc")], [b"abc"], True),
    ([(S, b"bc")], [b"bca"], False),
    ([(E, b"abc")], [b"abc"], True),
    ([(E, b"abc")], [b"abcd"], False),
    ([(A, b"zzz")], [b"anything"], True),
    ([(P, b"")], [b"anything"], True),
    ([(S, b"")], [b""], True),
    ([(P, b"a"), (E, b"b")], [b"a"], False),  # surplus filter vs b""
    ([(P, b"a"), (E, b"")], [b"a"], True),
    ([(P, b"a"), (A, b"")], [b"a"], True),
    ([(P, b"a")], [b"a", b"extra", b"ignored"], True),  # surplus patterns are not tested
    ([(A, b""), (S, b"z")], [b"q", b"xyz"], True),
    ([(A, b""), (S, b"z")], [b"q", b"xyzw"], False),
])
def test_matching_rules(filters, patterns, expected):
    assert matches(filters, patterns) is expected


def test_matching_agrees_with_a_reference_on_random_inputs():
    rng = random.Random(17)
    alphabet = b"ab"

    def word():
        return bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 3)))

    def reference(filters, patterns):
        for i, (t, f) in enumerate(filters):
            p = patterns[i] if i < len(patterns) else b""
            ok = {P: p[:len(f)] == f, S: len(f) <= len(p) and p[len(p) - len(f):] == f, E: p == f, A: True}[t]
            if not ok:
                return False
        return True

    for _ in range(3000):
        filters = [(rng.choice([P, S, E, A]), word()) for _ in range(rng.randint(0, 3))]
        patterns = [word() for _ in range(rng.randint(0, 3))]
        assert matches(filters, patterns) == reference(filters, patterns)


def ev(event_id: int, priority: int = 3) -> EventRecord:
    return EventRecord(1, event_id, 0, priority, 0, 0, "", [b"p"], b"")


def test_queue_delivers_highest_priority_first_in_order_within_a_priority():
    q = DeliveryQueue(10, 5)
    for i, prio in enumerate([3, 0, 2, 0, 1]):
        q.offer(1, 1, ev(2000 + i, prio))
    assert [i.event.event_id for i in q.pull(10, 1 << 20)] == [2001, 2003, 2004, 2002, 2000]


def test_queue_overflow_drops_and_notifies_once_until_resumed():
    q = DeliveryQueue(4, 2)
    for i in range(4):
        q.offer(1, 7, ev(2000 + i))
    q.offer(1, 7, ev(2004))  # full: dropped, one notice
    q.offer(2, 8, ev(2005))  # blocked: dropped, no notice
    items = q.items()
    assert len(q) == 5 and q.blocked and q.dropped == 2 and q.notices == 1
    assert items[0].event is None and items[0].subscription_id == 7
    assert [i.event.event_id for i in items[1:]] == [2000, 2001, 2002, 2003]
    q.pull(2, 1 << 20)
    assert q.blocked  # 3 left, resume is 2
    q.offer(1, 7, ev(2006))  # still blocked: dropped
    q.pull(2, 1 << 20)
    assert not q.blocked and len(q) == 1
    for i in range(4):
        q.offer(1, 7, ev(2010 + i))
    assert q.notices == 2  # a later overflow: a new notice


def test_queue_overflow_replaces_the_most_recent_lower_priority_event():
    q = DeliveryQueue(3, 1)
    q.offer(1, 1, ev(2000, 3))
    q.offer(1, 2, ev(2001, 2))
    q.offer(1, 3, ev(2002, 3))
    q.offer(1, 4, ev(2003, 1))  # replaces 2002 (most recent of lower priority); notice for sub 3
    items = q.items()
    assert [(i.event and i.event.event_id, i.subscription_id) for i in items] == [
        (None, 3), (2003, 4), (2001, 2), (2000, 1)]
    q.offer(1, 5, ev(2004, 3))  # nothing of lower priority than 3: dropped
    assert len(q) == 4


def test_queue_pull_respects_count_and_bytes():
    q = DeliveryQueue(100, 50)
    for i in range(10):
        q.offer(1, 1, EventRecord(1, 2000 + i, 0, 3, 0, 0, "", [], b"x" * 1000))
    assert len(q.pull(3, 1 << 20)) == 3
    assert len(q.pull(100, 2500)) == 2  # about max_bytes, at least one
    assert len(q.pull(100, 1)) == 1


def opened(state, sender, handle, name, flags=7, channel_id=None):
    cid = channel_id or (sender << 32 | handle)
    return state.apply(sender, Exec.OPEN, m.Open(9, handle, handle, cid, flags, name))


def test_open_unlink_close_lifecycle():
    s = EvtState()
    assert opened(s, 1, 1, "c", flags=1) == [Opened(9, 1, 1, 0, SaAisError.NOT_EXIST)]
    (o,) = opened(s, 1, 2, "c")
    assert o.error == SaAisError.OK and o.channel_id == 1 << 32 | 2
    (o2,) = opened(s, 2, 5, "c", flags=1)
    assert o2.channel_id == o.channel_id and s.channels[o.channel_id].open_count == 2
    assert s.apply(1, Exec.UNLINK, m.Unlink(9, 3, "c")) == [Reply(9, 3, SaAisError.OK)]
    assert s.apply(1, Exec.UNLINK, m.Unlink(9, 4, "c")) == [Reply(9, 4, SaAisError.NOT_EXIST)]
    s.apply(1, Exec.CLOSE, m.Close(o.channel_id, 2))
    assert o.channel_id in s.channels
    s.apply(2, Exec.CLOSE, m.Close(o.channel_id, 5))
    s.apply(2, Exec.CLOSE, m.Close(o.channel_id, 5))  # idempotent
    assert s.channels == {}


def publish_msg(cid, event_id, retention_ns=0, publish_time=1000, data=b"d"):
    return m.Publish(9, 1, evt.Request.PUBLISH, cid, event_id, publish_time, 1, retention_ns, "p", [b"x"], data)


def test_publish_retain_clear_expire_effects():
    s = EvtState()
    (o,) = opened(s, 1, 1, "c")
    cid = o.channel_id
    effects = s.apply(1, Exec.PUBLISH, publish_msg(cid, 1 << 32 | 10, retention_ns=500))
    assert [type(e) for e in effects] == [Retain, Deliver, Reply] and effects[0] == Retain(1 << 32 | 10, 1500)
    assert s.seqs == {1: 10}
    effects = s.apply(1, Exec.PUBLISH, publish_msg(cid, 1 << 32 | 11))
    assert [type(e) for e in effects] == [Deliver, Reply] and 1 << 32 | 11 not in s.events
    assert s.apply(2, Exec.CLEAR, m.Clear(9, 2, cid, 1 << 32 | 11, 0)) == [Reply(9, 2, SaAisError.NOT_EXIST)]
    assert s.apply(2, Exec.CLEAR, m.Clear(9, 2, cid, 1 << 32 | 10, 1200)) == [
        Reply(9, 2, SaAisError.OK), Drop(1 << 32 | 10, cid), Tombstone(1 << 32 | 10, 1500)]  # until its deadline
    s.apply(1, Exec.PUBLISH, publish_msg(cid, 1 << 32 | 12, retention_ns=5))
    assert s.apply(3, Exec.EXPIRE, m.Expire(1 << 32 | 12)) == [
        Drop(1 << 32 | 12, cid), Tombstone(1 << 32 | 12, 1005 + EXPIRED_TOMBSTONE_NS)]
    assert s.apply(3, Exec.EXPIRE, m.Expire(1 << 32 | 12)) == []  # a second expiry is harmless
    assert s.retained_bytes == 0 and set(s.tombstones) == {1 << 32 | 10, 1 << 32 | 12}
    assert s.apply(1, Exec.FORGET, m.Forget(1 << 32 | 10)) == [Forgotten(1 << 32 | 10)]
    assert s.apply(1, Exec.FORGET, m.Forget(1 << 32 | 10)) == []
    assert set(s.tombstones) == {1 << 32 | 12}


def test_retained_limit_is_decided_in_the_state():
    s = EvtState(max_retained_bytes=1000)
    (o,) = opened(s, 1, 1, "c")
    ok = s.apply(1, Exec.PUBLISH, publish_msg(o.channel_id, 1 << 32 | 5, retention_ns=9, data=b"x" * 600))
    assert ok[-1].error == SaAisError.OK
    full = s.apply(1, Exec.PUBLISH, publish_msg(o.channel_id, 1 << 32 | 6, retention_ns=9, data=b"x" * 600))
    assert full == [Reply(9, 1, SaAisError.NO_RESOURCES)]


def records_of(state, sender, local=()):
    out = [(sender, m.decode_record(r)) for r in state.shared_records()]
    out += [(sender, m.decode_record(m.RecOpeners.pack(RecordKind.OPENERS, cid, h, subs))) for cid, h, subs in local]
    return out


def test_merge_unites_partitions_by_id_and_folds_twin_names():
    a, b = EvtState(), EvtState()
    (oa,) = opened(a, 1, 1, "twin")
    (ob,) = opened(b, 3, 1, "twin")
    (ou,) = opened(a, 1, 2, "gone")
    a.apply(1, Exec.UNLINK, m.Unlink(9, 3, "gone"))
    a.apply(1, Exec.PUBLISH, publish_msg(oa.channel_id, 1 << 32 | 7, retention_ns=10**12))
    b.apply(3, Exec.PUBLISH, publish_msg(ob.channel_id, 3 << 32 | 7, retention_ns=10**12))
    b.apply(3, Exec.PUBLISH, publish_msg(ob.channel_id, 1 << 32 | 7, retention_ns=10**12))  # same id: one event
    records = records_of(a, 1, [(oa.channel_id, 1, [4])]) + records_of(b, 3, [(ob.channel_id, 1, [])])
    merged, remap = merge(records)
    assert remap == {ob.channel_id: oa.channel_id}
    assert ou.channel_id not in merged.channels  # unlinked and nobody reported it open
    chan = merged.channels[oa.channel_id]
    assert set(chan.retained) == {1 << 32 | 7, 3 << 32 | 7} and chan.open_count == 2
    assert chan.openers[1] == {1: {4}} and merged.seqs == {1: 7, 3: 7}
    again, _ = merge(list(records))
    assert again.describe() == merged.describe()  # deterministic
    b.apply(3, Exec.CLEAR, m.Clear(9, 2, ob.channel_id, 3 << 32 | 7, 0))  # removed on one side: stays removed
    merged, _ = merge(records_of(a, 1, [(oa.channel_id, 1, [4])]) + records_of(b, 3, [(ob.channel_id, 1, [])]))
    assert set(merged.events) == {1 << 32 | 7} and set(merged.tombstones) == {3 << 32 | 7}


def test_the_same_messages_give_the_same_state_on_every_node():
    rng = random.Random(5)
    nodes = [EvtState() for _ in range(3)]
    log = []
    for i in range(300):
        sender = rng.choice([1, 2, 3])
        kind = rng.random()
        cid = rng.choice([1 << 32 | 1, 2 << 32 | 1])
        if kind < 0.2:
            log.append((sender, Exec.OPEN, m.Open(1, i, i, cid, 7, rng.choice(["x", "y"]))))
        elif kind < 0.7:
            retention = rng.choice([0, 9])
            log.append((sender, Exec.PUBLISH, publish_msg(cid, sender << 32 | 100 + i, retention_ns=retention)))
        elif kind < 0.8:
            log.append((sender, Exec.UNLINK, m.Unlink(1, i, rng.choice(["x", "y"]))))
        else:
            log.append((sender, Exec.EXPIRE, m.Expire(rng.choice(list(nodes[0].events) or [0]))))
    for state in nodes:
        for sender, exec_id, msg in log:
            state.apply(sender, exec_id, msg)
    assert nodes[0].describe() == nodes[1].describe() == nodes[2].describe()


def test_records_decode_strictly():
    with pytest.raises(MessageError):
        m.decode_record(b"")
    with pytest.raises(MessageError):
        m.decode_record(b"\x09abc")
    with pytest.raises(MessageError):
        m.decode_record(m.RecSeq.pack(RecordKind.SEQ, 1, 2) + b"x")
    assert evt.EventBody.decode(ev(5000).body).event_id == 5000


def test_publish_shares_its_bytes_with_the_request_and_the_delivered_body():
    request = evt.PublishRequest.pack(77, 4 << 32 | 9, 123, 2, 5, "pub", [b"a", b"bc"], b"data")
    head = m.PUBLISH_HEAD.pack(1, 2, evt.Request.PUBLISH_NOWAIT, 3)
    frame = head + request[m.REQUEST_REST_OFFSET:]
    assert frame == m.Publish.pack(1, 2, evt.Request.PUBLISH_NOWAIT, 3, 4 << 32 | 9, 123, 2, 5, "pub", [b"a", b"bc"],
                                   b"data")
    unnamed = evt.PublishRequest.pack(77, 0, 0, 2, 5, "pub", [b"a", b"bc"], b"data")  # PUBLISH: the node names it
    named = m.PUBLISH_NAMED_HEAD.pack(1, 2, evt.Request.PUBLISH, 3, 4 << 32 | 9, 123) + unnamed[m.REQUEST_NAMED_OFFSET:]
    assert named == m.Publish.pack(1, 2, evt.Request.PUBLISH, 3, 4 << 32 | 9, 123, 2, 5, "pub", [b"a", b"bc"], b"data")
    body = evt.EventBody.decode(frame[m.PUBLISH_BODY_OFFSET:])
    assert body == evt.EventBody(4 << 32 | 9, 123, 2, 5, "pub", [b"a", b"bc"], b"data")
