"""EVT cluster messages: what the engines multicast to each other, and the records of a sync round.

The sender's nodeid is not carried: the ring delivers it with every message.
``conn_id``/``request_id`` find the asking library connection on the sender's
node (other nodes ignore them).  Decoding is strict (:class:`MessageError`).
"""

from __future__ import annotations

import enum
import struct

from openais.evt import MAX_EVT_SIZE, MAX_NAME, MAX_NUM_PATTERNS, MAX_PATTERN_SIZE, Filter, PublishRequest
from openais.message import U8, U32, U64, Bool, Bytes, List, Message, MessageError, Str, Tail, head_struct

__all__ = [
    "AttrsCache", "Clear", "Close", "Exec", "Expire", "Forget", "MessageError", "Open", "Publish", "RecChannel",
    "RecEvent", "RecOpeners", "RecSeq", "RecTombstone", "RecordKind", "Subscribe", "Unlink", "Unsubscribe",
    "decode_record",
]


class Exec(enum.IntEnum):
    """Cluster message ids of the EVT service."""

    OPEN = 0
    CLOSE = 1
    UNLINK = 2
    PUBLISH = 3
    SUBSCRIBE = 4
    UNSUBSCRIBE = 5
    CLEAR = 6
    EXPIRE = 7
    SYNC = 8
    FORGET = 9


class Open(Message):
    """Handle ``handle`` of the sender opens ``name`` (created as ``channel_id`` if CREATE and it does not exist)."""

    conn_id = U64()
    request_id = U32()
    handle = U64()
    channel_id = U64()
    flags = U32()
    name = Str(max_len=MAX_NAME, min_len=1)


class Close(Message):
    """Handle ``handle`` of the sender's node on ``channel_id`` closed (its subscriptions end with it)."""

    channel_id = U64()
    handle = U64()


class Unlink(Message):
    """Unlink channel ``name``."""

    conn_id = U64()
    request_id = U32()
    name = Str(max_len=MAX_NAME, min_len=1)


class Publish(Message):
    """An event (id and publish time chosen by the publishing node); the data is the rest."""

    conn_id = U64()
    request_id = U32()
    request = U8()  # the library request it answers: PUBLISH or PUBLISH_NOWAIT
    channel_id = U64()
    event_id = U64()
    publish_time = U64()
    priority = U8()
    retention_ns = U64()
    publisher_name = Str(max_len=MAX_NAME)
    patterns = List(Bytes(max_len=MAX_PATTERN_SIZE), max_count=MAX_NUM_PATTERNS)
    data = Tail(max_len=MAX_EVT_SIZE)


#: The fields of a Publish before the ones it shares, byte for byte, with a PUBLISH_NOWAIT request
#: (everything after its channel field, from the event id the library chose): conn_id, request_id,
#: request, channel_id.
PUBLISH_HEAD = head_struct(Publish, stop="event_id")
#: The same for a PUBLISH request, whose event the executive names: then event_id and publish_time too.
PUBLISH_NAMED_HEAD = head_struct(Publish, stop="priority")
#: Offset in an encoded Publish where an encoded :class:`openais.evt.EventBody` starts (event_id onwards).
PUBLISH_BODY_OFFSET = 21
#: Offsets in an encoded PublishRequest after its channel field, and after its event id and publish time.
REQUEST_REST_OFFSET = 8
REQUEST_NAMED_OFFSET = 24
#: The fixed-width head of a Publish (conn_id .. retention_ns) and of a PublishRequest (channel ..
#: retention_ns): the publisher name, the patterns and the data follow at ``.size``.
PUBLISH_FIXED = head_struct(Publish)
REQUEST_FIXED = head_struct(PublishRequest)
#: An encoded empty publisher name and empty pattern list (a U16 length, a U32 count).
_NO_ATTRS = b"\0" * 6


class AttrsCache:
    """The publisher name and patterns of the last publish decoded, by their encoded bytes.

    In a Publish and a PublishRequest the fixed-width fields come first, then the publisher name
    and the patterns (self-delimiting: length- and count-prefixed), then the data to the end.  A
    publisher sends the same name and patterns event after event, so a message whose bytes from
    ``offset`` start with exactly the bytes of the last one's name and patterns has, decoded
    strictly, the same name and patterns, ending at the same offset: :meth:`split` takes them
    from here (the same objects, shared: never mutated) and decodes only the fixed fields, and
    checks the data's length as the strict decoder does.  On a miss the caller decodes the whole
    message strictly and :meth:`remember` keeps its name and patterns.
    """

    __slots__ = ("_fixed", "end", "name", "offset", "patterns", "raw")

    def __init__(self, fixed: struct.Struct) -> None:
        self._fixed = fixed
        self.offset = fixed.size
        self.raw = _NO_ATTRS
        self.end = self.offset + len(_NO_ATTRS)
        self.name = ""
        self.patterns: list[bytes] = []

    def split(self, payload: bytes | memoryview) -> tuple | None:
        """The fixed fields, name, patterns and data of ``payload`` when its name and patterns are the last ones.

        None when they are not (or the data is over its limit): decode strictly instead.
        """
        end = self.end
        if payload[self.offset:end] != self.raw or len(payload) - end > MAX_EVT_SIZE:
            return None
        return *self._fixed.unpack_from(payload, 0), self.name, self.patterns, bytes(payload[end:])

    def fixed(self, payload: bytes | memoryview) -> tuple | None:
        """Only the fixed fields of what :meth:`split` would split (a message checked, its data not needed)."""
        end = self.end
        if payload[self.offset:end] != self.raw or len(payload) - end > MAX_EVT_SIZE:
            return None
        return self._fixed.unpack_from(payload, 0)

    def remember(self, payload: bytes | memoryview, name: str, patterns: list[bytes], data_size: int) -> None:
        """``payload`` was decoded strictly into ``name``, ``patterns`` and ``data_size`` bytes of data."""
        end = len(payload) - data_size
        self.raw = bytes(payload[self.offset:end])
        self.end = end
        self.name = name
        self.patterns = patterns


class Subscribe(Message):
    """A subscription of handle ``handle`` of the sender's node takes effect here in the agreed order."""

    conn_id = U64()
    request_id = U32()
    channel_id = U64()
    handle = U64()
    subscription_id = U32()
    filters = List(Filter, max_count=MAX_NUM_PATTERNS)


class Unsubscribe(Message):
    """Subscription ``subscription_id`` of handle ``handle`` of the sender's node ended."""

    channel_id = U64()
    handle = U64()
    subscription_id = U32()


class Clear(Message):
    """Clear the retention time of event ``event_id`` of ``channel_id`` (``time_ns``: the asking node's clock)."""

    conn_id = U64()
    request_id = U32()
    channel_id = U64()
    event_id = U64()
    time_ns = U64()


class Expire(Message):
    """The owner of the cluster timers says: the retention time of ``event_id`` is over."""

    event_id = U64()


class Forget(Message):
    """The owner of the cluster timers says: the tombstone of ``event_id`` may go."""

    event_id = U64()


# -- sync records ---------------------------------------------------------------------------------


class RecordKind(enum.IntEnum):
    """First byte of every sync record."""

    CHANNEL = 1
    EVENT = 2
    OPENERS = 3
    SEQ = 4
    TOMBSTONE = 5


class RecChannel(Message):
    """A channel of the sender's partition."""

    kind = U8()
    channel_id = U64()
    name = Str(max_len=MAX_NAME, min_len=1)
    unlinked = Bool()


class RecEvent(Message):
    """A retained event of the sender's partition, with its remaining retention decided by its deadline."""

    kind = U8()
    channel_id = U64()
    event_id = U64()
    publish_time = U64()
    priority = U8()
    retention_ns = U64()
    deadline_ns = U64()
    publisher_name = Str(max_len=MAX_NAME)
    patterns = List(Bytes(max_len=MAX_PATTERN_SIZE), max_count=MAX_NUM_PATTERNS)
    data = Bytes(max_len=MAX_EVT_SIZE)


class RecOpeners(Message):
    """One of the sender's own open handles, with its subscription ids."""

    kind = U8()
    channel_id = U64()
    handle = U64()
    subscription_ids = List(U32(), max_count=1 << 20)


class RecSeq(Message):
    """The highest event sequence number the sender's partition saw from ``nodeid``."""

    kind = U8()
    nodeid = U32()
    seq = U32()


class RecTombstone(Message):
    """A retained event the sender's partition removed (cleared or expired), kept until ``until_ns``."""

    kind = U8()
    event_id = U64()
    until_ns = U64()


_RECORDS: dict[int, type[Message]] = {
    RecordKind.CHANNEL: RecChannel, RecordKind.EVENT: RecEvent, RecordKind.OPENERS: RecOpeners,
    RecordKind.SEQ: RecSeq, RecordKind.TOMBSTONE: RecTombstone,
}


def decode_record(data: bytes) -> Message:
    """Decode one sync record by its first byte; MessageError when malformed."""
    if not data:
        raise MessageError("Record", "kind", "empty record")
    cls = _RECORDS.get(data[0])
    if cls is None:
        raise MessageError("Record", "kind", f"unknown record kind {data[0]}")
    return cls.decode(data)
