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

from openais.message import I64, U8, U32, U64, Bool, Bytes, List, Message, Str, Tail
from openais.msg import MAX_MESSAGE_SIZE, MAX_NAME, MAX_NUM_QUEUES_PER_GROUP


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
