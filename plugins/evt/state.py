"""The replicated state of EVT as a pure, deterministic object.

Every node holds the same :class:`EvtState` at the same point of the agreed
order: channels (name, unlink state, which handles of which node have them
open and with which subscriptions), the retained events with their
deadlines, and the highest event sequence number seen from each node.  It
changes only through :meth:`EvtState.apply` (a delivered cluster message) and
:func:`merge` (the records of a sync round); both return *effects* for the
engine to carry out: answers to the asking connection, events to match
against local subscriptions, cluster timers to set or cancel.  No IPC, no
clock, no Totem here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from openais.errors import SaAisError
from openais.evt import CHANNEL_CREATE, MAX_NUM_CHANNELS, EventBody
from plugins.evt import messages as m
from plugins.evt.messages import Exec, RecordKind

_OK = SaAisError.OK
#: Bytes of retained event data (and patterns) the cluster keeps at most; a retained publish beyond is
#: refused with NO_RESOURCES (decided in the agreed order, so identically on every node).
MAX_RETAINED_BYTES = 256 * 1024 * 1024
#: Retained events the cluster keeps at most.
MAX_RETAINED_EVENTS = 200_000
#: Bookkeeping bytes counted per retained event on top of its data and patterns.
EVENT_OVERHEAD = 256
#: A removed retained event leaves a tombstone, so that a partition that still holds it cannot bring it
#: back at a merge (and deliver it twice): an expired event's for this long after its deadline, a
#: cleared one's until its deadline but at most this long after the clear.
EXPIRED_TOMBSTONE_NS = 60 * 10**9
CLEARED_TOMBSTONE_NS = 3600 * 10**9


class EventRecord:
    """One published event: its attributes and data, and its IPC encoding made once on first use."""

    __slots__ = ("_body", "channel_id", "data", "deadline_ns", "event_id", "patterns", "priority",
                 "publish_time", "publisher_name", "retention_ns")

    def __init__(self, channel_id: int, event_id: int, publish_time: int, priority: int, retention_ns: int,
                 deadline_ns: int, publisher_name: str, patterns: list[bytes], data: bytes) -> None:
        self.channel_id = channel_id
        self.event_id = event_id
        self.publish_time = publish_time
        self.priority = priority
        self.retention_ns = retention_ns
        self.deadline_ns = deadline_ns
        self.publisher_name = publisher_name
        self.patterns = patterns
        self.data = data
        self._body: bytes | memoryview | None = None

    @property
    def body(self) -> bytes | memoryview:
        """The event as the library receives it (an encoded :class:`openais.evt.EventBody`; the engine sets a
        view into the delivered cluster message, whose tail it is)."""
        if self._body is None:
            self._body = EventBody.pack(self.event_id, self.publish_time, self.priority, self.retention_ns,
                                        self.publisher_name, self.patterns, self.data)
        return self._body

    @property
    def size(self) -> int:
        """Bytes this event counts against the retained-event limit."""
        return len(self.data) + sum(len(p) for p in self.patterns) + EVENT_OVERHEAD

    def record(self) -> bytes:
        """The event as a sync record."""
        return m.RecEvent.pack(RecordKind.EVENT, self.channel_id, self.event_id, self.publish_time, self.priority,
                               self.retention_ns, self.deadline_ns, self.publisher_name, self.patterns, self.data)


@dataclass
class ChannelState:
    """One channel: its name, whether it was unlinked, its openers and its retained events."""

    id: int
    name: str
    unlinked: bool = False
    #: nodeid -> handle -> subscription ids (a handle that is open has an entry, maybe empty)
    openers: dict[int, dict[int, set[int]]] = field(default_factory=dict)
    retained: dict[int, EventRecord] = field(default_factory=dict)

    @property
    def open_count(self) -> int:
        """Handles open on this channel in the whole cluster."""
        return sum(len(h) for h in self.openers.values())


# -- effects ---------------------------------------------------------------------------------------


class Reply(NamedTuple):
    """Answer the request ``request_id`` of connection ``conn_id`` (meaningful on the sender's node)."""

    conn_id: int
    request_id: int
    error: SaAisError
    value: Any = None


class Deliver(NamedTuple):
    """Match ``event`` against this node's subscriptions of its channel."""

    event: EventRecord


class Retain(NamedTuple):
    """Set the cluster timer of a retained event."""

    event_id: int
    deadline_ns: int


class Drop(NamedTuple):
    """A retained event is gone (cleared, expired, or its channel deleted): cancel its timer."""

    event_id: int
    channel_id: int


class Tombstone(NamedTuple):
    """Set the cluster timer that ends the tombstone of ``event_id`` at ``until_ns``."""

    event_id: int
    until_ns: int


class Opened(NamedTuple):
    """Handle ``handle`` of the sender's node opened ``channel_id`` (or failed with ``error``)."""

    conn_id: int
    request_id: int
    handle: int
    channel_id: int
    error: SaAisError


class Subscribed(NamedTuple):
    """A subscription of the sender's node took effect (the engine installs it there)."""

    msg: m.Subscribe


class Forgotten(NamedTuple):
    """The tombstone of ``event_id`` is gone: cancel its timer."""

    event_id: int


Effect = Reply | Deliver | Retain | Drop | Tombstone | Forgotten | Opened | Subscribed


class EvtState:
    """Channels, retained events and sequence numbers: identical on every node of a ring."""

    def __init__(self, max_retained_bytes: int = MAX_RETAINED_BYTES,
                 max_retained_events: int = MAX_RETAINED_EVENTS) -> None:
        self.channels: dict[int, ChannelState] = {}
        self.names: dict[str, int] = {}  # live (not unlinked) channels by name
        self.events: dict[int, EventRecord] = {}  # retained events by id
        self.seqs: dict[int, int] = {}  # nodeid -> highest event sequence number seen
        self.tombstones: dict[int, int] = {}  # removed retained event id -> until (ns)
        self.retained_bytes = 0
        self.max_retained_bytes = max_retained_bytes
        self.max_retained_events = max_retained_events

    # -- the one entry point of delivered messages -----------------------------------------------

    def apply(self, sender: int, exec_id: int, msg: Any) -> list[Effect]:
        """Apply one delivered cluster message; return its effects."""
        handler = _APPLY.get(exec_id)
        if handler is None:
            return []
        return handler(self, sender, msg)

    def _open(self, sender: int, msg: m.Open) -> list[Effect]:
        self._saw(sender, msg.channel_id)
        cid = self.names.get(msg.name)
        if cid is None:
            if not msg.flags & CHANNEL_CREATE:
                return [Opened(msg.conn_id, msg.request_id, msg.handle, 0, SaAisError.NOT_EXIST)]
            if len(self.channels) >= MAX_NUM_CHANNELS or msg.channel_id in self.channels:
                return [Opened(msg.conn_id, msg.request_id, msg.handle, 0, SaAisError.NO_RESOURCES)]
            cid = msg.channel_id
            self.channels[cid] = ChannelState(cid, msg.name)
            self.names[msg.name] = cid
        self.channels[cid].openers.setdefault(sender, {})[msg.handle] = set()
        return [Opened(msg.conn_id, msg.request_id, msg.handle, cid, _OK)]

    def _close(self, sender: int, msg: m.Close) -> list[Effect]:
        return self.close_handle(sender, msg.channel_id, msg.handle)

    def close_handle(self, nodeid: int, channel_id: int, handle: int) -> list[Effect]:
        """Handle ``handle`` of ``nodeid`` is closed; an unlinked channel goes with its last opener."""
        chan = self.channels.get(channel_id)
        if chan is None:
            return []
        handles = chan.openers.get(nodeid)
        if handles is not None:
            handles.pop(handle, None)
            if not handles:
                del chan.openers[nodeid]
        return self._maybe_delete(chan)

    def _unlink(self, sender: int, msg: m.Unlink) -> list[Effect]:
        cid = self.names.pop(msg.name, None)
        if cid is None:
            return [Reply(msg.conn_id, msg.request_id, SaAisError.NOT_EXIST)]
        chan = self.channels[cid]
        chan.unlinked = True
        return [Reply(msg.conn_id, msg.request_id, _OK), *self._maybe_delete(chan)]

    def publish(self, sender: int, channel_id: int, event_id: int, publish_time: int, priority: int,
                retention_ns: int, publisher_name: str, patterns: list[bytes], data: bytes
                ) -> tuple[SaAisError, EventRecord | None]:
        """Apply a delivered PUBLISH given by its fields (the hot path, without effect objects).

        Returns ``(OK, event)``: match the event against the local subscriptions, set its cluster
        timer when ``event.deadline_ns`` (it is retained), answer the publisher with it; or
        ``(error, None)``: answer the publisher with the error.
        """
        seq = event_id & 0xFFFFFFFF  # _saw, inline
        if event_id >> 32 == sender and seq > self.seqs.get(sender, 0):
            self.seqs[sender] = seq
        chan = self.channels.get(channel_id)
        if chan is None:
            return SaAisError.BAD_HANDLE, None
        if not retention_ns:
            return _OK, EventRecord(channel_id, event_id, publish_time, priority, 0, 0, publisher_name, patterns,
                                    data)
        event = EventRecord(channel_id, event_id, publish_time, priority, retention_ns, publish_time + retention_ns,
                            publisher_name, patterns, data)
        if (self.retained_bytes + event.size > self.max_retained_bytes
                or len(self.events) + len(self.tombstones) >= self.max_retained_events
                or event_id in self.events or event_id in self.tombstones):
            return SaAisError.NO_RESOURCES, None
        self._retain(chan, event)
        return _OK, event

    def _publish(self, sender: int, msg: m.Publish) -> list[Effect]:
        conn_id, request_id, _request, cid, event_id, publish_time, priority, retention_ns, publisher, patterns, \
            data = msg
        error, event = self.publish(sender, cid, event_id, publish_time, priority, retention_ns, publisher,
                                    patterns, data)
        if event is None:
            return [Reply(conn_id, request_id, error)]
        if not event.deadline_ns:
            return [Deliver(event), Reply(conn_id, request_id, _OK, event)]
        return [Retain(event_id, event.deadline_ns), Deliver(event), Reply(conn_id, request_id, _OK, event)]

    def _subscribe(self, sender: int, msg: m.Subscribe) -> list[Effect]:
        chan = self.channels.get(msg.channel_id)
        if chan is not None:
            subs = chan.openers.get(sender, {}).get(msg.handle)
            if subs is not None:
                subs.add(msg.subscription_id)
        return [Subscribed(msg)]

    def _unsubscribe(self, sender: int, msg: m.Unsubscribe) -> list[Effect]:
        chan = self.channels.get(msg.channel_id)
        if chan is not None:
            subs = chan.openers.get(sender, {}).get(msg.handle)
            if subs is not None:
                subs.discard(msg.subscription_id)
        return []

    def _clear(self, sender: int, msg: m.Clear) -> list[Effect]:
        chan = self.channels.get(msg.channel_id)
        event = chan.retained.get(msg.event_id) if chan is not None else None
        if event is None:
            return [Reply(msg.conn_id, msg.request_id, SaAisError.NOT_EXIST)]
        self._forget(msg.event_id)
        until = min(event.deadline_ns, msg.time_ns + CLEARED_TOMBSTONE_NS)
        self.tombstones[msg.event_id] = until
        return [Reply(msg.conn_id, msg.request_id, _OK), Drop(msg.event_id, chan.id), Tombstone(msg.event_id, until)]

    def _expire(self, sender: int, msg: m.Expire) -> list[Effect]:
        event = self.events.get(msg.event_id)
        if event is None:
            return []
        self._forget(msg.event_id)
        until = event.deadline_ns + EXPIRED_TOMBSTONE_NS
        self.tombstones[msg.event_id] = until
        return [Drop(msg.event_id, event.channel_id), Tombstone(msg.event_id, until)]

    def _forget_tombstone(self, sender: int, msg: m.Forget) -> list[Effect]:
        if self.tombstones.pop(msg.event_id, None) is None:
            return []
        return [Forgotten(msg.event_id)]

    # -- helpers ---------------------------------------------------------------------------------

    def _saw(self, sender: int, ident: int) -> None:
        """Record the sequence number of an id the sender chose (ids are nodeid << 32 | sequence)."""
        seq = ident & 0xFFFFFFFF
        if ident >> 32 == sender and seq > self.seqs.get(sender, 0):
            self.seqs[sender] = seq

    def _retain(self, chan: ChannelState, event: EventRecord) -> None:
        chan.retained[event.event_id] = event
        self.events[event.event_id] = event
        self.retained_bytes += event.size

    def _forget(self, event_id: int) -> None:
        event = self.events.pop(event_id, None)
        if event is None:
            return
        self.retained_bytes -= event.size
        chan = self.channels.get(event.channel_id)
        if chan is not None:
            chan.retained.pop(event_id, None)

    def _maybe_delete(self, chan: ChannelState) -> list[Effect]:
        if not chan.unlinked or chan.open_count:
            return []
        del self.channels[chan.id]
        dropped = list(chan.retained)
        for event_id in dropped:
            self._forget(event_id)
        return [Drop(e, chan.id) for e in dropped]

    def subscription_count(self, chan: ChannelState) -> dict[int, int]:
        """nodeid -> subscriptions on ``chan`` (for tools)."""
        return {n: sum(len(s) for s in handles.values()) for n, handles in sorted(chan.openers.items())}

    # -- sync ------------------------------------------------------------------------------------

    def shared_records(self) -> Iterator[bytes]:
        """The replicated state as sync records (sent by one member of each old partition)."""
        for nodeid, seq in sorted(self.seqs.items()):
            yield m.RecSeq.pack(RecordKind.SEQ, nodeid, seq)
        for event_id, until in sorted(self.tombstones.items()):
            yield m.RecTombstone.pack(RecordKind.TOMBSTONE, event_id, until)
        for cid in sorted(self.channels):
            chan = self.channels[cid]
            yield m.RecChannel.pack(RecordKind.CHANNEL, cid, chan.name, chan.unlinked)
            for event in list(chan.retained.values()):  # in their agreed order
                yield event.record()

    def describe(self) -> dict:
        """JSON-able channels with their openers, subscriptions and retained events."""
        out = []
        for cid in sorted(self.channels):
            chan = self.channels[cid]
            out.append({
                "id": cid, "name": chan.name, "unlinked": chan.unlinked, "open": chan.open_count,
                "openers": {str(n): len(h) for n, h in sorted(chan.openers.items())},
                "subscriptions": {str(n): c for n, c in self.subscription_count(chan).items()},
                "retained": [{"event_id": e.event_id, "priority": e.priority, "patterns": [p.hex() for p in e.patterns],
                              "publisher_name": e.publisher_name, "publish_time": e.publish_time,
                              "retention_time": e.retention_ns / 1e9, "deadline_ns": e.deadline_ns,
                              "size": len(e.data)} for _, e in sorted(chan.retained.items())],
            })
        return {"channels": out, "retained_events": len(self.events), "retained_bytes": self.retained_bytes,
                "tombstones": len(self.tombstones)}


_APPLY = {
    Exec.OPEN: EvtState._open,
    Exec.CLOSE: EvtState._close,
    Exec.UNLINK: EvtState._unlink,
    Exec.PUBLISH: EvtState._publish,
    Exec.SUBSCRIBE: EvtState._subscribe,
    Exec.UNSUBSCRIBE: EvtState._unsubscribe,
    Exec.CLEAR: EvtState._clear,
    Exec.EXPIRE: EvtState._expire,
    Exec.FORGET: EvtState._forget_tombstone,
}


def merge(records: list[tuple[int, Any]], max_retained_bytes: int = MAX_RETAINED_BYTES,
          max_retained_events: int = MAX_RETAINED_EVENTS) -> tuple[EvtState, dict[int, int]]:
    """Build the state of a new ring from the sync records of all its members, in agreed order.

    ``records`` are (sender, decoded record).  Channels are united by id (an
    unlink anywhere wins); two live channels of one name (created apart in
    two partitions) become one, the lowest id, and the returned remap sends
    every other id to it.  Retained events are one event by their id (the
    first record delivered wins); one that any partition removed (a
    tombstone) stays removed.  Openers come from each node's own records.
    Unlinked channels nobody has open are deleted.
    """
    state = EvtState(max_retained_bytes, max_retained_events)
    seen: dict[int, tuple[str, bool]] = {}
    for _sender, rec in records:
        if rec.kind == RecordKind.CHANNEL:
            name, unlinked = seen.get(rec.channel_id, (rec.name, False))
            seen[rec.channel_id] = (name, unlinked or rec.unlinked)
        elif rec.kind == RecordKind.SEQ:
            state.seqs[rec.nodeid] = max(state.seqs.get(rec.nodeid, 0), rec.seq)
        elif rec.kind == RecordKind.TOMBSTONE:
            state.tombstones[rec.event_id] = max(state.tombstones.get(rec.event_id, 0), rec.until_ns)
    remap: dict[int, int] = {}
    for cid in sorted(seen):
        name, unlinked = seen[cid]
        if not unlinked and name in state.names:
            remap[cid] = state.names[name]
            continue
        state.channels[cid] = ChannelState(cid, name, unlinked)
        if not unlinked:
            state.names[name] = cid
    for sender, rec in records:
        if rec.kind == RecordKind.EVENT:
            cid = remap.get(rec.channel_id, rec.channel_id)
            chan = state.channels.get(cid)
            if chan is None or rec.event_id in state.events or rec.event_id in state.tombstones:
                continue
            state._retain(chan, EventRecord(cid, rec.event_id, rec.publish_time, rec.priority, rec.retention_ns,
                                            rec.deadline_ns, rec.publisher_name, list(rec.patterns), rec.data))
        elif rec.kind == RecordKind.OPENERS:
            chan = state.channels.get(remap.get(rec.channel_id, rec.channel_id))
            if chan is not None:
                chan.openers.setdefault(sender, {})[rec.handle] = set(rec.subscription_ids)
    for chan in list(state.channels.values()):
        state._maybe_delete(chan)
    return state, remap
