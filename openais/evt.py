"""The event service (EVT, SA Forum B.01.01 with B.03.01 ``LimitGet``): the library and its IPC messages.

Publishers put events with patterns on named, cluster-wide channels; every
subscription whose filters match an event's patterns receives it, on
whichever node it runs; an event may be retained on its channel so that later
subscribers receive it too::

    import openais
    from openais import evt

    def event_deliver(subscription_id, event, event_data_size):
        print(event.attributes_get().patterns, event.data_get())
        event.free()

    with evt.initialize(event_deliver=event_deliver) as h:
        flags = evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER
        with h.channel_open("alarms", flags, timeout=5.0) as ch:
            ch.event_subscribe([evt.EventFilter(evt.PREFIX_FILTER, b"disk")], 1)
            with ch.event_allocate() as e:
                e.attributes_set([b"disk.full"], evt.HIGHEST_PRIORITY, 60.0, "monitor")
                e.publish(b"97%")
            h.dispatch(openais.DISPATCH_ALL)

Delivery: the executive queues the events of a library handle, one queue
per priority, and pushes them, head first, in EVENT frames on the dispatch
socket: each frame carries one whole event (attributes and data), so
``fileno()`` is readable while an event waits and ``dispatch`` calls
``event_deliver`` once per frame, with nothing to fetch.  How many events
may be on their way unread is a window: the library acknowledges what it has
delivered (ACK, a one-way request, when a frame asks for it), which lets the
executive push more; a handle that does not dispatch has its events wait,
and overflow, in the executive's queue.  The IPC messages are defined once
here and imported by the executive's EVT engine (``plugins.evt``).
"""

from __future__ import annotations

import enum
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from openais import TIME_END, TIME_UNKNOWN, _common
from openais._client import DISPATCH_ALL, DISPATCH_BLOCKING, DISPATCH_ONE, Handle
from openais._objects import ObjectHandle
from openais.errors import (
    Access,
    AisError,
    BadFlags,
    BadHandle,
    Init,
    InvalidParam,
    Library,
    SaAisError,
    TooBig,
)
from openais.message import U8, U32, U64, Bool, Bytes, Enum, List, Message, Optional, Str, Tail

__all__ = [
    "CHANNEL_CREATE", "CHANNEL_PUBLISHER", "CHANNEL_SUBSCRIBER", "DATA_MAX_LEN", "EVENTID_LOST", "EVENTID_NONE",
    "EXACT_FILTER", "HIGHEST_PRIORITY", "LIMITS", "LOST_EVENT_PATTERN", "LOWEST_PRIORITY", "MAX_RESERVED_EVENT_ID",
    "PASS_ALL_FILTER", "PREFIX_FILTER", "SERVICE_ID", "SUFFIX_FILTER", "Channel", "Event", "EventAttributes",
    "EventFilter", "EvtHandle", "FilterType", "LimitId", "initialize",
]

#: Service id of EVT.
SERVICE_ID = 4

CHANNEL_PUBLISHER = 0x1
CHANNEL_SUBSCRIBER = 0x2
CHANNEL_CREATE = 0x4
_OPEN_FLAGS = CHANNEL_PUBLISHER | CHANNEL_SUBSCRIBER | CHANNEL_CREATE

HIGHEST_PRIORITY = 0
LOWEST_PRIORITY = 3

EVENTID_NONE = 0
EVENTID_LOST = 1
MAX_RESERVED_EVENT_ID = 1000
LOST_EVENT_PATTERN = b"SA_EVT_LOST_EVENT_PATTERN"
DATA_MAX_LEN = 65536

#: Longest channel or publisher name, in bytes of UTF-8 (SA_MAX_NAME_LENGTH).
MAX_NAME = 256


class FilterType(enum.IntEnum):
    """SaEvtEventFilterTypeT."""

    PREFIX = 1
    SUFFIX = 2
    EXACT = 3
    PASS_ALL = 4


PREFIX_FILTER = FilterType.PREFIX
SUFFIX_FILTER = FilterType.SUFFIX
EXACT_FILTER = FilterType.EXACT
PASS_ALL_FILTER = FilterType.PASS_ALL


class LimitId(enum.IntEnum):
    """SaEvtLimitIdT (B.03.01)."""

    MAX_NUM_CHANNELS = 1
    MAX_EVT_SIZE = 2
    MAX_PATTERN_SIZE = 3
    MAX_NUM_PATTERNS = 4
    MAX_RETENTION_DURATION = 5


MAX_NUM_CHANNELS = 1024
MAX_EVT_SIZE = DATA_MAX_LEN
MAX_PATTERN_SIZE = 256
MAX_NUM_PATTERNS = 64
MAX_RETENTION_DURATION = 604800.0
_MAX_RETENTION_NS = int(MAX_RETENTION_DURATION * 1e9)

#: What ``limit_get`` answers (the executive enforces the same values).
LIMITS: dict[LimitId, int | float] = {
    LimitId.MAX_NUM_CHANNELS: MAX_NUM_CHANNELS,
    LimitId.MAX_EVT_SIZE: MAX_EVT_SIZE,
    LimitId.MAX_PATTERN_SIZE: MAX_PATTERN_SIZE,
    LimitId.MAX_NUM_PATTERNS: MAX_NUM_PATTERNS,
    LimitId.MAX_RETENTION_DURATION: MAX_RETENTION_DURATION,
}

#: Most events one PULL answer carries, and (roughly) its bytes.
PULL_MAX_EVENTS = 256
PULL_MAX_BYTES = 512 * 1024
#: Head of an EVENT callback frame: channel handle, subscription id, flags, data size; an EventBody follows.
PUSH_HEAD = struct.Struct("!QIBI")
#: EVENT flags: more events wait in the executive; acknowledge (ACK) once this one is delivered.
PUSH_MORE = 0x1
PUSH_ACK = 0x2
#: The payload of an ACK: how many pushed events the library has taken in all (modulo 2**32).
ACK = struct.Struct("!I")
#: Taken events after which an ACK that was asked for goes out even in the middle of a dispatch.
PUSH_ACK_AFTER = 32


class EventFilter(NamedTuple):
    """SaEvtEventFilterT: filter *i* of a subscription is tested against pattern *i* of an event."""

    filter_type: FilterType
    filter: bytes = b""


class EventAttributes(NamedTuple):
    """What ``Event.attributes_get`` returns (the out-parameters of saEvtEventAttributesGet)."""

    patterns: list[bytes]
    priority: int
    retention_time: float
    publisher_name: str
    publish_time: int
    event_id: int


def matches(filters: Sequence[tuple[int, bytes]], patterns: Sequence[bytes]) -> bool:
    """True when every filter passes against the pattern of its position (``b""`` past the last pattern).

    PREFIX: the pattern starts with the filter; SUFFIX: ends with it; EXACT: equal; PASS_ALL: always.
    Extra patterns are not tested; an empty filter list matches every event.  (Shared with the engine.)
    """
    count = len(patterns)
    for i, (ftype, want) in enumerate(filters):
        if ftype == FilterType.PASS_ALL:
            continue
        have = patterns[i] if i < count else b""
        if ftype == FilterType.PREFIX:
            if not have.startswith(want):
                return False
        elif ftype == FilterType.SUFFIX:
            if not have.endswith(want):
                return False
        elif have != want:
            return False
    return True


# -- IPC messages ---------------------------------------------------------------------------------


class Request(enum.IntEnum):
    """Library request message ids."""

    OPEN = 0  #: OpenRequest -> OpenResponse (async: empty; the answer comes as OPEN_DONE)
    CLOSE = 1  #: ChannelRequest -> empty
    UNLINK = 2  #: NameRequest -> empty
    PUBLISH = 3  #: PublishRequest (id and time 0: the executive names the event) -> PublishResponse when applied
    SUBSCRIBE = 4  #: SubscribeRequest -> empty
    UNSUBSCRIBE = 5  #: UnsubscribeRequest -> empty
    CLEAR = 6  #: ClearRequest -> empty
    PULL = 7  #: PullRequest -> PullResponse (the waiting events in the answer; the library no longer uses it)
    DUMP = 8  #: empty -> DumpResponse (JSON, for openais-evttool)
    ACK = 9  #: ACK struct, one-way (no answer): pushed events taken, the window opens again
    RESERVE = 10  #: empty -> IdBlock: event ids this connection may give the events it publishes
    PUBLISH_NOWAIT = 11  #: PublishRequest (pipelined, the id from a reserved block) -> PublishResponse when applied


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    EVENT = 0  #: PUSH_HEAD + EventBody: one event for one channel handle and subscription
    OPEN_DONE = 1  #: OpenDone: the answer to channel_open_async
    READY = 2  #: (no longer sent) events wait: PULL them


class Filter(Message):
    """One filter of a subscription."""

    filter_type = Enum(FilterType)
    pattern = Bytes(max_len=MAX_PATTERN_SIZE)


class OpenRequest(Message):
    """Open (and maybe create) a channel; ``invocation`` set for the async call."""

    name = Str(max_len=MAX_NAME, min_len=1)
    flags = U32()
    timeout_ns = U64()  #: TIME_END: no timeout
    invocation = Optional(U64())


class OpenResponse(Message):
    """The executive's handle of the opened channel."""

    channel = U64()


class OpenDone(Message):
    """OPEN_DONE callback: the result of an async open."""

    invocation = U64()
    channel = U64()
    error = Enum(SaAisError, width=4)


class ChannelRequest(Message):
    """A request naming one channel handle (CLOSE)."""

    channel = U64()


class NameRequest(Message):
    """A request naming a channel (UNLINK)."""

    name = Str(max_len=MAX_NAME, min_len=1)


class PublishRequest(Message):
    """Publish an event on an open channel (the data is the rest of the frame).

    For PUBLISH both names are 0 and the executive gives them; for PUBLISH_NOWAIT the library
    names the event: ``event_id`` from a block the executive reserved for this connection
    (RESERVE), ``publish_time`` from the library's clock (the executive's: the same host).
    """

    channel = U64()
    event_id = U64()
    publish_time = U64()
    priority = U8()
    retention_ns = U64()
    publisher_name = Str(max_len=MAX_NAME)
    patterns = List(Bytes(max_len=MAX_PATTERN_SIZE), max_count=MAX_NUM_PATTERNS)
    data = Tail(max_len=MAX_EVT_SIZE)


class PublishResponse(Message):
    """The id and publish time of a published event (the answer once the local node has applied it)."""

    event_id = U64()
    publish_time = U64()


class IdBlock(Message):
    """Event ids reserved for one connection: ``first`` .. ``first + count - 1``, unique in the cluster."""

    first = U64()
    count = U32()


class SubscribeRequest(Message):
    """Subscribe on a channel handle."""

    channel = U64()
    subscription_id = U32()
    filters = List(Filter, max_count=MAX_NUM_PATTERNS)


class UnsubscribeRequest(Message):
    """End one subscription of a channel handle."""

    channel = U64()
    subscription_id = U32()


class ClearRequest(Message):
    """Clear the retention time of one event of a channel."""

    channel = U64()
    event_id = U64()


class PullRequest(Message):
    """Fetch up to ``max_count`` waiting events, highest priority first (0: push me the next one instead)."""

    max_count = U32()


class EventBody(Message):
    """An event as delivered: attributes and data (encoded once per event, shared by every receiver)."""

    event_id = U64()
    publish_time = U64()
    priority = U8()
    retention_ns = U64()
    publisher_name = Str(max_len=MAX_NAME)
    patterns = List(Bytes(max_len=MAX_PATTERN_SIZE), max_count=MAX_NUM_PATTERNS)
    data = Tail(max_len=MAX_EVT_SIZE)


class Delivered(Message):
    """One waiting event for one channel handle and subscription (``body`` is an encoded EventBody)."""

    channel = U64()
    subscription_id = U32()
    body = Bytes(max_len=1 << 18, view=True)


class PullResponse(Message):
    """Waiting events in delivery order; ``more`` when others still wait."""

    more = Bool()
    events = List(Delivered, max_count=PULL_MAX_EVENTS)


class DumpResponse(Message):
    """The engine's state as JSON (channels, retained events, this node's subscriptions)."""

    json = Str(max_len=1 << 20)


# -- argument checks ------------------------------------------------------------------------------


def check_name(name: Any, what: str = "name") -> str:
    """A channel or publisher name: str of 1..256 bytes of UTF-8 (InvalidParam / NameTooLong)."""
    return _common.check_name(name, what, MAX_NAME)


def _check_uint(value: Any, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise InvalidParam(f"{what} must be an int in 0..2**{bits}-1, not {value!r}")
    return value


def _check_flags(flags: Any) -> int:
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise InvalidParam(f"channel_open_flags must be an int, not {type(flags).__name__}")
    if flags == 0 or flags & ~_OPEN_FLAGS:
        raise BadFlags(f"channel_open_flags {flags:#x}: a non-empty combination of PUBLISHER, SUBSCRIBER, CREATE")
    return flags


def _check_patterns(patterns: Any) -> list[bytes]:
    if isinstance(patterns, (bytes, bytearray, memoryview, str)) or not isinstance(patterns, Sequence):
        raise InvalidParam("patterns must be a sequence of bytes")
    out = []
    for p in patterns:
        if not isinstance(p, (bytes, bytearray, memoryview)):
            raise InvalidParam(f"a pattern must be bytes, not {type(p).__name__}")
        out.append(bytes(p))
    if len(out) > MAX_NUM_PATTERNS:
        raise TooBig(f"{len(out)} patterns, at most {MAX_NUM_PATTERNS}")
    for p in out:
        if len(p) > MAX_PATTERN_SIZE:
            raise TooBig(f"a pattern of {len(p)} bytes, at most {MAX_PATTERN_SIZE}")
    return out


def _check_filters(filters: Any) -> list[Filter]:
    if not isinstance(filters, Sequence) or isinstance(filters, (bytes, bytearray, str)):
        raise InvalidParam("filters must be a sequence of EventFilter")
    out = []
    for f in filters:
        if not isinstance(f, tuple) or len(f) != 2:
            raise InvalidParam(f"a filter must be an EventFilter, not {f!r}")
        ftype, pattern = f
        if isinstance(ftype, bool) or not isinstance(ftype, int):
            raise InvalidParam(f"filter_type must be a FilterType, not {ftype!r}")
        try:
            ftype = FilterType(ftype)
        except ValueError:
            raise InvalidParam(f"filter_type {ftype!r} is not a FilterType") from None
        if not isinstance(pattern, (bytes, bytearray, memoryview)):
            raise InvalidParam(f"a filter must be bytes, not {type(pattern).__name__}")
        out.append(Filter(ftype, bytes(pattern)))
    if len(out) > MAX_NUM_PATTERNS:
        raise TooBig(f"{len(out)} filters, at most {MAX_NUM_PATTERNS}")
    for f in out:
        if len(f.pattern) > MAX_PATTERN_SIZE:
            raise TooBig(f"a filter of {len(f.pattern)} bytes, at most {MAX_PATTERN_SIZE}")
    return out


def _check_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise InvalidParam(f"{what} must be a non-negative number of seconds, not {value!r}")
    return float(value)


# -- the library ----------------------------------------------------------------------------------

ChannelOpenFn = Callable[[int, "Channel | None", SaAisError], None]
EventDeliverFn = Callable[[int, "Event", int], None]


_DEFAULT_ATTRS = EventAttributes([], LOWEST_PRIORITY, 0.0, "", TIME_UNKNOWN, EVENTID_NONE)
#: Seconds ``publish(wait=False)`` waits for room in the handle's window of events in flight before TryAgain.
PUBLISH_ROOM_WAIT = 5.0
#: Bytes of events in flight per handle with ``publish(wait=False)``: two of the largest (an event is
#: answered only once applied, so the window must keep the ring busy), below the default 208 KiB
#: socket buffer, so that a send never blocks on a parked executive.
PUBLISH_WINDOW_BYTES = 176 * 1024
_PUBLISHED = struct.Struct("!QQ")  # PublishResponse: event id, publish time
_NAMES = struct.Struct("!QQQ")  # PublishRequest's first fields: channel, event id, publish time
_EVENT_ID = struct.Struct("!Q")  # the first field of an EventBody


class Event(ObjectHandle):
    """An event: allocated by this process (to publish) or delivered to it (read-only).

    A delivered event keeps the encoded body the executive pushed and decodes it on first use.
    """

    def __init__(self, channel: Channel, delivered: EventBody | bytes | memoryview | None = None) -> None:
        super().__init__(channel, 0)
        self._channel = channel
        self._delivered = delivered is not None
        self._prefix: bytes | None = None  # the encoded PublishRequest up to the data, for these attributes
        self._body: Any = None
        if delivered is None:
            self._attrs: EventAttributes | None = _DEFAULT_ATTRS
            self._data: bytes | None = b""
        elif isinstance(delivered, EventBody):
            self._attrs = EventAttributes(list(delivered.patterns), delivered.priority,
                                          delivered.retention_ns / 1e9, delivered.publisher_name,
                                          delivered.publish_time, delivered.event_id)
            self._data = bytes(delivered.data)
        else:
            self._attrs = None
            self._data = None
            self._body = delivered

    @classmethod
    def _pushed(cls, channel: Channel, children: dict, body: memoryview) -> Event:
        """A delivered event around the body the executive pushed (``__init__`` for the hot path of dispatch).

        ``children`` is the channel's table of object handles (see :class:`~openais._objects.ObjectHandle`).
        """
        event = cls.__new__(cls)
        event.__dict__.update(_parent=channel, object_id=0, _closed=False, _channel=channel, _delivered=True,
                              _prefix=None, _body=body, _attrs=None, _data=None)
        children[id(event)] = event
        return event

    def _check(self) -> None:
        """Raise BadHandle unless the event is usable (ObjectHandle._check without its property chain)."""
        if self._closed:
            raise BadHandle("the event was closed")
        channel = self._channel
        if channel._closed or channel._handle._finalized:
            raise BadHandle("its library handle was finalized")

    def _decode(self) -> None:
        """Decode the pushed body into the attributes and the data."""
        event_id, publish_time, priority, retention_ns, name, patterns, data = EventBody.unpack(self._body)
        self._attrs = EventAttributes(patterns, priority, retention_ns / 1e9, name, publish_time, event_id)
        self._data = bytes(data)
        self._body = None

    def free(self) -> None:
        """saEvtEventFree: later uses raise BadHandle."""
        self._check()  # ObjectHandle.close, inline: an event has nothing to close in the executive
        self._closed = True
        self._channel.__dict__.get("_object_handles", {}).pop(id(self), None)

    def attributes_set(self, patterns: Sequence[bytes], priority: int, retention_time: float,
                       publisher_name: str) -> None:
        """saEvtEventAttributesSet: the attributes the next ``publish`` carries."""
        self._check()
        pats = _check_patterns(patterns)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= LOWEST_PRIORITY:
            raise InvalidParam(f"priority must be an int 0..{LOWEST_PRIORITY}, not {priority!r}")
        if retention_time is None:
            raise InvalidParam("retention_time must be a number of seconds, not None")
        retention = _check_seconds(retention_time, "retention_time")
        if retention > MAX_RETENTION_DURATION:
            raise InvalidParam(f"retention_time {retention} s is above {MAX_RETENTION_DURATION} s")
        check_name(publisher_name, "publisher_name")
        if self._delivered:
            raise Access("a delivered event is read-only")
        if not self._channel.flags & CHANNEL_PUBLISHER:
            raise Access("the channel was not opened with CHANNEL_PUBLISHER")
        a = self._attrs
        self._attrs = EventAttributes(pats, priority, retention, publisher_name, a.publish_time, a.event_id)
        self._prefix = None

    def attributes_get(self) -> EventAttributes:
        """saEvtEventAttributesGet."""
        self._check()
        a = self._attrs
        if a is None:
            self._decode()
            a = self._attrs
        return EventAttributes(list(a.patterns), a.priority, a.retention_time, a.publisher_name, a.publish_time,
                               a.event_id)

    def pattern_free(self, patterns: Any = None) -> None:
        """saEvtEventPatternFree: nothing to free in Python."""
        self._check()

    def data_get(self) -> bytes:
        """saEvtEventDataGet: the whole payload of a delivered event."""
        self._check()
        if not self._delivered:
            raise BadHandle("data_get needs a delivered event (this one was allocated here)")
        if self._data is None:
            self._decode()
        return self._data

    def publish(self, data: bytes = b"", *, wait: bool = True) -> int:
        """saEvtEventPublish: the event id, once the local node has handled the event (the contract).

        ``wait=False`` (an extension, for throughput): return as soon as the event is on its
        way, as CPG's ``mcast`` does.  The library then names the event itself (an id from a
        block the executive reserved for this handle, and its publish time), every error of the
        contract's row is still found here, and an error the executive finds when it applies
        the event (the retention store full, say) is raised by the handle's next call,
        ``dispatch``, ``flush`` or ``finalize``.  Events of one handle keep their order either
        way; ``flush()`` waits until the local node has handled all of them.  While the
        handle's window of events in flight is full, the call waits for room up to
        ``PUBLISH_ROOM_WAIT`` seconds, then raises ``TryAgain`` (nothing was sent).
        """
        self._check()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidParam(f"data must be bytes, not {type(data).__name__}")
        if len(data) > MAX_EVT_SIZE:
            raise TooBig(f"event data of {len(data)} bytes, at most {MAX_EVT_SIZE}")
        if self._delivered:
            raise Access("a delivered event cannot be published")
        channel = self._channel
        if not channel.flags & CHANNEL_PUBLISHER:
            raise Access("the channel was not opened with CHANNEL_PUBLISHER")
        channel._check()
        a = self._attrs
        rest = self._prefix
        if rest is None:  # the request between its names and its data: made once per attributes
            rest = self._prefix = PublishRequest.pack(0, 0, 0, a.priority, round(a.retention_time * 1e9),
                                                      a.publisher_name, a.patterns, b"")[_NAMES.size:]
        handle = channel._handle
        if wait:  # the executive names the event and answers once the local node has handled it
            answer = handle._call(Request.PUBLISH, b"".join((_NAMES.pack(channel.object_id, 0, 0), rest, data)))
            if len(answer) != _PUBLISHED.size:
                PublishResponse.decode(answer)  # raises the decoding error
            event_id, publish_time = _PUBLISHED.unpack(answer)
        else:
            with handle._publish_lock:  # ids leave in the order they are taken (the executive checks it)
                event_id = handle._ids_next
                if event_id >= handle._ids_end:
                    event_id = handle._reserve_ids()
                publish_time = time.time_ns()
                handle._send_pipelined(Request.PUBLISH_NOWAIT,
                                       b"".join((_NAMES.pack(channel.object_id, event_id, publish_time), rest, data)),
                                       room_wait=PUBLISH_ROOM_WAIT, window_bytes=PUBLISH_WINDOW_BYTES)
                handle._ids_next = event_id + 1
        self._attrs = EventAttributes(a.patterns, a.priority, a.retention_time, a.publisher_name, publish_time,
                                      event_id)
        return event_id


class Channel(ObjectHandle):
    """An open event channel (saEvtChannelOpen)."""

    def __init__(self, handle: EvtHandle, object_id: int, name: str, flags: int) -> None:
        super().__init__(handle, object_id)
        self._handle = handle
        self.name = name
        self.flags = flags
        #: subscriptions in effect, oldest first (an event pushed for one that ended since is relabelled or dropped)
        self._subs: dict[int, list[tuple[int, bytes]]] = {}
        handle._channels[object_id] = self

    @property
    def _finalized(self) -> bool:
        """Its events are unusable once the channel is closed (ObjectHandle checks this)."""
        return self.closed

    def _close(self) -> None:
        self._handle._channels.pop(self.object_id, None)
        if not self._handle._finalized and not self._handle._dead:
            self._handle._call(Request.CLOSE, ChannelRequest.pack(self.object_id))

    def event_allocate(self) -> Event:
        """saEvtEventAllocate: an event with the default attributes."""
        self._check()
        return Event(self)

    def event_subscribe(self, filters: Sequence[EventFilter], subscription_id: int) -> None:
        """saEvtEventSubscribe: events ordered after this call returns are matched against ``filters``."""
        self._check()
        if self._handle._deliver_fn is None:
            raise Init("event_subscribe needs an event_deliver callback")
        wire = _check_filters(filters)
        _check_uint(subscription_id, 32, "subscription_id")
        if not self.flags & CHANNEL_SUBSCRIBER:
            raise Access("the channel was not opened with CHANNEL_SUBSCRIBER")
        self._handle._call(Request.SUBSCRIBE, SubscribeRequest.pack(self.object_id, subscription_id, wire))
        self._subs[subscription_id] = [(f.filter_type, f.pattern) for f in wire]

    def event_unsubscribe(self, subscription_id: int) -> None:
        """saEvtEventUnsubscribe."""
        self._check()
        _check_uint(subscription_id, 32, "subscription_id")
        self._handle._call(Request.UNSUBSCRIBE, UnsubscribeRequest.pack(self.object_id, subscription_id))
        self._subs.pop(subscription_id, None)

    def event_retention_time_clear(self, event_id: int) -> None:
        """saEvtEventRetentionTimeClear: remove a retained event from the whole cluster now."""
        self._check()
        _check_uint(event_id, 64, "event_id")
        if event_id <= MAX_RESERVED_EVENT_ID:
            raise InvalidParam(f"event id {event_id} is reserved (0..{MAX_RESERVED_EVENT_ID})")
        self._handle._call(Request.CLEAR, ClearRequest.pack(self.object_id, event_id))


class EvtHandle(Handle):
    """An EVT library handle (saEvtInitialize)."""

    def __init__(self, channel_open: ChannelOpenFn | None = None, event_deliver: EventDeliverFn | None = None, *,
                 version: tuple = ("B", 3, 1), path: str | None = None) -> None:
        _check_version(version)
        self.version = ("B", 3, 1)
        self._open_fn = channel_open
        self._deliver_fn = event_deliver
        self._channels: dict[int, Channel] = {}
        self._pending_opens: dict[int, list[tuple[str, int]]] = {}
        self._dispatch_mode = DISPATCH_ALL
        self._backlog: deque[bytes] = deque()  # EVENT frames read, not yet delivered
        self._publish_lock = threading.Lock()
        self._ids_next = self._ids_end = 0  # the event ids reserved for this handle, not yet used
        super().__init__(SERVICE_ID, path=path)

    def _reserve_ids(self) -> int:
        """Ask the executive for a new block of event ids (publish lock held); returns the first."""
        block = IdBlock.decode(self._call(Request.RESERVE, b""))
        if block.count < 1 or block.first <= MAX_RESERVED_EVENT_ID:
            raise Library(f"the executive reserved no usable event ids: {block}")
        self._ids_next, self._ids_end = block.first, block.first + block.count
        return block.first

    # -- calls --------------------------------------------------------------------------------

    def channel_open(self, name: str, channel_open_flags: int, timeout: float | None = None) -> Channel:
        """saEvtChannelOpen: waits for the cluster; Timeout when ``timeout`` seconds pass first."""
        self._check()
        flags = _check_flags(channel_open_flags)
        check_name(name)
        wait = _common.timeout_ns(timeout, TIME_END)
        call_timeout = 86400.0 * 365 if wait == TIME_END else timeout + 2.0
        answer = self._call(Request.OPEN, OpenRequest.pack(name, flags, wait, None), call_timeout)
        return Channel(self, OpenResponse.decode(answer).channel, name, flags)

    def channel_open_async(self, invocation: int, name: str, channel_open_flags: int) -> None:
        """saEvtChannelOpenAsync: the result goes to the ``channel_open`` callback."""
        self._check()
        if self._open_fn is None:
            raise Init("channel_open_async needs a channel_open callback")
        _common.check_invocation(invocation)
        flags = _check_flags(channel_open_flags)
        check_name(name)
        _common.remember_open(self._pending_opens, invocation, (name, flags))
        try:
            self._call(Request.OPEN, OpenRequest.pack(name, flags, TIME_END, invocation))
        except AisError:
            _common.forget_open(self._pending_opens, invocation)
            raise

    def channel_unlink(self, name: str) -> None:
        """saEvtChannelUnlink: the name is free at once; the channel lives on for its openers."""
        self._check()
        check_name(name)
        self._call(Request.UNLINK, NameRequest.pack(name))

    def limit_get(self, limit_id: LimitId) -> int | float:
        """saEvtLimitGet (B.03.01)."""
        self._check()
        if isinstance(limit_id, bool) or not isinstance(limit_id, int):
            raise InvalidParam(f"limit_id must be a LimitId, not {limit_id!r}")
        try:
            return LIMITS[LimitId(limit_id)]
        except ValueError:
            raise InvalidParam(f"{limit_id} is not a LimitId") from None

    def dump(self) -> str:
        """The executive's EVT state as JSON text (for openais-evttool)."""
        return DumpResponse.decode(self._call(Request.DUMP, b"")).json

    def finalize(self) -> None:
        """saEvtFinalize: closes every channel (and so every event) of this handle.

        Raises, after closing, the error kept from a pipelined publish (``publish(wait=False)``).
        """
        try:
            super().finalize()
        finally:
            self._channels.clear()

    # -- dispatch -------------------------------------------------------------------------------

    #: Pushed events taken (delivered or discarded): in all, and when the last ACK told it; an ACK asked for.
    _taken = 0
    _acked = 0
    _ack_due = False
    #: True while ``dispatch(DISPATCH_ALL)`` reads frames: events are collected, then delivered.
    _collecting = False

    def dispatch(self, flags: int = DISPATCH_ALL) -> None:
        """saEvtDispatch: run pending callbacks (ONE, ALL or BLOCKING).

        Events read together with one whose callback raised are delivered first by the next call.
        """
        self._dispatch_mode = flags
        try:
            if self._backlog and flags in (DISPATCH_ONE, DISPATCH_ALL, DISPATCH_BLOCKING):
                self._check()
                if self._deliver_items() and flags == DISPATCH_ONE:
                    return
            super().dispatch(flags)
        finally:
            if self._ack_due:
                self._ack()

    def _dispatch_all(self) -> None:
        """Read every frame waiting, then deliver their events (one ACK for all of them, if asked)."""
        self._collecting = True
        try:
            super()._dispatch_all()
        finally:
            self._collecting = False
        self._deliver_items()

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.EVENT:
            self._backlog.append(payload)
            if not self._collecting:
                self._deliver_items()
        elif msg_id == Callback.OPEN_DONE:
            if self._backlog:  # the events pushed before it first
                self._deliver_items()
            done = OpenDone.decode(payload)
            name, flags = _common.claim_open(self._pending_opens, done.invocation, ("", 0))
            channel = Channel(self, done.channel, name, flags) if done.error == SaAisError.OK else None
            if self._open_fn is not None:
                self._open_fn(done.invocation, channel, done.error)

    def _deliver_items(self, items: Sequence[bytes] = ()) -> int:
        """Run ``event_deliver`` for the backlog (pushed EVENT frames); what a raising callback leaves stays.

        DISPATCH_ONE delivers one event.  A frame that asks for an ACK has it sent once the events
        are delivered (at once under DISPATCH_BLOCKING and ONE; at the end of the call under ALL).
        """
        backlog = self._backlog
        backlog.extend(items)
        count = 0
        channels = self._channels
        head = PUSH_HEAD
        head_size = head.size
        pushed = Event._pushed
        one = self._dispatch_mode == DISPATCH_ONE
        try:
            while backlog:
                if self._finalized or (count and one):
                    break
                frame = backlog.popleft()
                self._taken += 1
                handle, sid, flags, size = head.unpack_from(frame)
                if flags & PUSH_ACK:
                    self._ack_due = True
                channel = channels.get(handle)
                if channel is None or channel._closed or self._deliver_fn is None:
                    continue
                body = memoryview(frame)[head_size:]
                event = pushed(channel, channel.__dict__.setdefault("_object_handles", {}), body)
                if sid not in channel._subs:  # ended while the event was on its way: as the executive would
                    if _EVENT_ID.unpack_from(body)[0] == EVENTID_LOST:
                        sid = next(iter(channel._subs), None)
                    else:
                        patterns = event.attributes_get().patterns
                        sid = next((s for s, f in channel._subs.items() if matches(f, patterns)), None)
                    if sid is None:
                        event._forget()
                        continue
                count += 1
                self._deliver_fn(sid, event, size)
        finally:
            if self._ack_due and (self._dispatch_mode != DISPATCH_ALL or self._taken - self._acked >= PUSH_ACK_AFTER):
                self._ack()
            # events read but not delivered (DISPATCH_ONE, or a callback raised) keep fileno() readable
            self._selection_pending(self._callbacks_kept())
        return count

    def _callbacks_kept(self) -> bool:
        return bool(self._backlog) or super()._callbacks_kept()

    def _ack(self) -> None:
        """Tell the executive how many pushed events were taken in all (a one-way request).

        A running total, so that ACKs sent by two dispatching threads in either order lose nothing.
        """
        self._ack_due = False
        taken = self._taken
        if taken == self._acked or self._finalized or self._dead:
            return
        self._acked = taken
        try:
            self._send_oneway(Request.ACK, ACK.pack(taken & 0xFFFFFFFF))
        except AisError:
            if not self._finalized:
                raise


def _check_version(version: Any) -> None:
    _common.check_version(version, "EVT", (1, 2, 3), "B.03.01 (release 'B', major 1..3)")


def initialize(channel_open: ChannelOpenFn | None = None, event_deliver: EventDeliverFn | None = None, *,
               version: tuple = ("B", 3, 1), path: str | None = None) -> EvtHandle:
    """saEvtInitialize: connect to the local executive's EVT service."""
    return EvtHandle(channel_open, event_deliver, version=version, path=path)
