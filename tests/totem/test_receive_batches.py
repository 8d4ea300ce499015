"""A batch on the receive path behaves exactly as its packets one at a time.

The driver opens the datagrams of a batch in runs (``PacketCrypto.open_many``) and feeds a batch's
data to the core in one call (``SrpCore.receive_many``, one delivery pass per run); none of that may
change a check, a decision or an output.
"""

from __future__ import annotations

import copy
import os

import pytest

from aisexec.totem import wire
from aisexec.totem.api import MULTICAST, Delivery, MembState, Ready
from aisexec.totem.crypto import PacketCrypto, PacketRejected
from aisexec.totem.driver import TotemDriver
from aisexec.totem.ringseq import RingSeqStore
from aisexec.totem.senderguard import SenderGuard
from tests.totem.srp_harness import Loop
from tests.totem.test_crypto_driver import Core, Transport, mcast

KEY = os.urandom(128)


def _outcome(results: list) -> list:
    return [type(r).__name__ + ":" + str(r) if isinstance(r, PacketRejected) else r for r in results]


def test_open_many_is_a_run_of_opens_replays_in_the_run_included() -> None:
    sender = PacketCrypto(1, KEY)
    sealed = sender.seal_many([b"one", b"two", b"three"])
    run = [sealed[0], sealed[1], sealed[1], b"short", sealed[2][:-1] + bytes([sealed[2][-1] ^ 1]), sealed[2],
           sealed[0]]
    one_by_one, batched = PacketCrypto(2, KEY), PacketCrypto(2, KEY)
    singles = []
    for datagram in run:
        try:
            singles.append(one_by_one.open(datagram))
        except PacketRejected as exc:
            singles.append(exc)
    assert _outcome(batched.open_many(run)) == _outcome(singles)
    assert [r[2] for r in singles if isinstance(r, tuple)] == [b"one", b"two", b"three"]
    assert batched.stats.as_dict() == one_by_one.stats.as_dict()
    assert batched.stats.as_dict() | {"sealed": 0} == {"sealed": 0, "opened": 3, "auth_failures": 1, "malformed": 1,
                                                       "replays": 2, "old_epoch": 0, "mode_mismatch": 0}


def test_open_many_without_secauth_and_a_mode_mismatch() -> None:
    plain, protected = PacketCrypto(1, None), PacketCrypto(3, KEY)
    receiver = PacketCrypto(2, None)
    results = receiver.open_many([plain.seal(b"a", 2), protected.seal(b"b"), plain.seal(b"c")])
    assert results[0] == (1, 2, b"a") and results[2] == (1, 0, b"c")
    assert isinstance(results[1], PacketRejected) and receiver.stats.mode_mismatch == 1


def _recorded_ring() -> tuple[Loop, object, list[list[bytes]]]:
    """A 3-node ring; node 2 as it was before node 1 sent, and what node 2 then received, cut into batches."""
    net = Loop([1, 2, 3])
    net.start()
    net.run(3.0)
    assert all(c.state == MembState.OPERATIONAL and len(c.members) == 3 for c in net.cores.values())
    snapshot = copy.deepcopy(net.cores[2])
    batches: list[list[bytes]] = []
    batch: list[bytes] = []
    collect = net.collect

    def recording_collect(i: int) -> None:
        ready = net.cores[i].take_ready()
        net.cores[i].out = ready  # put it back for the loop's own collect
        for dest, packet in ready.sends:
            if dest in (MULTICAST, 2) and i != 2:
                batch.append(packet)
                if packet[3] != wire.T_MCAST:
                    batches.append(list(batch))
                    batch.clear()
        collect(i)

    net.collect = recording_collect  # type: ignore[method-assign]
    for k in range(120):
        net.cores[1].submit(net.now, f"m{k}".encode() * (k % 7 + 1))
    net.collect(1)
    net.run(net.now + 2.0)
    if batch:
        batches.append(list(batch))
    return net, snapshot, batches


@pytest.mark.parametrize(("merge", "where"), [(1, 2), (1, 0), (2, 3), (3, 7), (4, None)])
def test_receive_many_is_receive_one_by_one_with_a_foreign_packet_in_the_run(merge: int, where: int | None) -> None:
    """``merge`` recorded batches fed as one (tokens in the middle of a run); a foreign message at ``where``."""
    _net, snapshot, recorded = _recorded_ring()
    assert sum(len(b) for b in recorded) > 120
    batches = [[p for b in recorded[i : i + merge] for p in b] for i in range(0, len(recorded), merge)]
    if where is not None:
        # A data message of another ring in the middle of a run: what came before it is delivered first.
        foreign = wire.Mcast(9, 9, 400, 1, 0, b"from elsewhere").encode()
        middle = next(i for i, b in enumerate(batches) if sum(p[3] == wire.T_MCAST for p in b) >= 4)
        batches[middle].insert(where, foreign)
    one_by_one, batched = copy.deepcopy(snapshot), copy.deepcopy(snapshot)
    now = 10.0
    for batch in batches:
        for packet in batch:
            one_by_one.receive(now, packet)
        batched.receive_many(now, batch)
        a, b = one_by_one.take_ready(), batched.take_ready()
        assert (a.sends, a.timers, a.events, a.ring_seq_to_persist) == (b.sends, b.timers, b.events,
                                                                       b.ring_seq_to_persist)
        now += 0.001
    assert one_by_one.stats == batched.stats
    # the foreign sender started a new ring
    assert one_by_one.state == batched.state == (MembState.OPERATIONAL if where is None else MembState.GATHER)
    assert batched.stats["messages_delivered"] > 0 or where == 0  # at 0: the first run changes ring at once


def test_deliveries_of_a_run_come_once_in_order() -> None:
    _net, snapshot, batches = _recorded_ring()
    core = copy.deepcopy(snapshot)
    delivered = []
    for batch in batches:
        core.receive_many(20.0, batch)
        delivered.extend(e.payload for e in core.take_ready().events if isinstance(e, Delivery))
    assert delivered == [f"m{k}".encode() * (k % 7 + 1) for k in range(120)]


class _BatchCore(Core):
    """The fake core, taking a batch's data in one call."""

    def __init__(self, nodeid: int) -> None:
        super().__init__(nodeid)
        self.calls: list[int] = []

    def receive_many(self, now: float, packets: list[bytes]) -> None:
        self.calls.append(len(packets))
        self.received.extend(packets)

    def take_ready(self) -> Ready:
        return Ready()


def test_a_claim_seen_in_a_batch_is_settled_before_the_next_datagram_is_screened(tmp_path) -> None:
    """A nodeid first heard in a batch at one address: the same nodeid at another address in that very
    batch is refused before decryption, and the datagrams of admitted senders are opened in runs."""
    me = PacketCrypto(2, KEY)
    core, transport = _BatchCore(2), Transport()
    driver = TotemDriver(core, transport, me, RingSeqStore(tmp_path, 2), on_events=lambda e: None,
                         guard=SenderGuard(["10.0.0.1", "10.0.0.3", "10.0.0.9"]))
    driver.start()
    try:
        one, twin, three = PacketCrypto(1, KEY), PacketCrypto(1, KEY), PacketCrypto(3, KEY)
        batch = [(one.seal(mcast(1, 1)), ("10.0.0.1", 1)), (twin.seal(mcast(1, 2)), ("10.0.0.9", 1)),
                 (one.seal(mcast(1, 3)), ("10.0.0.1", 1)), (three.seal(mcast(3, 4)), ("10.0.0.3", 1)),
                 (three.seal(mcast(3, 5)), ("10.0.0.3", 1)), (one.seal(mcast(1, 6)), ("10.0.0.1", 1))]
        transport.on_batch(batch)
        assert core.received == [mcast(1, 1), mcast(1, 3), mcast(3, 4), mcast(3, 5), mcast(1, 6)]
        assert core.calls == [5]  # the batch's data in one call
        assert driver.stats["refused_sender"] == 1 and me.stats.opened == 5  # the twin was never opened
        assert transport.addresses == {1: "10.0.0.1", 3: "10.0.0.3"}
        again = one.seal(mcast(1, 7))  # a replay later in the same run: its sender's window has it by then
        transport.on_batch([(again, ("10.0.0.1", 1)), (three.seal(mcast(3, 8)), ("10.0.0.3", 1)),
                            (again, ("10.0.0.1", 1))])
        assert core.received[5:] == [mcast(1, 7), mcast(3, 8)] and core.calls == [5, 2]
        assert driver.stats["rejected"] == 1 and me.stats.replays == 1
    finally:
        driver.stop()


def test_the_receive_path_benchmark_replays_every_frame() -> None:
    """``bench/rxpath.py`` (the per-frame cost of this path) runs and delivers everything it recorded."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "rxpath.py"
    out = subprocess.run([sys.executable, str(script), "--frames", "300", "--reps", "1", "--size", "16384",
                          "--crypto", "on"], capture_output=True, text=True, timeout=120, check=True)
    (row,) = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert row["data_frames"] == 300 and row["messages"] == 300 // 12 and row["us_per_frame_best"] > 0
