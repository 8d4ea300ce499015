"""This node's side of EVT: channel handles, their subscriptions, and delivery to the library.

Nothing here is replicated.  :class:`LocalDelivery` keeps, per library
connection, a bounded priority queue (:mod:`plugins.evt.delivery`) and its
push window, and an index of the open handles with subscriptions per
channel, so that a delivered event is matched only against the handles of
its channel (each subscription's filters compiled once).  Each event reaches
a handle once, under the id of its oldest matching subscription.

Push delivery: an event for a connection with room in its push window and
nothing waiting goes straight out in an EVENT frame on the dispatch socket
(header, attributes and data: the library needs nothing more); otherwise it
waits in the queue, and the queue's head is pushed as the window opens.  The
library acknowledges what it has taken (ACK, a one-way request, sent when a
frame asks for it: the window half used, the queue filling, or events waiting
behind), which opens the window again.  A fresh connection's window is one
event.  So a waiting event always has a frame on its way ahead of it, and
``fileno()`` is readable while an event waits.  (PULL, a fetch of the waiting
events in the answer, is still served.)
"""

from __future__ import annotations

import time
from typing import Any

from openais import evt as wire
from openais.evt import PUSH_ACK, PUSH_HEAD, PUSH_MORE, Callback, FilterType, matches
from plugins.evt.delivery import DeliveryQueue, Item

_PREFIX, _SUFFIX, _EXACT, _PASS_ALL = FilterType.PREFIX, FilterType.SUFFIX, FilterType.EXACT, FilterType.PASS_ALL
_pack_head = PUSH_HEAD.pack
_EVENT = int(Callback.EVENT)


def compile_filters(filters: list[Any]) -> tuple[tuple[int, int, bytes], ...]:
    """A subscription's filters as (position, type, pattern) to test, PASS_ALL left out (see ``matches``)."""
    return tuple((i, int(t), bytes(f)) for i, (t, f) in enumerate(filters) if t != _PASS_ALL)


def compiled_match(tests: tuple[tuple[int, int, bytes], ...], patterns: list[bytes]) -> bool:
    """``matches`` for compiled filters."""
    count = len(patterns)
    for i, ftype, want in tests:
        have = patterns[i] if i < count else b""
        if ftype == _PREFIX:
            if not have.startswith(want):
                return False
        elif ftype == _SUFFIX:
            if not have.endswith(want):
                return False
        elif have != want:
            return False
    return True


class ChannelHandle:
    """One channel handle of a local connection."""

    __slots__ = ("channel_id", "compiled", "conn_id", "flags", "handle", "invocation", "memo", "open", "pending",
                 "received", "started", "subs", "timeout_ns")

    def __init__(self, conn_id: int, flags: int, invocation: int | None, timeout_ns: int) -> None:
        self.handle = 0
        self.conn_id = conn_id
        self.channel_id = 0
        self.flags = flags
        self.open = False
        self.invocation = invocation
        self.timeout_ns = timeout_ns
        self.started = time.monotonic()
        self.subs: dict[int, list[Any]] = {}  # subscription id -> filters, oldest first
        self.compiled: tuple[tuple[int, tuple], ...] | None = None  # (id, compiled filters), oldest first
        #: the last match: (patterns object, ``compiled`` it was matched by, subscription id or None); a
        #: later event with the same patterns object (and the same ``compiled``) matches the same way
        self.memo: tuple[Any, Any, int | None] = (None, None, None)
        self.pending: set[int] = set()  # subscription ids multicast, not yet in effect
        self.received: set[int] = set()  # ids of retained events this handle has had queued

    def match(self, event: Any) -> int | None:
        """The id of the oldest subscription matching ``event``, or None."""
        compiled = self.compiled
        if compiled is None:
            compiled = self.recompile()
        patterns = event.patterns
        for sid, tests in compiled:
            if not tests or compiled_match(tests, patterns):
                return sid
        return None

    def recompile(self) -> tuple[tuple[int, tuple], ...]:
        """Compile the filters of every subscription again (after one was added or ended)."""
        self.compiled = tuple((sid, compile_filters(f)) for sid, f in self.subs.items())
        return self.compiled

    def match_plain(self, event: Any) -> int | None:
        """``match`` by the uncompiled filters (the reference the compiled form must agree with)."""
        for sid, filters in self.subs.items():
            if matches(filters, event.patterns):
                return sid
        return None


class Client:
    """One local library connection: its delivery queue and push window, and the event ids it may use.

    ``ids_next`` .. ``ids_end - 1`` is what is left of the last block of ids reserved for it; the
    connection's events must use them in increasing order.  ``ids_block``: that block's size (the
    next one doubles it, up to the engine's most).
    """

    __slots__ = ("conn", "ids_block", "ids_end", "ids_next", "queue")

    def __init__(self, conn: Any, size: int, resume: int) -> None:
        self.conn = conn
        self.queue = DeliveryQueue(size, resume)
        self.ids_next = self.ids_end = self.ids_block = 0


class LocalDelivery:
    """The connections of this node, their queues, and the subscribed handles by channel."""

    def __init__(self, service_id: int, queue_size: int = 1000, queue_resume: int = 500) -> None:
        self.service_id = service_id
        self.queue_size = queue_size
        self.queue_resume = queue_resume
        self.clients: dict[int, Client] = {}
        self.subscribed: dict[int, dict[int, ChannelHandle]] = {}  # channel id -> handle -> open handle w/ subs
        self.pushed = 0  # EVENT frames sent (tools, tests)

    def connect(self, conn: Any) -> None:
        """A connection opened: give it an empty queue."""
        self.clients[conn.id] = Client(conn, self.queue_size, self.queue_resume)

    def disconnect(self, conn: Any) -> None:
        """A connection closed: forget its queue."""
        self.clients.pop(conn.id, None)

    # -- index -------------------------------------------------------------------------------------

    def index(self, h: ChannelHandle) -> None:
        """``h`` has a subscription now: match events of its channel against it."""
        h.compiled = None
        self.subscribed.setdefault(h.channel_id, {})[h.handle] = h

    def unindex(self, h: ChannelHandle) -> None:
        """``h`` has no subscription any more (or closed)."""
        handles = self.subscribed.get(h.channel_id)
        if handles is not None:
            handles.pop(h.handle, None)
            if not handles:
                del self.subscribed[h.channel_id]

    def rebuild(self, handles: list[ChannelHandle]) -> None:
        """Index ``handles`` afresh (after a merge renumbered channels)."""
        self.subscribed = {}
        for h in handles:
            if h.open and h.subs:
                self.index(h)

    def forget(self, h: ChannelHandle) -> None:
        """A handle closed: drop its waiting events and stop matching it."""
        self.unindex(h)
        client = self.clients.get(h.conn_id)
        if client is not None:
            client.queue.filter(lambda item: None if item.handle == h.handle else item)

    def dropped(self, channel_id: int, event_id: int) -> None:
        """A retained event is gone: handles need not remember it."""
        for h in self.subscribed.get(channel_id, {}).values():
            h.received.discard(event_id)

    # -- delivery ----------------------------------------------------------------------------------

    def deliver(self, event: Any, retained: bool) -> None:
        """Push or queue a published event once for every local handle of its channel with a matching subscription."""
        handles = self.subscribed.get(event.channel_id)
        if handles:
            self.deliver_to(handles, event, retained)

    def deliver_to(self, handles: dict[int, ChannelHandle], event: Any, retained: bool) -> None:
        """``deliver`` to ``handles``, the subscribed handles of the event's channel (the hot path)."""
        clients = self.clients
        patterns = event.patterns
        body = event.body
        size = len(body)
        data_size = -1
        # a snapshot: a push may fail a connection, whose cleanup unindexes its handles
        for h in tuple(handles.values()):
            compiled = h.compiled
            memo = h.memo
            if memo[0] is patterns and memo[1] is compiled and compiled is not None:
                sid = memo[2]  # the patterns object of the last event again (shared by the engine's decoder)
            else:
                if compiled is None:
                    compiled = h.recompile()
                sid = None
                for subscription_id, tests in compiled:  # the oldest matching subscription (ChannelHandle.match)
                    if not tests or compiled_match(tests, patterns):
                        sid = subscription_id
                        break
                h.memo = (patterns, compiled, sid)
            if sid is None:
                continue
            client = clients.get(h.conn_id)
            if client is None:
                continue
            if retained:
                h.received.add(event.event_id)
            q = client.queue
            flags = q.push_now(size)
            if flags >= 0:  # straight out: nothing waits, room in the window
                if data_size < 0:
                    data_size = len(event.data)
                self.pushed += 1
                client.conn.dispatch(self.service_id, _EVENT, _pack_head(h.handle, sid, flags, data_size) + body)
            else:
                q.offer(h.handle, sid, event)
                self.wake(client)

    def catch_up(self, h: ChannelHandle, retained: dict[int, Any]) -> None:
        """Queue the retained events (agreed order) that match ``h`` and that it has not had."""
        client = self.clients.get(h.conn_id)
        if client is None:
            return
        for event_id, event in list(retained.items()):
            if event_id in h.received:
                continue
            sid = h.match(event)
            if sid is not None:
                h.received.add(event_id)
                client.queue.offer(h.handle, sid, event)
        self.wake(client)

    def _push(self, client: Client, handle: int, sid: int, body: bytes, data_size: int) -> None:
        """Send one event in an EVENT frame (counted in the window)."""
        q = client.queue
        flags = PUSH_ACK if q.push_begin(len(body)) else 0
        if q._count:
            flags |= PUSH_MORE
        self.pushed += 1
        client.conn.dispatch(self.service_id, Callback.EVENT, _pack_head(handle, sid, flags, data_size) + body)

    def wake(self, client: Client) -> None:
        """Push waiting events, head first, while the window has room."""
        q = client.queue
        while q._count:
            item = q.head()
            if not q.can_push(len(item.body)):
                return
            q.pop_head()
            self._push(client, item.handle, item.subscription_id, item.body,
                       len(item.event.data) if item.event is not None else 0)

    def ack(self, client: Client, total: int) -> None:
        """The library took ``total`` pushed events in all: push what waits into the opened window."""
        client.queue.ack_total(total)
        self.wake(client)

    def pull(self, client: Client, max_count: int) -> bytes:
        """Answer a PULL: up to ``max_count`` waiting events in the answer (0: none, only push what waits)."""
        items = client.queue.pull(min(max_count, wire.PULL_MAX_EVENTS), wire.PULL_MAX_BYTES) if max_count else []
        more = len(client.queue) > 0
        answer = wire.PullResponse.pack(more, [wire.Delivered(i.handle, i.subscription_id, i.body) for i in items])
        self.wake(client)
        return answer

    def relabel(self, h: ChannelHandle, gone: int) -> None:
        """Waiting events of an ended subscription: under another matching subscription, or dropped."""
        h.compiled = None
        client = self.clients.get(h.conn_id)
        if client is None:
            return

        def keep(item: Item) -> Item | None:
            if item.handle != h.handle or item.subscription_id != gone:
                return item
            if item.event is None:  # a lost-event notice follows the handle's oldest subscription
                return item._replace(subscription_id=next(iter(h.subs))) if h.subs else None
            sid = h.match(item.event)
            return None if sid is None else item._replace(subscription_id=sid)

        client.queue.filter(keep)

    def describe(self) -> dict:
        """Per connection: waiting events, on their way, blocked, dropped and lost-event notices (tools)."""
        return {str(cid): {"waiting": len(c.queue), "on_their_way": c.queue.outstanding, "blocked": c.queue.blocked,
                           "dropped": c.queue.dropped, "lost_notices": c.queue.notices}
                for cid, c in self.clients.items()}
