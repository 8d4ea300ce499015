"""The machinery services share: handle tables, chunked state transfer, cluster-wide timers, object handles."""

from __future__ import annotations

import pytest

from aisexec.clustertimers import ClusterTimers
from aisexec.objects import ObjectTable
from aisexec.statesync import Chunk, StateTransfer
from aisexec.totem.api import QueueFull, RingId
from openais._objects import ObjectHandle
from openais.errors import BadHandle
from openais.message import MessageError


class Conn:
    def __init__(self, cid: int) -> None:
        self.id = cid


# -- ObjectTable ------------------------------------------------------------------------------------


def test_handles_are_found_only_for_their_owner_and_never_reused():
    table: ObjectTable[str] = ObjectTable()
    a, b = Conn(1), Conn(2)
    h1 = table.add(a, "one")
    h2 = table.add(b, "two")
    assert table.get(a, h1) == "one"
    assert table.get(b, h1) is None  # another connection's handle is not found
    assert table.lookup(h1) == "one" and table.owner(h1) == 1
    assert table.remove(b, h1) is None and h1 in table
    assert table.remove(a, h1) == "one" and h1 not in table
    h3 = table.add(a, "three")
    assert h3 not in (h1, h2)
    assert len(table) == 2


def test_release_returns_everything_a_connection_held_in_handle_order():
    table: ObjectTable[int] = ObjectTable()
    a, b = Conn(1), Conn(2)
    handles = [table.add(a, i) for i in range(5)]
    other = table.add(b, 99)
    assert table.release(a) == [(h, i) for i, h in enumerate(handles)]
    assert table.release(a) == []
    assert [h for h, _cid, _o in table] == [other]


def test_table_limit_is_enforced():
    table: ObjectTable[int] = ObjectTable(limit=2)
    table.add(1, 1)
    table.add(1, 2)
    with pytest.raises(OverflowError):
        table.add(1, 3)


# -- StateTransfer ------------------------------------------------------------------------------------


class Api:
    """Records multicasts; refuses when ``room`` reaches 0."""

    def __init__(self, room: int | None = None) -> None:
        self.sent: list[bytes] = []
        self.room = room

    def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
        if self.room is not None:
            if self.room == 0:
                raise QueueFull()
            self.room -= 1
        assert len(payload) <= 1024
        self.sent.append(payload)


def _receiver(ring: RingId) -> StateTransfer:
    rx = StateTransfer(Api(), 3, 1, chunk_size=1024)
    rx.start(ring, [])
    return rx


def test_records_of_any_size_arrive_whole_and_in_order_in_bounded_chunks():
    ring = RingId(1, 8)
    records = [b"a" * 10, b"b" * 5000, b"", bytes(range(256)) * 9, b"z"]
    api = Api()
    tx = StateTransfer(api, 3, 1, chunk_size=1024)
    tx.start(ring, iter(records))
    assert tx.process() is False
    rx = _receiver(ring)
    got = [r for chunk in api.sent for r in rx.receive(2, chunk)]
    assert got == records
    assert len(api.sent) > 6  # split: nothing above the chunk size was sent (asserted in Api.mcast)


def test_a_full_ring_holds_the_chunk_back_and_loses_nothing():
    ring = RingId(1, 8)
    records = [bytes([i]) * 700 for i in range(10)]
    api = Api(room=2)
    tx = StateTransfer(api, 3, 1, chunk_size=1024)
    tx.start(ring, records)
    rounds = 0
    while tx.process():
        rounds += 1
        api.room = 2
    assert rounds >= 3
    rx = _receiver(ring)
    assert [r for chunk in api.sent for r in rx.receive(4, chunk)] == records


def test_chunks_of_another_round_are_ignored_and_senders_do_not_mix():
    old, new = RingId(1, 8), RingId(1, 12)
    a, b = Api(), Api()
    tx_a = StateTransfer(a, 3, 1, chunk_size=256)
    tx_a.start(old, [b"x" * 600])
    tx_a.process()
    tx_b = StateTransfer(b, 3, 1, chunk_size=256)
    tx_b.start(new, [b"y" * 600, b"w" * 100])
    tx_b.process()
    rx = _receiver(new)
    assert all(rx.receive(5, c) == [] for c in a.sent)
    interleaved = []
    # sender 6's chunks with sender 7's copies of the same chunks interleaved: each reassembled apart
    for chunk in b.sent:
        interleaved += rx.receive(6, chunk)
        interleaved += rx.receive(7, chunk)
    assert interleaved == [b"y" * 600, b"y" * 600, b"w" * 100, b"w" * 100]


def test_a_malformed_chunk_raises_message_error():
    rx = _receiver(RingId(1, 1))
    good = Chunk.pack(1, 1, 1, [])
    with pytest.raises(MessageError):
        rx.receive(1, good + b"\x00")
    with pytest.raises(MessageError):
        rx.receive(1, good[:-2])


def test_abort_forgets_the_round():
    api = Api()
    tx = StateTransfer(api, 3, 1)
    tx.start(RingId(1, 1), [b"a"])
    tx.abort()
    assert tx.process() is False and api.sent == []
    assert tx.receive(1, Chunk.pack(1, 1, 1, [])) == []


# -- ClusterTimers ---------------------------------------------------------------------------------------


class TimerApi:
    def __init__(self, nodeid: int) -> None:
        self.nodeid = nodeid
        self.timers: list[list] = []  # [delay, fn, cancelled]

    def call_later(self, seconds: float, fn):
        entry = [seconds, fn, False]
        self.timers.append(entry)
        return lambda: entry.__setitem__(2, True)

    def run_all(self) -> None:
        due, self.timers = self.timers, []
        for _delay, fn, cancelled in due:
            if not cancelled:
                fn()


def test_only_the_lowest_node_arms_and_an_owner_change_rearms_pending_deadlines():
    now = [1_000_000_000]
    fired: dict[int, list] = {1: [], 2: []}
    apis = {n: TimerApi(n) for n in (1, 2)}
    timers = {n: ClusterTimers(apis[n], fired[n].append, clock=lambda: now[0]) for n in (1, 2)}
    for t in timers.values():
        t.membership((1, 2))
        t.set("ckpt-a", now[0] + 2_000_000_000)
    assert [e[0] for e in apis[1].timers] == [2.0] and apis[2].timers == []
    # node 1 leaves before its timer fires: node 2 becomes the owner and arms what is pending
    now[0] += 3_000_000_000
    timers[2].membership((2,))
    assert [e[0] for e in apis[2].timers] == [0.0]  # already past: fires at once
    apis[2].run_all()
    assert fired[2] == ["ckpt-a"]
    timers[2].cancel("ckpt-a")
    assert timers[2].pending == {}


def test_cancel_disarms_and_a_full_ring_retries():
    api = TimerApi(1)
    calls = []

    def expire(key):
        calls.append(key)
        if len(calls) == 1:
            raise QueueFull()

    t = ClusterTimers(api, expire, clock=lambda: 0)
    t.membership((1, 3))
    t.set("k", 5)
    t.set("gone", 5)
    t.cancel("gone")
    api.run_all()
    assert calls == ["k"]
    api.run_all()  # the retry
    assert calls == ["k", "k"]
    t.clear()
    api.run_all()
    assert calls == ["k", "k"] and t.pending == {}


# -- ObjectHandle -----------------------------------------------------------------------------------------


class Parent:
    def __init__(self) -> None:
        self._finalized = False


class Thing(ObjectHandle):
    closes = 0

    def _close(self) -> None:
        Thing.closes += 1


def test_object_handles_close_once_and_die_with_their_library_handle():
    parent = Parent()
    with Thing(parent, 7) as thing:
        assert not thing.closed
    assert thing.closed and Thing.closes == 1
    with pytest.raises(BadHandle):
        thing.close()
    other = Thing(parent, 8)
    parent._finalized = True
    assert other.closed
    with pytest.raises(BadHandle):
        other._check()
