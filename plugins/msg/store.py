"""The messages one node holds: per queue, four FIFO priority areas (not replicated).

A node keeps the messages of the queues whose home it is (open here, or
last open here).  Moved-in messages are older than anything stored since
the open, so they are inserted ahead of the arrivals, behind earlier moved
ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from openais.msg import METADATA_SIZE

QueueId = tuple[int, int]


@dataclass(slots=True)
class Item:
    """One stored message: when it was sent, its reply id, its encoded Body and the bytes it is charged."""

    priority: int
    send_time: int
    sender_id: int
    body: bytes
    charge: int


class QueueStore:
    """The four areas of one queue on this node."""

    __slots__ = ("areas", "moved_in")

    def __init__(self) -> None:
        self.areas: list[deque[Item]] = [deque() for _ in range(4)]
        self.moved_in = [0, 0, 0, 0]  # moved-in items at the front of each area

    def add(self, item: Item) -> None:
        """Store a newly sent message."""
        self.areas[item.priority].append(item)

    def add_moved(self, item: Item) -> None:
        """Store a moved-in message (older than the arrivals since the open)."""
        p = item.priority
        self.areas[p].insert(self.moved_in[p], item)
        self.moved_in[p] += 1

    def pop(self) -> Item | None:
        """The oldest message of the highest-priority area holding one."""
        for p, area in enumerate(self.areas):
            if area:
                if self.moved_in[p]:
                    self.moved_in[p] -= 1
                return area.popleft()
        return None

    def items(self) -> list[Item]:
        """Every message, area 0 first, oldest first."""
        return [item for area in self.areas for item in area]

    def pop_front(self, counts: list[int]) -> None:
        """Forget the first ``counts[p]`` messages of each area (they moved away)."""
        for p, n in enumerate(counts):
            area = self.areas[p]
            for _ in range(min(n, len(area))):
                area.popleft()
            self.moved_in[p] = max(0, self.moved_in[p] - n)

    def usage(self) -> list[list[int]]:
        """[bytes charged, count] per area."""
        return [[sum(i.charge for i in area), len(area)] for area in self.areas]

    def __len__(self) -> int:
        return sum(len(a) for a in self.areas)


def make_item(priority: int, send_time: int, sender_id: int, body: Any, data_len: int) -> Item:
    """An item for ``body`` (copied out of the delivered frame) with its charge."""
    return Item(priority, send_time, sender_id, bytes(body), data_len + METADATA_SIZE)
