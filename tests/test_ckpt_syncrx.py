"""CKPT sync receiving side: chunks of any size rebuild the sender's checkpoints, data written in place."""

from __future__ import annotations

import os

import pytest

from aisexec.statesync import StateTransfer
from aisexec.totem.api import QueueFull, RingId
from openais.ckpt import WireAttributes
from plugins.ckpt.records import DATA_PIECE, RecordBuilder, openers_record, state_records
from plugins.ckpt.state import Checkpoint, Section
from plugins.ckpt.syncround import PacedApi
from plugins.ckpt.syncrx import SyncReceiver, data_header

RING = RingId(1, 8)


class Api:
    """Collects what a StateTransfer multicasts."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def mcast(self, service, msg_id, payload, safe=False):
        self.sent.append(bytes(payload))


def sample() -> dict[int, Checkpoint]:
    attrs = WireAttributes(1, 1 << 24, -1, 8, 1 << 22, 16)
    a = Checkpoint(7, "alpha", attrs, None)
    for sid, size in ((b"", 10), (b"big", 2 * DATA_PIECE + 12345), (b"exact", DATA_PIECE), (b"none", 0)):
        a.sections[sid] = Section(sid, os.urandom(size), 99, 5)
        a.used += size
    b = Checkpoint(9, "beta", attrs, 2)
    b.sections[b"x" * 16] = Section(b"x" * 16, os.urandom(3000))
    b.used = 3000
    return {7: a, 9: b}


def chunks(records, chunk_size: int, ring: RingId = RING) -> list[bytes]:
    api = Api()
    tx = StateTransfer(api, 3, 17, chunk_size=chunk_size)
    tx.start(ring, records)
    while tx.process():
        pass
    return api.sent


def same(got: dict[int, Checkpoint], want: dict[int, Checkpoint]) -> None:
    assert set(got) == set(want)
    for uid, ck in want.items():
        other = got[uid]
        assert (other.name, other.attrs, other.active, other.used) == (ck.name, ck.attrs, ck.active, ck.used)
        assert {sid: bytes(s.data) for sid, s in other.sections.items()} == \
            {sid: bytes(s.data) for sid, s in ck.sections.items()}
        assert all(other.sections[sid].expiration == s.expiration for sid, s in ck.sections.items())


@pytest.mark.parametrize("chunk_size", [40, 97, 1000, 60 * 1024, 1 << 20])
def test_any_chunk_size_rebuilds_the_checkpoints(chunk_size):
    want = sample()
    records = [*state_records(want), openers_record(7, "alpha", 2)]
    rx = SyncReceiver(RING)
    builder = RecordBuilder()
    rest = []
    for payload in chunks(records, chunk_size):
        rest += rx.receive(4, payload, builder)
    same(builder.checkpoints, want)
    assert rest == [openers_record(7, "alpha", 2)]  # the round counts openers itself
    assert builder.errors == 0 and rx.errors == 0
    if chunk_size < DATA_PIECE:
        assert rx.streamed_bytes > 0  # data records split over chunks went straight into place


def test_without_a_builder_only_openers_come_back():
    rx = SyncReceiver(RING)
    records = [*state_records(sample()), openers_record(9, "beta", 1)]
    got = []
    for payload in chunks(records, 5000):
        got += rx.receive(4, payload, None)
    assert got == [openers_record(9, "beta", 1)] and rx.streamed_bytes == 0


def test_senders_are_reassembled_independently_and_other_rounds_ignored():
    want = sample()
    rx = SyncReceiver(RING)
    builders = {1: RecordBuilder(), 2: RecordBuilder()}
    a, b = chunks(state_records(want), 700), chunks(state_records(want), 900)
    stale = chunks(state_records(want), 700, ring=RingId(1, 4))
    for i in range(max(len(a), len(b))):
        for sender, stream in ((1, a), (2, b)):
            if i < len(stream):
                assert rx.receive(sender, stream[i], builders[sender]) == []
        if i < len(stale):
            assert rx.receive(1, stale[i], builders[1]) == []
    same(builders[1].checkpoints, want)
    same(builders[2].checkpoints, want)


def test_data_for_an_unknown_section_is_counted_and_skipped():
    want = sample()
    records = list(state_records(want))
    section_record = next(i for i, r in enumerate(records) if r[0] == 2 and b"big" in r[:40])
    del records[section_record]  # the data of "big" now has nowhere to go
    rx = SyncReceiver(RING)
    builder = RecordBuilder()
    for payload in chunks(records, 4000):
        assert rx.receive(4, payload, builder) == []
    assert rx.errors >= 1 and b"big" not in builder.checkpoints[7].sections
    assert bytes(builder.checkpoints[7].sections[b"exact"].data) == bytes(want[7].sections[b"exact"].data)


def test_data_header_needs_the_whole_header():
    record = next(r for r in state_records(sample()) if r[0] == 3)
    uid, sid, offset, start = data_header(record)
    assert (uid, sid, offset) == (7, b"", 0) and len(record) - start == 10
    for cut in range(start):
        assert data_header(record[:cut]) is None


def test_paced_api_keeps_a_window_in_flight():
    sent = []

    class Ring:
        def mcast(self, service, msg_id, payload, safe=False):
            sent.append(payload)

    paced = PacedApi(Ring(), window=1000)
    paced.mcast(3, 17, b"a" * 600)
    with pytest.raises(QueueFull):
        paced.mcast(3, 17, b"b" * 600)
    paced.delivered(600)
    paced.mcast(3, 17, b"c" * 2000)  # nothing in flight: always one, whatever its size
    assert len(sent) == 2 and paced.paced == 1 and paced.in_flight == 2000
