"""EVT across several nodes of the in-process ServiceCluster: delivery, retention, overflow, sync, failures."""

from __future__ import annotations

import os
import struct
import time

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import evt
from openais.evt import EventFilter
from plugins.evt import messages as m
from plugins.evt.engine import EventEngine
from tests.test_evt_library import Bridged

ALL = evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER


class Client:
    """A bridged handle that records every delivery as (sid, event_id, patterns, data, priority)."""

    def __init__(self, cluster: ServiceCluster, node: int) -> None:
        self.got: list[tuple] = []
        self.h = Bridged(cluster, node, event_deliver=self._deliver)

    def _deliver(self, sid, event, size):
        a = event.attributes_get()
        self.got.append((sid, a.event_id, a.patterns, event.data_get(), a.priority))
        event.free()

    def take(self) -> list[tuple]:
        self.h.dispatch()
        got, self.got = self.got, []
        return got


def publish(ch, patterns, data=b"", priority=evt.LOWEST_PRIORITY, retention=0.0) -> int:
    e = ch.event_allocate()
    e.attributes_set(patterns, priority, retention, "test")
    try:
        return e.publish(data)
    finally:
        e.free()


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([EventEngine], nodes=[1, 2, 3])
    c.run()
    return c


def engine(cluster, node) -> EventEngine:
    return cluster.engine(node, evt.SERVICE_ID)


def test_filters_on_every_node_and_exactly_once_in_one_order(cluster):
    subs = [Client(cluster, n) for n in (1, 2, 3)]
    filters = [
        [EventFilter(evt.PREFIX_FILTER, b"disk")],
        [EventFilter(evt.SUFFIX_FILTER, b".full"), EventFilter(evt.EXACT_FILTER, b"node7")],
        [EventFilter(evt.PASS_ALL_FILTER, b"ignored"), EventFilter(evt.PREFIX_FILTER, b"")],
    ]
    for c, f in zip(subs, filters, strict=True):
        ch = c.h.channel_open("alarms", ALL, timeout=1.0)
        ch.event_subscribe(f, 10)
        ch.event_subscribe([], 11)  # matches everything, but 10 is older: every event comes once, under 10 or 11
    pub = Bridged(cluster, 2).channel_open("alarms", evt.CHANNEL_PUBLISHER)
    cases = [[b"disk.full", b"node7"], [b"net.full", b"node7"], [b"disk"], [b"x.full"], []]
    ids = [publish(pub, p) for p in cases]
    got = [c.take() for c in subs]
    for g in got:
        assert [x[1] for x in g] == ids  # every event exactly once, in the one order
    assert [x[0] for x in got[0]] == [10, 11, 10, 11, 11]
    assert [x[0] for x in got[1]] == [10, 10, 11, 11, 11]  # surplus filter vs b"": EXACT node7 fails
    assert [x[0] for x in got[2]] == [10, 10, 10, 10, 10]  # PASS_ALL + empty PREFIX pass even with no patterns


def test_publisher_receives_its_own_events_and_unsubscribe_drops_waiting(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("c", ALL, timeout=1.0)
    ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"a")], 1)
    ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"ab")], 2)
    publish(ch, [b"abc"])
    publish(ch, [b"ax"])
    assert [x[0] for x in c.take()] == [1, 1]
    publish(ch, [b"abc"])
    publish(ch, [b"ax"])
    ch.event_unsubscribe(1)  # waiting: abc moves to sub 2, ax is dropped
    assert [(x[0], x[2]) for x in c.take()] == [(2, [b"abc"])]


def test_priority_order_when_events_accumulate(cluster):
    c = Client(cluster, 3)
    ch = c.h.channel_open("c", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    pub = Bridged(cluster, 1).channel_open("c", evt.CHANNEL_PUBLISHER)
    for i, prio in enumerate([3, 1, 0, 2, 0, 3]):
        publish(pub, [b"p"], str(i).encode(), priority=prio)
    got = c.take()
    # the first event went out at once (nothing waited); the others waited and come highest priority first
    assert [(x[4], x[3]) for x in got] == [(3, b"0"), (0, b"2"), (0, b"4"), (1, b"1"), (2, b"3"), (3, b"5")]


def test_dispatch_one_delivers_one_event(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("c", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    for i in range(3):
        publish(ch, [b"p"], bytes([i]))
    c.h.dispatch(openais.DISPATCH_ONE)
    assert len(c.got) == 1
    c.h.dispatch(openais.DISPATCH_ONE)
    assert len(c.got) == 2
    assert len(c.take()) == 3  # the two already run and the last one


def test_retention_to_a_late_subscriber_clear_and_cluster_expiry(cluster):
    pub = Bridged(cluster, 1).channel_open("r", ALL, timeout=1.0)
    kept = publish(pub, [b"k"], b"kept", retention=1000.0)
    cleared = publish(pub, [b"c"], b"cleared", retention=1000.0)
    short = publish(pub, [b"s"], b"short", retention=0.5)
    publish(pub, [b"n"], b"not retained")
    pub.event_retention_time_clear(cleared)
    late = Client(cluster, 3)
    ch = late.h.channel_open("r", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    ch.event_subscribe([], 1)
    assert [x[1] for x in late.take()] == [kept, short]
    ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"k")], 2)  # already received: not again
    assert late.take() == []
    for n in (1, 2, 3):
        assert set(engine(cluster, n).state.events) == {kept, short}
    # only the owner (lowest nodeid) arms the timer; its expiry message removes the event everywhere
    assert engine(cluster, 1).timers.is_owner and not engine(cluster, 2).timers.is_owner
    deadline = time.time() + 5
    while time.time() < deadline and short in engine(cluster, 3).state.events:
        cluster.advance(0.2)
        cluster.run()
        time.sleep(0.05)
    for n in (1, 2, 3):
        assert set(engine(cluster, n).state.events) == {kept}
    late2 = Client(cluster, 2)
    late2.h.channel_open("r", evt.CHANNEL_SUBSCRIBER).event_subscribe([], 9)
    assert [x[1] for x in late2.take()] == [kept]


def test_lost_event_notification_under_a_flood(cluster):
    for n in (1, 2, 3):
        engine(cluster, n).local.queue_size, engine(cluster, n).local.queue_resume = 10, 5
    slow = Client(cluster, 2)
    ch = slow.h.channel_open("flood", ALL, timeout=1.0)
    ch.event_subscribe([], 4)
    pub = Bridged(cluster, 1).channel_open("flood", evt.CHANNEL_PUBLISHER)
    for i in range(30):
        publish(pub, [b"f"], bytes([i]), priority=evt.LOWEST_PRIORITY)
    publish(pub, [b"f"], b"urgent", priority=evt.HIGHEST_PRIORITY)  # replaces the most recent low one
    queue = engine(cluster, 2).local.clients[slow.h.conn.id].queue
    assert queue.blocked and len(queue) == 11  # (event 0 went out at once) 1 notice, urgent, events 1..9
    got = slow.take()
    lost = [x for x in got if x[1] == evt.EVENTID_LOST]
    assert len(lost) == 1 and lost[0][0] == 4 and lost[0][2] == [evt.LOST_EVENT_PATTERN] and lost[0][4] == 0
    assert got[0][3] == bytes([0]) and got[1][1] == evt.EVENTID_LOST and got[2][3] == b"urgent"
    assert [x[3] for x in got[3:]] == [bytes([i]) for i in range(1, 10)]
    assert not queue.blocked  # drained below resume: a later overflow gives a new notice
    for i in range(12):
        publish(pub, [b"f"], bytes([i]))
    assert sum(1 for x in slow.take() if x[1] == evt.EVENTID_LOST) == 1


def test_unlink_while_open_then_recreate_is_independent(cluster):
    a = Client(cluster, 1)
    old = a.h.channel_open("u", ALL, timeout=1.0)
    old.event_subscribe([], 1)
    publish(old, [b"r"], retention=1000.0)
    a.take()
    a.h.channel_unlink("u")
    with pytest.raises(openais.NotExist):
        Bridged(cluster, 2).channel_open("u", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    b = Client(cluster, 2)
    new = b.h.channel_open("u", ALL, timeout=1.0)
    new.event_subscribe([], 1)
    assert b.take() == []  # the old channel's retained event is not on the new one
    publish(old, [b"old"])
    publish(new, [b"new"])
    assert [x[2] for x in a.take()] == [[b"old"]]
    assert [x[2] for x in b.take()] == [[b"new"]]
    old.close()  # last opener of the unlinked channel: deleted with its retained events
    for n in (1, 2, 3):
        state = engine(cluster, n).state
        assert [c.name for c in state.channels.values()] == ["u"] and not state.events


def test_client_death_closes_its_channels_cluster_wide(cluster):
    a = Client(cluster, 3)
    a.h.channel_open("d", ALL, timeout=1.0).event_subscribe([], 1)
    a.h.channel_unlink("d")
    cluster.disconnect(a.h.conn)
    cluster.run()
    for n in (1, 2, 3):
        assert engine(cluster, n).state.channels == {}


def test_node_loss_keeps_retained_events_and_restart_learns_them(cluster):
    pub = Bridged(cluster, 3).channel_open("n", ALL, timeout=1.0)
    kept = publish(pub, [b"k"], b"kept", retention=1000.0)
    cluster.crash(3)
    cluster.run()
    for n in (1, 2):
        state = engine(cluster, n).state
        assert set(state.events) == {kept}
        assert state.channels[next(iter(state.channels))].open_count == 0
    cluster.restart(3)
    cluster.run()
    assert set(engine(cluster, 3).state.events) == {kept}
    late = Client(cluster, 3)
    late.h.channel_open("n", evt.CHANNEL_SUBSCRIBER, timeout=1.0).event_subscribe([], 1)
    assert [x[1] for x in late.take()] == [kept]
    again = publish(Bridged(cluster, 3).channel_open("n", evt.CHANNEL_PUBLISHER), [b"k"])
    assert again != kept and again >> 32 == 3  # the restarted node does not reuse ids


def test_partition_and_merge_unite_channels_without_duplicates(cluster):
    subs = {n: Client(cluster, n) for n in (1, 3)}
    chans = {}
    for n, c in subs.items():
        chans[n] = c.h.channel_open("p", ALL, timeout=1.0)
        chans[n].event_subscribe([], 1)
    before = publish(chans[1], [b"before"], retention=1000.0)
    assert [x[1] for x in subs[1].take()] == [before] and [x[1] for x in subs[3].take()] == [before]
    cluster.partition([[1, 2], [3]])
    cluster.run()
    left = publish(chans[1], [b"left"], retention=1000.0)
    right = publish(chans[3], [b"right"], retention=1000.0)
    gone = publish(chans[3], [b"not retained"])
    solo = Bridged(cluster, 3).channel_open("only-right", ALL, timeout=1.0)
    assert [x[1] for x in subs[1].take()] == [left]
    assert [x[1] for x in subs[3].take()] == [right, gone]
    cluster.heal()
    cluster.run()
    assert [x[1] for x in subs[1].take()] == [right]  # the other side's retained event, once
    assert [x[1] for x in subs[3].take()] == [left]
    for n in (1, 2, 3):
        state = engine(cluster, n).state
        assert set(state.events) == {before, left, right}
        assert sorted(c.name for c in state.channels.values()) == ["only-right", "p"]
    solo.close()
    assert publish(chans[3], [b"after"]) > 0
    assert [x[2] for x in subs[1].take()] == [[b"after"]] == [x[2] for x in subs[3].take()]


def test_channels_created_apart_with_one_name_become_one(cluster):
    cluster.partition([[1], [2, 3]])
    cluster.run()
    a, b = Client(cluster, 1), Client(cluster, 2)
    ca = a.h.channel_open("twin", ALL, timeout=1.0)
    cb = b.h.channel_open("twin", ALL, timeout=1.0)
    ca.event_subscribe([], 1)
    cb.event_subscribe([], 1)
    ea = publish(ca, [b"a"], retention=1000.0)
    eb = publish(cb, [b"b"], retention=1000.0)
    a.take(), b.take()
    cluster.heal()
    cluster.run()
    assert [x[1] for x in a.take()] == [eb] and [x[1] for x in b.take()] == [ea]
    for n in (1, 2, 3):
        state = engine(cluster, n).state
        assert len(state.channels) == 1 and set(state.events) == {ea, eb}
        assert next(iter(state.channels.values())).open_count == 2
    publish(cb, [b"together"])
    assert [x[2] for x in a.take()] == [[b"together"]]


def test_retention_owner_moves_when_it_leaves(cluster):
    pub = Bridged(cluster, 2).channel_open("o", ALL, timeout=1.0)
    eid = publish(pub, [b"x"], retention=0.3)
    cluster.crash(1)
    cluster.run()
    assert engine(cluster, 2).timers.is_owner
    deadline = time.time() + 5
    while time.time() < deadline and eid in engine(cluster, 3).state.events:
        cluster.advance(0.2)
        cluster.run()
        time.sleep(0.05)
    assert eid not in engine(cluster, 2).state.events and eid not in engine(cluster, 3).state.events


def test_malformed_cluster_messages_are_dropped(cluster):
    eng = engine(cluster, 1)
    for exec_id in m.Exec:
        eng.exec_handlers[exec_id].fn(2, b"\x01")
    assert eng.malformed == len(m.Exec)
    c = Client(cluster, 1)
    c.h.channel_open("still-works", ALL, timeout=1.0)


def test_open_timeout_in_the_executive_closes_again(cluster):
    h = Bridged(cluster, 1)
    rid = cluster.request(h.conn, evt.Request.OPEN, evt.OpenRequest.pack("t", ALL, 1, None))  # 1 ns
    time.sleep(0.01)
    cluster.run()
    assert h.conn.response(rid)[0] == openais.SaAisError.TIMEOUT
    for n in (1, 2, 3):
        assert next(iter(engine(cluster, n).state.channels.values())).open_count == 0


def test_closes_are_retried_when_the_ring_is_full(cluster):
    h = Bridged(cluster, 2)
    ch = h.channel_open("q", ALL, timeout=1.0)
    h.channel_unlink("q")
    cluster.queue_limit = 0
    ch.close()
    cluster.queue_limit = None
    cluster.advance(1.0)
    cluster.run()
    for n in (1, 2, 3):
        assert engine(cluster, n).state.channels == {}


def test_dump_describes_channels_handles_and_queues(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("dumped", ALL, timeout=1.0)
    ch.event_subscribe([EventFilter(evt.EXACT_FILTER, b"z")], 5)
    publish(ch, [b"z"], retention=10.0)
    import json

    d = json.loads(c.h.dump())
    assert d["channels"][0]["name"] == "dumped" and d["channels"][0]["subscriptions"] == {"1": 1}
    assert d["handles"][0]["subscriptions"][0]["id"] == 5 and d["retained_events"] == 1
    assert d["queues"][str(c.h.conn.id)]["waiting"] == 0  # pushed at once: nothing waited


def test_malformed_requests_are_answered_invalid_param_and_lose_nothing(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("m", ALL, timeout=1.0)
    conn = c.h.conn
    for request in (evt.Request.OPEN, evt.Request.CLOSE, evt.Request.UNLINK, evt.Request.PUBLISH,
                    evt.Request.SUBSCRIBE, evt.Request.UNSUBSCRIBE, evt.Request.CLEAR, evt.Request.PULL):
        rid = cluster.request(conn, request, b"\xff\x00\x01")
        cluster.run()
        assert conn.response(rid)[0] == openais.SaAisError.INVALID_PARAM, request
    bad_flags = evt.OpenRequest.pack("m", 0x40, openais.TIME_END, None)
    rid = cluster.request(conn, evt.Request.OPEN, bad_flags)
    assert conn.response(rid)[0] == openais.SaAisError.BAD_FLAGS
    other = cluster.connect(1, evt.SERVICE_ID)  # another connection's channel handle is a bad handle
    rid = cluster.request(other, evt.Request.PUBLISH, evt.PublishRequest.pack(ch.object_id, 0, 0, 0, 0, "", [], b""))
    assert other.response(rid)[0] == openais.SaAisError.BAD_HANDLE
    ch.event_subscribe([], 1)
    assert publish(ch, [b"ok"]) > 1000 and len(c.take()) == 1


def test_client_dying_with_an_open_in_flight_leaves_nothing_open(cluster):
    h = Bridged(cluster, 2)
    cluster.request(h.conn, evt.Request.OPEN, evt.OpenRequest.pack("fly", ALL, openais.TIME_END, None))
    cluster.disconnect(h.conn)  # before the open was delivered
    cluster.run()
    for n in (1, 2, 3):
        (chan,) = engine(cluster, n).state.channels.values()
        assert chan.open_count == 0
    assert engine(cluster, 2).handles.__len__() == 0


def test_retained_events_reach_a_late_subscriber_in_publication_order(cluster):
    pubs = [Bridged(cluster, n).channel_open("ord", ALL, timeout=1.0) for n in (1, 2, 3)]
    ids = [publish(pubs[i % 3], [b"r"], bytes([i]), retention=100.0, priority=evt.LOWEST_PRIORITY)
           for i in range(9)]
    late = Client(cluster, 2)
    late.h.channel_open("ord", evt.CHANNEL_SUBSCRIBER).event_subscribe([], 1)
    assert [x[1] for x in late.take()] == ids


def test_oversize_requests_that_bypass_the_library_get_too_big(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("big", ALL, timeout=1.0)
    conn = c.h.conn
    head = evt.PublishRequest.pack(ch.object_id, 0, 0, 0, 0, "p", [], b"")

    def publish_with(patterns_wire: bytes) -> bytes:  # channel, id, time, priority, retention, "p", patterns
        return struct.pack("!QQQBQH", ch.object_id, 0, 0, 0, 0, 1) + b"p" + patterns_wire

    frames = {
        "data": head + b"x" * (evt.MAX_EVT_SIZE + 1),
        "pattern": publish_with(struct.pack("!II", 1, 300) + b"x" * 300),
        "patterns": publish_with(struct.pack("!I", 65) + struct.pack("!I", 0) * 65),
        "filters": struct.pack("!QII", ch.object_id, 1, 65) + (b"\x04" + struct.pack("!I", 0)) * 65,
    }
    for name, frame in frames.items():
        request = evt.Request.SUBSCRIBE if name == "filters" else evt.Request.PUBLISH
        rid = cluster.request(conn, request, frame)
        cluster.run()
        assert conn.response(rid)[0] == openais.SaAisError.TOO_BIG, name


def test_an_event_cleared_in_one_partition_does_not_come_back_at_the_merge(cluster):
    a, b = Client(cluster, 1), Client(cluster, 3)
    chans = {}
    for c in (a, b):
        chans[c] = c.h.channel_open("t", ALL, timeout=1.0)
        chans[c].event_subscribe([], 1)
    eid = publish(chans[a], [b"x"], retention=1000.0)
    assert len(a.take()) == 1 and len(b.take()) == 1
    cluster.partition([[1, 2], [3]])
    cluster.run()
    chans[b].event_retention_time_clear(eid)  # on node 3's side only
    cluster.heal()
    cluster.run()
    assert a.take() == [] and b.take() == []
    for n in (1, 2, 3):
        assert eid not in engine(cluster, n).state.events and eid in engine(cluster, n).state.tombstones
    late = Client(cluster, 2)
    late.h.channel_open("t", evt.CHANNEL_SUBSCRIBER).event_subscribe([], 1)
    assert late.take() == []


@pytest.mark.parametrize("seed", range(6))
def test_random_partitions_merges_and_crashes_never_deliver_twice_and_converge(seed):
    run_random_history(seed)


SOAK_SEEDS = int(os.environ.get("EVT_SOAK_SEEDS", "0"))


@pytest.mark.soak
@pytest.mark.skipif(not SOAK_SEEDS, reason="EVT_SOAK_SEEDS=N runs N more random histories")
@pytest.mark.parametrize("seed", range(6, 6 + max(SOAK_SEEDS, 1)))
def test_soak_random_histories(seed):
    run_random_history(seed)


def run_random_history(seed: int) -> None:
    """Random publishes, partitions, merges, crashes and clears on 4 nodes; check exactly-once and convergence."""
    import random

    rng = random.Random(seed)
    cluster = ServiceCluster([EventEngine], nodes=[1, 2, 3, 4])
    cluster.run()
    clients, chans = [], []
    for n in (1, 2, 3, 4):
        c = Client(cluster, n)
        ch = c.h.channel_open("r", ALL, timeout=1.0)
        ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"k")], 1)
        clients.append(c)
        chans.append(ch)
    seen: list[list[int]] = [[] for _ in clients]
    live = {1, 2, 3, 4}
    for step in range(40):
        action = rng.random()
        if action < 0.55:
            i = rng.choice([i for i in range(4) if i + 1 in live])
            try:
                publish(chans[i], [rng.choice([b"k1", b"k2", b"x"])], retention=rng.choice([0.0, 1000.0]))
            except openais.TryAgain:
                pass
        elif action < 0.75:
            nodes = sorted(live)
            rng.shuffle(nodes)
            cut = rng.randint(1, len(nodes) - 1) if len(nodes) > 1 else 1
            cluster.partition([nodes[:cut], nodes[cut:]])
            cluster.run()
        elif action < 0.9:
            cluster.heal()
            cluster.run()
        elif action < 0.95 and live == {1, 2, 3, 4}:
            i = rng.choice(range(3))  # crash a node whose subscriber then starts over (a new handle)
            cluster.crash(i + 1)
            cluster.run()
            cluster.restart(i + 1)
            cluster.run()
            seen[i] = []
            clients[i] = Client(cluster, i + 1)
            chans[i] = clients[i].h.channel_open("r", ALL, timeout=1.0)
            chans[i].event_subscribe([EventFilter(evt.PREFIX_FILTER, b"k")], 1)
        else:
            i = rng.choice(range(4))
            state = engine(cluster, i + 1).state
            if state.events:
                try:
                    chans[i].event_retention_time_clear(rng.choice(sorted(state.events)))
                except (openais.NotExist, openais.TryAgain):
                    pass
        for i, c in enumerate(clients):
            got = [x[1] for x in c.take()]
            seen[i] += got
            assert len(seen[i]) == len(set(seen[i])), f"seed {seed} step {step}: node {i + 1} got an event twice"
    cluster.heal()
    cluster.run()
    for i, c in enumerate(clients):
        seen[i] += [x[1] for x in c.take()]
        assert len(seen[i]) == len(set(seen[i]))
    described = [engine(cluster, n).state.describe() for n in (1, 2, 3, 4)]
    assert all(d == described[0] for d in described)
    retained = set(engine(cluster, 1).state.events)
    for i in range(4):  # every subscriber that lived through it all has every retained matching event
        assert {e for e in retained if engine(cluster, 1).state.events[e].patterns[0].startswith(b"k")} <= set(seen[i])


def test_a_callback_that_raises_does_not_stall_delivery(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("boom", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    for i in range(4):
        publish(ch, [b"p"], bytes([i]))
    calls = []

    def explode(sid, event, size):
        calls.append(event.data_get())
        if len(calls) == 2:
            raise RuntimeError("application bug")

    c.h._deliver_fn = explode
    with pytest.raises(RuntimeError):
        c.h.dispatch()
    c.h._deliver_fn = c._deliver
    assert [x[3] for x in c.take()] == [bytes([2]), bytes([3])]  # the rest of the batch, at the next dispatch
    for i in range(3):
        publish(ch, [b"p"], bytes([10 + i]))
    c.h._deliver_fn = explode
    calls.clear()
    calls.append(b"")  # the next callback raises
    with pytest.raises(RuntimeError):
        c.h.dispatch(openais.DISPATCH_ONE)  # a pushed event saying more wait, and its callback raises
    assert c.h.conn.dispatched  # re-armed: something is on its way again, the selection object stays readable
    c.h._deliver_fn = c._deliver
    assert [x[3] for x in c.take()] == [bytes([11]), bytes([12])]


# -- pipelined publish: event ids the library names from blocks the executive reserves ------------------


def _reserve(cluster, conn) -> tuple[int, int]:
    rid = cluster.request(conn, evt.Request.RESERVE, b"")
    cluster.run()
    error, answer = conn.response(rid)
    assert error == openais.SaAisError.OK
    block = evt.IdBlock.decode(answer)
    return block.first, block.count


def test_reserved_id_blocks_double_and_are_unique_across_connections_and_nodes(cluster):
    from plugins.evt.engine import ID_BLOCK_FIRST, ID_BLOCK_MOST

    conns = [cluster.connect(n, evt.SERVICE_ID) for n in (1, 1, 2)]
    seen: set[int] = set()
    for conn in conns:
        sizes = []
        for _ in range(10):
            first, count = _reserve(cluster, conn)
            ids = set(range(first, first + count))
            assert not ids & seen and first > evt.MAX_RESERVED_EVENT_ID
            seen |= ids
            sizes.append(count)
        assert sizes[:3] == [ID_BLOCK_FIRST, 2 * ID_BLOCK_FIRST, 4 * ID_BLOCK_FIRST]
        assert max(sizes) == ID_BLOCK_MOST
    assert {i >> 32 for i in seen} == {1, 2}  # the node's id in the high half: no node can collide


def test_a_publish_must_use_its_own_reserved_ids_in_order_and_the_hosts_clock(cluster):
    c = Client(cluster, 1)
    ch = c.h.channel_open("ids", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    conn = c.h.conn
    other = cluster.connect(1, evt.SERVICE_ID)
    first, _count = _reserve(cluster, conn)
    theirs, _ = _reserve(cluster, other)
    now = time.time_ns()

    def raw(event_id, when=now):
        rid = cluster.request(conn, evt.Request.PUBLISH_NOWAIT,
                              evt.PublishRequest.pack(ch.object_id, event_id, when, 0, 0, "raw", [], b"d"))
        cluster.run()
        return conn.response(rid)[0]

    assert raw(first + 5) == openais.SaAisError.OK  # a gap is allowed, going back is not
    assert raw(first + 5) == openais.SaAisError.INVALID_PARAM  # used already
    assert raw(first + 1) == openais.SaAisError.INVALID_PARAM
    assert raw(theirs) == openais.SaAisError.INVALID_PARAM  # another connection's block
    assert raw(first + 6, now + 10 * 10**9) == openais.SaAisError.INVALID_PARAM  # later than this host's clock
    assert raw(first + 7) == openais.SaAisError.OK
    assert [x[1] for x in c.take()] == [first + 5, first + 7]  # only the accepted ones were published
    rid = cluster.request(conn, evt.Request.PUBLISH,  # a waiting publish leaves the names to the executive
                          evt.PublishRequest.pack(ch.object_id, first + 8, now, 0, 0, "raw", [], b"d"))
    cluster.run()
    assert conn.response(rid)[0] == openais.SaAisError.INVALID_PARAM


def test_pipelined_publish_names_its_event_and_an_error_found_when_applied_reaches_the_next_call(cluster):
    c = Client(cluster, 2)
    ch = c.h.channel_open("later", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    e = ch.event_allocate()
    e.attributes_set([b"p"], evt.HIGHEST_PRIORITY, 100.0, "pub")
    before = time.time_ns()
    ids = [e.publish(b"x", wait=False) for _ in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2] and ids[0] >> 32 == 2
    attrs = e.attributes_get()
    assert attrs.event_id == ids[2] and before <= attrs.publish_time <= time.time_ns()
    assert [x[1] for x in c.take()] == ids
    for n in (1, 2, 3):  # the retention store is full everywhere: the next event is refused when applied
        engine(cluster, n).state.max_retained_events = len(engine(cluster, n).state.events)
    with pytest.raises(openais.NoResources):
        e.publish(b"v")  # waiting: the refusal is the call's own answer
    refused = e.publish(b"y", wait=False)  # accepted by the library: the refusal is found on delivery
    assert refused == ids[2] + 1
    with pytest.raises(openais.NoResources):
        ch.event_allocate().publish(b"z", wait=False)  # the next call raises it (and sends nothing)
    assert c.take() == []
    e.attributes_set([b"p"], evt.HIGHEST_PRIORITY, 0.0, "pub")  # not retained: no store needed
    assert e.publish(b"w", wait=False) > refused
    assert e.publish(b"u") > refused  # waiting and pipelined publishes mix on one handle
    assert len(c.take()) == 2


def test_repeated_patterns_are_matched_afresh_when_subscriptions_change(cluster):
    """Events with the same name and patterns (decoded once, matched once per handle) follow every
    subscription change, on the publisher's node and on the others."""
    subs = [Client(cluster, n) for n in (1, 2)]
    chans = [c.h.channel_open("same", ALL, timeout=1.0) for c in subs]
    pub = chans[0]

    def phase(events, expected):
        for patterns, data in events:
            publish(pub, patterns, data)
        for c in subs:
            assert [(x[0], x[2], x[3]) for x in c.take()] == expected

    for ch in chans:
        ch.event_subscribe([EventFilter(evt.EXACT_FILTER, b"a")], 1)
    phase([([b"a", b"b"], b"1"), ([b"a", b"b"], b"2")], [(1, [b"a", b"b"], b"1"), (1, [b"a", b"b"], b"2")])
    for ch in chans:
        ch.event_subscribe([EventFilter(evt.PREFIX_FILTER, b"")], 2)
        ch.event_unsubscribe(1)
    phase([([b"a", b"b"], b"3"), ([b"z"], b"4"), ([b"a", b"b"], b"5")],  # other patterns, then the old ones
          [(2, [b"a", b"b"], b"3"), (2, [b"z"], b"4"), (2, [b"a", b"b"], b"5")])
    for ch in chans:
        ch.event_unsubscribe(2)
        ch.event_subscribe([EventFilter(evt.EXACT_FILTER, b"z")], 3)
    phase([([b"a", b"b"], b"6"), ([b"z"], b"7"), ([b"z"], b"8")], [(3, [b"z"], b"7"), (3, [b"z"], b"8")])
    for ch in chans:
        ch.event_subscribe([EventFilter(evt.EXACT_FILTER, b"a")], 4)
    phase([([b"z"], b"9"), ([b"a", b"b"], b"10")], [(3, [b"z"], b"9"), (4, [b"a", b"b"], b"10")])


def test_a_malformed_publish_is_refused_after_well_formed_ones_with_the_same_head(cluster):
    """The cluster message and the request whose name and patterns repeat the last ones skip decoding them:
    one that differs there, or whose data is over the limit, is still decoded strictly and refused."""
    c = Client(cluster, 1)
    ch = c.h.channel_open("strict", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    publish(ch, [b"p"], b"x")
    eng = engine(cluster, 1)
    cid = next(cid for cid, chan in eng.state.channels.items() if chan.name == "strict")
    good = m.Publish.pack(0, 0, evt.Request.PUBLISH, cid, 2 << 32 | 0x7F000001, time.time_ns(), 0, 0, "test", [b"p"],
                          b"y")
    eng.exec_handlers[m.Exec.PUBLISH].fn(2, good)
    before = eng.malformed
    head = m.PUBLISH_FIXED.size
    bad_name = good[:head] + b"\x00\x04\xff\xfe\xfd\xfc" + good[head + 6:]  # the same length, not UTF-8
    too_many = good[:head + 6] + b"\x00\x00\x10\x00" + good[head + 10:]  # a pattern count over the limit
    truncated = good[:head + 8]
    over = good + b"z" * (evt.MAX_EVT_SIZE + 1)
    for bad in (bad_name, too_many, truncated, over):
        eng.exec_handlers[m.Exec.PUBLISH].fn(2, bad)
    assert eng.malformed == before + 4
    conn = c.h.conn
    request = evt.PublishRequest.pack(ch.object_id, 0, 0, 0, 0, "test", [b"p"], b"x" * 10)
    for data in (b"x" * 10, b"x" * (evt.MAX_EVT_SIZE + 1)):
        rid = cluster.request(conn, evt.Request.PUBLISH, request[:len(request) - 10] + data)
        cluster.run()
        expected = openais.SaAisError.OK if len(data) == 10 else openais.SaAisError.TOO_BIG
        assert conn.response(rid)[0] == expected
    assert [x[3] for x in c.take()] == [b"x", b"y", b"x" * 10]
