"""The fault layer: parsing, clear errors, seeded behaviour, partitions, delay and the control file."""

from __future__ import annotations

import random

import pytest

from aisexec.totem import wire
from aisexec.totem.faults import NO_FAULTS, FaultLayer, FaultSpec, parse_faults, sender_of


def packet(sender: int, seq: int = 0) -> bytes:
    """A real Totem multicast header from ``sender`` followed by a distinguishing body."""
    return wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.T_MCAST, 0, sender) + seq.to_bytes(4, "big")


class FakeScheduler:
    """Records scheduled calls instead of running them; ``run_all`` fires them in time order."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, object, tuple]] = []

    def __call__(self, seconds, function, *args):
        self.calls.append((seconds, function, args))
        return None

    def run_all(self) -> None:
        calls, self.calls = sorted(self.calls, key=lambda c: c[0]), []
        for _, function, args in calls:
            function(*args)


# -- parsing -------------------------------------------------------------------------


def test_parse_full_specification():
    spec = parse_faults("loss=0.1,dup=0.05,delay=5,jitter=2,block=2+3")
    assert spec == FaultSpec(loss=0.1, dup=0.05, delay_ms=5.0, jitter_ms=2.0, block=frozenset({2, 3}))
    assert spec.active
    assert parse_faults(spec.describe()) == spec


def test_empty_text_means_no_faults():
    assert parse_faults("") == NO_FAULTS
    assert parse_faults(" \n ") == NO_FAULTS
    assert not NO_FAULTS.active
    assert parse_faults("block=3\n") == FaultSpec(block=frozenset({3}))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("loss=2", "loss='2'"),
        ("loss=abc", "loss='abc'"),
        ("dup=-0.1", "dup='-0.1'"),
        ("delay=-1", "delay='-1'"),
        ("jitter=x", "jitter='x'"),
        ("block=2+x", "'x'"),
        ("block=0", "'0'"),
        ("block=", "'block='"),
        ("speed=3", "'speed'"),
        ("loss", "'loss'"),
        ("loss=0.1,loss=0.2", "given twice"),
    ],
)
def test_bad_syntax_raises_value_error_naming_the_item(text, named):
    with pytest.raises(ValueError, match="fault item") as info:
        parse_faults(text)
    assert named in str(info.value)


def test_from_environ_none_when_unset_and_error_on_bad_spec(tmp_path):
    assert FaultLayer.from_environ({}) is None
    layer = FaultLayer.from_environ({"OPENAIS_FAULTS": "loss=0.5"})
    assert layer is not None and layer.spec.loss == 0.5
    with pytest.raises(ValueError, match="nonsense"):
        FaultLayer.from_environ({"OPENAIS_FAULTS": "nonsense=1"})
    bad = tmp_path / "faults"
    bad.write_text("block=me")
    with pytest.raises(ValueError, match="block"):
        FaultLayer.from_environ({"OPENAIS_FAULTS_FILE": str(bad)})


def test_active_faults_are_logged_as_a_warning(caplog):
    with caplog.at_level("WARNING", logger="aisexec.totem"):
        FaultLayer.from_environ({"OPENAIS_FAULTS": "loss=0.25,block=4"})
    assert "fault injection active: loss=0.25,block=4" in caplog.text


# -- behaviour --------------------------------------------------------------------------


def test_no_faults_passes_the_same_list_through():
    layer = FaultLayer()
    packets = [packet(1, i) for i in range(5)]
    assert layer.filter(packets) is packets
    assert layer.stats == {"dropped": 0, "duplicated": 0, "delayed": 0, "blocked": 0}


def test_block_drops_by_sender_nodeid_only():
    layer = FaultLayer(parse_faults("block=2+3"))
    packets = [packet(n, i) for i, n in enumerate([1, 2, 3, 4, 2, 1])]
    out = layer.filter(packets)
    assert [sender_of(p) for p in out] == [1, 4, 1]
    assert layer.stats["blocked"] == 3
    short = b"\x70\xac\x01"
    assert layer.filter([short]) == [short]  # too short to name a sender: the core rejects it


def test_seeded_loss_and_dup_are_deterministic_and_counted():
    spec = parse_faults("loss=0.3,dup=0.2")
    packets = [packet(1, i) for i in range(1000)]
    first = FaultLayer(spec, rng=random.Random(42))
    second = FaultLayer(spec, rng=random.Random(42))
    out1, out2 = first.filter(packets), second.filter(packets)
    assert out1 == out2
    assert first.stats == second.stats
    stats = first.stats
    assert 240 < stats["dropped"] < 360
    assert 100 < stats["duplicated"] < 180
    assert len(out1) == 1000 - stats["dropped"] + stats["duplicated"]
    seqs = [int.from_bytes(p[-4:], "big") for p in out1]
    assert seqs == sorted(seqs)  # order kept; duplicates adjacent
    assert len(set(seqs)) == 1000 - stats["dropped"]


def test_loss_one_drops_everything_and_dup_one_doubles_everything():
    packets = [packet(1, i) for i in range(10)]
    assert FaultLayer(parse_faults("loss=1")).filter(packets) == []
    doubled = FaultLayer(parse_faults("dup=1")).filter(packets)
    assert doubled == [p for p in packets for _ in range(2)]


def test_delay_holds_packets_and_reinjects_them_later():
    scheduler = FakeScheduler()
    layer = FaultLayer(parse_faults("delay=5,jitter=2"), rng=random.Random(1), schedule=scheduler)
    received: list[bytes] = []
    layer.start(received.extend)
    packets = [packet(2, i) for i in range(20)]
    assert layer.filter(packets) == []
    assert layer.stats["delayed"] == 20
    delays = [c[0] for c in scheduler.calls]
    assert all(0.003 <= d <= 0.007 for d in delays)
    assert len(set(delays)) > 1  # jitter spreads them
    scheduler.run_all()
    assert sorted(received) == sorted(packets)
    layer.stop()


def test_partition_started_while_delayed_packets_are_in_flight_cuts_them():
    scheduler = FakeScheduler()
    layer = FaultLayer(parse_faults("delay=10"), schedule=scheduler)
    received: list[bytes] = []
    layer.start(received.extend)
    layer.filter([packet(2), packet(3)])
    layer.configure(parse_faults("delay=10,block=3"))
    scheduler.run_all()
    assert [sender_of(p) for p in received] == [2]
    assert layer.stats["blocked"] == 1


def test_delay_without_a_driver_passes_packets_through():
    layer = FaultLayer(parse_faults("delay=50"))
    packets = [packet(1)]
    assert layer.filter(packets) == packets


# -- control file -------------------------------------------------------------------------


def test_control_file_changes_replace_the_spec_and_missing_file_clears_it(tmp_path):
    control = tmp_path / "faults"
    layer = FaultLayer.from_environ({"OPENAIS_FAULTS": "loss=0.5", "OPENAIS_FAULTS_FILE": str(control)})
    assert layer is not None
    assert layer.spec.loss == 0.5  # no file yet: the environment's spec stands
    control.write_text("block=3")
    layer.poll_control_file()
    assert layer.spec == FaultSpec(block=frozenset({3}))
    assert [sender_of(p) for p in layer.filter([packet(3), packet(1)])] == [1]
    control.write_text("block=what")
    layer.poll_control_file()  # a bad edit at run time is logged and ignored
    assert layer.spec == FaultSpec(block=frozenset({3}))
    control.write_text("")
    layer.poll_control_file()
    assert layer.spec == NO_FAULTS
    control.write_text("dup=1")
    layer.poll_control_file()
    assert layer.spec.dup == 1.0
    control.unlink()
    layer.poll_control_file()
    assert layer.spec == NO_FAULTS


def test_control_file_is_polled_under_gevent(tmp_path):
    import gevent

    control = tmp_path / "faults"
    control.write_text("block=7")
    layer = FaultLayer(control_file=str(control), poll_interval=0.01)
    layer.start(lambda packets: None)

    def wait_for(block: set[int]) -> bool:
        with gevent.Timeout(3, False):
            while layer.spec.block != block:
                gevent.sleep(0.01)
        return layer.spec.block == block

    try:
        assert wait_for({7})
        control.write_text("block=8+9")
        assert wait_for({8, 9})
    finally:
        layer.stop()
    control.write_text("")
    gevent.sleep(0.1)
    assert layer.spec.block == {8, 9}  # stopped: no more polling


# -- in the driver ----------------------------------------------------------------------------


class _RecordingCore:
    """The least of an SrpCore the driver needs: records what it receives."""

    def __init__(self, nodeid: int) -> None:
        from aisexec.totem.api import Ready

        self.nodeid = nodeid
        self.received: list[bytes] = []
        self._ready = Ready

    def start(self, now):
        return None

    def receive(self, now, packet):
        self.received.append(packet)

    def take_ready(self):
        return self._ready()


class _CapturingTransport:
    """A transport that hands the driver's batch callback to the test."""

    def start(self, on_batch):
        self.on_batch = on_batch

    def stop(self):
        self.on_batch = None

    def learn(self, nodeid, source):
        return None

    deferred = False

    def send_deferred(self):
        return None


def test_driver_blocks_drops_and_reinjects_delayed_packets(tmp_path):
    import os

    import gevent

    from aisexec.totem.crypto import PacketCrypto
    from aisexec.totem.driver import TotemDriver
    from aisexec.totem.ringseq import RingSeqStore

    key = os.urandom(128)
    senders = {n: PacketCrypto(n, key) for n in (2, 3)}
    core = _RecordingCore(1)
    transport = _CapturingTransport()
    faults = FaultLayer(parse_faults("delay=20,block=3"))
    driver = TotemDriver(core, transport, PacketCrypto(1, key), RingSeqStore(tmp_path, 1), on_events=lambda e: None,
                         faults=faults)
    driver.start()
    try:
        batch = [(senders[n].seal(packet(n, i)), ("127.0.0.9", 1)) for i, n in enumerate([2, 3, 2])]
        transport.on_batch(batch)
        assert core.received == []  # held back by the delay
        gevent.sleep(0.1)
        assert core.received == [packet(2, 0), packet(2, 2)]
        assert faults.stats["blocked"] == 1 and faults.stats["delayed"] == 2
    finally:
        driver.stop()
