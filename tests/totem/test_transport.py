"""UDP transports on loopback under gevent, and the driver around a fake core."""

from __future__ import annotations

import os
import socket as pysocket

import gevent
import pytest

from aisexec.localcluster import free_port_pair
from aisexec.totem.api import MULTICAST, Ready, TimerName
from aisexec.totem.crypto import PacketCrypto
from aisexec.totem.driver import HOLD_BACK_MAX_EVENTS, TotemDriver
from aisexec.totem.ringseq import RingSeqStore
from aisexec.totem.transport import UdpTransport, UdpuTransport, resolve_bind


def collect(transport):
    got = []
    transport.start(lambda batch: got.extend(batch))
    return got


def wait(predicate, timeout=3.0):
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.01)
    return predicate()


def test_resolve_bind_accepts_exact_loopback_addresses():
    assert resolve_bind("127.0.0.3")[0] == "127.0.0.3"
    assert resolve_bind("127.0.0.0")[0] == "127.0.0.1"
    with pytest.raises(OSError, match="matches no local interface"):
        resolve_bind("198.51.100.77")


def test_udpu_multicast_reaches_every_member_and_unicast_one():
    port = free_port_pair()
    a = UdpuTransport("127.0.0.1", port, ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    b = UdpuTransport("127.0.0.2", port, ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    c = UdpuTransport("127.0.0.3", port, ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    got_b, got_c = collect(b), collect(c)
    collect(a)
    try:
        a.multicast(b"to all")
        assert wait(lambda: got_b and got_c)
        a.learn(3, ("127.0.0.3", port))
        a.unicast(3, b"to c")
        assert wait(lambda: len(got_c) == 2)
        assert [d for d, _ in got_b] == [b"to all"]
        assert got_c[1][0] == b"to c" and got_c[1][1][0] == "127.0.0.1"
    finally:
        for t in (a, b, c):
            t.stop()


def test_udpu_defer_others_holds_back_only_the_other_members_copies():
    port = free_port_pair()
    members = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    a, b, c = (UdpuTransport(address, port, members) for address in members)
    got_b, got_c = collect(b), collect(c)
    collect(a)
    try:
        a.learn(2, ("127.0.0.2", port))
        a.learn(3, ("127.0.0.3", port))
        a.multicast_then_unicast([b"data 1"], 2, b"token", defer_others=True)
        assert wait(lambda: len(got_b) == 2)
        assert [d for d, _ in got_b] == [b"data 1", b"token"]
        gevent.sleep(0.05)
        assert got_c == [] and a.deferred  # held back until asked for
        a.send_deferred()
        assert wait(lambda: len(got_c) == 1) and got_c[0][0] == b"data 1" and not a.deferred
        # a later send never overtakes what is held back: c sees the packets in send order
        a.multicast_then_unicast([b"data 2"], 2, b"token", defer_others=True)
        a.unicast(3, b"token to c")
        assert wait(lambda: len(got_c) == 3)
        assert [d for d, _ in got_c] == [b"data 1", b"data 2", b"token to c"]
        assert not a.deferred
    finally:
        for t in (a, b, c):
            t.stop()


def test_driver_sends_held_back_copies_after_the_turn_s_deliveries(tmp_path):
    """The successor gets data and token at once; the others' copies leave after the deliveries' writes."""
    port = free_port_pair()
    members = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    transport = UdpuTransport("127.0.0.1", port, members)
    b, c = UdpuTransport("127.0.0.2", port, members), UdpuTransport("127.0.0.3", port, members)
    got_b, got_c = collect(b), collect(c)
    order = []
    hub_loop = gevent.get_hub().loop

    def on_events(events):
        order.append("events")
        hub_loop.run_callback(order.append, "ipc write")  # what an IPC channel does with a delivery

    original = transport.send_deferred
    transport.send_deferred = lambda: (order.append("held back"), original())
    core = FakeCore(1)
    driver = TotemDriver(core, transport, PacketCrypto(1, None), RingSeqStore(tmp_path, 1), on_events=on_events)
    driver.start()
    try:
        transport.learn(2, ("127.0.0.2", port))
        transport.learn(3, ("127.0.0.3", port))
        gevent.sleep(0.05)
        got_b.clear(), got_c.clear(), order.clear()
        core.ready.sends.extend([(MULTICAST, b"\x70\xac\x01\x05data"), (2, b"\x70\xac\x01\x04tok")])
        core.ready.events.append(object())
        driver.apply()
        assert order == ["events"] and len(got_b) == 0  # nothing read yet: the sends were immediate
        assert wait(lambda: len(got_b) == 2 and len(got_c) == 1)
        assert order[:3] == ["events", "ipc write", "held back"]
        # a busy turn (more deliveries than HOLD_BACK_MAX_EVENTS) holds nothing back
        order.clear()
        core.ready.sends.extend([(MULTICAST, b"\x70\xac\x01\x05more"), (2, b"\x70\xac\x01\x04tok")])
        core.ready.events.extend(object() for _ in range(HOLD_BACK_MAX_EVENTS + 1))
        driver.apply()
        assert not transport.deferred
        assert wait(lambda: len(got_c) == 2) and "held back" not in order
    finally:
        driver.stop()
        b.stop()
        c.stop()


def test_udpu_receive_drains_everything_queued_including_after_an_empty_datagram():
    """FIONREAD reads 0 for an empty datagram as for none: what follows it must still arrive."""
    port = free_port_pair()
    b = UdpuTransport("127.0.0.2", port, ["127.0.0.1", "127.0.0.2"])
    batches = []
    b.start(batches.append)
    try:
        with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.sendto(b"", ("127.0.0.2", port))
            for i in range(700):  # more than one batch holds
                s.sendto(b"%d" % i, ("127.0.0.2", port))
            s.sendto(b"", ("127.0.0.2", port))
            s.sendto(b"last", ("127.0.0.2", port))
        assert wait(lambda: sum(len(batch) for batch in batches) == 703)
        got = [d for batch in batches for d, _ in batch]
        assert got == [b"", *(b"%d" % i for i in range(700)), b"", b"last"]
        assert max(len(batch) for batch in batches) <= 512
    finally:
        b.stop()


def _run(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * size for i, size in enumerate(sizes)]


@pytest.mark.parametrize("kind", ["udpu", "udp"])
def test_batched_multicast_arrives_as_separate_datagrams_in_order(kind):
    port = free_port_pair()
    if kind == "udpu":
        a = UdpuTransport("127.0.0.1", port, ["127.0.0.1", "127.0.0.2"])
        b = UdpuTransport("127.0.0.2", port, ["127.0.0.1", "127.0.0.2"])
    else:
        ifindex = resolve_bind("127.0.0.1")[1]
        a = UdpTransport("127.0.0.1", port, "239.255.42.7", ifindex)
        b = UdpTransport("127.0.0.2", port, "239.255.42.7", ifindex)
    got = collect(b)
    collect(a)
    # runs of equal size (one segmented send each where the kernel can), a shorter tail, odd sizes between
    packets = _run([1400] * 12 + [300] + [700] * 3 + [64] + [1400] * 70)
    try:
        a.multicast_many(packets)
        assert wait(lambda: len([d for d, _ in got if len(d) != 0]) >= len(packets))
        received = [d for d, src in got if src[0] == "127.0.0.1"]
        assert received == packets
        if a.gso:
            assert a.stats["gso_sends"] >= 3
            assert b.stats["gro_reads"] >= 1
        assert b.stats["packets_in"] >= len(packets)
    finally:
        a.stop()
        b.stop()


class _RefusingSocket:
    """A socket whose kernel cannot segment: sendmsg with UDP_SEGMENT fails with EIO."""

    def __init__(self, real):
        self.real = real
        self.plain = 0

    def sendmsg(self, *args):
        raise OSError(5, "Input/output error")

    def sendto(self, data, address):
        self.plain += 1
        return self.real.sendto(data, address)


def test_batched_send_falls_back_to_one_datagram_per_call():
    port = free_port_pair()
    a = UdpuTransport("127.0.0.1", port, ["127.0.0.2"])
    b = UdpuTransport("127.0.0.2", port, ["127.0.0.1"])
    got = collect(b)
    collect(a)
    refusing = _RefusingSocket(a._sock)
    a._sock = refusing
    packets = _run([900] * 5)
    try:
        a.multicast_many(packets)
        assert a.gso is False
        assert refusing.plain == 5
        a.multicast_many(packets)
        assert refusing.plain == 10
        assert wait(lambda: len(got) == 10)
        assert [d for d, _ in got] == packets + packets
    finally:
        a._sock = refusing.real
        a.stop()
        b.stop()


def test_udp_multicast_on_loopback_reaches_other_nodes():
    port = free_port_pair()
    _, lo = resolve_bind("127.0.0.1")
    a = UdpTransport("127.0.0.1", port, "239.255.77.1", lo)
    b = UdpTransport("127.0.0.2", port, "239.255.77.1", lo)
    got_b = collect(b)
    collect(a)
    try:
        a.multicast(b"group")
        assert wait(lambda: got_b)
        assert got_b[0][0] == b"group"
        b.learn(1, ("127.0.0.1", port - 1))
        got_a = []
        a._on_batch = got_a.extend
        b.unicast(1, b"token")
        assert wait(lambda: any(d == b"token" for d, _ in got_a))
    finally:
        a.stop()
        b.stop()


class FakeCore:
    """Records inputs; multicasts once on start and arms a timer."""

    def __init__(self, nodeid):
        self.nodeid = nodeid
        self.received = []
        self.fired = []
        self.ready = Ready()

    def start(self, now):
        self.ready.ring_seq_to_persist = 8
        self.ready.sends.append((MULTICAST, b"\x70\xac\x01\x01hello"))
        self.ready.timers[TimerName.JOIN] = now + 0.05

    def receive(self, now, packet):
        self.received.append(packet)

    def timer_expired(self, now, name):
        self.fired.append(name)

    def take_ready(self):
        ready, self.ready = self.ready, Ready()
        return ready


def test_driver_persists_before_sending_and_fires_timers(tmp_path):
    port = free_port_pair()
    order = []
    store = RingSeqStore(tmp_path, 1)
    original_save = store.save
    store.save = lambda seq: (order.append(("save", seq)), original_save(seq))
    transport = UdpuTransport("127.0.0.1", port, ["127.0.0.1", "127.0.0.2"])
    original_multicast = transport.multicast_many
    transport.multicast_many = lambda batch: (order.append(("send", len(batch))), original_multicast(batch))
    core = FakeCore(1)
    peer = UdpuTransport("127.0.0.2", port, ["127.0.0.1", "127.0.0.2"])
    got = collect(peer)
    driver = TotemDriver(core, transport, PacketCrypto(1, os.urandom(128)), store, on_events=lambda e: None)
    driver.start()
    try:
        assert order[0] == ("save", 8) and order[1][0] == "send"
        assert store.load() == 8
        assert core.received == []  # the core keeps its own multicasts: nothing fed back
        assert wait(lambda: got) and b"hello" not in got[0][0]  # encrypted on the wire
        assert wait(lambda: core.fired == [TimerName.JOIN])
        with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM) as s:
            s.sendto(os.urandom(300), ("127.0.0.1", port))
        assert wait(lambda: driver.stats["rejected"] == 1)
        assert core.received == []
    finally:
        driver.stop()
        peer.stop()


def test_ringseq_store_missing_and_short_files(tmp_path):
    store = RingSeqStore(tmp_path, 7)
    assert store.load() == 0
    store.save(1234)
    assert store.load() == 1234
    store.path.write_bytes(b"\x01\x02")
    assert store.load() == 0
