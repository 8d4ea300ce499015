"""The messages one node holds: per queue, four FIFO priority areas (not replicated).

A node keeps the messages of the queues whose home it is (open here, or
last open here).  Moved-in messages are older than anything stored since
the open, so they are inserted ahead of the arrivals, behind earlier moved
ones.  A stored message is a plain tuple ``(priority, send_time, sender_id,
body, charge)`` (see :data:`Item`): one small object per message, its body
copied once out of the delivered frame.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from openais.msg import METADATA_SIZE

QueueId = tuple[int, int]
#: (priority, send time, reply id or 0, the encoded Body as bytes, bytes charged)
Item = tuple[int, int, int, bytes, int]
PRIORITY, SEND_TIME, SENDER_ID, BODY, CHARGE = range(5)


class QueueStore:
    """The four areas of one queue on this node."""

    __slots__ = ("areas", "count", "moved_in")

    def __init__(self) -> None:
        self.areas: list[deque[Item]] = [deque() for _ in range(4)]
        self.moved_in = [0, 0, 0, 0]  # moved-in items at the front of each area
        self.count = 0

    def add(self, item: Item) -> None:
        """Store a newly sent message."""
        self.areas[item[0]].append(item)
        self.count += 1

    def add_many(self, items: list[tuple]) -> None:
        """Store newly sent messages, in order: ``(priority, send_time, sender_id, body view, charge)`` each
        (the body is copied here)."""
        areas = self.areas
        for p, send_time, sender_id, body, charge in items:
            areas[p].append((p, send_time, sender_id, bytes(body), charge))
        self.count += len(items)

    def add_moved(self, item: Item) -> None:
        """Store a moved-in message (older than the arrivals since the open)."""
        p = item[0]
        self.areas[p].insert(self.moved_in[p], item)
        self.moved_in[p] += 1
        self.count += 1

    def pop(self) -> Item | None:
        """The oldest message of the highest-priority area holding one."""
        if not self.count:
            return None
        for p, area in enumerate(self.areas):
            if area:
                if self.moved_in[p]:
                    self.moved_in[p] -= 1
                self.count -= 1
                return area.popleft()
        return None  # pragma: no cover - count and areas agree

    def items(self) -> list[Item]:
        """Every message, area 0 first, oldest first."""
        return [item for area in self.areas for item in area]

    def pop_front(self, counts: list[int]) -> None:
        """Forget the first ``counts[p]`` messages of each area (they moved away)."""
        for p, n in enumerate(counts):
            area = self.areas[p]
            for _ in range(min(n, len(area))):
                area.popleft()
                self.count -= 1
            self.moved_in[p] = max(0, self.moved_in[p] - n)

    def usage(self) -> list[list[int]]:
        """[bytes charged, count] per area."""
        return [[sum(i[CHARGE] for i in area), len(area)] for area in self.areas]

    def __len__(self) -> int:
        return self.count


def make_item(priority: int, send_time: int, sender_id: int, body: Any, data_len: int) -> Item:
    """An item for ``body`` (copied out of the delivered frame) with its charge."""
    return (priority, send_time, sender_id, bytes(body), data_len + METADATA_SIZE)
