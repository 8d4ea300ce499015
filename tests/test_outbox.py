"""The shared outbox (aisexec.outbox): order, retry when the ring is full, bound, fragments, reassembly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aisexec.outbox import Fragment, Outbox, Reassembler, SequencedFragment, mcast_request
from aisexec.totem.api import MessageTooBig, QueueFull
from openais.errors import SaAisError
from openais.message import MessageError

SERVICE = 9
FRAG = 99


class Api:
    """A ring that takes ``room`` messages (None: any number) and a clock the test moves."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.sent: list[tuple[int, int, bytes, bool]] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.too_big = False

    def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
        if self.too_big:
            raise MessageTooBig()
        if self.room is not None:
            if self.room <= 0:
                raise QueueFull()
            self.room -= 1
        self.sent.append((service, msg_id, bytes(payload), safe))

    def has_room(self, size: int) -> bool:
        return self.room is None or self.room > 0

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        self.timers.append((seconds, fn))
        return lambda: None

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _delay, fn in timers:
            fn()


class Conn:
    def __init__(self) -> None:
        self.answers: list[tuple[int, int, int, int]] = []

    def respond(self, service: int, request: int, request_id: int, error: int) -> None:
        self.answers.append((service, request, request_id, error))


def test_messages_go_at_once_when_the_ring_has_room():
    api = Api()
    box = Outbox(api, SERVICE)
    box.send(1, b"a")
    box.send(2, b"b", safe=True)
    assert api.sent == [(SERVICE, 1, b"a", False), (SERVICE, 2, b"b", True)]
    assert len(box) == 0 and box.queued_bytes == 0 and not api.timers


def test_a_full_ring_keeps_order_and_retries_later():
    api = Api(room=1)
    box = Outbox(api, SERVICE, retry=0.02)
    for i in range(4):
        box.send(i, bytes([i]) * 3)
    assert [s[1] for s in api.sent] == [0]
    assert len(box) == 3 and box.queued_bytes == 9
    assert [t[0] for t in api.timers] == [0.02]  # one retry armed, however many wait
    api.fire()
    assert [s[1] for s in api.sent] == [0] and len(api.timers) == 1  # still full: armed again
    api.room = None
    api.fire()
    assert [s[1] for s in api.sent] == [0, 1, 2, 3] and len(box) == 0 and box.queued_bytes == 0


def test_flush_sends_what_waits_without_a_timer():
    api = Api(room=0)
    box = Outbox(api, SERVICE)
    box.send(7, b"cleanup")
    api.room = None
    box.flush()
    assert api.sent == [(SERVICE, 7, b"cleanup", False)]


def test_without_call_later_the_messages_wait_for_flush():
    class NoTimers:
        def __init__(self) -> None:
            self.full = True
            self.sent: list[int] = []

        def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
            if self.full:
                raise QueueFull()
            self.sent.append(msg_id)

    api = NoTimers()
    box = Outbox(api, SERVICE)
    box.send(1, b"x")
    assert len(box) == 1
    api.full = False
    box.flush()
    assert api.sent == [1]


def test_send_never_refuses_but_accepting_answers_back_pressure():
    api = Api(room=0)
    box = Outbox(api, SERVICE, max_bytes=10)
    assert not box.accepting(1)  # the ring says no room
    api.room = None
    assert box.accepting(10) and not box.accepting(11)  # the byte bound
    api.room = 0
    for _ in range(5):
        box.send(1, b"0123456789")  # cleanups: always taken, past the bound too
    assert len(box) == 5
    api.room = None
    assert not box.accepting(1)  # something waits: new requests get TRY_AGAIN
    box.flush()
    assert box.accepting(1)


def test_count_bound():
    box = Outbox(Api(), SERVICE, max_count=0)
    assert not box.accepting(1)
    assert Outbox(Api(), SERVICE, max_count=1).accepting(1)


def test_large_payload_travels_as_fragments_and_reassembles():
    api = Api()
    box = Outbox(api, SERVICE, fragment_id=FRAG, fragment_size=100)
    payload = bytes(range(256))
    box.send(5, payload, safe=True)
    box.send(6, b"small")
    assert [s[1] for s in api.sent] == [FRAG, FRAG, FRAG, 6]
    assert all(s[3] for s in api.sent[:3])  # the guarantee holds for every piece
    assert all(len(s[2]) <= 100 + 2 for s in api.sent)
    joined = Reassembler()
    results = [joined.receive(1, s[2]) for s in api.sent[:3]]
    assert results[:2] == [None, None]
    assert results[2] == (5, bytearray(payload))
    assert len(joined) == 0


def test_accepting_asks_the_ring_for_the_first_piece_only():
    sizes: list[int] = []

    class Sized(Api):
        def has_room(self, size: int) -> bool:
            sizes.append(size)
            return True

    Outbox(Sized(), SERVICE, fragment_id=FRAG, fragment_size=100).accepting(1000)
    Outbox(Sized(), SERVICE).accepting(1000)
    assert sizes[0] < 1000 <= sizes[1]


def test_without_a_fragment_id_nothing_is_split():
    api = Api()
    Outbox(api, SERVICE, fragment_size=10).send(1, b"x" * 100)
    assert api.sent == [(SERVICE, 1, b"x" * 100, False)]


def test_fragment_size_is_checked():
    with pytest.raises(ValueError):
        Outbox(Api(), SERVICE, fragment_id=FRAG, fragment_size=0)


def test_reassembler_keeps_senders_apart_limits_and_forgets():
    joined = Reassembler(limit=10)
    assert joined.add(1, Fragment(3, 0, b"ab")) is None
    assert joined.add(2, Fragment(4, 0, b"xy")) is None
    assert joined.add(1, Fragment(3, 1, b"cd")) == (3, bytearray(b"abcd"))
    with pytest.raises(ValueError):
        joined.add(2, Fragment(4, 0, b"z" * 9))
    assert joined.add(2, Fragment(4, 1, b"new")) == (4, bytearray(b"new"))  # the partial was dropped
    joined.add(5, Fragment(1, 0, b"p"))
    joined.forget([5, 6])
    assert len(joined) == 0
    with pytest.raises(MessageError):
        joined.receive(1, b"\x01")


def test_mcast_request_answers_when_the_ring_refuses():
    api, conn = Api(), Conn()
    assert mcast_request(api, SERVICE, conn, 3, 11, 1, b"p", safe=True)
    assert api.sent == [(SERVICE, 1, b"p", True)] and not conn.answers
    api.room = 0
    assert not mcast_request(api, SERVICE, conn, 3, 12, 1, b"p")
    api.room, api.too_big = None, True
    assert not mcast_request(api, SERVICE, conn, 3, 13, 1, b"p")
    assert not mcast_request(api, SERVICE, conn, 3, 14, 1, b"p", too_big=int(SaAisError.TRY_AGAIN))
    assert conn.answers == [(SERVICE, 3, 12, SaAisError.TRY_AGAIN), (SERVICE, 3, 13, SaAisError.TOO_BIG),
                            (SERVICE, 3, 14, SaAisError.TRY_AGAIN)]


def test_offer_sends_now_or_refuses_and_its_later_pieces_follow():
    api = Api()
    box = Outbox(api, SERVICE, fragment_id=FRAG, fragment_size=100, split_over=150)
    assert box.offer(1, b"x" * 150) == SaAisError.OK  # up to split_over: whole
    assert api.sent[-1][1:3] == (1, b"x" * 150)
    api.room = 1
    assert box.offer(2, bytes(250)) == SaAisError.OK  # the first piece went: the rest are the outbox's
    assert len(box) == 2 and len(api.timers) == 1
    assert box.offer(3, b"y") == SaAisError.TRY_AGAIN  # it would overtake the pieces that wait
    api.room = None
    assert box.offer(3, b"y") == SaAisError.OK  # a flush first made way
    assert [s[1] for s in api.sent] == [1, FRAG, FRAG, FRAG, 3]
    api.room = 0
    assert box.offer(4, b"z") == SaAisError.TRY_AGAIN and len(box) == 0  # refused, not kept
    api.room, api.too_big = None, True
    assert box.offer(4, b"z") == SaAisError.TOO_BIG and len(box) == 0
    assert Outbox(Api(), SERVICE, max_bytes=5).offer(1, b"123456") == SaAisError.TRY_AGAIN


def test_sequenced_pieces_and_a_restart_resend_a_cut_payload_whole():
    api = Api(room=2)
    box = Outbox(api, SERVICE, fragment_id=FRAG, fragment_size=100, sequenced=True)
    payload = bytes(range(250))
    box.send(5, payload)
    box.send(6, b"dropped kind")
    box.send(7, b"kept")
    first = [SequencedFragment.decode(s[2]) for s in api.sent]
    assert [(f.index, f.msg_id, f.last) for f in first] == [(0, 5, False), (1, 5, False)]
    box.restart(drop=(6,))  # a sync round: receivers forget the two pieces that went
    api.room = None
    box.flush()
    again = [SequencedFragment.decode(s[2]) for s in api.sent[2:5]]
    assert [(f.index, f.last) for f in again] == [(0, False), (1, False), (2, True)]
    assert again[0].serial != first[0].serial
    assert [s[1:3] for s in api.sent[5:]] == [(7, b"kept")] and box.queued_bytes == 0
    joined = Reassembler(sequenced=True)
    assert joined.receive(1, api.sent[0][2]) is None
    joined.clear()
    assert [joined.receive(1, s[2]) for s in api.sent[1:5]][-1] == (5, bytearray(payload))


def test_restart_drops_a_cut_payload_of_a_dropped_kind_and_keeps_an_unstarted_one():
    api = Api(room=1)
    box = Outbox(api, SERVICE, fragment_id=FRAG, fragment_size=100, sequenced=True)
    box.send(5, bytes(250))
    box.send(8, bytes(150))
    box.restart(drop=(5,))
    api.room = None
    box.flush()
    assert [SequencedFragment.decode(s[2]).msg_id for s in api.sent] == [5, 8, 8]


def test_sequenced_reassembler_drops_pieces_that_do_not_follow_on():
    joined = Reassembler(sequenced=True)
    assert joined.add(1, SequencedFragment(1, 1, 5, False, b"stale")) is None and len(joined) == 0
    assert joined.add(1, SequencedFragment(2, 0, 5, False, b"ab")) is None
    assert joined.add(1, SequencedFragment(2, 2, 5, True, b"gap")) is None and len(joined) == 0
    assert joined.add(1, SequencedFragment(3, 0, 5, False, b"ab")) is None
    assert joined.add(1, SequencedFragment(3, 0, 6, False, b"cd")) is None  # index 0 starts over
    assert joined.add(1, SequencedFragment(3, 1, 6, True, b"ef")) == (6, bytearray(b"cdef"))


def test_keep_drops_the_oldest_waiting_message():
    api = Api(room=0)
    box = Outbox(api, SERVICE, keep=2)
    for i in range(3):
        box.send(i, bytes([i]))
    api.room = None
    box.flush()
    assert [s[1] for s in api.sent] == [1, 2] and box.queued_bytes == 0
    with pytest.raises(ValueError):
        Outbox(api, SERVICE, keep=2, fragment_id=FRAG)


def test_a_message_the_ring_can_never_take_does_not_hold_up_the_rest():
    class Limited(Api):
        def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
            if len(payload) > 4:
                raise MessageTooBig()
            super().mcast(service, msg_id, payload, safe)

    api = Limited()
    box = Outbox(api, SERVICE)
    box.send(1, b"too large")
    box.send(2, b"ok")
    assert [s[1] for s in api.sent] == [2] and len(box) == 0 and box.queued_bytes == 0
