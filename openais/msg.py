"""MSG: message queues and queue groups (SA Forum MSG B.03.01), library side and IPC messages.

The contract is ``reference/api/msg.md``: named queues any process of the
cluster sends to, opened (and read) by one process at a time on its node,
four priority areas, request/reply, queue groups with four policies,
tracking and capacity thresholds.

Unlike the other handles, a :class:`MsgHandle` may have several calls
outstanding at once (``message_get`` or ``message_send_receive`` blocked in
one thread never delays another thread's call): answers are matched to their
callers by request id, one caller at a time reading the socket for all.
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from openais import _common
from openais._client import DISPATCH_ALL, Handle
from openais._objects import ObjectHandle
from openais.errors import (
    AisError,
    BadFlags,
    Init,
    InvalidParam,
    NameTooLong,
    SaAisError,
    Timeout,
    TooBig,
    TryAgain,
    Version,
)
from openais.message import (
    I64,
    U8,
    U32,
    U64,
    Bool,
    Bytes,
    List,
    Message,
    MessageError,
    Optional,
    Str,
    Tail,
)

SERVICE_ID = 6
VERSION = ("B", 3, 1)

QUEUE_PERSISTENT = 0x1
QUEUE_CREATE = 0x1
QUEUE_RECEIVE_CALLBACK = 0x2
QUEUE_EMPTY = 0x4
MESSAGE_DELIVERED_ACK = 0x1
HIGHEST_PRIORITY = 0
LOWEST_PRIORITY = 3
METADATA_SIZE = 64
try:  # the openais values, re-exported
    from openais import TRACK_CHANGES, TRACK_CHANGES_ONLY, TRACK_CURRENT
except ImportError:  # pragma: no cover - an openais/__init__ without them
    TRACK_CURRENT, TRACK_CHANGES, TRACK_CHANGES_ONLY = 0x1, 0x2, 0x4

MAX_NAME = 256
MAX_MESSAGE_SIZE = 1 << 20
MAX_REPLY_SIZE = 1 << 20
MAX_PRIORITY_AREA_SIZE = 16 << 20
MAX_QUEUE_SIZE = 32 << 20
MAX_NUM_QUEUES = 1024
MAX_NUM_QUEUE_GROUPS = 256
MAX_NUM_QUEUES_PER_GROUP = 64
#: ns value meaning "no timeout" / "forever" on the wire.
FOREVER = -1
#: Pipelined ``message_send_async``: seconds a full window waits for room (then TryAgain), and its bytes.
SEND_ROOM_WAIT = 0.05
SEND_WINDOW_BYTES = 2 << 20


class QueueCreationFlags(enum.IntFlag):
    """Creation flags of a queue."""

    PERSISTENT = QUEUE_PERSISTENT


class QueueOpenFlags(enum.IntFlag):
    """Open flags of ``queue_open``."""

    CREATE = QUEUE_CREATE
    RECEIVE_CALLBACK = QUEUE_RECEIVE_CALLBACK
    EMPTY = QUEUE_EMPTY


class QueueGroupPolicy(enum.IntEnum):
    """How a queue group spreads messages over its members."""

    ROUND_ROBIN = 1
    LOCAL_ROUND_ROBIN = 2
    LOCAL_BEST_QUEUE = 3
    BROADCAST = 4


class QueueGroupChange(enum.IntEnum):
    """Change of one member in a tracking notification."""

    NO_CHANGE = 1
    ADDED = 2
    REMOVED = 3
    STATE_CHANGED = 4


class CapacityStatus(enum.IntEnum):
    """SaMsgQueueCapacityStatusT (reported here through the two capacity callbacks)."""

    QUEUE_CAPACITY_REACHED = 1
    QUEUE_CAPACITY_AVAILABLE = 2
    QUEUE_GROUP_CAPACITY_REACHED = 3
    QUEUE_GROUP_CAPACITY_AVAILABLE = 4


class LimitId(enum.IntEnum):
    """Ids of ``limit_get``."""

    MAX_PRIORITY_AREA_SIZE = 1
    MAX_QUEUE_SIZE = 2
    MAX_NUM_QUEUES = 3
    MAX_NUM_QUEUE_GROUPS = 4
    MAX_NUM_QUEUES_PER_GROUP = 5
    MAX_MESSAGE_SIZE = 6
    MAX_REPLY_SIZE = 7


LIMITS = {
    LimitId.MAX_PRIORITY_AREA_SIZE: MAX_PRIORITY_AREA_SIZE, LimitId.MAX_QUEUE_SIZE: MAX_QUEUE_SIZE,
    LimitId.MAX_NUM_QUEUES: MAX_NUM_QUEUES, LimitId.MAX_NUM_QUEUE_GROUPS: MAX_NUM_QUEUE_GROUPS,
    LimitId.MAX_NUM_QUEUES_PER_GROUP: MAX_NUM_QUEUES_PER_GROUP, LimitId.MAX_MESSAGE_SIZE: MAX_MESSAGE_SIZE,
    LimitId.MAX_REPLY_SIZE: MAX_REPLY_SIZE,
}


# -- structures ---------------------------------------------------------------------------------


class QueueCreationAttributes(NamedTuple):
    """Creation attributes: flags, bytes per priority area (0..3), retention in seconds (None = forever)."""

    creation_flags: int = 0
    size: tuple[int, int, int, int] = (65536, 65536, 65536, 65536)
    retention_time: float | None = 0.0


class QueueUsage(NamedTuple):
    """Usage of one priority area."""

    queue_size: int
    queue_used: int
    number_of_messages: int


class QueueStatus(NamedTuple):
    """What ``queue_status_get`` returns."""

    creation_flags: int
    retention_time: float | None
    close_time: int
    queue_usage: tuple[QueueUsage, ...]


class MsgMessage(NamedTuple):
    """A message: type, version, data, priority, sender name."""

    type: int = 0
    version: int = 0
    data: bytes = b""
    priority: int = LOWEST_PRIORITY
    sender_name: str | None = None


class ReceivedMessage(NamedTuple):
    """A message got from a queue (or a reply): the message, its send time (ns), the reply id (or 0)."""

    message: MsgMessage
    send_time: int
    sender_id: int


class QueueThresholds(NamedTuple):
    """Capacity thresholds per priority area (bytes of queue_used)."""

    capacity_reached: tuple[int, int, int, int]
    capacity_available: tuple[int, int, int, int]


class Notification(NamedTuple):
    """One member of a tracked group and its change."""

    member: str
    change: QueueGroupChange


class NotificationBuffer(NamedTuple):
    """Members of a tracked group (with changes) and the group's policy."""

    notifications: list[Notification]
    queue_group_policy: QueueGroupPolicy


# -- IPC messages ---------------------------------------------------------------------------------


class Request(enum.IntEnum):
    """IPC request ids of the MSG service."""

    QUEUE_OPEN = 1
    QUEUE_CLOSE = 2
    STATUS_GET = 3
    RETENTION_SET = 4
    UNLINK = 5
    GROUP_CREATE = 6
    GROUP_INSERT = 7
    GROUP_REMOVE = 8
    GROUP_DELETE = 9
    GROUP_TRACK = 10
    GROUP_TRACK_STOP = 11
    SEND = 12
    GET = 13
    CANCEL = 14
    REPLY = 15
    THRESHOLDS_SET = 16
    THRESHOLDS_GET = 17
    DUMP = 18


class Callback(enum.IntEnum):
    """IPC callback ids of the MSG service."""

    QUEUE_OPEN = 1
    GROUP_TRACK = 2
    DELIVERED = 3
    RECEIVED = 4
    CAPACITY_REACHED = 5
    CAPACITY_AVAILABLE = 6
    QUEUE_LOST = 7


class SendKind(enum.IntEnum):
    """How a send wants its answer."""

    SYNC = 0
    ASYNC = 1
    SEND_RECEIVE = 2


class Body(Message):
    """A message as stored and carried: forwarded unchanged from sender to getter."""

    type = U32()
    version = U32()
    priority = U8()
    sender_name = Optional(Str(max_len=MAX_NAME))
    data = Bytes(max_len=MAX_MESSAGE_SIZE, view=True)


class OpenRequest(Message):
    """QUEUE_OPEN (sync and async): attributes are present when ``has_attrs``."""

    invocation = U64()
    is_async = Bool()
    name = Str(max_len=MAX_NAME, min_len=1)
    has_attrs = Bool()
    creation_flags = U32()
    size = List(U64(), max_count=4)
    retention = I64()
    open_flags = U32()
    timeout = I64()


class OpenAnswer(Message):
    """Answer to QUEUE_OPEN: the executive-side queue handle."""

    queue = U64()


class OpenCallback(Message):
    """QUEUE_OPEN callback of ``queue_open_async``."""

    invocation = U64()
    error = U32()
    queue = U64()
    name = Str(max_len=MAX_NAME)


class QueueRequest(Message):
    """A request about one open queue."""

    queue = U64()


class RetentionRequest(Message):
    """RETENTION_SET."""

    queue = U64()
    retention = I64()


class NameRequest(Message):
    """A request naming a queue or group."""

    name = Str(max_len=MAX_NAME, min_len=1)


class Usage(Message):
    """One area's usage."""

    size = U64()
    used = U64()
    count = U32()


class StatusAnswer(Message):
    """Answer to STATUS_GET."""

    creation_flags = U32()
    retention = I64()
    close_time = I64()
    usage = List(Usage, max_count=4)


class GroupRequest(Message):
    """GROUP_CREATE (policy), GROUP_INSERT / GROUP_REMOVE (queue), GROUP_DELETE."""

    group = Str(max_len=MAX_NAME, min_len=1)
    policy = U8()
    queue = Str(max_len=MAX_NAME)


class TrackRequest(Message):
    """GROUP_TRACK: flags and whether the current set comes back in the answer."""

    group = Str(max_len=MAX_NAME, min_len=1)
    flags = U32()
    in_answer = Bool()


class Note(Message):
    """One notification."""

    member = Str(max_len=MAX_NAME)
    change = U8()


class TrackNotice(Message):
    """GROUP_TRACK answer or callback."""

    group = Str(max_len=MAX_NAME)
    policy = U8()
    members = U32()
    error = U32()
    notes = List(Note, max_count=MAX_NUM_QUEUES_PER_GROUP * 2)


class SendRequest(Message):
    """SEND: send, send_async or send_receive; ``body`` is an encoded :class:`Body`."""

    kind = U8()
    invocation = U64()
    ack = U8()
    timeout = I64()
    send_time = I64()
    destination = Str(max_len=MAX_NAME, min_len=1)
    body = Tail(max_len=MAX_MESSAGE_SIZE + 1024, view=True)


class ReplyRequest(Message):
    """REPLY (sync or async)."""

    is_async = Bool()
    invocation = U64()
    ack = U8()
    sender_id = U64()
    send_time = I64()
    body = Tail(max_len=MAX_REPLY_SIZE + 1024, view=True)


class GetRequest(Message):
    """GET with a timeout (ns, FOREVER)."""

    queue = U64()
    timeout = I64()


class GotMessage(Message):
    """Answer to GET and to a send_receive: send time, reply id, the encoded Body."""

    send_time = I64()
    sender_id = U64()
    body = Tail(max_len=MAX_MESSAGE_SIZE + 1024, view=True)


class ThresholdsRequest(Message):
    """THRESHOLDS_SET (and answer of THRESHOLDS_GET, queue 0)."""

    queue = U64()
    reached = List(U64(), max_count=4)
    available = List(U64(), max_count=4)


class DeliveredCallback(Message):
    """DELIVERED callback."""

    invocation = U64()
    error = U32()


class QueueCallback(Message):
    """RECEIVED, CAPACITY_* and QUEUE_LOST callbacks: the queue handle (and a priority)."""

    queue = U64()
    priority = U8()


class DumpAnswer(Message):
    """DUMP answer: the engine's state as JSON."""

    json = Tail(max_len=16 << 20)


__all__ = [
    "HIGHEST_PRIORITY",
    "LOWEST_PRIORITY",
    "MAX_MESSAGE_SIZE",
    "MAX_REPLY_SIZE",
    "MESSAGE_DELIVERED_ACK",
    "METADATA_SIZE",
    "QUEUE_CREATE",
    "QUEUE_EMPTY",
    "QUEUE_PERSISTENT",
    "QUEUE_RECEIVE_CALLBACK",
    "SERVICE_ID",
    "TRACK_CHANGES",
    "TRACK_CHANGES_ONLY",
    "TRACK_CURRENT",
    "VERSION",
    "CapacityStatus",
    "LimitId",
    "MsgHandle",
    "Notification",
    "NotificationBuffer",
    "Queue",
    "QueueCreationAttributes",
    "QueueCreationFlags",
    "QueueGroupChange",
    "QueueGroupPolicy",
    "QueueOpenFlags",
    "QueueStatus",
    "QueueThresholds",
    "QueueUsage",
    "ReceivedMessage",
    "initialize",
]
# ``msg.Message`` is the contract's message structure; the wire base class stays importable as
# ``openais.message.Message``.
WireMessage = Message
Message = MsgMessage  # type: ignore[misc,assignment]
__all__.append("Message")


# -- conversions ----------------------------------------------------------------------------------


def seconds_to_ns(value: float | None, what: str) -> int:
    """A duration in seconds as ns on the wire (None: FOREVER); InvalidParam when negative or not a number."""
    if value is None:
        return FOREVER
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParam(f"{what} must be a number of seconds or None, not {value!r}")
    if value < 0:
        raise InvalidParam(f"{what} must not be negative ({value})")
    return min(int(value * 1e9), 0x7FFFFFFFFFFFFFFE)


def ns_to_seconds(value: int) -> float | None:
    """Inverse of :func:`seconds_to_ns`."""
    return None if value < 0 else value / 1e9


def check_name(name: Any, what: str = "name") -> str:
    """A queue or group name: str of 1..256 UTF-8 bytes (InvalidParam, NameTooLong beyond)."""
    return _common.check_name(name, what, MAX_NAME)


def _u32(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidParam(f"{what} must be a u32, not {value!r}")
    return value


#: The common encoded Body (no sender name): type, version, priority, flag 0, data length; the data follows.
_BODY_PLAIN = struct.Struct("!IIBBI")
#: A GotMessage whose body has no sender name: send_time, sender_id and that Body head.
_GOT_PLAIN = struct.Struct("!qQIIBBI")


def encode_body(message: Any, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """Validate a :class:`Message` and encode it (InvalidParam, TooBig, NameTooLong)."""
    if type(message) is not MsgMessage and not isinstance(message, MsgMessage):
        raise InvalidParam(f"not a msg.Message: {type(message).__name__}")
    mtype, version, data, p, sender = message
    if type(mtype) is not int or not 0 <= mtype <= 0xFFFFFFFF:
        _u32(mtype, "message.type")
    if type(version) is not int or not 0 <= version <= 0xFFFFFFFF:
        _u32(version, "message.version")
    if (type(p) is not int and (isinstance(p, bool) or not isinstance(p, int))) or not 0 <= p <= LOWEST_PRIORITY:
        raise InvalidParam(f"priority must be 0..3, not {p!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParam("message.data must be bytes")
    if len(data) > max_size:
        raise TooBig(f"message data of {len(data)} bytes exceeds {max_size}")
    if sender is None:  # the common case: one struct and the data (what Body.pack writes)
        return _BODY_PLAIN.pack(mtype, version, p, 0, len(data)) + data
    if not isinstance(sender, str):
        raise InvalidParam("sender_name must be a str or None")
    if len(sender.encode("utf-8")) > MAX_NAME:
        raise NameTooLong(f"sender_name is longer than {MAX_NAME} bytes")
    return Body.pack(mtype, version, p, sender, data)


def decode_body(raw: bytes | memoryview) -> MsgMessage:
    """The :class:`Message` an encoded Body holds (data copied)."""
    b = Body.decode(raw)
    return MsgMessage(b.type, b.version, bytes(b.data), b.priority, b.sender_name)


def decode_got(payload: bytes) -> ReceivedMessage:
    """A GET / send_receive answer as a ReceivedMessage (MessageError when malformed)."""
    if len(payload) >= _GOT_PLAIN.size:  # the common answer, in one unpack; anything else decoded strictly
        send_time, sender_id, mtype, version, priority, flag, length = _GOT_PLAIN.unpack_from(payload)
        if flag == 0 and length <= MAX_MESSAGE_SIZE and len(payload) == _GOT_PLAIN.size + length:
            return ReceivedMessage(MsgMessage(mtype, version, payload[_GOT_PLAIN.size:], priority, None),
                                   send_time, sender_id)
    got = GotMessage.decode(payload)
    return ReceivedMessage(decode_body(got.body), got.send_time, got.sender_id)


def notification_buffer(notice: Any) -> NotificationBuffer:
    """A TrackNotice as a NotificationBuffer."""
    notes = [Notification(n.member, QueueGroupChange(n.change)) for n in notice.notes]
    policy = QueueGroupPolicy(notice.policy) if notice.policy else QueueGroupPolicy.ROUND_ROBIN
    return NotificationBuffer(notes, policy)


def check_attrs(attrs: Any) -> tuple[int, list[int], int]:
    """Validate creation attributes; return (flags, sizes, retention ns)."""
    if not isinstance(attrs, QueueCreationAttributes):
        raise InvalidParam("creation_attributes must be a msg.QueueCreationAttributes")
    flags = attrs.creation_flags
    if isinstance(flags, bool) or not isinstance(flags, int) or flags not in (0, QUEUE_PERSISTENT):
        raise BadFlags(f"creation_flags must be 0 or QUEUE_PERSISTENT, not {flags!r}")
    size = attrs.size
    if (not isinstance(size, (tuple, list)) or len(size) != 4
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in size)):
        raise InvalidParam("size must be four ints >= 0")
    if any(s > MAX_PRIORITY_AREA_SIZE for s in size) or sum(size) > MAX_QUEUE_SIZE:
        raise TooBig(f"a priority area above {MAX_PRIORITY_AREA_SIZE} or a queue above {MAX_QUEUE_SIZE} bytes")
    return int(flags), [int(s) for s in size], seconds_to_ns(attrs.retention_time, "retention_time")


# -- handles -------------------------------------------------------------------------------------------


class Queue(ObjectHandle):
    """An open message queue (``saMsgQueueHandleT``): get, cancel, thresholds, retention, close."""

    def __init__(self, parent: MsgHandle, object_id: int, name: str) -> None:
        super().__init__(parent, object_id)
        self.name = name
        self.handle = parent

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self._check()
        return self._parent._calls.call(msg_id, payload, timeout)

    def _close(self) -> None:
        # The handle is gone for the caller whatever happens, so a TryAgain (sync running) is retried
        # here: giving up would leave the queue open in the executive until the library handle goes.
        self._parent._queues.pop(self.object_id, None)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self._call(Request.QUEUE_CLOSE, QueueRequest.pack(self.object_id))
                return
            except TryAgain:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def retention_time_set(self, retention_time: float | None) -> None:
        """Retention of this (non-persistent) queue for its next close; BadOperation when persistent."""
        self._check()
        ns = seconds_to_ns(retention_time, "retention_time")
        self._call(Request.RETENTION_SET, RetentionRequest.pack(self.object_id, ns))

    def message_get(self, timeout: float | None = None) -> ReceivedMessage:
        """The oldest message of the highest-priority area; waits ``timeout`` s (None: forever)."""
        self._check()
        ns = seconds_to_ns(timeout, "timeout")
        wait = None if timeout is None else timeout + 5.0
        return decode_got(self._call(Request.GET, GetRequest.pack(self.object_id, ns), wait))

    def message_cancel(self) -> None:
        """Wake every message_get blocked on this queue with Interrupt (NotExist when none is)."""
        self._call(Request.CANCEL, QueueRequest.pack(self.object_id))

    def capacity_thresholds_set(self, thresholds: QueueThresholds) -> None:
        """Set the capacity thresholds (0 <= available <= reached <= size per area)."""
        self._check()
        self._parent._need_b3()
        if not isinstance(thresholds, QueueThresholds):
            raise InvalidParam("thresholds must be a msg.QueueThresholds")
        reached, available = thresholds.capacity_reached, thresholds.capacity_available
        for seq in (reached, available):
            if (not isinstance(seq, (tuple, list)) or len(seq) != 4
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seq)):
                raise InvalidParam("thresholds need four ints >= 0 each")
        if any(a > r for a, r in zip(available, reached, strict=False)):
            raise InvalidParam("capacity_available above capacity_reached")
        try:
            payload = ThresholdsRequest.pack(self.object_id, list(reached), list(available))
        except MessageError as exc:
            raise InvalidParam(str(exc)) from None
        self._call(Request.THRESHOLDS_SET, payload)

    def capacity_thresholds_get(self) -> QueueThresholds:
        """The capacity thresholds of this queue."""
        self._check()
        self._parent._need_b3()
        t = ThresholdsRequest.decode(self._call(Request.THRESHOLDS_GET, QueueRequest.pack(self.object_id)))
        return QueueThresholds(tuple(t.reached), tuple(t.available))  # type: ignore[arg-type]


class MsgHandle(Handle):
    """A MSG library handle (``saMsgHandleT``)."""

    #: A call waits while the executive lives (message_get waits as long as it is told).
    _call_wait = None
    _posted_what = "message_send_async"

    def __init__(self, callbacks: dict[str, Callable[..., Any] | None], version: tuple[str, int, int],
                 path: str | None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self._callbacks = callbacks
        self.version = VERSION
        self._major = version[1]
        self._queues: dict[int, Queue] = {}
        self._checked: set[str] = set()  # destinations an async send found valid (later ones are pipelined)

    # -- helpers ------------------------------------------------------------------

    def _need_b3(self) -> None:
        if self._major < 3:
            raise Version("this call needs MSG B.03 (initialize with version ('B', 3, x))")

    def _cb(self, name: str) -> Callable[..., Any] | None:
        return self._callbacks.get(name)

    # -- queues -----------------------------------------------------------------------

    def _open_payload(self, invocation: int, is_async: bool, name: str, attrs: Any, open_flags: Any,
                      timeout_ns: int) -> bytes:
        check_name(name)
        if isinstance(open_flags, bool) or not isinstance(open_flags, int):
            raise InvalidParam(f"open_flags must be an int, not {open_flags!r}")
        if open_flags & ~(QUEUE_CREATE | QUEUE_RECEIVE_CALLBACK | QUEUE_EMPTY):
            raise BadFlags(f"unknown open flags {open_flags:#x}")
        if attrs is not None:
            flags, size, retention = check_attrs(attrs)
        else:
            flags, size, retention = 0, [0, 0, 0, 0], 0
        if (attrs is None) == bool(open_flags & QUEUE_CREATE):
            raise InvalidParam("creation attributes go with QUEUE_CREATE, and only with it")
        if open_flags & QUEUE_RECEIVE_CALLBACK and self._cb("message_received") is None:
            raise Init("QUEUE_RECEIVE_CALLBACK needs a message_received callback")
        return OpenRequest.pack(invocation, is_async, name, attrs is not None, flags, size, retention,
                                int(open_flags), timeout_ns)

    def queue_open(self, name: str, creation_attributes: QueueCreationAttributes | None = None,
                   open_flags: int = 0, timeout: float | None = None) -> Queue:
        """Open (or with QUEUE_CREATE create) the queue ``name``; it lives on this node while open."""
        self._check()
        ns = seconds_to_ns(timeout, "timeout")
        payload = self._open_payload(0, False, name, creation_attributes, open_flags, ns)
        if timeout == 0:
            raise Timeout("timeout 0")
        # the executive answers TIMEOUT itself when ``timeout`` passes (and then closes a late open)
        answer = OpenAnswer.decode(self._call(Request.QUEUE_OPEN, payload, None if timeout is None else timeout + 5.0))
        return self._new_queue(answer.queue, name)

    def _new_queue(self, object_id: int, name: str) -> Queue:
        queue = Queue(self, object_id, name)
        self._queues[object_id] = queue
        return queue

    def queue_open_async(self, invocation: int, name: str,
                         creation_attributes: QueueCreationAttributes | None = None, open_flags: int = 0) -> None:
        """Open asynchronously; the answer comes through ``queue_open(invocation, queue, error)``."""
        self._check()
        _common.check_invocation(invocation)
        if self._cb("queue_open") is None:
            raise Init("queue_open_async needs a queue_open callback")
        payload = self._open_payload(invocation, True, name, creation_attributes, open_flags, FOREVER)
        self._call(Request.QUEUE_OPEN, payload)

    def queue_status_get(self, name: str) -> QueueStatus:
        """Status of the queue ``name`` (NotExist)."""
        self._check()
        s = StatusAnswer.decode(self._call(Request.STATUS_GET, NameRequest.pack(check_name(name))))
        usage = tuple(QueueUsage(u.size, u.used, u.count) for u in s.usage)
        return QueueStatus(s.creation_flags, ns_to_seconds(s.retention), s.close_time, usage)

    def queue_unlink(self, name: str) -> None:
        """Delete the queue ``name`` (an open one when its opener closes it); the name is free at once."""
        self._check()
        self._call(Request.UNLINK, NameRequest.pack(check_name(name)))

    # -- groups -----------------------------------------------------------------------

    def queue_group_create(self, group: str, policy: QueueGroupPolicy | int) -> None:
        """Create the queue group ``group`` with ``policy``."""
        self._check()
        check_name(group, "group")
        if isinstance(policy, bool) or not isinstance(policy, int) or policy not in set(QueueGroupPolicy):
            raise InvalidParam(f"policy must be 1..4, not {policy!r}")
        self._call(Request.GROUP_CREATE, GroupRequest.pack(group, int(policy), ""))

    def queue_group_insert(self, group: str, queue: str) -> None:
        """Append the queue ``queue`` to the members of ``group``."""
        self._check()
        self._call(Request.GROUP_INSERT, GroupRequest.pack(check_name(group, "group"), 0, check_name(queue)))

    def queue_group_remove(self, group: str, queue: str) -> None:
        """Remove ``queue`` from the members of ``group``."""
        self._check()
        self._call(Request.GROUP_REMOVE, GroupRequest.pack(check_name(group, "group"), 0, check_name(queue)))

    def queue_group_delete(self, group: str) -> None:
        """Delete the group ``group`` (its queues stay)."""
        self._check()
        self._call(Request.GROUP_DELETE, GroupRequest.pack(check_name(group, "group"), 0, ""))

    def queue_group_track(self, group: str, flags: int, buffer: bool | None = None) -> NotificationBuffer | None:
        """Track ``group`` (TRACK_CURRENT / TRACK_CHANGES / TRACK_CHANGES_ONLY)."""
        self._check()
        check_name(group, "group")
        if (isinstance(flags, bool) or not isinstance(flags, int) or not flags
                or flags & ~(TRACK_CURRENT | TRACK_CHANGES | TRACK_CHANGES_ONLY)
                or (flags & TRACK_CHANGES and flags & TRACK_CHANGES_ONLY)):
            raise BadFlags(f"bad track flags {flags!r}")
        has_cb = self._cb("queue_group_track") is not None
        if flags & (TRACK_CHANGES | TRACK_CHANGES_ONLY) and not has_cb:
            raise Init("TRACK_CHANGES and TRACK_CHANGES_ONLY need a queue_group_track callback")
        in_answer = bool(flags & TRACK_CURRENT) and (bool(buffer) if buffer is not None else not has_cb)
        if flags & TRACK_CURRENT and not in_answer and not has_cb:
            raise Init("TRACK_CURRENT without a buffer needs a queue_group_track callback")
        answer = self._call(Request.GROUP_TRACK, TrackRequest.pack(group, flags, in_answer))
        if not in_answer:
            return None
        return notification_buffer(TrackNotice.decode(answer))

    def queue_group_track_stop(self, group: str) -> None:
        """Stop tracking ``group`` (NotExist when this handle does not track it)."""
        self._check()
        self._call(Request.GROUP_TRACK_STOP, NameRequest.pack(check_name(group, "group")))

    # -- messages ---------------------------------------------------------------------

    def _send_payload(self, kind: SendKind, invocation: int, ack: int, timeout_ns: int, destination: str,
                      message: Any) -> bytes:
        check_name(destination, "destination")
        body = encode_body(message)
        return SendRequest.pack(int(kind), invocation, ack, timeout_ns, time.time_ns(), destination, body)

    def message_send(self, destination: str, message: MsgMessage, timeout: float | None = None) -> None:
        """Send ``message`` to a queue or group; returns once it is stored."""
        self._check()
        ns = seconds_to_ns(timeout, "timeout")
        payload = self._send_payload(SendKind.SYNC, 0, 0, ns, destination, message)
        if timeout == 0:
            raise Timeout("timeout 0")
        self._call(Request.SEND, payload, timeout)

    def message_send_async(self, invocation: int, destination: str, message: MsgMessage, ack_flags: int = 0) -> None:
        """Send without waiting for storage; with MESSAGE_DELIVERED_ACK the outcome comes to message_delivered."""
        self._check()
        _common.check_invocation(invocation)
        self._check_ack(ack_flags)
        payload = self._send_payload(SendKind.ASYNC, invocation, ack_flags, FOREVER, destination, message)
        if destination in self._checked:  # known to exist and be available: pipelined
            try:
                self._send_pipelined(Request.SEND, payload, room_wait=SEND_ROOM_WAIT, window_bytes=SEND_WINDOW_BYTES)
            except AisError as exc:
                if not isinstance(exc, TryAgain):
                    self._checked.clear()  # a destination went away: check the next sends at once again
                raise
            return
        self._call(Request.SEND, payload)  # the first send to a destination is checked at once
        if len(self._checked) > 1024:
            self._checked.clear()
        self._checked.add(destination)

    def _check_ack(self, ack_flags: Any) -> None:
        if isinstance(ack_flags, bool) or not isinstance(ack_flags, int) or ack_flags & ~MESSAGE_DELIVERED_ACK:
            raise BadFlags(f"unknown ack flags {ack_flags!r}")
        if ack_flags and self._cb("message_delivered") is None:
            raise Init("MESSAGE_DELIVERED_ACK needs a message_delivered callback")

    def message_send_receive(self, destination: str, message: MsgMessage,
                             timeout: float | None = None) -> ReceivedMessage:
        """Send ``message`` and wait for its reply (``ReceivedMessage(reply, send_time, 0)``)."""
        self._check()
        ns = seconds_to_ns(timeout, "timeout")
        payload = self._send_payload(SendKind.SEND_RECEIVE, 0, 0, ns, destination, message)
        if timeout == 0:
            raise Timeout("timeout 0")
        wait = None if timeout is None else timeout + 5.0
        return decode_got(self._call(Request.SEND, payload, wait))

    def _reply_payload(self, is_async: bool, invocation: int, ack: int, reply_message: Any, sender_id: Any) -> bytes:
        _common.check_u64(sender_id, "sender_id")
        body = encode_body(reply_message, MAX_REPLY_SIZE)
        if sender_id == 0:
            raise InvalidParam("sender_id 0: the message was not sent by message_send_receive")
        return ReplyRequest.pack(is_async, invocation, ack, sender_id, time.time_ns(), body)

    def message_reply(self, reply_message: MsgMessage, sender_id: int, timeout: float | None = None) -> None:
        """Answer the message_send_receive that sent ``sender_id``."""
        self._check()
        seconds_to_ns(timeout, "timeout")
        payload = self._reply_payload(False, 0, 0, reply_message, sender_id)
        if timeout == 0:
            raise Timeout("timeout 0")
        self._call(Request.REPLY, payload, timeout)

    def message_reply_async(self, invocation: int, reply_message: MsgMessage, sender_id: int,
                            ack_flags: int = 0) -> None:
        """Reply without waiting; with MESSAGE_DELIVERED_ACK the outcome comes to message_delivered."""
        self._check()
        _common.check_invocation(invocation)
        self._check_ack(ack_flags)
        self._call(Request.REPLY, self._reply_payload(True, invocation, ack_flags, reply_message, sender_id))

    def metadata_size_get(self) -> int:
        """Bytes each stored message is charged beyond its data."""
        self._check()
        self._need_b3()
        return METADATA_SIZE

    def limit_get(self, limit_id: LimitId | int) -> int:
        """The value of one implementation limit."""
        self._check()
        self._need_b3()
        if isinstance(limit_id, bool) or not isinstance(limit_id, int) or limit_id not in LIMITS:
            raise InvalidParam(f"unknown limit id {limit_id!r}")
        return LIMITS[LimitId(limit_id)]

    def dump(self) -> dict:
        """The engine's state on this node (queues, groups) as a dict: for tools."""
        import json

        return json.loads(DumpAnswer.decode(self._call(Request.DUMP, b"")).json)

    # -- dispatch -----------------------------------------------------------------------

    def dispatch(self, flags: int = DISPATCH_ALL) -> None:
        """Run pending callbacks (DISPATCH_ONE, DISPATCH_ALL, DISPATCH_BLOCKING)."""
        super().dispatch(flags)

    def _queue_for(self, object_id: int) -> Queue | None:
        return self._queues.get(object_id)

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.QUEUE_OPEN:
            cb = OpenCallback.decode(payload)
            queue = self._new_queue(cb.queue, cb.name) if cb.error == SaAisError.OK else None
            fn = self._cb("queue_open")
            if fn is not None:
                fn(cb.invocation, queue, SaAisError(cb.error))
        elif msg_id == Callback.GROUP_TRACK:
            notice = TrackNotice.decode(payload)
            fn = self._cb("queue_group_track")
            if fn is not None:
                fn(notice.group, notification_buffer(notice), notice.members, SaAisError(notice.error))
        elif msg_id == Callback.DELIVERED:
            cb = DeliveredCallback.decode(payload)
            fn = self._cb("message_delivered")
            if fn is not None:
                fn(cb.invocation, SaAisError(cb.error))
        elif msg_id in (Callback.RECEIVED, Callback.CAPACITY_REACHED, Callback.CAPACITY_AVAILABLE,
                        Callback.QUEUE_LOST):
            cb = QueueCallback.decode(payload)
            queue = self._queue_for(cb.queue)
            if queue is None:
                return
            if msg_id == Callback.QUEUE_LOST:
                self._queues.pop(cb.queue, None)
                queue._forget()
                return
            if queue.closed:
                return
            name = {Callback.RECEIVED: "message_received", Callback.CAPACITY_REACHED: "queue_capacity_reached",
                    Callback.CAPACITY_AVAILABLE: "queue_capacity_available"}[Callback(msg_id)]
            fn = self._cb(name)
            if fn is None:
                return
            if msg_id == Callback.RECEIVED:
                fn(queue)
            else:
                fn(queue, cb.priority)
        # unknown callbacks are ignored (a newer executive)

    def finalize(self, timeout: float = 10.0) -> None:
        """Close the handle and every queue opened through it.

        First waits, at most ``timeout`` seconds, until the executive answered every pipelined
        ``message_send_async``; after closing, raises the first error one of them carried
        (as every handle's ``finalize`` does), or Timeout when some were still unanswered.
        """
        try:
            super().finalize(timeout)
        finally:
            for queue in list(self._queues.values()):
                queue._forget()
            self._queues.clear()


def initialize(queue_open: Callable[..., Any] | None = None, queue_group_track: Callable[..., Any] | None = None,
               message_delivered: Callable[..., Any] | None = None, message_received: Callable[..., Any] | None = None,
               queue_capacity_reached: Callable[..., Any] | None = None,
               queue_capacity_available: Callable[..., Any] | None = None, *,
               version: tuple[str, int, int] = VERSION, path: str | None = None) -> MsgHandle:
    """Connect to the local executive's MSG service (``saMsgInitialize``)."""
    _common.check_version(version, "MSG", (1, 2, 3), "B.01..B.03")
    callbacks = {"queue_open": queue_open, "queue_group_track": queue_group_track,
                 "message_delivered": message_delivered, "message_received": message_received,
                 "queue_capacity_reached": queue_capacity_reached,
                 "queue_capacity_available": queue_capacity_available}
    return MsgHandle(callbacks, version, path)

