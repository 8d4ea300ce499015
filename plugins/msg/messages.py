"""The MSG cluster messages, defined once (multicast by engines, applied by :mod:`plugins.msg.state`).

Every message that changes replicated state carries ``time``: the sender's
clock (ns since the epoch) when it sent it.  The state keeps the largest
time delivered so far as its agreed "now" (close times, retention
deadlines), so every node computes the same values without reading a clock.
Messages larger than the ring takes travel as ``Exec.FRAGMENT`` pieces: the shared
:class:`aisexec.outbox.SequencedFragment`.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, NamedTuple

from openais.message import I64, U8, U32, U64, Bool, Bytes, List, Message, MessageError, Str, Tail
from openais.msg import MAX_MESSAGE_SIZE, MAX_NAME, MAX_NUM_QUEUES_PER_GROUP, SendKind


class Exec(enum.IntEnum):
    """Cluster message ids of the MSG service."""

    OPEN = 1
    CLOSE = 2
    CONN_GONE = 3
    RETENTION = 4
    UNLINK = 5
    GROUP = 6
    SEND = 7
    CONSUMED = 8
    REPLY = 9
    WAIT_TIMEOUT = 10
    EXPIRE = 11
    THRESHOLDS = 12
    MOVE = 13
    MOVE_DONE = 14
    FRAGMENT = 15
    SYNC = 16
    TRACK = 17
    SEND_BATCH = 18


class GroupOp(enum.IntEnum):
    """Operations of the GROUP message."""

    CREATE = 1
    INSERT = 2
    REMOVE = 3
    DELETE = 4


class Open(Message):
    """A queue_open (sync or async) from connection ``conn`` of the sender node."""

    time = I64()
    conn = U64()
    request = U32()
    invocation = U64()
    is_async = Bool()
    name = Str(max_len=MAX_NAME, min_len=1)
    has_attrs = Bool()
    creation_flags = U32()
    size = List(U64(), max_count=4)
    retention = I64()
    open_flags = U32()
    handle = U64()  #: the executive-side queue handle the origin will hand out
    pid = U32(default=0)  #: the opening process (for tools)


class Close(Message):
    """The opener closed the queue ``qid`` (its Queue handle)."""

    time = I64()
    conn = U64()
    request = U32()
    qid_node = U32()
    qid_serial = U64()


class ConnGone(Message):
    """A library connection of the sender node is gone: close what it opened, drop what it waits for."""

    time = I64()
    conn = U64()


class Retention(Message):
    """retention_time_set on the open queue ``qid``."""

    time = I64()
    conn = U64()
    request = U32()
    qid_node = U32()
    qid_serial = U64()
    retention = I64()


class Unlink(Message):
    """queue_unlink ``name``."""

    time = I64()
    conn = U64()
    request = U32()
    name = Str(max_len=MAX_NAME, min_len=1)


class Group(Message):
    """Group create / insert / remove / delete."""

    time = I64()
    conn = U64()
    request = U32()
    op = U8()
    group = Str(max_len=MAX_NAME, min_len=1)
    policy = U8()
    queue = Str(max_len=MAX_NAME)


class Send(Message):
    """A message_send / send_async / send_receive; ``body`` is the library's encoded Body, unchanged."""

    time = I64()
    conn = U64()
    request = U32()
    kind = U8()
    invocation = U64()
    ack = U8()
    sender_id = U64()
    send_time = I64()
    destination = Str(max_len=MAX_NAME, min_len=1)
    body = Tail(max_len=MAX_MESSAGE_SIZE + 1024, view=True)


#: Most sends one SEND_BATCH carries.
MAX_BATCH = 4096
_BATCH_HEAD = struct.Struct("!qQH")  # time, conn, destination length (the destination's UTF-8 follows)
_ENTRY_HEAD = struct.Struct("!BIQBQqI")  # kind, request, invocation, ack, sender_id, send_time, body length
_BODY_HEAD = struct.Struct("!IIBB")  # openais.msg.Body: type, version, priority, sender-name flag
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
#: A send's head and its body's head when the body has no sender name (then ``_BODY_FIXED`` + data).
_FAST = struct.Struct("!BIQBQqIIIBBI")
_BODY_FIXED = _BODY_HEAD.size + 4
_KINDS = frozenset(int(k) for k in SendKind)
_SEND_RECEIVE = int(SendKind.SEND_RECEIVE)


class SendEntry(NamedTuple):
    """One send of a :func:`decode_send_batch`: its fields, its body (a view) and the body's priority and length."""

    kind: int
    request: int
    invocation: int
    ack: int
    sender_id: int  #: 0 unless ``kind`` is SEND_RECEIVE (then the reply id, never 0)
    send_time: int
    body: Any  #: the library's encoded :class:`openais.msg.Body`, unchanged
    priority: int
    length: int  #: bytes of message data


def pack_send_batch(time: int, conn: int, destination: bytes, entries: list[tuple]) -> bytes:
    """SEND_BATCH: consecutive sends of connection ``conn`` to one ``destination`` (UTF-8), in call order.

    ``entries``: (kind, request, invocation, ack, sender_id, send_time, body) each.  One cluster
    message instead of one per send: every node decodes it once and applies its sends in order, exactly
    as if they had been delivered one by one at this point of the agreed order.
    """
    parts: list[Any] = [_BATCH_HEAD.pack(time, conn, len(destination)), destination]
    entry = _ENTRY_HEAD.pack
    for kind, request, invocation, ack, sender_id, send_time, body in entries:
        parts.append(entry(kind, request, invocation, ack, sender_id, send_time, len(body)))
        parts.append(body)
    return b"".join(parts)


def _bad(reason: str) -> MessageError:
    return MessageError("SendBatch", None, reason)


def body_meta(raw: Any, offset: int = 0, end: int | None = None) -> tuple[int, int]:
    """(priority, data length) of the encoded :class:`openais.msg.Body` in ``raw[offset:end]``; ValueError
    when it is malformed (the checks of ``Body.decode``, but the sender name's UTF-8, without building it)."""
    end = len(raw) if end is None else end
    try:
        _t, _v, priority, flag = _BODY_HEAD.unpack_from(raw, offset)
        at = offset + _BODY_HEAD.size
        if flag == 1:
            (n,) = _U16.unpack_from(raw, at)
            if n > MAX_NAME:
                raise ValueError(f"sender_name of {n} bytes")
            at += 2 + n
        elif flag != 0:
            raise ValueError(f"sender_name flag {flag}")
        (length,) = _U32.unpack_from(raw, at)
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    if length > MAX_MESSAGE_SIZE:
        raise ValueError(f"message data too big ({length} bytes)")
    if priority > 3 or at + 4 + length != end:
        raise ValueError("malformed message body")
    return priority, length


def decode_send_batch(payload: Any) -> tuple[int, int, str, list[SendEntry]]:
    """(time, conn, destination, entries) of a SEND_BATCH; MessageError unless every byte is as
    :func:`pack_send_batch` writes it (1..MAX_BATCH entries, known kinds, reply ids only on
    SEND_RECEIVE, well-formed bodies, nothing after the last)."""
    view = memoryview(payload)
    total = len(view)
    try:
        time, conn, dlen = _BATCH_HEAD.unpack_from(view, 0)
    except struct.error:
        raise _bad("truncated header") from None
    at = _BATCH_HEAD.size
    if not 0 < dlen <= MAX_NAME or at + dlen > total:
        raise _bad(f"destination of {dlen} bytes")
    try:
        destination = str(view[at:at + dlen], "utf-8")
    except UnicodeDecodeError:
        raise _bad("destination is not UTF-8") from None
    at += dlen
    entries: list[SendEntry] = []
    append = entries.append
    unpack = _ENTRY_HEAD.unpack_from
    fast = _FAST.unpack_from
    head = _ENTRY_HEAD.size
    fast_size = _FAST.size
    kinds = _KINDS
    new = tuple.__new__
    entry_type = SendEntry
    while at < total:
        if len(entries) >= MAX_BATCH:
            raise _bad(f"more than {MAX_BATCH} sends")
        if at + fast_size <= total:  # the common body (no sender name) in the same unpack as the send
            kind, request, invocation, ack, sender_id, send_time, blen, _t, _v, priority, flag, length = fast(view, at)
        elif at + head <= total:
            kind, request, invocation, ack, sender_id, send_time, blen = unpack(view, at)
            flag = -1
        else:
            raise _bad("truncated send")
        start = at + head
        end = start + blen
        if end > total:
            raise _bad("truncated body")
        if kind not in kinds or ack > 1 or (sender_id != 0) != (kind == _SEND_RECEIVE):
            raise _bad(f"bad send (kind {kind}, ack {ack}, sender_id {sender_id})")
        if flag != 0 or priority > 3 or length > MAX_MESSAGE_SIZE or blen != _BODY_FIXED + length:
            try:
                priority, length = body_meta(view, start, end)
            except ValueError as exc:
                raise _bad(str(exc)) from None
        append(new(entry_type, (kind, request, invocation, ack, sender_id, send_time, view[start:end], priority,
                                length)))
        at = end
    if not entries:
        raise _bad("no send")
    return time, conn, destination, entries


class Consumed(Message):
    """The home node handed messages of queue ``qid`` to its opener: (priority, charged bytes) each."""

    time = I64()
    qid_node = U32()
    qid_serial = U64()
    priorities = List(U8(), max_count=4096)
    charges = List(U64(), max_count=4096)


class Reply(Message):
    """A message_reply / reply_async for ``sender_id``."""

    time = I64()
    conn = U64()
    request = U32()
    is_async = Bool()
    invocation = U64()
    ack = U8()
    sender_id = U64()
    send_time = I64()
    body = Tail(max_len=MAX_MESSAGE_SIZE + 1024, view=True)


#: The head of :class:`Reply` before the fields it shares with :class:`openais.msg.ReplyRequest`: a node
#: forwards a library reply request as ``REPLY_HEAD.pack(time, conn, request) + request payload``.
REPLY_HEAD = struct.Struct("!qQI")


class WaitTimeout(Message):
    """The origin node's send_receive ``sender_id`` timed out."""

    time = I64()
    sender_id = U64()


class Track(Message):
    """queue_group_track: applied by the origin node at this point of the agreed order (no missed change)."""

    conn = U64()
    request = U32()
    group = Str(max_len=MAX_NAME, min_len=1)
    flags = U32()
    in_answer = Bool()


class Expire(Message):
    """The retention deadline of queue ``qid`` passed (multicast by the timer owner)."""

    time = I64()
    qid_node = U32()
    qid_serial = U64()
    deadline = I64()


class Thresholds(Message):
    """capacity_thresholds_set on the open queue ``qid``."""

    time = I64()
    conn = U64()
    request = U32()
    qid_node = U32()
    qid_serial = U64()
    reached = List(U64(), max_count=4)
    available = List(U64(), max_count=4)


class Stored(Message):
    """One stored message, as moved between nodes and carried in sync."""

    priority = U8()
    send_time = I64()
    sender_id = U64()
    body = Bytes(max_len=MAX_MESSAGE_SIZE + 1024, view=True)


class Move(Message):
    """Messages of queue ``qid`` moving from the sender node to ``target`` (its new opener's node)."""

    time = I64()
    qid_node = U32()
    qid_serial = U64()
    target = U32()
    items = List(Stored, max_count=1 << 16)


class MoveDone(Message):
    """The sender node holds no more messages of queue ``qid``."""

    time = I64()
    qid_node = U32()
    qid_serial = U64()
    target = U32()


# -- sync records -----------------------------------------------------------------------------------


class RecordKind(enum.IntEnum):
    """Kinds of sync records."""

    META = 1
    QUEUE = 2
    GROUP = 3
    WAIT = 4
    STORE = 5


class Meta(Message):
    """The sender's agreed now and serial counter."""

    now = I64()
    serial = U64()
    side = List(U32(), max_count=1 << 16)  #: members of the sender's previous configuration


class QueueRecord(Message):
    """One queue's replicated attributes (no messages, no usage)."""

    qid_node = U32()
    qid_serial = U64()
    name = Str(max_len=MAX_NAME, min_len=1)
    named = Bool()
    creation_flags = U32()
    size = List(U64(), max_count=4)
    retention = I64()
    retention_now = I64()
    status = U8()
    home = U32()
    opener_conn = U64()
    opener_handle = U64()
    opener_pid = U32()
    receive_cb = Bool()
    close_time = I64()
    deadline = I64()
    reached = List(U64(), max_count=4)
    available = List(U64(), max_count=4)
    reached_flags = List(Bool(), max_count=4)
    open_pending = Bool()
    open_request = U32()
    open_invocation = U64()
    open_async = Bool()


class Cursor(Message):
    """A LOCAL_ROUND_ROBIN cursor of one node."""

    node = U32()
    last = I64()


class GroupRecord(Message):
    """One group."""

    name = Str(max_len=MAX_NAME, min_len=1)
    policy = U8()
    members = List(Str(max_len=MAX_NAME), max_count=MAX_NUM_QUEUES_PER_GROUP)
    last = I64()
    cursors = List(Cursor, max_count=1 << 16)


class WaitRecord(Message):
    """A send_receive waiting for its reply."""

    sender_id = U64()
    node = U32()
    conn = U64()
    request = U32()
    qid_node = U32()
    qid_serial = U64()


class StoreRecord(Message):
    """What the sender node holds of queue ``qid``: bytes and count per area."""

    qid_node = U32()
    qid_serial = U64()
    used = List(U64(), max_count=4)
    counts = List(U32(), max_count=4)


class Record(Message):
    """One sync record: its kind and encoding."""

    kind = U8()
    data = Tail(max_len=1 << 24, view=True)
