"""The delivery queue of one library handle: one queue per priority, bounded, with lost-event notices.

Local to a node (not replicated).  Holds at most ``size`` events; when an
event arrives for a full queue the queue is *blocked*: the arriving event is
dropped, or replaces the most recent queued event of lower priority, and one
lost-event notice is queued at the highest priority for the subscription
whose event was dropped.  While blocked every arrival is handled the same
way without further notices; the queue unblocks once it drains below
``resume``.

Events pushed to the library and not yet acknowledged (:meth:`push_begin`,
:meth:`ack`) count against ``size`` too, except the first one: a handle
holds at most ``size`` events in the executive and on their way, plus the
one pushed at once to a handle that had nothing waiting.  How many may be on
their way (the push window) is :attr:`window` events and :attr:`window_bytes`
bytes; a fresh handle's window is one event, until the library first
acknowledges (it is reading).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from openais import TIME_UNKNOWN
from openais.evt import EVENTID_LOST, HIGHEST_PRIORITY, LOST_EVENT_PATTERN, LOWEST_PRIORITY, PUSH_ACK, EventBody

#: The body of every lost-event notice.
LOST_BODY = EventBody.pack(EVENTID_LOST, TIME_UNKNOWN, HIGHEST_PRIORITY, 0, "", [LOST_EVENT_PATTERN], b"")
#: Events and bytes at most on their way to a library handle that reads (acknowledges).
PUSH_WINDOW = 64
PUSH_WINDOW_BYTES = 1 << 20


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

    __slots__ = ("_count", "_queues", "_seq", "_sizes", "acked", "blocked", "dropped", "notices", "outstanding",
                 "outstanding_bytes", "resume", "size", "window", "window_bytes")

    def __init__(self, size: int = 1000, resume: int = 500) -> None:
        self.size = size
        self.resume = resume
        self._queues: list[deque[Item]] = [deque() for _ in range(LOWEST_PRIORITY + 1)]
        self._count = 0
        self._seq = 0
        self.blocked = False
        self.dropped = 0
        self.notices = 0
        #: pushed, not yet acknowledged: count, bytes, and each one's size (oldest first)
        self.outstanding = 0
        self.outstanding_bytes = 0
        self._sizes: deque[int] = deque()
        self.acked = 0  # the library's running total of pushed events taken, as its last ACK said
        self.window = 1
        self.window_bytes = PUSH_WINDOW_BYTES

    def __len__(self) -> int:
        return self._count

    def held(self) -> int:
        """Events counted against ``size``: the waiting ones and all but one of those on their way."""
        out = self.outstanding
        return self._count + (out - 1 if out > 1 else 0)

    # -- arrivals ---------------------------------------------------------------------------------

    def admits(self) -> bool:
        """True when an arriving event is simply accepted (not blocked, below ``size``)."""
        return not self.blocked and self.held() < self.size

    def offer(self, handle: int, subscription_id: int, event: Any) -> None:
        """Queue ``event`` (an EventRecord) for ``handle``/``subscription_id``, or drop one as the rules say."""
        self._seq += 1
        item = Item(self._seq, handle, subscription_id, event.priority, event.body, event)
        if self.admits():
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

    # -- the push window --------------------------------------------------------------------------

    def can_push(self, size: int) -> bool:
        """Room in the window for one more event of ``size`` bytes on its way."""
        out = self.outstanding
        return out < self.window and (not out or self.outstanding_bytes + size <= self.window_bytes)

    def push_now(self, size: int) -> int:
        """An arriving event of ``size`` bytes that may go straight out: count it on its way, return its EVENT flags.

        -1 when it may not (it is offered to the queue instead): events wait already, the queue is
        blocked or full, or the window has no room.  Otherwise :meth:`admits`, :meth:`can_push` and
        :meth:`push_begin` in one call (the hot path of delivery): the flags are ``PUSH_ACK`` when the
        library should acknowledge soon, else 0 (nothing waits behind it).
        """
        if self._count or self.blocked:
            return -1
        out = self.outstanding
        if out >= self.window or (out and self.outstanding_bytes + size > self.window_bytes) \
                or (out - 1 if out > 1 else 0) >= self.size:
            return -1
        out += 1
        self.outstanding = out
        sent = self.outstanding_bytes = self.outstanding_bytes + size
        self._sizes.append(size)
        return PUSH_ACK if out * 2 >= self.window or sent * 2 >= self.window_bytes or out - 1 >= self.resume else 0

    def push_begin(self, size: int) -> bool:
        """Count one event of ``size`` bytes on its way; True when the library should acknowledge soon.

        Soon: the window is half used, or the queue is blocked or filling (past ``resume``), or
        events wait behind this one.
        """
        self.outstanding += 1
        self.outstanding_bytes += size
        self._sizes.append(size)
        return (self._count > 0 or self.blocked or self.outstanding * 2 >= self.window
                or self.outstanding_bytes * 2 >= self.window_bytes or self.held() >= self.resume)

    def ack_total(self, total: int) -> None:
        """An ACK: the library has taken ``total`` pushed events in all (modulo 2**32); stale ones are ignored."""
        count = (total - self.acked) & 0xFFFFFFFF
        if count >= 1 << 31:  # older than one already applied (two dispatching threads)
            return
        self.acked = total
        self.ack(count)

    def ack(self, count: int) -> None:
        """The library has taken ``count`` more pushed events (oldest first): the window opens."""
        sizes = self._sizes
        count = min(count, len(sizes))
        freed = 0
        for _ in range(count):
            freed += sizes.popleft()
        self.outstanding -= count
        self.outstanding_bytes -= freed
        self.window = PUSH_WINDOW
        self._maybe_unblock()

    def head(self) -> Item | None:
        """The next event to deliver (highest priority, oldest), or None."""
        if self._count:
            for q in self._queues:
                if q:
                    return q[0]
        return None

    def pop_head(self) -> Item:
        """Take the head (see :meth:`head`) off the queue."""
        for q in self._queues:
            if q:
                item = q.popleft()
                self._count -= 1
                self._maybe_unblock()
                return item
        raise IndexError("the delivery queue is empty")

    # -- fetching ---------------------------------------------------------------------------------

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
        self._maybe_unblock()
        return out

    def _maybe_unblock(self) -> None:
        if self.blocked and self.held() < self.resume:
            self.blocked = False

    def filter(self, fn: Any) -> None:
        """Keep, relabel or drop every item: ``fn(item)`` returns the item to keep (maybe changed) or None."""
        count = 0
        for p, q in enumerate(self._queues):
            kept = deque(x for x in (fn(i) for i in q) if x is not None)
            self._queues[p] = kept
            count += len(kept)
        self._count = count
        self._maybe_unblock()

    def items(self) -> list[Item]:
        """Every waiting item, in delivery order (tests, tools)."""
        return [i for q in self._queues for i in q]
