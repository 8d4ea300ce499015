"""The driver's use of the envelope: own looped-back copies dropped unopened, one sealing pass per visit."""

from __future__ import annotations

import os

import gevent

from aisexec.totem import wire
from aisexec.totem.api import MULTICAST, Ready
from aisexec.totem.crypto import PacketCrypto
from aisexec.totem.driver import TotemDriver
from aisexec.totem.ringseq import RingSeqStore

KEY = os.urandom(128)


def mcast(sender: int, seq: int) -> bytes:
    """A Totem multicast header from ``sender`` and a distinguishing body."""
    return wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.T_MCAST, 0, sender) + seq.to_bytes(4, "big")


class Core:
    """The least of an SrpCore the driver needs: records what it receives, sends what it is told."""

    def __init__(self, nodeid: int) -> None:
        self.nodeid = nodeid
        self.received: list[bytes] = []
        self.sends: list[tuple[int, bytes]] = []

    def start(self, now: float) -> None:
        return None

    def receive(self, now: float, packet: bytes) -> None:
        self.received.append(packet)

    def take_ready(self) -> Ready:
        sends, self.sends = self.sends, []
        return Ready(sends=sends)


class Transport:
    """Records what the driver sends; hands its batch callback to the test."""

    deferred = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []
        self.addresses: dict[int, str] = {}

    def start(self, on_batch) -> None:
        self.on_batch = on_batch

    def stop(self) -> None:
        self.on_batch = None

    def learn(self, nodeid: int, source: tuple) -> None:
        self.addresses[nodeid] = source[0]

    def multicast_many(self, packets: list[bytes]) -> None:
        self.sent.append(("multicast", list(packets)))

    def unicast(self, nodeid: int, data: bytes) -> None:
        self.sent.append(("unicast", data))

    def multicast_then_unicast(self, packets, nodeid, data, *, defer_others=False) -> bool:
        self.sent.append(("multicast", list(packets)))
        self.sent.append(("unicast", data))
        return False

    def send_deferred(self) -> None:
        return None


def driver_for(tmp_path, crypto: PacketCrypto) -> tuple[TotemDriver, Core, Transport]:
    core, transport = Core(crypto.nodeid), Transport()
    driver = TotemDriver(core, transport, crypto, RingSeqStore(tmp_path, crypto.nodeid), on_events=lambda e: None)
    driver.start()
    return driver, core, transport


def test_own_looped_back_multicasts_are_dropped_without_being_opened(tmp_path):
    me = PacketCrypto(1, KEY)
    driver, core, transport = driver_for(tmp_path, me)
    try:
        peer = PacketCrypto(2, KEY)
        twin = PacketCrypto(1, KEY)  # another process claiming nodeid 1: another epoch
        transport.on_batch([(me.seal(mcast(1, 1)), ("127.0.0.1", 1)), (peer.seal(mcast(2, 2)), ("127.0.0.2", 1)),
                            (twin.seal(mcast(1, 3)), ("127.0.0.9", 1))])
        assert core.received == [mcast(2, 2)]
        assert me.stats.opened == 2  # the peer's and the twin's: our own copy was never decrypted
        assert driver.stats.get("duplicate_nodeid") == 1
    finally:
        driver.stop()


def test_a_visit_is_sealed_in_order_in_one_pass_and_opens_at_the_next_hop(tmp_path):
    me = PacketCrypto(1, KEY, cipher="aes-256-gcm")
    driver, core, transport = driver_for(tmp_path, me)
    try:
        frames = [mcast(1, i) for i in range(5)]
        token = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.T_ORF_TOKEN, 0, 1) + b"token"
        core.sends = [(MULTICAST, f) for f in frames[:3]] + [(2, token)] + [(MULTICAST, f) for f in frames[3:]]
        driver.apply()
        gevent.sleep(0)
        kinds = [kind for kind, _ in transport.sent]
        assert kinds == ["multicast", "unicast", "multicast"]
        wire_order = [*transport.sent[0][1], transport.sent[1][1], *transport.sent[2][1]]
        successor = PacketCrypto(2, KEY, cipher="chacha20-poly1305")  # seals with the other cipher, opens both
        assert [successor.open(d)[2] for d in wire_order] == [*frames[:3], token, *frames[3:]]
        assert successor.stats.replays == 0 and me.stats.sealed == 6
    finally:
        driver.stop()
