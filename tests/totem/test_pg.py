"""totempg packing, fragmentation, reassembly, strict decoding and configuration-change handling."""

from __future__ import annotations

import random
import struct

import pytest

from aisexec.totem.api import ConfigChange, ConfKind, Delivery, QueueFull, RingId
from aisexec.totem.config import MAX_MESSAGE_SIZE
from aisexec.totem.pg import (
    FRAGMENT_HEADER_SIZE,
    KIND_FRAGMENT,
    MAX_CLUSTER_MESSAGE,
    Assembler,
    FrameError,
    Packer,
    PgEndpoint,
    decode_header,
    decode_packed,
    encode_fragment,
    encode_packed,
)

RING = RingId(1, 4)
TRANS = ConfigChange(ConfKind.TRANSITIONAL, (1,), (2,), (), RING)
REG = ConfigChange(ConfKind.REGULAR, (1,), (), (), RingId(1, 8))


def drain(packer: Packer, echo: bool = True) -> list[bytes]:
    """Pump every frame; with ``echo`` each fragment is reported back at once as self-delivered."""
    frames: list[bytes] = []
    while packer.pump(frames.append):
        if not echo:
            break
        for frame in frames:
            if frame[1] == KIND_FRAGMENT:
                msg_id, index = struct.unpack_from("!II", frame, 4)
                packer.own_fragment_delivered(msg_id, index)
    return frames


def test_nothing_is_handed_on_while_a_fragmented_message_is_unconfirmed() -> None:
    packer = Packer(300)
    packer.add(bytes(1000))
    packer.add(b"next")
    frames: list[bytes] = []
    packer.pump(frames.append)
    assert all(f[1] == KIND_FRAGMENT for f in frames) and packer.peek() is None
    for frame in frames[:-1]:
        packer.own_fragment_delivered(*struct.unpack_from("!II", frame, 4))
    assert packer.peek() is None
    packer.own_fragment_delivered(*struct.unpack_from("!II", frames[-1], 4))
    assert Assembler().feed(1, packer.peek() or b"") == [b"next"]


def test_small_messages_share_one_frame() -> None:
    packer = Packer(1000)
    for i in range(10):
        packer.add(bytes([i]) * 20)
    frames = drain(packer)
    assert len(frames) == 1 and len(frames[0]) <= 1000
    assert Assembler().feed(7, frames[0]) == [bytes([i]) * 20 for i in range(10)]
    assert packer.queued_count == 0 and packer.queued_bytes == 0


def test_frames_never_exceed_the_limit_and_preserve_order() -> None:
    rng = random.Random(5)
    packer = Packer(600)
    messages = [rng.randbytes(rng.randint(0, 2500)) for _ in range(200)]
    for message in messages:
        packer.add(message)
    frames = drain(packer)
    assert all(len(f) <= 600 for f in frames)
    assembler = Assembler()
    out = [m for f in frames for m in assembler.feed(3, f)]
    assert out == messages
    assert (assembler.malformed, assembler.orphans, assembler.broken) == (0, 0, 0)


def test_one_mebibyte_message_round_trips() -> None:
    message = random.Random(1).randbytes(MAX_MESSAGE_SIZE)
    packer = Packer(1400)
    packer.add(message)
    frames = drain(packer)
    assert len(frames) == -(-MAX_MESSAGE_SIZE // (1400 - FRAGMENT_HEADER_SIZE))
    assembler = Assembler()
    out = [m for f in frames for m in assembler.feed(2, f)]
    assert out == [message]


def test_too_big_and_queue_bounds() -> None:
    packer = Packer(1000, max_bytes=100, max_count=3)
    with pytest.raises(ValueError):
        packer.add(bytes(MAX_CLUSTER_MESSAGE + 1))
    packer.add(bytes(60))
    with pytest.raises(QueueFull):
        packer.add(bytes(41))
    packer.add(b"a")
    packer.add(b"b")
    with pytest.raises(QueueFull):
        packer.add(b"c")
    drain(packer)
    packer.add(bytes(100))


def test_pump_stops_on_queue_full_and_resumes_with_the_same_frame() -> None:
    packer = Packer(200)
    packer.add(bytes(1000))
    taken: list[bytes] = []

    def submit(frame: bytes) -> None:
        if len(taken) == 2:
            raise QueueFull
        taken.append(frame)

    assert packer.pump(submit) == 2
    first_retry = packer.peek()
    rest = drain(packer)
    assert rest[0] == first_retry
    assembler = Assembler()
    assert [m for f in taken + rest for m in assembler.feed(1, f)] == [bytes(1000)]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01",
        b"\x02\x00\x00\x01\x00\x00\x00\x00",  # bad version
        b"\x01\x07\x00\x01\x00\x00\x00\x00",  # bad kind
        b"\x01\x00\x00\x00",  # packed, zero messages
        b"\x01\x00\x00\x02\x00\x00\x00\x01",  # length array runs past the frame
        b"\x01\x00\x00\x01\x00\x00\x00\x05abc",  # message runs past the frame
        b"\x01\x00\x00\x01\x00\x00\x00\x01abc",  # trailing bytes
        b"\x01\x01\x00\x00" + struct.pack("!IIII", 1, 0, 1, 5) + b"x",  # total < 2
        b"\x01\x01\x00\x00" + struct.pack("!IIII", 1, 3, 2, 5) + b"x",  # index >= total
        b"\x01\x01\x00\x00" + struct.pack("!IIII", 1, 0, 2, MAX_CLUSTER_MESSAGE + 1) + b"x",
        b"\x01\x01\x00\x00" + struct.pack("!III", 1, 0, 2),  # short fragment header
    ],
)
def test_malformed_frames_are_counted_never_raised(frame: bytes) -> None:
    assembler = Assembler()
    assert assembler.feed(1, frame) == []
    assert assembler.malformed == 1


def test_strict_decoder_raises_frame_error() -> None:
    with pytest.raises(FrameError):
        decode_packed(memoryview(b"\x01\x00\x00\x01\x00\x00\x00\x09ab"), 1)
    assert decode_header(memoryview(encode_packed([b"x"]))) == (0, 1)


def test_fragment_lengths_must_add_up() -> None:
    assembler = Assembler()
    assert assembler.feed(1, encode_fragment(9, 0, 2, 10, b"abcde")) == []
    assert assembler.feed(1, encode_fragment(9, 1, 2, 10, b"fgh")) == []
    assert assembler.malformed == 1


def test_orphan_and_broken_chains_are_dropped() -> None:
    assembler = Assembler()
    assert assembler.feed(1, encode_fragment(4, 1, 3, 9, b"def")) == []
    assert assembler.orphans == 1
    assembler.feed(1, encode_fragment(5, 0, 3, 9, b"abc"))
    assert assembler.feed(1, encode_fragment(5, 2, 3, 9, b"ghi")) == []  # index 1 missing
    assert assembler.broken == 1
    assembler.feed(2, encode_fragment(6, 0, 2, 4, b"ab"))
    assert assembler.feed(1, encode_packed([b"z"])) == [b"z"]  # other senders are independent
    assert assembler.feed(2, encode_fragment(6, 1, 2, 4, b"cd")) == [b"abcd"]


def test_configuration_change_drops_partial_assemblies() -> None:
    assembler = Assembler()
    assembler.feed(2, encode_fragment(1, 0, 2, 4, b"ab"))
    assert assembler.partial_senders == (2,)
    assembler.config_change(TRANSITIONAL_CHANGE)
    assert assembler.partial_senders == ()
    assert assembler.feed(2, encode_fragment(1, 1, 2, 4, b"cd")) == []
    assert assembler.dropped_on_change == 1


TRANSITIONAL_CHANGE = TRANS


def _deliver(endpoint: PgEndpoint, sender: int, frames: list[bytes], seq: list[int]) -> list:
    events = []
    for frame in frames:
        seq[0] += 1
        events.append(Delivery(sender, frame, RING, seq[0], 0))
    return endpoint.on_events(events)


def test_message_cut_by_a_change_is_requeued_whole_and_delivered_once() -> None:
    me = PgEndpoint(1, 300)
    big = random.Random(2).randbytes(1500)
    me.send(big)
    frames = drain(me.packer, echo=False)
    assert len(frames) > 3 and frames[0][1] == KIND_FRAGMENT
    seq = [0]
    assert _deliver(me, 1, frames[:2], seq) == []  # two fragments came back, then the ring changed
    assert me.on_events([TRANS, REG]) == [TRANS, REG]
    assert me.packer.requeued == 1
    assert _deliver(me, 1, frames[2:], seq) == []  # the old chain's tail is thrown away
    again = drain(me.packer)
    assert _deliver(me, 1, again, seq) == [(1, big)]
    assert me.packer.requeued == 1


def test_chain_of_a_transitional_member_completes_in_the_transitional_configuration() -> None:
    me = PgEndpoint(1, 300)
    big = random.Random(3).randbytes(1500)
    me.send(big)
    frames = drain(me.packer, echo=False)
    seq = [0]
    assert _deliver(me, 1, frames[:2], seq) == []
    assert me.on_events([TRANS]) == [TRANS]  # I am in it: my post-hole fragments still come
    assert me.packer.requeued == 0
    assert _deliver(me, 1, frames[2:], seq) == [(1, big)]
    me.on_events([REG])
    assert me.packer.requeued == 0 and drain(me.packer) == []


def test_message_not_yet_started_is_not_requeued() -> None:
    me = PgEndpoint(1, 300)
    me.send(bytes(1500))
    frames = drain(me.packer, echo=False)
    me.on_events([TRANS, REG])
    assert me.packer.requeued == 0
    assert _deliver(me, 1, frames, [0]) == [(1, bytes(1500))]


def test_requeue_while_still_cutting_abandons_the_old_chain() -> None:
    me = PgEndpoint(1, 300)
    me.send(bytes(3000))
    me.send(b"after")
    taken: list[bytes] = []
    me.packer.pump(taken.append, limit=3)
    _deliver(me, 1, taken[:1], [0])
    me.on_events([TRANS, REG])
    frames = drain(me.packer, echo=False)
    out = _deliver(me, 1, frames, [10])
    out += _deliver(me, 1, drain(me.packer, echo=False), [50])
    assert out == [(1, bytes(3000)), (1, b"after")]


def test_safe_and_agreed_messages_never_share_a_frame_and_carry_their_guarantee():
    from aisexec.totem.api import Guarantee
    from aisexec.totem.pg import PgEndpoint

    endpoint = PgEndpoint(1, 1400)
    endpoint.send(b"a1")
    endpoint.send(b"a2")
    endpoint.send(b"s1", safe=True)
    endpoint.send(b"s2", safe=True)
    endpoint.send(b"x" * 5000, safe=True)  # fragmented: every fragment SAFE
    endpoint.send(b"a3")
    submitted = []
    endpoint.pump(lambda frame, guarantee: submitted.append((frame, guarantee)), with_guarantee=True)
    guarantees = [g for _, g in submitted]
    assert guarantees[0] == Guarantee.AGREED and guarantees[1] == Guarantee.SAFE
    assert guarantees[-1] == Guarantee.SAFE  # the chain waits for its own fragments before a3 goes
    assert Guarantee.AGREED not in guarantees[1:]


class _CorePending:
    """The core's queue of frames not yet originated, as ``withdraw_pending`` hands them back."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int]] = []

    def submit(self, frame: bytes, guarantee: int = 0) -> None:
        self.frames.append((frame, int(guarantee)))

    def originate(self, count: int) -> list[bytes]:
        sent, self.frames = self.frames[:count], self.frames[count:]
        return [f for f, _ in sent]

    def withdraw(self) -> list[tuple[bytes, int]]:
        frames, self.frames = self.frames, []
        return frames


def test_with_withdraw_the_packer_does_not_wait_for_a_chain_to_come_back() -> None:
    core = _CorePending()
    me = PgEndpoint(1, 300, withdraw=core.withdraw)
    me.send(bytes(1500))
    me.send(b"next")
    me.pump(core.submit, with_guarantee=True)
    assert len(core.frames) > 2 and core.frames[-1][0].endswith(b"next")


def test_change_requeues_broken_chain_then_withdrawn_messages_in_order_and_delivers_each_once() -> None:
    from aisexec.totem.api import Guarantee

    core = _CorePending()
    me = PgEndpoint(1, 300, withdraw=core.withdraw)
    big = random.Random(5).randbytes(1500)
    small = [b"s1", b"s2"]
    me.send(b"first")
    me.send(big)
    me.send(small[0])
    me.send(small[1], safe=True)
    me.send(bytes(900))  # still cutting it when the ring changes
    me.pump(core.submit, limit=10, with_guarantee=True)  # first, 6 fragments, s1, s2, 1 fragment
    assert me.packer._current is not None
    seq = [0]
    out = _deliver(me, 1, core.originate(3), seq)  # "first" and two fragments of big came back
    assert out == [(1, b"first")]
    assert me.on_events([TRANS, REG]) == [TRANS, REG]
    assert core.frames == []  # everything not originated was taken back
    submitted: list[tuple[bytes, int]] = []
    me.pump(lambda f, g: submitted.append((f, g)), with_guarantee=True)
    again = _deliver(me, 1, [f for f, _ in submitted], [100])
    assert again == [(1, big), (1, small[0]), (1, small[1]), (1, bytes(900))]
    safe_frames = [g for f, g in submitted if f.endswith(b"s2")]
    assert safe_frames == [Guarantee.SAFE]
    assert me.packer._in_flight == {}


def test_take_gives_the_frames_and_guarantees_pump_would() -> None:
    def fill(endpoint: PgEndpoint) -> None:
        endpoint.send(b"a1")
        endpoint.send(random.Random(9).randbytes(5000), safe=True)
        endpoint.send(b"a2")
        endpoint.send(bytes(3000))

    pumped, taken = PgEndpoint(1, 1400, withdraw=list), PgEndpoint(1, 1400, withdraw=list)
    fill(pumped)
    fill(taken)
    expected: list = []
    pumped.pump(lambda frame, guarantee: expected.append((frame, guarantee)), with_guarantee=True)
    got = taken.packer.take(3) + taken.packer.take(100)
    assert got == expected and len(got) > 6
    assert taken.packer.take(10) == []


def test_own_fragmented_message_comes_back_as_the_original_bytes_without_reassembly() -> None:
    me = PgEndpoint(1, 300, withdraw=list)
    big = random.Random(4).randbytes(2000)
    me.send(big)
    frames = [f for f, _ in me.packer.take(100)]
    seq = [0]
    assert _deliver(me, 1, frames[:-1], seq) == []
    assert me.assembler.partial_senders == ()  # nothing was copied into an assembly buffer
    out = _deliver(me, 1, frames[-1:], seq)
    assert out == [(1, big)] and out[0][1] is big
    other = PgEndpoint(2, 300)
    assert _deliver(other, 1, frames, [0]) == [(1, big)]  # a receiver reassembles the same message


# ------------------------------------------------------------ virtual synchrony for reassembled messages
def _vs_stream(sender: int, frames: list[bytes], cut: int, change: list[ConfigChange],
               before: list[Delivery] = (), after: list[Delivery] = ()) -> list:
    """Core events as every member of one transitional configuration sees them.

    ``frames[:cut]`` of ``sender``'s chain are delivered in the old regular configuration, then
    ``change`` (a TRANSITIONAL, maybe a REGULAR), then the rest; ``before``/``after`` are other
    senders' frames around the change (a hole is simply a seq nobody delivers).
    """
    events: list = list(before)
    seq = 100
    for frame in frames[:cut]:
        seq += 1
        events.append(Delivery(sender, frame, RING, seq, 0))
    events += change[:1]
    seq += 3  # a hole: the frames of a node that left, which nobody in the new configuration has
    for frame in frames[cut:]:
        seq += 1
        events.append(Delivery(sender, frame, RING, seq, 0))
    events += list(after) + change[1:]
    return events


def _same_everywhere(events: list, sender: int, members: tuple[int, ...], frames_of: PgEndpoint) -> list:
    """Feed one event stream to the sender's endpoint and to every other member's; all must agree."""
    outputs = {}
    for node in members:
        endpoint = frames_of if node == sender else PgEndpoint(node, 300)
        outputs[node] = endpoint.on_events(events)
    first = outputs[members[0]]
    assert all(out == first for out in outputs.values()), outputs
    return first


def test_chain_cut_at_a_transitional_change_with_a_hole_completes_on_its_sender_and_every_receiver() -> None:
    sender = PgEndpoint(1, 300, withdraw=list)
    big = random.Random(11).randbytes(2000)
    sender.send(big)
    frames = [f for f, _ in sender.packer.take(100)]
    assert len(frames) > 4
    trans = ConfigChange(ConfKind.TRANSITIONAL, (1, 2, 4), (3,), (), RING)
    reg = ConfigChange(ConfKind.REGULAR, (1, 2, 4, 5), (), (5,), RingId(1, 8))
    events = _vs_stream(1, frames, 2, [trans, reg])
    out = _same_everywhere(events, 1, (1, 2, 4), sender)
    assert out == [trans, (1, big), reg]
    assert sender.packer.requeued == 0


def test_chain_cut_at_a_regular_change_is_delivered_by_nobody_and_sent_again_whole() -> None:
    sender = PgEndpoint(1, 300, withdraw=list)
    big = random.Random(12).randbytes(2000)
    sender.send(big)
    frames = [f for f, _ in sender.packer.take(100)]
    trans = ConfigChange(ConfKind.TRANSITIONAL, (1, 2), (3,), (), RING)
    reg = ConfigChange(ConfKind.REGULAR, (1, 2), (), (), RingId(1, 8))
    # the chain's tail was never originated in the old ring: the change cuts it at the REGULAR
    events = _vs_stream(1, frames[:3], 3, [trans, reg])
    receivers = {n: PgEndpoint(n, 300) for n in (2,)}
    assert sender.on_events(events) == [trans, reg] == receivers[2].on_events(events)
    assert sender.packer.requeued == 1 and receivers[2].assembler.dropped_on_change == 1
    again = [Delivery(1, f, RingId(1, 8), 50 + i, 0) for i, (f, _) in enumerate(sender.packer.take(100))]
    assert sender.on_events(again) == [(1, big)] == receivers[2].on_events(again)


def test_chain_of_a_departed_sender_cut_at_a_transitional_change_is_delivered_by_nobody() -> None:
    departed = PgEndpoint(3, 300, withdraw=list)
    big = random.Random(13).randbytes(2000)
    departed.send(big)
    frames = [f for f, _ in departed.packer.take(100)]
    trans = ConfigChange(ConfKind.TRANSITIONAL, (1, 2), (3,), (), RING)
    events = _vs_stream(3, frames[:2], 2, [trans])
    events += [Delivery(3, f, RING, 200 + i, 0) for i, f in enumerate(frames[2:])]
    outs = [PgEndpoint(n, 300).on_events(events) for n in (1, 2)]
    assert outs[0] == outs[1] == [trans]
