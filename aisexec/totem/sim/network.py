"""The simulated network: per-link reachability, loss, duplication, delay and reordering."""

from __future__ import annotations

import random


class Network:
    """Decides, for one packet on one link, whether and when copies arrive.

    Reachability is a partition map (node -> group) plus a set of cut directed links.
    ``loss``/``dup`` are probabilities; ``delay`` is a (min, max) range in seconds whose
    spread also reorders packets.  Loopback (src == dst) is instant and lossless.
    ``data_cut`` holds directed links that lose every data message (multicast) but still carry
    tokens and membership traffic: the first half of a "holes" episode, where a group keeps
    ordering messages that the other group never gets, before the two are partitioned.
    """

    def __init__(self, rng: random.Random, nodes: list[int]) -> None:
        self.rng = rng
        self.nodes = list(nodes)
        self.group: dict[int, int] = dict.fromkeys(nodes, 0)
        self.cut: set[tuple[int, int]] = set()
        self.data_cut: set[tuple[int, int]] = set()
        self.loss = 0.0
        self.dup = 0.0
        self.delay = (0.0002, 0.001)
        self.sent = 0
        self.dropped = 0

    def reachable(self, src: int, dst: int) -> bool:
        """True when a packet from ``src`` can reach ``dst`` now."""
        return src == dst or (self.group[src] == self.group[dst] and (src, dst) not in self.cut)

    def partition(self, groups: list[list[int]]) -> None:
        """Split the nodes into ``groups`` (unlisted nodes stay together in group 0)."""
        self.group = dict.fromkeys(self.nodes, 0)
        for index, members in enumerate(groups, start=1):
            for node in members:
                self.group[node] = index

    def heal(self) -> None:
        """Join every partition and restore every cut link."""
        self.group = dict.fromkeys(self.nodes, 0)
        self.cut.clear()
        self.data_cut.clear()

    def lose_data(self, sources: list[int], targets: list[int]) -> None:
        """From now on, data messages from ``sources`` to ``targets`` are lost (tokens still pass)."""
        self.data_cut.update((s, t) for s in sources for t in targets)

    def set_faults(self, loss: float, dup: float, delay: tuple[float, float]) -> None:
        """Set the loss/duplication probabilities and delay range."""
        self.loss, self.dup, self.delay = loss, dup, delay

    def arrivals(self, src: int, dst: int, data: bool = False) -> list[float]:
        """Delays (seconds) of each copy of one packet from ``src`` to ``dst``; empty if lost.

        ``data``: the packet is a data message (subject to ``data_cut``).
        """
        self.sent += 1
        if src == dst:
            return [0.0]
        if (not self.reachable(src, dst) or (data and (src, dst) in self.data_cut)
                or (self.loss and self.rng.random() < self.loss)):
            self.dropped += 1
            return []
        low, high = self.delay
        copies = [self.rng.uniform(low, high)]
        if self.dup and self.rng.random() < self.dup:
            copies.append(self.rng.uniform(low, high * 3))
        return copies
