"""The EVT service engine: thin glue between the library connections, the ring and :mod:`plugins.evt.state`.

Library handlers validate a request against this node's own handles and
multicast a cluster message; exec handlers feed the delivered message to the
replicated :class:`~plugins.evt.state.EvtState` and carry out its effects:
answer the asking connection (on its node), queue a published event for the
matching local subscriptions, set or cancel the cluster timer of a retained
event.  Channel handles and subscriptions live on the node of their
connection (an :class:`aisexec.objects.ObjectTable`; queues and delivery to
the library in :mod:`plugins.evt.local`); the state counts them
cluster-wide.  Sync: one member of each old partition sends the shared
state (channels, retained events, tombstones, sequence numbers), every
member sends its own handles; the union replaces the state, and every local
subscription then receives the retained events of the merged partitions it
has not received.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aisexec.clustertimers import ClusterTimers
from aisexec.objects import ObjectTable
from aisexec.outbox import Outbox, mcast_request
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.statesync import StateTransfer
from openais import TIME_END
from openais import evt as wire
from openais.errors import SaAisError
from openais.evt import (
    CHANNEL_PUBLISHER,
    CHANNEL_SUBSCRIBER,
    LOWEST_PRIORITY,
    Callback,
    Request,
)
from openais.message import MessageError
from plugins.evt import messages as m
from plugins.evt.local import ChannelHandle, LocalDelivery
from plugins.evt.messages import Exec, RecordKind
from plugins.evt.state import (
    Deliver,
    Drop,
    EvtState,
    Forgotten,
    Opened,
    Reply,
    Retain,
    Subscribed,
    Tombstone,
    merge,
)

log = logging.getLogger("aisexec.evt")

#: Most channel handles open on one node.
MAX_HANDLES = 65536
#: Event ids in a connection's first reserved block, and in its largest (each block doubles the last).
ID_BLOCK_FIRST = 64
ID_BLOCK_MOST = 8192
#: Longest DUMP answer, in characters of (ASCII) JSON.
DUMP_MAX = 1 << 20
_MAX_PUBLISH = wire.MAX_EVT_SIZE + wire.MAX_NUM_PATTERNS * (wire.MAX_PATTERN_SIZE + 4) + 2048

_OK = int(SaAisError.OK)
_E = SaAisError
_unpack_publish = m.Publish.unpack
_unpack_request = wire.PublishRequest.unpack
_pack_publish_head = m.PUBLISH_HEAD.pack
_pack_named_head = m.PUBLISH_NAMED_HEAD.pack
_REQUEST_REST_OFFSET = m.REQUEST_REST_OFFSET
_REQUEST_NAMED_OFFSET = m.REQUEST_NAMED_OFFSET
_PUBLISH = int(Request.PUBLISH)
_PUBLISH_NOWAIT = int(Request.PUBLISH_NOWAIT)
_EXEC_PUBLISH = int(Exec.PUBLISH)
_pack_published = wire.PublishResponse.fixed.pack  # event id, publish time (fixed-width: one struct)
_BODY_OFFSET = m.PUBLISH_BODY_OFFSET
_CLOCK_SLACK_NS = 1_000_000_000  # a publish time later than the executive's clock by more is refused
_REQUEST_OF = {Exec.OPEN: Request.OPEN, Exec.UNLINK: Request.UNLINK, Exec.PUBLISH: Request.PUBLISH,
               Exec.SUBSCRIBE: Request.SUBSCRIBE, Exec.CLEAR: Request.CLEAR}


def _decode_error(exc: MessageError) -> SaAisError:
    """TOO_BIG for data, patterns or filters over their limits; INVALID_PARAM for anything else malformed."""
    over = "at most" in exc.reason or "outside" in exc.reason or " over " in exc.reason
    if over and exc.field in ("data", "patterns", "filters", "pattern"):
        return _E.TOO_BIG
    return _E.INVALID_PARAM


class EventEngine(ServiceEngine):
    """EVT (service id 4): cluster-wide event channels."""

    id = wire.SERVICE_ID
    name = "EVT"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self.state = EvtState()
        self.handles: ObjectTable[ChannelHandle] = ObjectTable(limit=MAX_HANDLES)
        self.local = LocalDelivery(self.id)
        self._orphans: set[int] = set()  # handles whose connection died while their open was in flight
        self.outbox: Outbox | None = None  # closes and cleanups that must not be lost
        self._seq = 0
        self._remap: dict[int, int] = {}
        self.timers: Any = None
        self.transfer: Any = None
        self._sync_records: list[tuple[int, Any]] = []
        self._sync_members: tuple[int, ...] = ()
        self.malformed = 0
        #: the publisher name and patterns of the last EXEC PUBLISH and of the last publish request decoded
        self._publish_attrs = m.AttrsCache(m.PUBLISH_FIXED)
        self._request_attrs = m.AttrsCache(m.REQUEST_FIXED)
        self.lib_handlers = {
            Request.OPEN: LibHandler(self._lib_open, needs_cluster=True, max_size=1024),
            Request.CLOSE: LibHandler(self._lib_close, max_size=64),
            Request.UNLINK: LibHandler(self._lib_unlink, needs_cluster=True, max_size=1024),
            Request.PUBLISH: LibHandler(self._lib_publish, needs_cluster=True, max_size=_MAX_PUBLISH),
            Request.PUBLISH_NOWAIT: LibHandler(self._lib_publish_nowait, needs_cluster=True, max_size=_MAX_PUBLISH,
                                               pipelined=True),
            Request.RESERVE: LibHandler(self._lib_reserve, needs_cluster=True, max_size=0),
            Request.SUBSCRIBE: LibHandler(self._lib_subscribe, needs_cluster=True,
                                          max_size=wire.MAX_NUM_PATTERNS * (wire.MAX_PATTERN_SIZE + 5) + 64),
            Request.UNSUBSCRIBE: LibHandler(self._lib_unsubscribe, max_size=64),
            Request.CLEAR: LibHandler(self._lib_clear, needs_cluster=True, max_size=64),
            Request.PULL: LibHandler(self._lib_pull, max_size=64),
            Request.DUMP: LibHandler(self._lib_dump, max_size=0),
            Request.ACK: LibHandler(self._lib_ack, max_size=16),
        }
        self.exec_handlers = {
            Exec.OPEN: ExecHandler(self._exec(Exec.OPEN, m.Open)),
            Exec.CLOSE: ExecHandler(self._exec(Exec.CLOSE, m.Close)),
            Exec.UNLINK: ExecHandler(self._exec(Exec.UNLINK, m.Unlink)),
            Exec.PUBLISH: ExecHandler(self._exec_publish),
            Exec.SUBSCRIBE: ExecHandler(self._exec(Exec.SUBSCRIBE, m.Subscribe)),
            Exec.UNSUBSCRIBE: ExecHandler(self._exec(Exec.UNSUBSCRIBE, m.Unsubscribe)),
            Exec.CLEAR: ExecHandler(self._exec(Exec.CLEAR, m.Clear)),
            Exec.EXPIRE: ExecHandler(self._exec(Exec.EXPIRE, m.Expire)),
            Exec.FORGET: ExecHandler(self._exec(Exec.FORGET, m.Forget)),
            Exec.SYNC: ExecHandler(self._exec_sync),
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the api; read the delivery queue limits of the ``event`` section."""
        self.api = api
        self.outbox = Outbox(api, self.id)
        config = getattr(api, "config", None)
        event = config.section("event") if config is not None else {}
        self.local.queue_size = int(event.get("delivery_queue_size", 1000))
        self.local.queue_resume = int(event.get("delivery_queue_resume", 500))
        self.timers = ClusterTimers(api, self._on_expire)
        self.transfer = StateTransfer(api, self.id, Exec.SYNC)

    def lib_init(self, conn: Any) -> None:
        """A connection opened: give it an empty delivery queue."""
        self.local.connect(conn)

    def lib_exit(self, conn: Any) -> None:
        """A connection closed or died: close every channel handle it held."""
        self.local.disconnect(conn)
        for handle, h in self.handles.release(conn):
            if h.open:
                self.local.forget(h)
                self.outbox.send(Exec.CLOSE, m.Close.pack(h.channel_id, handle))
            else:
                self._orphans.add(handle)

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Retry what the ring had no room for (the new ring may have room)."""
        self.outbox.flush()

    def dump(self) -> dict:
        """Channels, retained events and this node's handles (SIGUSR2, openais-evttool)."""
        out = self.state.describe()
        out["nodeid"] = self.api.nodeid if self.api is not None else 0
        handles = []
        for handle, cid, h in self.handles:
            client = self.local.clients.get(cid)
            handles.append({"handle": handle, "conn": cid, "pid": client.conn.pid if client else None,
                            "channel_id": h.channel_id, "flags": h.flags, "open": h.open,
                            "subscriptions": [{"id": sid, "filters": [[int(t), f.hex()] for t, f in fl]}
                                              for sid, fl in h.subs.items()]})
        out["handles"] = handles
        out["queues"] = self.local.describe()
        out["timers_owner"] = bool(self.timers and self.timers.is_owner)
        out["malformed"] = self.malformed
        return out

    # -- library requests -------------------------------------------------------------------------

    def _lib_open(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.OpenRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.OPEN, request_id, int(_E.INVALID_PARAM))
            return
        if req.flags == 0 or req.flags & ~(wire.CHANNEL_PUBLISHER | wire.CHANNEL_SUBSCRIBER | wire.CHANNEL_CREATE):
            conn.respond(self.id, Request.OPEN, request_id, int(_E.BAD_FLAGS))
            return
        h = ChannelHandle(conn.id, req.flags, req.invocation, req.timeout_ns)
        try:
            handle = self.handles.add(conn, h)
        except OverflowError:
            conn.respond(self.id, Request.OPEN, request_id, int(_E.NO_RESOURCES))
            return
        h.handle = handle
        msg = m.Open.pack(conn.id, request_id, handle, self._new_id(), req.flags, req.name)
        if not self._mcast(conn, Request.OPEN, request_id, Exec.OPEN, msg):
            self.handles.remove(conn, handle)
            return
        if req.invocation is not None:
            conn.respond(self.id, Request.OPEN, request_id, _OK)

    def _lib_close(self, conn: Any, request_id: int, payload: bytes) -> None:
        h = self._handle_of(conn, Request.CLOSE, request_id, payload, wire.ChannelRequest)
        if h is None:
            return
        self.handles.remove(conn, h.handle)
        self.local.forget(h)
        self.outbox.send(Exec.CLOSE, m.Close.pack(h.channel_id, h.handle))
        conn.respond(self.id, Request.CLOSE, request_id, _OK)

    def _lib_unlink(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.NameRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.UNLINK, request_id, int(_E.INVALID_PARAM))
            return
        self._mcast(conn, Request.UNLINK, request_id, Exec.UNLINK, m.Unlink.pack(conn.id, request_id, req.name))

    def _lib_publish(self, conn: Any, request_id: int, payload: bytes) -> None:
        """PUBLISH: this node names the event; the answer comes once the local node has applied it."""
        checked = self._checked_publish(conn, _PUBLISH, request_id, payload)
        if checked is None:
            return
        h, event_id, publish_time = checked
        if event_id or publish_time:  # the library leaves the naming to the executive
            conn.respond(self.id, _PUBLISH, request_id, int(_E.INVALID_PARAM))
            return
        head = _pack_named_head(conn.id, request_id, _PUBLISH, h.channel_id, self._new_id(), time.time_ns())
        mcast_request(self.api, self.id, conn, _PUBLISH, request_id, _EXEC_PUBLISH,
                      head + memoryview(payload)[_REQUEST_NAMED_OFFSET:])

    def _lib_publish_nowait(self, conn: Any, request_id: int, payload: bytes) -> None:
        """PUBLISH_NOWAIT (pipelined): the library named the event from its reserved ids; answered when applied."""
        checked = self._checked_publish(conn, _PUBLISH_NOWAIT, request_id, payload)
        if checked is None:
            return
        h, event_id, publish_time = checked
        client = self.local.clients[conn.id]
        if not client.ids_next <= event_id < client.ids_end or publish_time > time.time_ns() + _CLOCK_SLACK_NS:
            conn.respond(self.id, _PUBLISH_NOWAIT, request_id, int(_E.INVALID_PARAM))  # not its id, or used
            return
        client.ids_next = event_id + 1
        # the request was checked whole; the cluster message reuses its bytes after the channel field
        head = _pack_publish_head(conn.id, request_id, _PUBLISH_NOWAIT, h.channel_id)
        mcast_request(self.api, self.id, conn, _PUBLISH_NOWAIT, request_id, _EXEC_PUBLISH,
                      head + memoryview(payload)[_REQUEST_REST_OFFSET:])

    def _checked_publish(self, conn: Any, request: int, request_id: int, payload: bytes
                         ) -> tuple[ChannelHandle, int, int] | None:
        """A publish request checked whole (strict, into a plain tuple): its handle and names, or answered."""
        fields = self._request_attrs.fixed(payload)  # the name and patterns of the last request again
        if fields is None:
            try:
                fields = _unpack_request(payload)
            except MessageError as exc:
                conn.respond(self.id, request, request_id, int(_decode_error(exc)))
                return None
            self._request_attrs.remember(payload, fields[5], fields[6], len(fields[7]))
        channel, event_id, publish_time, priority, retention_ns = fields[:5]
        h = self.handles.get(conn, channel)
        if h is None or not h.open:
            conn.respond(self.id, request, request_id, int(_E.BAD_HANDLE))
            return None
        if priority > LOWEST_PRIORITY or retention_ns > wire._MAX_RETENTION_NS:
            conn.respond(self.id, request, request_id, int(_E.INVALID_PARAM))
            return None
        if not h.flags & CHANNEL_PUBLISHER:
            conn.respond(self.id, request, request_id, int(_E.ACCESS))
            return None
        return h, event_id, publish_time

    def _lib_reserve(self, conn: Any, request_id: int, payload: bytes) -> None:
        """A block of event ids for the connection: unique in the cluster, each block twice the last."""
        client = self.local.clients[conn.id]
        count = min(max(client.ids_block * 2, ID_BLOCK_FIRST), ID_BLOCK_MOST)
        if self._seq + count > 0xFFFFFFFF:  # this node's sequence numbers wrap (after 4 billion ids)
            self._seq = 0
        first = (self.api.nodeid & 0xFFFFFFFF) << 32 | (self._seq + 1)
        self._seq += count
        client.ids_next, client.ids_end, client.ids_block = first, first + count, count
        conn.respond(self.id, Request.RESERVE, request_id, _OK, wire.IdBlock.pack(first, count))

    def _lib_subscribe(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.SubscribeRequest.decode(payload)
        except MessageError as exc:
            conn.respond(self.id, Request.SUBSCRIBE, request_id, int(_decode_error(exc)))
            return
        h = self.handles.get(conn, req.channel)
        if h is None or not h.open:
            conn.respond(self.id, Request.SUBSCRIBE, request_id, int(_E.BAD_HANDLE))
            return
        if not h.flags & CHANNEL_SUBSCRIBER:
            conn.respond(self.id, Request.SUBSCRIBE, request_id, int(_E.ACCESS))
            return
        if req.subscription_id in h.subs or req.subscription_id in h.pending:
            conn.respond(self.id, Request.SUBSCRIBE, request_id, int(_E.EXIST))
            return
        msg = m.Subscribe.pack(conn.id, request_id, h.channel_id, h.handle, req.subscription_id, req.filters)
        if self._mcast(conn, Request.SUBSCRIBE, request_id, Exec.SUBSCRIBE, msg):
            h.pending.add(req.subscription_id)

    def _lib_unsubscribe(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.UnsubscribeRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.UNSUBSCRIBE, request_id, int(_E.INVALID_PARAM))
            return
        h = self.handles.get(conn, req.channel)
        if h is None or not h.open:
            conn.respond(self.id, Request.UNSUBSCRIBE, request_id, int(_E.BAD_HANDLE))
            return
        if req.subscription_id not in h.subs:
            conn.respond(self.id, Request.UNSUBSCRIBE, request_id, int(_E.NOT_EXIST))
            return
        del h.subs[req.subscription_id]
        if not h.subs:
            self.local.unindex(h)
        self.local.relabel(h, req.subscription_id)
        self.outbox.send(Exec.UNSUBSCRIBE, m.Unsubscribe.pack(h.channel_id, h.handle, req.subscription_id))
        conn.respond(self.id, Request.UNSUBSCRIBE, request_id, _OK)

    def _lib_clear(self, conn: Any, request_id: int, payload: bytes) -> None:
        h = self._handle_of(conn, Request.CLEAR, request_id, payload, wire.ClearRequest)
        if h is None:
            return
        req = wire.ClearRequest.decode(payload)
        if req.event_id <= wire.MAX_RESERVED_EVENT_ID:
            conn.respond(self.id, Request.CLEAR, request_id, int(_E.INVALID_PARAM))
            return
        self._mcast(conn, Request.CLEAR, request_id, Exec.CLEAR,
                    m.Clear.pack(conn.id, request_id, h.channel_id, req.event_id, time.time_ns()))

    def _lib_pull(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            req = wire.PullRequest.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.PULL, request_id, int(_E.INVALID_PARAM))
            return
        client = self.local.clients.get(conn.id)
        if client is None:
            conn.respond(self.id, Request.PULL, request_id, int(_E.BAD_HANDLE))
            return
        conn.respond(self.id, Request.PULL, request_id, _OK, self.local.pull(client, req.max_count))

    def _lib_ack(self, conn: Any, request_id: int, payload: bytes) -> None:
        """One-way (no answer): the library's running total of pushed events taken; push what waits."""
        if len(payload) != wire.ACK.size:
            conn.respond(self.id, Request.ACK, request_id, int(_E.INVALID_PARAM))
            return
        client = self.local.clients.get(conn.id)
        if client is not None:
            self.local.ack(client, wire.ACK.unpack(payload)[0])

    def _lib_dump(self, conn: Any, request_id: int, payload: bytes) -> None:
        doc = self.dump()
        text = json.dumps(doc, sort_keys=True)
        if len(text) > DUMP_MAX:  # too much to list: keep the counts, leave out the retained events' details
            for chan in doc["channels"]:
                chan["retained"] = len(chan["retained"])
            doc["handles"] = len(doc["handles"])
            doc["truncated"] = True
            text = json.dumps(doc, sort_keys=True)[:DUMP_MAX]
        conn.respond(self.id, Request.DUMP, request_id, _OK, wire.DumpResponse.pack(text))

    # -- cluster messages -------------------------------------------------------------------------

    def _exec(self, exec_id: int, cls: type) -> Any:
        def handler(sender: int, payload: bytes) -> None:
            try:
                msg = cls.decode(payload)
            except MessageError as exc:
                self.malformed += 1
                log.warning("dropping malformed EVT message %s from node %d: %s", Exec(exec_id).name, sender, exc)
                return
            msg = self._remapped(msg)
            effects = self.state.apply(sender, exec_id, msg)
            if exec_id == Exec.PUBLISH:
                for effect in effects:  # the delivered form is the tail of the cluster message: no re-encoding
                    if isinstance(effect, Deliver) and effect.event._body is None:
                        effect.event._body = bytes(memoryview(payload)[m.PUBLISH_BODY_OFFSET:])
            self._effects(sender, effects, _REQUEST_OF.get(exec_id, 0))

        return handler

    def _exec_publish(self, sender: int, payload: bytes) -> None:
        """The hot path of EXEC PUBLISH: strict plain-tuple decode, no effect objects, the answer inline."""
        fields = self._publish_attrs.split(payload)  # the name and patterns of the last event again: not decoded
        if fields is None:
            try:
                fields = _unpack_publish(payload)
            except MessageError as exc:
                self.malformed += 1
                log.warning("dropping malformed EVT message %s from node %d: %s", Exec.PUBLISH.name, sender, exc)
                return
            self._publish_attrs.remember(payload, fields[8], fields[9], len(fields[10]))
        conn_id, request_id, request, cid, event_id, publish_time, priority, retention_ns, name, patterns, data = \
            fields
        if self._remap:
            cid = self._remap.get(cid, cid)
        error, event = self.state.publish(sender, cid, event_id, publish_time, priority, retention_ns, name,
                                          patterns, data)
        if event is not None:
            if retention_ns:
                self.timers.set(event_id, event.deadline_ns)
            local = self.local
            handles = local.subscribed.get(cid)
            if handles:  # no local subscriber: no body to build
                # the delivered form is the tail of the cluster message: no re-encoding, and no copy of
                # immutable bytes (a view of a mutable buffer could change under the queued event)
                view = memoryview(payload)[_BODY_OFFSET:]
                event._body = view if type(payload) is bytes else bytes(view)
                local.deliver_to(handles, event, bool(retention_ns))
        if sender == self.api.nodeid:
            client = self.local.clients.get(conn_id)
            if client is not None:
                if event is not None:
                    client.conn.respond(self.id, request, request_id, _OK, _pack_published(event_id, publish_time))
                else:
                    client.conn.respond(self.id, request, request_id, int(error))

    def _remapped(self, msg: Any) -> Any:
        """A message in flight across a merge may name a channel id the merge folded into another."""
        if not self._remap:
            return msg
        cid = getattr(msg, "channel_id", None)
        if cid in self._remap and not isinstance(msg, m.Open):
            return msg._replace(channel_id=self._remap[cid])
        return msg

    def _effects(self, sender: int, effects: list[Any], request: int = 0) -> None:
        mine = sender == self.api.nodeid
        for effect in effects:
            if isinstance(effect, Deliver):
                self.local.deliver(effect.event, effect.event.event_id in self.state.events)
            elif isinstance(effect, Retain):
                self.timers.set(effect.event_id, effect.deadline_ns)
            elif isinstance(effect, Tombstone):
                self.timers.set(("tombstone", effect.event_id), effect.until_ns)
            elif isinstance(effect, Forgotten):
                self.timers.cancel(("tombstone", effect.event_id))
            elif isinstance(effect, Drop):
                self.timers.cancel(effect.event_id)
                self.local.dropped(effect.channel_id, effect.event_id)
            elif not mine:
                continue
            elif isinstance(effect, Reply):
                self._reply(effect, request)
            elif isinstance(effect, Opened):
                self._opened(effect)
            elif isinstance(effect, Subscribed):
                self._subscribed_here(effect.msg)

    def _reply(self, r: Reply, request: int) -> None:
        client = self.local.clients.get(r.conn_id)
        if client is None:
            return
        if r.value is not None:  # a publish
            client.conn.respond(self.id, request, r.request_id, _OK, _pack_published(r.value.event_id,
                                                                                     r.value.publish_time))
        else:
            client.conn.respond(self.id, request, r.request_id, int(r.error))

    def _opened(self, o: Opened) -> None:
        h = self.handles.lookup(o.handle)
        if h is None:
            if o.handle in self._orphans:
                self._orphans.discard(o.handle)
                if o.error == _E.OK:
                    self.outbox.send(Exec.CLOSE, m.Close.pack(o.channel_id, o.handle))
            return
        client = self.local.clients.get(h.conn_id)
        error = o.error
        if error == _E.OK and h.invocation is None and h.timeout_ns != TIME_END \
                and (time.monotonic() - h.started) * 1e9 > h.timeout_ns:
            error = _E.TIMEOUT  # the caller has given up: close it again at once
            self.outbox.send(Exec.CLOSE, m.Close.pack(o.channel_id, o.handle))
        if error != _E.OK:
            self.handles.remove(h.conn_id, o.handle)
        else:
            h.open = True
            h.channel_id = o.channel_id
        if client is None:
            return
        if h.invocation is not None:
            client.conn.dispatch(self.id, Callback.OPEN_DONE,
                                 wire.OpenDone.pack(h.invocation, o.handle if error == _E.OK else 0, error))
        elif error == _E.OK:
            client.conn.respond(self.id, Request.OPEN, o.request_id, _OK, wire.OpenResponse.pack(o.handle))
        else:
            client.conn.respond(self.id, Request.OPEN, o.request_id, int(error))

    def _subscribed_here(self, msg: m.Subscribe) -> None:
        h = self.handles.lookup(msg.handle)
        client = self.local.clients.get(msg.conn_id)
        if h is None or not h.open or msg.subscription_id not in h.pending:
            if client is not None:
                client.conn.respond(self.id, Request.SUBSCRIBE, msg.request_id, int(_E.BAD_HANDLE))
            return
        h.pending.discard(msg.subscription_id)
        h.subs[msg.subscription_id] = [(f.filter_type, f.pattern) for f in msg.filters]
        self.local.index(h)  # (and compiles its filters afresh)
        if client is not None:
            client.conn.respond(self.id, Request.SUBSCRIBE, msg.request_id, _OK)
        chan = self.state.channels.get(h.channel_id)
        if chan is not None:
            self.local.catch_up(h, chan.retained)

    def _exec_sync(self, sender: int, payload: bytes) -> None:
        try:
            for record in self.transfer.receive(sender, payload):
                self._sync_records.append((sender, m.decode_record(record)))
        except MessageError as exc:
            self.malformed += 1
            log.warning("dropping malformed EVT sync chunk from node %d: %s", sender, exc)

    # -- sync -------------------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Start a round: one member per old partition sends the shared state; everyone its own handles."""
        self._sync_records = []
        self._sync_members = tuple(members)
        representative = not transitional or min(transitional) == self.api.nodeid
        self.transfer.start(ring_id, self._sync_share(representative))

    def _sync_share(self, representative: bool) -> Any:
        if representative:
            yield from self.state.shared_records()
        for handle, _cid, h in self.handles:
            if h.open:
                yield m.RecOpeners.pack(RecordKind.OPENERS, h.channel_id, handle, sorted(h.subs))

    def sync_process(self) -> bool:
        """Send as much of this node's share as the ring takes."""
        return self.transfer.process()

    def sync_activate(self) -> None:
        """Every share is in: the union becomes the state; local subscriptions catch up on retained events."""
        records, self._sync_records = self._sync_records, []
        self.transfer.abort()
        self.state, remap = merge(records, self.state.max_retained_bytes, self.state.max_retained_events)
        self._remap = remap
        if remap:
            log.info("EVT merge folded channels %s", remap)
        handles = [h for _handle, _cid, h in self.handles]
        for h in handles:
            if h.open:
                h.channel_id = remap.get(h.channel_id, h.channel_id)
        self.local.rebuild(handles)
        self.timers.clear()
        self.timers.membership(self._sync_members)
        for event_id, event in self.state.events.items():
            self.timers.set(event_id, event.deadline_ns)
        for event_id, until in self.state.tombstones.items():
            self.timers.set(("tombstone", event_id), until)
        self._seq = max(self._seq, self.state.seqs.get(self.api.nodeid, 0))
        for h in handles:
            if h.open and h.subs:
                h.received &= self.state.events.keys()
                chan = self.state.channels.get(h.channel_id)
                if chan is not None:
                    self.local.catch_up(h, chan.retained)
        self.outbox.flush()

    def sync_abort(self) -> None:
        """The round was interrupted: forget what it collected."""
        self._sync_records = []
        self.transfer.abort()

    # -- helpers ----------------------------------------------------------------------------------

    def _new_id(self) -> int:
        """An id unique in the cluster: this node's id and its next sequence number."""
        self._seq += 1
        return (self.api.nodeid & 0xFFFFFFFF) << 32 | (self._seq & 0xFFFFFFFF)

    def _on_expire(self, key: Any) -> None:
        """This node owns the cluster timers: multicast the end of a retention time or of a tombstone."""
        if isinstance(key, tuple):
            self.api.mcast(self.id, Exec.FORGET, m.Forget.pack(key[1]))
        else:
            self.api.mcast(self.id, Exec.EXPIRE, m.Expire.pack(key))

    def _handle_of(self, conn: Any, request: int, request_id: int, payload: bytes, cls: type) -> Any:
        try:
            req = cls.decode(payload)
        except MessageError:
            conn.respond(self.id, request, request_id, int(_E.INVALID_PARAM))
            return None
        h = self.handles.get(conn, req.channel)
        if h is None or not h.open:
            conn.respond(self.id, request, request_id, int(_E.BAD_HANDLE))
            return None
        return h

    def _mcast(self, conn: Any, request: int, request_id: int, exec_id: int, payload: bytes) -> bool:
        """Multicast for a library request; on failure answer it (TRY_AGAIN or TOO_BIG) and return False."""
        return mcast_request(self.api, self.id, conn, request, request_id, exec_id, payload)


__all__ = ["EventEngine"]
