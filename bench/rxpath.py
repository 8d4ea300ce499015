"""Receive-path benchmark: Python cost per received datagram on one ring member, in process.

    python bench/rxpath.py                       # 1 KiB and 16 KiB, secauth on and off
    python bench/rxpath.py --size 16384 --crypto on --profile

A 3-node ring (real :class:`~aisexec.totem.srp.SrpCore` instances) forms on a virtual clock;
node 1 then multicasts agreed messages of ``--size`` bytes through a real packer (16 KiB are
cut into fragments of a 1500-byte MTU's frame).  Every packet node 2 receives (data frames
and tokens) is recorded, sealed by its sender's :class:`~aisexec.totem.crypto.PacketCrypto`
and cut into batches as the transport hands them over (a token ends a batch).  The recorded
stream is then replayed, several times, into a fresh copy of node 2 as it was when recording
began: its real :class:`~aisexec.totem.driver.TotemDriver` (envelope checks, sender guard,
opening, core), core, pg assembler and ``TotemLink._on_events``, with a fake transport and a
counting ``on_message``.  Prints one JSON line per configuration: CPU microseconds per received
datagram and per data frame (``time.process_time``; best and median of ``--reps``).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import types
from collections import deque

from aisexec.totem import wire
from aisexec.totem.api import MULTICAST, ConfigChange, ConfKind
from aisexec.totem.config import TotemConfig
from aisexec.totem.crypto import OVERHEAD, PacketCrypto
from aisexec.totem.driver import TotemDriver
from aisexec.totem.pg import PgEndpoint
from aisexec.totem.ringseq import RingSeqStore
from aisexec.totem.senderguard import SenderGuard
from aisexec.totem.srp import SrpCore
from aisexec.totemlink import TotemLink

RECEIVER = 2
ADDRESS = {1: "127.0.0.1", 2: "127.0.0.2", 3: "127.0.0.3"}
KEY = bytes(range(128))


class _Transport:
    """What the driver needs of a transport: the address book, and sends that go nowhere."""

    deferred = False

    def __init__(self) -> None:
        self.addresses: dict[int, str] = {}  # learned from the first authenticated packets, as in a ring

    def start(self, on_batch) -> None:
        """Keep the callback (the replay calls the driver directly)."""

    def stop(self) -> None:
        """Nothing to close."""

    def learn(self, nodeid: int, source: tuple) -> None:
        """Remember an address."""
        self.addresses[nodeid] = source[0]

    def multicast_many(self, packets: list[bytes]) -> None:
        """Drop."""

    def unicast(self, nodeid: int, data: bytes) -> None:
        """Drop."""

    def multicast_then_unicast(self, packets, nodeid, data, *, defer_others=False) -> bool:
        """Drop."""
        return False

    def send_deferred(self) -> None:
        """Nothing held back."""


def _frame_size(netmtu: int = 1500) -> int:
    return netmtu - 28 - OVERHEAD - wire.MCAST_OVERHEAD


def record(size: int, frames: int, seed: int = 1) -> tuple[SrpCore, list[tuple[int, int, bytes]]]:
    """Form a 3-node ring, then record what node 2 receives while node 1 sends ``size``-byte messages.

    Returns node 2's core as it was when recording began and ``(sender, target, packet)`` in arrival order.
    """
    config = TotemConfig()
    cores = {i: SrpCore(i, config, rng=random.Random(i)) for i in ADDRESS}
    timers: dict[tuple[int, object], float] = {}
    queue: deque = deque()
    now = 0.0
    recording: list[tuple[int, int, bytes]] | None = None
    data_frames = 0
    sender_pg = PgEndpoint(1, _frame_size(), withdraw=cores[1].withdraw_pending)
    payload = random.Random(seed).randbytes(size)
    sending = False

    def collect(i: int) -> None:
        ready = cores[i].take_ready()
        for name, when in ready.timers.items():
            if when is None:
                timers.pop((i, name), None)
            else:
                timers[(i, name)] = when
        if i == 1:  # node 1's own deliveries: its packer learns which chains came back
            sender_pg.on_events(ready.events)
        for dest, packet in ready.sends:
            for target in ([n for n in cores if n != i] if dest == MULTICAST else [dest]):
                queue.append((i, 0 if dest == MULTICAST else target, target, packet))

    def on_token(t: float) -> None:
        if not sending:
            return
        packer = sender_pg.packer
        while packer.queued_count < 64:
            sender_pg.send(payload)
        room = 4 * max(config.window_size, config.max_messages) - cores[1].pending_count
        if room > 0:
            taken = packer.take(room)
            if taken:
                cores[1].submit_many(t, taken)

    cores[1].add_token_callback(on_token)
    for i in cores:
        cores[i].start(now)
        collect(i)
    snapshot = None
    steps = 0
    while True:
        steps += 1
        if steps > 20_000_000:
            raise SystemExit("recording did not finish")
        if snapshot is None and now > 3.0 and all(len(c.members) == 3 for c in cores.values()) and not queue:
            snapshot = copy.deepcopy(cores[RECEIVER])
            recording = []
            sending = True
            cores[1].request_hold_cancel(now)
            collect(1)
        if queue:
            source, target_field, dest, packet = queue.popleft()
            if dest == RECEIVER and recording is not None:
                recording.append((source, target_field, packet))
                if packet[3] == wire.T_MCAST:
                    data_frames += 1
                    if data_frames >= frames:
                        break
            cores[dest].receive(now, packet)
            collect(dest)
            continue
        key = min(timers, key=lambda k: (timers[k], k[0], str(k[1])))
        now = max(now, timers.pop(key))
        cores[key[0]].timer_expired(now, key[1])
        collect(key[0])
    assert snapshot is not None and recording is not None
    return snapshot, recording


def seal(recording: list[tuple[int, int, bytes]], secauth: bool) -> list[list[tuple[bytes, tuple]]]:
    """Seal every packet with its sender's envelope; a token (or commit token) ends a transport batch."""
    crypto = {n: PacketCrypto(n, KEY if secauth else None, epoch=n.to_bytes(8, "big") + b"e" * 8)
              for n in ADDRESS}
    batches: list[list[tuple[bytes, tuple]]] = []
    batch: list[tuple[bytes, tuple]] = []
    for sender, target, packet in recording:
        batch.append((crypto[sender].seal(packet, target), (ADDRESS[sender], 5405)))
        if packet[3] != wire.T_MCAST or len(batch) >= 64:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


class Receiver:
    """Node 2's receive path: driver, core, pg and ``TotemLink._on_events`` with a counting ``on_message``."""

    def __init__(self, core: SrpCore, secauth: bool, state_dir: str) -> None:
        self.messages = 0
        self.bytes = 0
        link = types.SimpleNamespace()
        link.core = core
        link.pg = PgEndpoint(RECEIVER, _frame_size(), withdraw=core.withdraw_pending)
        link.pump_ahead = 4 * max(core.cfg.window_size, core.cfg.max_messages)
        link._on_room = None
        link._room_freed = False
        link._on_config = self._on_config
        link._on_message = self._on_message
        link._pump = types.MethodType(TotemLink._pump, link)
        link._flush = types.MethodType(TotemLink._flush, link)
        crypto = PacketCrypto(RECEIVER, KEY if secauth else None, epoch=b"\0" * 7 + b"\2" + b"r" * 8)
        self.driver = TotemDriver(core, _Transport(), crypto, RingSeqStore(state_dir, RECEIVER),
                                  on_events=types.MethodType(TotemLink._on_events, link),
                                  guard=SenderGuard(list(ADDRESS.values())))
        link.driver = self.driver
        self.driver.start()

    def _on_message(self, sender: int, message: bytes) -> None:
        self.messages += 1
        self.bytes += len(message)

    def _on_config(self, change: ConfigChange) -> None:
        if change.kind is ConfKind.REGULAR:
            raise AssertionError("the replayed ring changed configuration")


def replay(snapshot: SrpCore, batches: list, secauth: bool, profile: cProfile.Profile | None = None) -> tuple:
    """Feed every batch to a fresh copy of the receiver; return (cpu seconds, messages delivered)."""
    with tempfile.TemporaryDirectory(prefix="rxpath-") as tmp:
        receiver = Receiver(copy.deepcopy(snapshot), secauth, tmp)
        on_batch = receiver.driver._on_batch
        if profile is not None:
            profile.enable()
        start = time.process_time()
        for batch in batches:
            on_batch(batch)
        elapsed = time.process_time() - start
        if profile is not None:
            profile.disable()
        stats = receiver.driver.stats
        if stats["rejected"] or stats["malformed"] or stats.get("refused_sender"):
            raise AssertionError(f"the replay dropped packets: {stats}")
        receiver.driver.stop()
        return elapsed, receiver.messages


def main(argv: list[str] | None = None) -> int:
    """Record once per size, replay ``--reps`` times per secauth setting, print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="message size (repeatable; 1024 and 16384)")
    parser.add_argument("--crypto", choices=("on", "off"), action="append")
    parser.add_argument("--frames", type=int, default=20000, help="data frames recorded per size")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more replay")
    args = parser.parse_args(argv)
    for size in args.size or (1024, 16384):
        snapshot, recording = record(size, args.frames)
        data = sum(1 for _s, _t, p in recording if p[3] == wire.T_MCAST)
        for mode in args.crypto or ("off", "on"):
            secauth = mode == "on"
            batches = seal(recording, secauth)
            datagrams = sum(map(len, batches))
            times, delivered = [], 0
            for _ in range(args.reps):
                elapsed, delivered = replay(snapshot, batches, secauth)
                times.append(elapsed)
            print(json.dumps({"test": "rxpath", "size": size, "crypto": mode, "datagrams": datagrams,
                              "data_frames": data, "batches": len(batches), "messages": delivered,
                              "us_per_datagram": round(min(times) * 1e6 / datagrams, 2),
                              "us_per_frame_best": round(min(times) * 1e6 / data, 2),
                              "us_per_frame_median": round(statistics.median(times) * 1e6 / data, 2),
                              "pid": os.getpid()}), flush=True)
            if args.profile:
                profile = cProfile.Profile()
                replay(snapshot, batches, secauth, profile)
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
