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
per priority.  When the handle has nothing on its way, the executive pushes
the head of the queue in an EVENT frame on the dispatch socket (so
``fileno()`` is readable while an event waits); when that frame says more
wait, ``dispatch`` fetches them, highest priority first, with PULL requests
and calls ``event_deliver`` once per event.  The IPC messages are
defined once here and imported by the executive's EVT engine (``plugins.evt``).
"""

from __future__ import annotations

import contextlib
import enum
import math
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
#: Most events one ``dispatch(DISPATCH_ALL)`` delivers before returning (the rest keep fileno readable).
DISPATCH_ALL_MAX = 4096


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
    PUBLISH = 3  #: PublishRequest -> PublishResponse
    SUBSCRIBE = 4  #: SubscribeRequest -> empty
    UNSUBSCRIBE = 5  #: UnsubscribeRequest -> empty
    CLEAR = 6  #: ClearRequest -> empty
    PULL = 7  #: PullRequest -> PullResponse
    DUMP = 8  #: empty -> DumpResponse (JSON, for openais-evttool)


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    EVENT = 0  #: PullResponse with one event; ``more``: PULL the others (or PULL 0 to have the next pushed)
    OPEN_DONE = 1  #: OpenDone: the answer to channel_open_async
    READY = 2  #: events wait: PULL them (or PULL 0 to have the next pushed)


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
    """Publish an event on an open channel (the data is the rest of the frame)."""

    channel = U64()
    priority = U8()
    retention_ns = U64()
    publisher_name = Str(max_len=MAX_NAME)
    patterns = List(Bytes(max_len=MAX_PATTERN_SIZE), max_count=MAX_NUM_PATTERNS)
    data = Tail(max_len=MAX_EVT_SIZE)


class PublishResponse(Message):
    """The id and publish time given to a published event."""

    event_id = U64()
    publish_time = U64()


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


class Event(ObjectHandle):
    """An event: allocated by this process (to publish) or delivered to it (read-only)."""

    def __init__(self, channel: Channel, delivered: EventBody | None = None) -> None:
        super().__init__(channel, 0)
        self._channel = channel
        self._delivered = delivered is not None
        if delivered is None:
            self._attrs = EventAttributes([], LOWEST_PRIORITY, 0.0, "", TIME_UNKNOWN, EVENTID_NONE)
            self._data = b""
        else:
            self._attrs = EventAttributes(list(delivered.patterns), delivered.priority,
                                          delivered.retention_ns / 1e9, delivered.publisher_name,
                                          delivered.publish_time, delivered.event_id)
            self._data = delivered.data

    def free(self) -> None:
        """saEvtEventFree: later uses raise BadHandle."""
        self.close()

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

    def attributes_get(self) -> EventAttributes:
        """saEvtEventAttributesGet."""
        self._check()
        a = self._attrs
        return a._replace(patterns=list(a.patterns))

    def pattern_free(self, patterns: Any = None) -> None:
        """saEvtEventPatternFree: nothing to free in Python."""
        self._check()

    def data_get(self) -> bytes:
        """saEvtEventDataGet: the whole payload of a delivered event."""
        self._check()
        if not self._delivered:
            raise BadHandle("data_get needs a delivered event (this one was allocated here)")
        return self._data

    def publish(self, data: bytes = b"") -> int:
        """saEvtEventPublish: returns the event id once the local node has handled the event."""
        self._check()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidParam(f"data must be bytes, not {type(data).__name__}")
        if len(data) > MAX_EVT_SIZE:
            raise TooBig(f"event data of {len(data)} bytes, at most {MAX_EVT_SIZE}")
        if self._delivered:
            raise Access("a delivered event cannot be published")
        if not self._channel.flags & CHANNEL_PUBLISHER:
            raise Access("the channel was not opened with CHANNEL_PUBLISHER")
        self._channel._check()
        a = self._attrs
        frame = PublishRequest.pack(self._channel.object_id, a.priority, round(a.retention_time * 1e9),
                                    a.publisher_name, a.patterns, data)
        answer = PublishResponse.decode(self._channel._handle._call(Request.PUBLISH, frame))
        self._attrs = a._replace(event_id=answer.event_id, publish_time=answer.publish_time)
        return answer.event_id


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
        self._backlog: deque[Delivered] = deque()  # fetched, not yet delivered (a callback raised)
        super().__init__(SERVICE_ID, path=path)

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
        """saEvtFinalize: closes every channel (and so every event) of this handle."""
        super().finalize()
        self._channels.clear()

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self, flags: int = DISPATCH_ALL) -> None:
        """saEvtDispatch: run pending callbacks (ONE, ALL or BLOCKING).

        Events fetched together with one whose callback raised are delivered first by the next call.
        """
        self._dispatch_mode = flags
        if self._backlog and flags in (DISPATCH_ONE, DISPATCH_ALL, DISPATCH_BLOCKING):
            self._check()
            if self._deliver_items([]) and flags == DISPATCH_ONE:
                return
        super().dispatch(flags)

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.EVENT:
            pushed = PullResponse.decode(payload)
            self._fetch(pushed.events, pushed.more)
        elif msg_id == Callback.READY:
            self._fetch([], True)
        elif msg_id == Callback.OPEN_DONE:
            done = OpenDone.decode(payload)
            name, flags = _common.claim_open(self._pending_opens, done.invocation, ("", 0))
            channel = Channel(self, done.channel, name, flags) if done.error == SaAisError.OK else None
            if self._open_fn is not None:
                self._open_fn(done.invocation, channel, done.error)

    def _fetch(self, items: list[Delivered], more: bool) -> None:
        """Deliver ``items``; while more wait, fetch them (ALL, BLOCKING: in batches; ONE: one callback).

        When this stops with events still waiting (DISPATCH_ONE, the DISPATCH_ALL cap, or a callback
        that raised), PULL 0 asks the executive to push the next one, so ``fileno()`` stays readable.
        """
        one = self._dispatch_mode == DISPATCH_ONE
        delivered = 0
        try:
            delivered += self._deliver_items(items)
            while more and not self._finalized and not (one and delivered) and delivered < DISPATCH_ALL_MAX:
                response = PullResponse.decode(self._call(Request.PULL, PullRequest.pack(1 if one else
                                                                                         PULL_MAX_EVENTS)))
                more = response.more
                delivered += self._deliver_items(response.events)
        except BaseException:
            if more:
                with contextlib.suppress(AisError):
                    self._rearm()
            raise
        if more:
            self._rearm()

    def _rearm(self) -> None:
        if self._finalized or self._dead:
            return
        try:
            self._call(Request.PULL, PullRequest.pack(0))
        except AisError:
            if not self._finalized:
                raise

    def _deliver_items(self, items: list[Delivered]) -> int:
        """Run ``event_deliver`` for the backlog, then ``items`` (what a raising callback leaves stays queued)."""
        backlog = self._backlog
        backlog.extend(items)
        count = 0
        while backlog:
            if self._finalized or (count and self._dispatch_mode == DISPATCH_ONE):
                break
            item = backlog.popleft()
            channel = self._channels.get(item.channel)
            if channel is None or channel.closed or self._deliver_fn is None:
                continue
            body = EventBody.decode(item.body)
            sid = item.subscription_id
            if sid not in channel._subs:  # ended while the event was on its way: as the executive would
                if body.event_id == EVENTID_LOST:
                    sid = next(iter(channel._subs), None)
                else:
                    sid = next((s for s, f in channel._subs.items() if matches(f, body.patterns)), None)
                if sid is None:
                    continue
            event = Event(channel, body)
            count += 1
            self._deliver_fn(sid, event, len(event._data))
        return count


def _check_version(version: Any) -> None:
    _common.check_version(version, "EVT", (1, 2, 3), "B.03.01 (release 'B', major 1..3)")


def initialize(channel_open: ChannelOpenFn | None = None, event_deliver: EventDeliverFn | None = None, *,
               version: tuple = ("B", 3, 1), path: str | None = None) -> EvtHandle:
    """saEvtInitialize: connect to the local executive's EVT service."""
    return EvtHandle(channel_open, event_deliver, version=version, path=path)
