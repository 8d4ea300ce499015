"""This node's side of EVT: channel handles, their subscriptions, and delivery to the library.

Nothing here is replicated.  :class:`LocalDelivery` keeps, per library
connection, a bounded priority queue (:mod:`plugins.evt.delivery`) and its
delivery state, and an index of the open handles with subscriptions per
channel, so that a delivered event is matched only against the handles of
its channel.  Each event reaches a handle once, under the id of its oldest
matching subscription.

Frames to the library: when nothing is on its way to a connection, the head
of its queue is pushed in an EVENT frame (which says whether more wait); a
pushed frame saying nothing more waits may be followed by one READY frame
when more arrive; the library fetches what waits with PULL.  So a waiting
event always has a frame on its way or a fetch coming (``fileno()`` is
readable), and at most two frames per connection are ever in the socket.
"""

from __future__ import annotations

import time
from typing import Any

from openais import evt as wire
from openais.evt import PULL_MAX_BYTES, Callback, matches
from plugins.evt.delivery import DeliveryQueue, Item

#: Delivery states of a connection: nothing on its way; one pushed EVENT frame saying nothing more waits
#: is unread; the library will PULL (a READY or an EVENT frame saying more waits is on its way, or it is
#: fetching).
IDLE, PUSHED, OWED = 0, 1, 2
#: Push the head of an idle queue with its EVENT frame (saves the PULL round trip for a subscriber that
#: keeps up); False: only READY frames, every event fetched by PULL.
PUSH_FIRST = True


class ChannelHandle:
    """One channel handle of a local connection."""

    __slots__ = ("channel_id", "conn_id", "flags", "handle", "invocation", "open", "pending", "received",
                 "started", "subs", "timeout_ns")

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
        self.pending: set[int] = set()  # subscription ids multicast, not yet in effect
        self.received: set[int] = set()  # ids of retained events this handle has had queued

    def match(self, event: Any) -> int | None:
        """The id of the oldest subscription matching ``event``, or None."""
        for sid, filters in self.subs.items():
            if matches(filters, event.patterns):
                return sid
        return None


class Client:
    """One local library connection: its delivery queue and its delivery state."""

    __slots__ = ("conn", "queue", "state")

    def __init__(self, conn: Any, size: int, resume: int) -> None:
        self.conn = conn
        self.queue = DeliveryQueue(size, resume)
        self.state = IDLE


class LocalDelivery:
    """The connections of this node, their queues, and the subscribed handles by channel."""

    def __init__(self, service_id: int, queue_size: int = 1000, queue_resume: int = 500) -> None:
        self.service_id = service_id
        self.queue_size = queue_size
        self.queue_resume = queue_resume
        self.clients: dict[int, Client] = {}
        self.subscribed: dict[int, dict[int, ChannelHandle]] = {}  # channel id -> handle -> open handle w/ subs

    def connect(self, conn: Any) -> None:
        """A connection opened: give it an empty queue."""
        self.clients[conn.id] = Client(conn, self.queue_size, self.queue_resume)

    def disconnect(self, conn: Any) -> None:
        """A connection closed: forget its queue."""
        self.clients.pop(conn.id, None)

    # -- index -------------------------------------------------------------------------------------

    def index(self, h: ChannelHandle) -> None:
        """``h`` has a subscription now: match events of its channel against it."""
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
        """Queue a published event once for every local handle of its channel with a matching subscription."""
        handles = self.subscribed.get(event.channel_id)
        if not handles:
            return
        for h in list(handles.values()):
            sid = h.match(event)
            if sid is None:
                continue
            client = self.clients.get(h.conn_id)
            if client is None:
                continue
            if retained:
                h.received.add(event.event_id)
            client.queue.offer(h.handle, sid, event)
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

    def wake(self, client: Client) -> None:
        """Make sure a waiting event has a frame on its way: push the head, or a READY after a pushed event."""
        if not len(client.queue) or client.state == OWED:
            return
        if client.state == PUSHED or not PUSH_FIRST:
            client.state = OWED  # the library PULLs when it reads this
            client.conn.dispatch(self.service_id, Callback.READY, b"")
            return
        (item,) = client.queue.pull(1, PULL_MAX_BYTES)
        more = len(client.queue) > 0
        client.state = OWED if more else PUSHED
        client.conn.dispatch(self.service_id, Callback.EVENT, wire.PullResponse.pack(
            more, [wire.Delivered(item.handle, item.subscription_id, item.body)]))

    def pull(self, client: Client, max_count: int) -> bytes:
        """Answer a PULL: up to ``max_count`` events (0: stop fetching, push the next one when it comes)."""
        if max_count == 0:
            client.state = IDLE
            self.wake(client)
            return wire.PullResponse.pack(False, [])
        items = client.queue.pull(min(max_count, wire.PULL_MAX_EVENTS), PULL_MAX_BYTES)
        more = len(client.queue) > 0
        client.state = OWED if more else IDLE  # with more, the library fetches again (or re-arms with 0)
        return wire.PullResponse.pack(more, [wire.Delivered(i.handle, i.subscription_id, i.body) for i in items])

    def relabel(self, h: ChannelHandle, gone: int) -> None:
        """Waiting events of an ended subscription: under another matching subscription, or dropped."""
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
        """Per connection: waiting events, blocked, dropped and lost-event notices (tools)."""
        return {str(cid): {"waiting": len(c.queue), "blocked": c.queue.blocked, "dropped": c.queue.dropped,
                           "lost_notices": c.queue.notices} for cid, c in self.clients.items()}
