"""The delivery queue of one library handle: one queue per priority, bounded, with lost-event notices.

Local to a node (not replicated).  Holds at most ``size`` events; when an
event arrives for a full queue the queue is *blocked*: the arriving event is
dropped, or replaces the most recent queued event of lower priority, and one
lost-event notice is queued at the highest priority for the subscription
whose event was dropped.  While blocked every arrival is handled the same
way without further notices; the queue unblocks once it drains below
``resume``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from openais import TIME_UNKNOWN
from openais.evt import EVENTID_LOST, HIGHEST_PRIORITY, LOST_EVENT_PATTERN, LOWEST_PRIORITY, EventBody

#: The body of every lost-event notice.
LOST_BODY = EventBody.pack(EVENTID_LOST, TIME_UNKNOWN, HIGHEST_PRIORITY, 0, "", [LOST_EVENT_PATTERN], b"")


class Item(NamedTuple):
    """One waiting event for channel handle ``handle`` under ``subscription_id``."""

    seq: int
    handle: int
    subscription_id: int
    priority: int
    body: bytes
    event: Any  #: the EventRecord, or None for a lost-event notice


class DeliveryQueue:
    """Waiting events of one library handle, highest priority first, agreed order within a priority."""

    def __init__(self, size: int = 1000, resume: int = 500) -> None:
        self.size = size
        self.resume = resume
        self._queues: list[deque[Item]] = [deque() for _ in range(LOWEST_PRIORITY + 1)]
        self._count = 0
        self._seq = 0
        self.blocked = False
        self.dropped = 0
        self.notices = 0

    def __len__(self) -> int:
        return self._count

    def offer(self, handle: int, subscription_id: int, event: Any) -> None:
        """Queue ``event`` (an EventRecord) for ``handle``/``subscription_id``, or drop one as the rules say."""
        self._seq += 1
        item = Item(self._seq, handle, subscription_id, event.priority, event.body, event)
        if not self.blocked and self._count < self.size:
            self._queues[item.priority].append(item)
            self._count += 1
            return
        first = not self.blocked
        self.blocked = True
        self.dropped += 1
        victim = self._lower_victim(item.priority)
        if victim is None:
            lost = item
        else:
            lost = self._queues[victim].pop()
            self._queues[item.priority].append(item)
        if first:
            self.notices += 1
            self._seq += 1
            self._queues[HIGHEST_PRIORITY].append(
                Item(self._seq, lost.handle, lost.subscription_id, HIGHEST_PRIORITY, LOST_BODY, None))
            self._count += 1

    def _lower_victim(self, priority: int) -> int | None:
        """The priority queue whose last item is the most recent event of lower priority than ``priority``."""
        best, best_seq = None, -1
        for p in range(priority + 1, LOWEST_PRIORITY + 1):
            q = self._queues[p]
            if q and q[-1].seq > best_seq:
                best, best_seq = p, q[-1].seq
        return best

    def pull(self, max_count: int, max_bytes: int) -> list[Item]:
        """Take up to ``max_count`` items (and about ``max_bytes``), highest priority first."""
        out: list[Item] = []
        size = 0
        for q in self._queues:
            while q and len(out) < max_count and (not out or size + len(q[0].body) <= max_bytes):
                item = q.popleft()
                out.append(item)
                size += len(item.body)
            if len(out) >= max_count or (q and out and size + len(q[0].body) > max_bytes):
                break
        self._count -= len(out)
        if self.blocked and self._count < self.resume:
            self.blocked = False
        return out

    def filter(self, fn: Any) -> None:
        """Keep, relabel or drop every item: ``fn(item)`` returns the item to keep (maybe changed) or None."""
        count = 0
        for p, q in enumerate(self._queues):
            kept = deque(x for x in (fn(i) for i in q) if x is not None)
            self._queues[p] = kept
            count += len(kept)
        self._count = count
        if self.blocked and self._count < self.resume:
            self.blocked = False

    def items(self) -> list[Item]:
        """Every waiting item, in delivery order (tests, tools)."""
        return [i for q in self._queues for i in q]
