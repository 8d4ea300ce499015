"""EVT push delivery: events pushed whole in EVENT frames, a push window opened by the library's ACKs.

Over the in-process ServiceCluster (``Bridged`` handles: requests reach the
real engines, callbacks come back through ``_on_dispatch``).  The same path
over real sockets and executives is in ``test_mp_evt.py``.
"""

from __future__ import annotations

import random

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import evt
from openais.evt import EventFilter, FilterType, matches
from plugins.evt.delivery import PUSH_WINDOW, DeliveryQueue
from plugins.evt.engine import EventEngine
from plugins.evt.local import compile_filters, compiled_match
from plugins.evt.state import EventRecord
from tests.test_evt_library import Bridged

ALL = evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([EventEngine], nodes=[1, 2, 3])
    c.run()
    return c


def engine(cluster: ServiceCluster, node: int) -> EventEngine:
    return cluster.engine(node, evt.SERVICE_ID)


class Sub:
    """A subscriber handle that keeps every delivered event (not freed) with its subscription id."""

    def __init__(self, cluster: ServiceCluster, node: int, channel: str = "p", filters=()) -> None:
        self.events: list[tuple[int, evt.Event, int]] = []
        self.h = Bridged(cluster, node, event_deliver=lambda sid, e, n: self.events.append((sid, e, n)))
        self.ch = self.h.channel_open(channel, ALL, timeout=1.0)
        self.ch.event_subscribe(list(filters), 1)
        self.node = node

    def queue(self, cluster: ServiceCluster):
        return engine(cluster, self.node).local.clients[self.h.conn.id].queue

    def data(self) -> list[bytes]:
        return [e.data_get() for _, e, _ in self.events]


def publish(ch, patterns, data=b"", priority=evt.LOWEST_PRIORITY, retention=0.0) -> int:
    e = ch.event_allocate()
    e.attributes_set(patterns, priority, retention, "push")
    try:
        return e.publish(data)
    finally:
        e.free()


def test_max_size_events_arrive_whole_and_stay_readable(cluster):
    sub = Sub(cluster, 2)
    pub = Bridged(cluster, 1).channel_open("p", evt.CHANNEL_PUBLISHER)
    patterns = [bytes([i]) * evt.MAX_PATTERN_SIZE for i in range(evt.MAX_NUM_PATTERNS)]
    data = bytes(random.Random(7).randrange(256) for _ in range(evt.MAX_EVT_SIZE))
    e = pub.event_allocate()
    e.attributes_set(patterns, evt.HIGHEST_PRIORITY, 0.0, "n" * 256)
    ids = [e.publish(data), e.publish(b"")]
    sub.h.dispatch()
    (sid, big, size), (_, empty, zero) = sub.events
    assert (sid, size, zero) == (1, evt.MAX_EVT_SIZE, 0)
    more = [publish(pub, [b"later"], bytes([i])) for i in range(5)]
    sub.h.dispatch()  # more deliveries later: the first events are still readable, whole
    a = big.attributes_get()
    assert a.patterns == patterns and a.publisher_name == "n" * 256 and a.event_id == ids[0]
    assert a.priority == evt.HIGHEST_PRIORITY and a.retention_time == 0.0 and a.publish_time > 0
    assert big.data_get() == data and empty.data_get() == b"" and empty.attributes_get().event_id == ids[1]
    assert [x.attributes_get().event_id for _, x, _ in sub.events[2:]] == more
    big.free()
    with pytest.raises(openais.BadHandle):
        big.data_get()
    sub.ch.close()  # closing the channel frees its delivered events
    with pytest.raises(openais.BadHandle):
        empty.attributes_get()


def test_each_publishers_events_in_its_order_on_every_subscriber(cluster):
    subs = [Sub(cluster, n) for n in (1, 2, 3)]
    pubs = [Bridged(cluster, n).channel_open("p", evt.CHANNEL_PUBLISHER) for n in (1, 2, 3)]
    for i in range(60):  # interleaved: 3 publishers on 3 nodes
        publish(pubs[i % 3], [b"o"], f"{i % 3}:{i // 3}".encode(), priority=evt.LOWEST_PRIORITY)
        if i % 7 == 0:
            subs[i % 3].h.dispatch()  # subscribers read at different moments
    orders = []
    for s in subs:
        s.h.dispatch()
        got = [d.decode() for d in s.data()]
        assert len(got) == 60
        for p in range(3):
            assert [g for g in got if g.startswith(f"{p}:")] == [f"{p}:{k}" for k in range(20)]
        orders.append(got)
    assert orders[0] == orders[1] == orders[2]  # one agreed order


def test_window_opens_after_the_first_ack_and_acks_are_rare(cluster):
    sub = Sub(cluster, 3)
    sent = []
    real = sub.h._send_oneway
    sub.h._send_oneway = lambda msg_id, payload: (sent.append(msg_id), real(msg_id, payload))
    pub = Bridged(cluster, 1).channel_open("p", evt.CHANNEL_PUBLISHER)
    publish(pub, [b"w"], b"0")
    publish(pub, [b"w"], b"1")
    q = sub.queue(cluster)
    assert q.window == 1 and q.outstanding == 1 and len(q) == 1  # a fresh handle: one event out at once
    sub.h.dispatch()
    assert sub.data() == [b"0", b"1"] and q.window == PUSH_WINDOW
    sent.clear()
    for i in range(200):  # a subscriber that keeps up: pushed straight away, acknowledged now and then
        publish(pub, [b"w"], str(i).encode())
        if i % 10 == 9:
            sub.h.dispatch()
    assert len(sub.events) == 202 and len(q) == 0
    assert 0 < len(sent) <= 200 // 10 and set(sent) == {evt.Request.ACK}
    assert engine(cluster, 3).local.describe()[str(sub.h.conn.id)]["waiting"] == 0


def test_lost_event_notice_on_overflow_and_resume_below_delivery_queue_resume(cluster):
    for n in (1, 2, 3):
        engine(cluster, n).local.queue_size, engine(cluster, n).local.queue_resume = 20, 8
    sub = Sub(cluster, 2)
    pub = Bridged(cluster, 1).channel_open("p", evt.CHANNEL_PUBLISHER)
    publish(pub, [b"x"], b"first")
    sub.h.dispatch()  # the subscriber has read once: its window is open
    q = sub.queue(cluster)
    sub.events.clear()
    for i in range(40):  # it stops dispatching: 20 are held (on their way or waiting), then the queue blocks
        publish(pub, [b"x"], bytes([i]))
    assert q.blocked and q.held() == 20 + 1 and q.dropped == 19 and q.notices == 1  # (+1: the notice)
    sub.h.dispatch(openais.DISPATCH_ONE)
    assert q.blocked  # one taken: still above resume
    while q.blocked:
        sub.h.dispatch(openais.DISPATCH_ONE)
    assert q.held() < 8  # unblocked once below delivery_queue_resume
    publish(pub, [b"x"], b"after")  # accepted again, no new notice
    sub.h.dispatch()
    got = sub.data()
    lost = [e for _, e, _ in sub.events if e.attributes_get().event_id == evt.EVENTID_LOST]
    assert len(lost) == 1 and lost[0].attributes_get().patterns == [evt.LOST_EVENT_PATTERN]
    assert [d for d in got if d] == [bytes([i]) for i in range(21)] + [b"after"]  # 0..20 held, 21.. lost
    assert q.notices == 1 and not q.blocked


def test_a_subscriber_that_dies_mid_delivery_is_cleaned_up(cluster):
    for n in (1, 2, 3):
        engine(cluster, n).local.queue_size = 50
    dying, other = Sub(cluster, 2), Sub(cluster, 2)
    pub = Bridged(cluster, 1).channel_open("p", evt.CHANNEL_PUBLISHER)
    publish(pub, [b"d"], b"warm")
    dying.h.dispatch()
    for i in range(120):  # for the one that stopped reading: pushed (the window), waiting, dropped
        publish(pub, [b"d"], bytes([i]))
        if i % 10 == 0:
            other.h.dispatch()
    local = engine(cluster, 2).local
    q = dying.queue(cluster)
    assert q.outstanding > 0 and len(q) > 0 and q.blocked
    cluster.disconnect(dying.h.conn)
    cluster.run()
    assert str(dying.h.conn.id) not in local.describe()
    assert all(h.conn_id != dying.h.conn.id for hs in local.subscribed.values() for h in hs.values())
    for n in (1, 2, 3):
        (chan,) = engine(cluster, n).state.channels.values()
        assert chan.open_count == 2  # the publisher and the other subscriber
    publish(pub, [b"d"], b"still")
    other.h.dispatch()
    assert other.data() == [b"warm", *(bytes([i]) for i in range(120)), b"still"]  # unaffected


def test_unsubscribe_while_events_are_on_their_way(cluster):
    sub = Sub(cluster, 1)
    sub.ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"k")], 2)
    pub = Bridged(cluster, 3).channel_open("p", evt.CHANNEL_PUBLISHER)
    publish(pub, [b"w"])
    sub.h.dispatch()
    sub.events.clear()
    publish(pub, [b"keep"], b"k")  # pushed under 1 (oldest match)
    publish(pub, [b"drop"], b"d")
    sub.ch.event_unsubscribe(1)  # already pushed: the library relabels (k under 2) or drops (d)
    sub.h.dispatch()
    assert [(sid, e.data_get()) for sid, e, _ in sub.events] == [(2, b"k")]
    q = sub.queue(cluster)
    sub.h._ack()  # (acknowledged lazily; a dropped one counts as taken too)
    assert q.outstanding == 0 and not q.blocked


def test_compiled_filters_agree_with_matches():
    rng = random.Random(3)
    alphabet = [b"", b"a", b"ab", b"abc", b"b", b"bc", b"c"]
    for _ in range(3000):
        filters = [(rng.choice(list(FilterType)), rng.choice(alphabet)) for _ in range(rng.randrange(4))]
        patterns = [rng.choice(alphabet) for _ in range(rng.randrange(4))]
        tests = compile_filters(filters)
        assert (not tests or compiled_match(tests, patterns)) == matches(filters, patterns), (filters, patterns)


def test_queue_counts_events_on_their_way_and_ignores_stale_acks():
    q = DeliveryQueue(4, 3)
    ev = EventRecord(1, 2000, 0, 3, 0, 0, "", [b"p"], b"x" * 10)
    assert q.can_push(10)
    q.push_begin(len(ev.body))
    assert not q.can_push(10)  # a fresh window holds one event
    assert q.held() == 0  # the one pushed at once is not counted
    q.ack_total(1)
    assert q.window == PUSH_WINDOW and q.outstanding == 0
    for _ in range(4):
        q.push_begin(len(ev.body))
    assert q.held() == 3 and q.admits()
    q.offer(1, 1, ev)
    assert q.held() == 4 and not q.admits()
    q.offer(1, 1, ev)  # full: dropped, a notice
    assert q.blocked and q.notices == 1 and len(q) == 2
    q.ack_total(3)  # two of the four on their way taken: 1 of them counted + 2 waiting, not below resume 3
    assert q.blocked and q.outstanding == 2
    q.ack_total(2)  # stale (an older total): ignored
    assert q.outstanding == 2
    q.ack_total(5)
    assert not q.blocked and q.outstanding == 0 and q.acked == 5
    q.ack_total(5 + (1 << 32))  # modulo 2**32: nothing new
    assert q.outstanding == 0


def _reference_push(q: DeliveryQueue, size: int) -> int:
    """What ``push_now`` must do, by the separate rules it stands for (offer-or-push in ``deliver``)."""
    if len(q) or not q.admits() or not q.can_push(size):
        return -1
    return evt.PUSH_ACK if q.push_begin(size) else 0


def test_push_now_agrees_with_admits_can_push_and_push_begin():
    rng = random.Random(11)
    ev = EventRecord(1, 2000, 0, 3, 0, 0, "", [b"p"], b"")
    for _ in range(300):
        size, resume = rng.choice([(4, 2), (10, 5), (1000, 500)])
        fast, slow = DeliveryQueue(size, resume), DeliveryQueue(size, resume)
        fast.window_bytes = slow.window_bytes = rng.choice([64, 1 << 20])
        for _step in range(60):
            action = rng.random()
            if action < 0.6:
                n = rng.choice([1, 10, 40])
                got, want = fast.push_now(n), _reference_push(slow, n)
                assert got == want
                if want < 0:  # the engine offers it to the queue instead
                    fast.offer(1, 1, ev)
                    slow.offer(1, 1, ev)
            elif action < 0.8:
                total = (slow.acked + rng.randrange(0, slow.outstanding + 1)) & 0xFFFFFFFF
                fast.ack_total(total)
                slow.ack_total(total)
            elif len(slow):
                fast.pop_head()
                slow.pop_head()
            state = ("_count", "blocked", "outstanding", "outstanding_bytes", "window", "dropped", "notices")
            assert [getattr(fast, a) for a in state] == [getattr(slow, a) for a in state]
            assert list(fast._sizes) == list(slow._sizes)


def test_delivered_event_is_unusable_once_freed_or_its_channel_closed(cluster):
    sub = Sub(cluster, 2)
    pub = Bridged(cluster, 1).channel_open("p", evt.CHANNEL_PUBLISHER)
    for i in range(3):
        publish(pub, [b"x"], bytes([i]))
    sub.h.dispatch()
    (_, first, _), (_, second, _), (_, third, _) = sub.events
    assert first.data_get() == b"\x00" and not first.closed
    first.free()
    assert first.closed
    for call in (first.free, first.data_get, first.attributes_get, lambda: first.pattern_free(None)):
        with pytest.raises(openais.BadHandle):
            call()
    assert id(second) in sub.ch.__dict__["_object_handles"] and id(first) not in sub.ch.__dict__["_object_handles"]
    with pytest.raises(openais.Access):
        second.attributes_set([b"y"], 1, 0.0, "n")  # delivered: read-only
    sub.ch.close()  # frees the events delivered on it
    for call in (second.data_get, third.attributes_get, third.free):
        with pytest.raises(openais.BadHandle):
            call()
