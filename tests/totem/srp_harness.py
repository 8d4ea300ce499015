"""A tiny lossless in-test network for a few SrpCore instances (virtual time, FIFO delivery)."""

from __future__ import annotations

import random
from collections import deque

from aisexec.totem.api import MULTICAST, ConfigChange, Delivery
from aisexec.totem.config import TotemConfig
from aisexec.totem.srp import SrpCore


class Loop:
    """Drive cores: drain packets in FIFO order, else jump to the earliest timer."""

    def __init__(self, ids, config: TotemConfig | None = None) -> None:
        self.config = config or TotemConfig()
        self.now = 0.0
        self.cores = {i: SrpCore(i, self.config, rng=random.Random(i)) for i in ids}
        self.timers: dict[tuple[int, int], float] = {}
        self.queue: deque = deque()
        self.events = {i: [] for i in ids}
        self.persisted = {i: 0 for i in ids}
        self.cut: set[frozenset[int]] = set()  # pairs that cannot talk
        self.down: set[int] = set()

    def collect(self, i: int) -> None:
        """Take the Ready of core ``i``."""
        r = self.cores[i].take_ready()
        if r.ring_seq_to_persist is not None:
            assert r.ring_seq_to_persist > self.persisted[i]
            self.persisted[i] = r.ring_seq_to_persist
        for name, when in r.timers.items():
            if when is None:
                self.timers.pop((i, name), None)
            else:
                self.timers[(i, name)] = when
        self.events[i].extend(r.events)
        for dest, pkt in r.sends:
            targets = [n for n in self.cores if n != i] if dest == MULTICAST else [dest]
            for t in targets:
                if t not in self.down and i not in self.down and frozenset((i, t)) not in self.cut:
                    self.queue.append((t, pkt))

    def start(self, *ids) -> None:
        """Start cores."""
        for i in ids or self.cores:
            self.cores[i].start(self.now)
            self.collect(i)

    def run(self, until: float, max_steps: int = 2_000_000) -> None:
        """Run until virtual time ``until``."""
        for _ in range(max_steps):
            if self.queue:
                t, pkt = self.queue.popleft()
                if t in self.down:
                    continue
                self.cores[t].receive(self.now, pkt)
                self.collect(t)
                continue
            live = {k: v for k, v in self.timers.items() if k[0] not in self.down}
            if not live:
                return
            key = min(live, key=lambda k: (live[k], k))
            when = live[key]
            if when > until:
                self.now = until
                return
            self.now = max(self.now, when)
            del self.timers[key]
            self.cores[key[0]].timer_expired(self.now, key[1])
            self.collect(key[0])
        raise AssertionError("too many steps")

    def deliveries(self, i: int) -> list[bytes]:
        """Payloads delivered at node ``i``."""
        return [e.payload for e in self.events[i] if isinstance(e, Delivery)]

    def configs(self, i: int) -> list[ConfigChange]:
        """Configuration changes delivered at node ``i``."""
        return [e for e in self.events[i] if isinstance(e, ConfigChange)]
