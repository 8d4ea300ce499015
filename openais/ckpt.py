"""Checkpoint service (SA Forum CKPT B.02.02): the application library and its IPC messages.

A checkpoint is a named, cluster-wide set of sections (a binary id -> bytes)
replicated on every node, so that a standby process on any node, or the same
application after a restart, can read back what was written::

    from openais import ckpt

    attrs = ckpt.CreationAttributes(max_sections=8, max_section_id_size=16)
    flags = ckpt.CHECKPOINT_CREATE | ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE
    with ckpt.initialize() as h, h.checkpoint_open("safCkpt=demo", attrs, flags, timeout=5.0) as c:
        c.section_create(ckpt.SectionCreationAttributes(b"cfg"), b"v1")
        [data] = c.read([ckpt.IOVector(b"cfg")])

The IPC messages (requests, answers, callbacks) are defined once here with
:mod:`openais.message` and imported by the executive's engine
(``plugins.ckpt``).  The contract is ``reference/api/ckpt.md``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from openais import _common
from openais._client import DISPATCH_ALL, Handle
from openais._objects import ObjectHandle
from openais.errors import (
    AisError,
    BadFlags,
    BadHandle,
    Init,
    InvalidParam,
    NoSections,
    NotExist,
    SaAisError,
    TooBig,
)
from openais.message import I32, I64, U8, U16, U32, U64, Bytes, List, Message, Nested, Optional, Str, Tail

#: Service id of CKPT.
SERVICE_ID = 3

WR_ALL_REPLICAS = 0x1
WR_ACTIVE_REPLICA = 0x2
WR_ACTIVE_REPLICA_WEAK = 0x4
CHECKPOINT_COLLOCATED = 0x8
UPDATE_MODES = (WR_ALL_REPLICAS, WR_ACTIVE_REPLICA, WR_ACTIVE_REPLICA_WEAK)

CHECKPOINT_READ = 0x1
CHECKPOINT_WRITE = 0x2
CHECKPOINT_CREATE = 0x4
OPEN_FLAGS = CHECKPOINT_READ | CHECKPOINT_WRITE | CHECKPOINT_CREATE

DEFAULT_SECTION_ID = b""
GENERATED_SECTION_ID = None

#: Most bytes of section data one call carries (write elements together, a read's result, ...).
MAX_IO_SIZE = 1048576
#: Longest checkpoint name, in bytes of UTF-8.
MAX_NAME = 256
#: Largest ``max_section_id_size``.
MAX_SECTION_ID = 65535
#: Most elements in one write or read vector.
MAX_VECTOR = 4096

from openais import TIME_END  # noqa: E402  (re-exported)

_SIZE_MAX = (1 << 63) - 1
_NO_TIME = -1  # "None" for durations and timeouts on the wire


class SectionState(enum.IntEnum):
    """SaCkptSectionStateT."""

    VALID = 1
    CORRUPTED = 2


class SectionsChosen(enum.IntEnum):
    """SaCkptSectionsChosenT."""

    FOREVER = 1
    LEQ_EXPIRATION_TIME = 2
    GEQ_EXPIRATION_TIME = 3
    CORRUPTED = 4
    ANY = 5


SECTIONS_FOREVER = SectionsChosen.FOREVER
SECTIONS_LEQ_EXPIRATION_TIME = SectionsChosen.LEQ_EXPIRATION_TIME
SECTIONS_GEQ_EXPIRATION_TIME = SectionsChosen.GEQ_EXPIRATION_TIME
SECTIONS_CORRUPTED = SectionsChosen.CORRUPTED
SECTIONS_ANY = SectionsChosen.ANY


class CreationAttributes(NamedTuple):
    """SaCkptCheckpointCreationAttributesT (retention in seconds, None = forever)."""

    creation_flags: int = WR_ALL_REPLICAS
    checkpoint_size: int = 65536
    retention_duration: float | None = None
    max_sections: int = 1
    max_section_size: int = 65536
    max_section_id_size: int = 0


class SectionCreationAttributes(NamedTuple):
    """SaCkptSectionCreationAttributesT (``section_id`` None: the service generates one)."""

    section_id: bytes | None
    expiration_time: int = TIME_END


class IOVector(NamedTuple):
    """One SaCkptIOVectorElementT."""

    section_id: bytes
    data: bytes = b""
    offset: int = 0
    size: int | None = None


class SectionDescriptor(NamedTuple):
    """SaCkptSectionDescriptorT."""

    section_id: bytes
    expiration_time: int
    section_size: int
    section_state: SectionState
    last_update: int


class CheckpointDescriptor(NamedTuple):
    """SaCkptCheckpointDescriptorT."""

    checkpoint_creation_attributes: CreationAttributes
    number_of_sections: int
    memory_used: int


# -- IPC messages --------------------------------------------------------------------------------


class Request(enum.IntEnum):
    """Library request message ids."""

    OPEN = 0
    CLOSE = 1
    UNLINK = 2
    RETENTION_SET = 3
    ACTIVE_SET = 4
    STATUS_GET = 5
    SECTION_CREATE = 6
    SECTION_DELETE = 7
    EXPIRATION_SET = 8
    ITER_INIT = 9
    ITER_NEXT = 10
    ITER_FINALIZE = 11
    WRITE = 12
    OVERWRITE = 13
    READ = 14
    SYNCHRONIZE = 15
    LIST = 16
    PEEK = 17
    READ_ONE = 18


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    OPEN_DONE = 0
    SYNC_DONE = 1


class WireAttributes(Message):
    """Creation attributes on the wire (retention in ns, -1 = forever)."""

    creation_flags = U32()
    checkpoint_size = U64()
    retention_ns = I64()
    max_sections = U32()
    max_section_size = U64()
    max_section_id_size = U16()


class OpenReq(Message):
    """OPEN: sync (answer OpenAnswer) or async (answer empty, then OPEN_DONE)."""

    name = Str(max_len=MAX_NAME, min_len=1)
    open_flags = U32()
    attrs = Optional(Nested(WireAttributes))
    timeout_ns = I64()
    is_async = U8()
    invocation = U64()


class OpenAnswer(Message):
    """Answer of a synchronous OPEN: the executive's checkpoint handle."""

    handle = U64()


class OpenDone(Message):
    """OPEN_DONE callback."""

    invocation = U64()
    error = U32()
    handle = U64()


class HandleReq(Message):
    """CLOSE, ACTIVE_SET, STATUS_GET, ITER_NEXT, ITER_FINALIZE: one handle."""

    handle = U64()


class NameReq(Message):
    """UNLINK: one name."""

    name = Str(max_len=MAX_NAME, min_len=1)


class RetentionReq(Message):
    """RETENTION_SET."""

    handle = U64()
    retention_ns = I64()


class StatusAnswer(Message):
    """Answer of STATUS_GET."""

    attrs = Nested(WireAttributes)
    number_of_sections = U32()
    memory_used = U64()


class SectionCreateReq(Message):
    """SECTION_CREATE (``section_id`` None: generated)."""

    handle = U64()
    section_id = Optional(Bytes(max_len=MAX_SECTION_ID))
    expiration = I64()
    data = Bytes(max_len=MAX_IO_SIZE)


class SectionIdAnswer(Message):
    """Answer of SECTION_CREATE."""

    section_id = Bytes(max_len=MAX_SECTION_ID)


class SectionReq(Message):
    """SECTION_DELETE."""

    handle = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)


class ExpirationReq(Message):
    """EXPIRATION_SET."""

    handle = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    expiration = I64()


class IterInitReq(Message):
    """ITER_INIT."""

    handle = U64()
    chosen = U8()
    expiration = I64()


class WireDescriptor(Message):
    """A section descriptor on the wire (answer of ITER_NEXT)."""

    section_id = Bytes(max_len=MAX_SECTION_ID)
    expiration = I64()
    size = U64()
    state = U8()
    last_update = I64()


class WriteItem(Message):
    """One element of a write vector."""

    section_id = Bytes(max_len=MAX_SECTION_ID)
    offset = U64()
    data = Bytes(max_len=MAX_IO_SIZE, view=True)


class WriteReq(Message):
    """WRITE."""

    handle = U64()
    items = List(WriteItem, max_count=MAX_VECTOR)


class OverwriteReq(Message):
    """OVERWRITE."""

    handle = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    data = Bytes(max_len=MAX_IO_SIZE, view=True)


class ReadItem(Message):
    """One element of a read vector (size -1: to the end)."""

    section_id = Bytes(max_len=MAX_SECTION_ID)
    offset = U64()
    size = I64()


class ReadReq(Message):
    """READ."""

    handle = U64()
    items = List(ReadItem, max_count=MAX_VECTOR)


class ReadOneReq(Message):
    """READ_ONE: a read of one element (the common case, a leaner frame)."""

    handle = U64()
    offset = U64()
    size = I64()
    section_id = Tail(max_len=MAX_SECTION_ID)


class ReadOneAnswer(Message):
    """Answer of READ_ONE: the real error and its index (-1: the whole call), then the bytes."""

    error = U32()
    index = I32()
    data = Tail(max_len=MAX_IO_SIZE)


class VectorAnswer(Message):
    """Answer of WRITE and READ: the call's real error and failing index (-1: none), read data."""

    error = U32()
    index = I32()
    data = List(Bytes(max_len=MAX_IO_SIZE), max_count=MAX_VECTOR)


class SynchronizeReq(Message):
    """SYNCHRONIZE (async: answered at once, then SYNC_DONE)."""

    handle = U64()
    timeout_ns = I64()
    is_async = U8()
    invocation = U64()


class SyncDone(Message):
    """SYNC_DONE callback."""

    invocation = U64()
    error = U32()


class PeekReq(Message):
    """PEEK (the tool): a section's bytes without opening the checkpoint."""

    name = Str(max_len=MAX_NAME, min_len=1)
    section_id = Bytes(max_len=MAX_SECTION_ID)
    offset = U64()
    size = I64()


class JsonAnswer(Message):
    """Answer of LIST / PEEK metadata: a JSON document."""

    text = Tail(max_len=64 * 1024 * 1024)


# -- validation shared by library and engine -----------------------------------------------------


def name_error(name: Any) -> AisError | None:
    """The error a checkpoint name raises (InvalidParam / NameTooLong), or None when valid."""
    try:
        _common.check_name(name, "checkpoint name", MAX_NAME)
    except AisError as exc:
        return exc
    return None


def attributes_error(attrs: WireAttributes) -> str | None:
    """Why wire creation attributes are invalid (ckpt.md §2), or None."""
    flags = attrs.creation_flags
    if flags & ~(WR_ALL_REPLICAS | WR_ACTIVE_REPLICA | WR_ACTIVE_REPLICA_WEAK | CHECKPOINT_COLLOCATED):
        return f"creation_flags {flags:#x} has unknown bits"
    if flags & ~CHECKPOINT_COLLOCATED not in UPDATE_MODES:
        return "creation_flags must hold exactly one update mode"
    if attrs.max_sections < 1:
        return "max_sections must be at least 1"
    if attrs.checkpoint_size > attrs.max_sections * attrs.max_section_size:
        return "checkpoint_size exceeds max_sections * max_section_size"
    if attrs.retention_ns < _NO_TIME:
        return "retention_duration must be None or >= 0"
    return None


def same_attributes(a: WireAttributes, b: WireAttributes) -> bool:
    """True when every field but the retention duration is equal (the Exist rule)."""
    return a._replace(retention_ns=0) == b._replace(retention_ns=0)


def _seconds_to_ns(value: Any, what: str, allow_none: bool = True) -> int:
    if value is None and allow_none:
        return _NO_TIME
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidParam(f"{what} must be a number of seconds >= 0{' or None' if allow_none else ''}")
    return min(int(value * 1e9), _SIZE_MAX)


def to_wire_attributes(attrs: Any) -> WireAttributes:
    """Check and convert CreationAttributes; InvalidParam when invalid."""
    if not isinstance(attrs, CreationAttributes):
        raise InvalidParam("creation_attributes must be a ckpt.CreationAttributes")
    ints = (attrs.creation_flags, attrs.checkpoint_size, attrs.max_sections, attrs.max_section_size,
            attrs.max_section_id_size)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
        raise InvalidParam("creation attribute sizes and flags must be int")
    if not 0 <= attrs.creation_flags <= 0xFFFFFFFF or not 1 <= attrs.max_sections < 1 << 32:
        raise InvalidParam("creation_flags or max_sections out of range")
    if not 0 <= attrs.checkpoint_size <= _SIZE_MAX or not 0 <= attrs.max_section_size <= _SIZE_MAX:
        raise InvalidParam("checkpoint_size and max_section_size must be 0..2**63-1")
    if not 0 <= attrs.max_section_id_size <= MAX_SECTION_ID:
        raise InvalidParam(f"max_section_id_size must be 0..{MAX_SECTION_ID}")
    wire = WireAttributes(attrs.creation_flags, attrs.checkpoint_size,
                          _seconds_to_ns(attrs.retention_duration, "retention_duration"),
                          attrs.max_sections, attrs.max_section_size, attrs.max_section_id_size)
    why = attributes_error(wire)
    if why:
        raise InvalidParam(why)
    return wire


def from_wire_attributes(wire: WireAttributes) -> CreationAttributes:
    """CreationAttributes of wire attributes."""
    retention = None if wire.retention_ns < 0 else wire.retention_ns / 1e9
    return CreationAttributes(wire.creation_flags, wire.checkpoint_size, retention, wire.max_sections,
                              wire.max_section_size, wire.max_section_id_size)


def _check_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidParam(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value) if not isinstance(value, bytes) else value


def _check_int(value: Any, what: str, low: int = 0, high: int = _SIZE_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParam(f"{what} must be an int in {low}..{high}")
    return value


def _timeout_ns(timeout: Any) -> int:
    return _common.timeout_ns(timeout, _NO_TIME, infinite=False)


def _socket_timeout(timeout_ns: int) -> float:
    """How long the library waits for the executive's answer (it enforces the call timeout itself)."""
    return 365 * 86400.0 if timeout_ns < 0 else timeout_ns / 1e9 + 10.0


def _raise_vector(answer: bytes) -> VectorAnswer:
    result = VectorAnswer.decode(answer)
    if result.error != SaAisError.OK:
        exc = AisError.from_code(result.error)
        exc.index = None if result.index < 0 else result.index  # type: ignore[attr-defined]
        raise exc
    return result


def _indexed(exc: AisError, index: int | None) -> AisError:
    exc.index = index  # type: ignore[attr-defined]
    return exc


# -- the library --------------------------------------------------------------------------------

OpenCallback = Callable[[int, "Checkpoint | None", SaAisError], None]
SyncCallback = Callable[[int, SaAisError], None]


class SectionIteration(ObjectHandle):
    """A section iteration (saCkptSectionIterationInitialize); a Python iterator and context manager."""

    def __init__(self, checkpoint: Checkpoint, object_id: int) -> None:
        super().__init__(checkpoint._handle, object_id)
        self._checkpoint = checkpoint
        self._done = False

    @property
    def closed(self) -> bool:
        """True once finalized, or once its checkpoint or library handle is closed."""
        return super().closed or self._checkpoint.closed

    def _check(self) -> None:
        super()._check()
        if self._checkpoint._closed:
            raise BadHandle("the iteration's checkpoint was closed")

    def next(self) -> SectionDescriptor:
        """The next section; NoSections when there is none left (again on every later call)."""
        self._check()
        if self._done:
            raise NoSections("no more sections")
        try:
            d = WireDescriptor.decode(self._parent._call(Request.ITER_NEXT, HandleReq.pack(self.object_id)))
        except NoSections:
            self._done = True
            raise
        return SectionDescriptor(d.section_id, d.expiration, d.size, SectionState(d.state), d.last_update)

    def finalize(self) -> None:
        """End the iteration; BadHandle if already finalized."""
        self.close()

    def _close(self) -> None:
        if not self._parent._finalized and not self._checkpoint._closed:
            self._parent._call(Request.ITER_FINALIZE, HandleReq.pack(self.object_id))

    def __iter__(self) -> Iterator[SectionDescriptor]:
        return self

    def __next__(self) -> SectionDescriptor:
        try:
            return self.next()
        except NoSections:
            raise StopIteration from None


class Checkpoint(ObjectHandle):
    """One opened checkpoint (saCkptCheckpointOpen); a context manager that closes on exit."""

    def __init__(self, handle: CkptHandle, object_id: int, name: str, open_flags: int) -> None:
        super().__init__(handle, object_id)
        self._handle = handle
        self.name = name
        self.open_flags = open_flags

    def _req(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self._check()
        return self._handle._call(msg_id, payload, timeout)

    def _close(self) -> None:
        self._handle._call(Request.CLOSE, HandleReq.pack(self.object_id))

    def retention_duration_set(self, retention_duration: float | None) -> None:
        """Change the retention used from the next last close on (seconds; None = forever)."""
        self._check()
        self._req(Request.RETENTION_SET, RetentionReq.pack(self.object_id,
                                                           _seconds_to_ns(retention_duration, "retention_duration")))

    def active_replica_set(self) -> None:
        """Make this node's replica the active one (collocated checkpoints only)."""
        self._req(Request.ACTIVE_SET, HandleReq.pack(self.object_id))

    def status_get(self) -> CheckpointDescriptor:
        """Attributes, number of sections and memory used, from the local replica."""
        s = StatusAnswer.decode(self._req(Request.STATUS_GET, HandleReq.pack(self.object_id)))
        return CheckpointDescriptor(from_wire_attributes(s.attrs), s.number_of_sections, s.memory_used)

    def section_create(self, section_creation_attributes: SectionCreationAttributes,
                       initial_data: bytes = b"") -> bytes:
        """Create a section; return its id (the generated one for GENERATED_SECTION_ID)."""
        self._check()
        attrs = section_creation_attributes
        if not isinstance(attrs, SectionCreationAttributes):
            raise InvalidParam("section_creation_attributes must be a ckpt.SectionCreationAttributes")
        sid = None if attrs.section_id is None else _check_bytes(attrs.section_id, "section_id")
        if sid is not None and len(sid) > MAX_SECTION_ID:
            raise InvalidParam(f"section id longer than {MAX_SECTION_ID} bytes")
        expiration = _check_int(attrs.expiration_time, "expiration_time", 0, _SIZE_MAX)
        data = _check_bytes(initial_data, "initial_data")
        if len(data) > MAX_IO_SIZE:
            raise TooBig(f"initial_data of {len(data)} bytes exceeds MAX_IO_SIZE")
        answer = self._req(Request.SECTION_CREATE, SectionCreateReq.pack(self.object_id, sid, expiration, data))
        return SectionIdAnswer.decode(answer).section_id

    def section_delete(self, section_id: bytes) -> None:
        """Delete a section."""
        self._check()
        sid = _check_bytes(section_id, "section_id")
        if len(sid) > MAX_SECTION_ID:
            raise NotExist("no section has an id that long")
        self._req(Request.SECTION_DELETE, SectionReq.pack(self.object_id, sid))

    def section_expiration_time_set(self, section_id: bytes, expiration_time: int) -> None:
        """Set a section's absolute expiration time (ns since the epoch; TIME_END = never)."""
        self._check()
        sid = _check_bytes(section_id, "section_id")
        if len(sid) > MAX_SECTION_ID:
            raise NotExist("no section has an id that long")
        expiration = _check_int(expiration_time, "expiration_time", 0, _SIZE_MAX)
        self._req(Request.EXPIRATION_SET, ExpirationReq.pack(self.object_id, sid, expiration))

    def section_iteration_initialize(self, sections_chosen: SectionsChosen = SECTIONS_ANY,
                                     expiration_time: int = TIME_END) -> SectionIteration:
        """Start iterating the sections that exist now and match ``sections_chosen``."""
        self._check()
        if isinstance(sections_chosen, bool) or sections_chosen not in set(SectionsChosen):
            raise InvalidParam(f"sections_chosen must be a SectionsChosen, not {sections_chosen!r}")
        expiration = _check_int(expiration_time, "expiration_time", 0, _SIZE_MAX)
        answer = self._req(Request.ITER_INIT, IterInitReq.pack(self.object_id, int(sections_chosen), expiration))
        return SectionIteration(self, OpenAnswer.decode(answer).handle)

    def write(self, io_vector: list[IOVector]) -> None:
        """Write every element atomically (all or nothing); errors carry ``.index``."""
        try:
            self._check()
        except BadHandle as exc:
            raise _indexed(exc, None) from None
        items = []
        total = 0
        too_long: int | None = None
        if not isinstance(io_vector, (list, tuple)) or not io_vector:
            raise _indexed(InvalidParam("io_vector must be a non-empty list of IOVector"), None)
        if len(io_vector) > MAX_VECTOR:
            raise _indexed(TooBig(f"more than {MAX_VECTOR} elements"), None)
        for i, el in enumerate(io_vector):
            if not isinstance(el, IOVector):
                raise _indexed(InvalidParam("io_vector elements must be IOVector"), i)
            try:
                sid = _check_bytes(el.section_id, "section_id")
                data = _check_bytes(el.data, "data")
                offset = _check_int(el.offset, "offset")
            except InvalidParam as exc:
                raise _indexed(exc, i) from None
            if el.size is not None and el.size != len(data):
                raise _indexed(InvalidParam("size must be None or len(data)"), i)
            if len(sid) > MAX_SECTION_ID and too_long is None:
                too_long = i  # names no section
            total += len(data)
            items.append(WriteItem(sid, offset, data))
        if total > MAX_IO_SIZE:
            raise _indexed(TooBig(f"{total} bytes of data exceed MAX_IO_SIZE"), None)
        if too_long is not None:
            raise _indexed(NotExist("no section has an id that long"), too_long)
        _raise_vector(self._vector_call(Request.WRITE, WriteReq.pack(self.object_id, items)))

    def section_overwrite(self, section_id: bytes, data: bytes) -> None:
        """Replace a section's whole content."""
        self._check()
        sid = _check_bytes(section_id, "section_id")
        raw = _check_bytes(data, "data")
        if len(raw) > MAX_IO_SIZE:
            raise TooBig(f"{len(raw)} bytes exceed MAX_IO_SIZE")
        if len(sid) > MAX_SECTION_ID:
            raise NotExist("no section has an id that long")
        self._req(Request.OVERWRITE, OverwriteReq.pack(self.object_id, sid, raw))

    def read(self, io_vector: list[IOVector]) -> list[bytes]:
        """Read every element from the local replica; one bytes object per element."""
        try:
            self._check()
        except BadHandle as exc:
            raise _indexed(exc, None) from None
        if not isinstance(io_vector, (list, tuple)) or not io_vector:
            raise _indexed(InvalidParam("io_vector must be a non-empty list of IOVector"), None)
        if len(io_vector) > MAX_VECTOR:
            raise _indexed(TooBig(f"more than {MAX_VECTOR} elements"), None)
        if len(io_vector) == 1:
            return [self._read_one(io_vector[0])]
        items = []
        for i, el in enumerate(io_vector):
            if not isinstance(el, IOVector):
                raise _indexed(InvalidParam("io_vector elements must be IOVector"), i)
            try:
                sid = _check_bytes(el.section_id, "section_id")
                offset = _check_int(el.offset, "offset")
                size = -1 if el.size is None else _check_int(el.size, "size")
            except InvalidParam as exc:
                raise _indexed(exc, i) from None
            if len(sid) > MAX_SECTION_ID:
                raise _indexed(NotExist("no section has an id that long"), i)
            items.append(ReadItem(sid, offset, size))
        return list(_raise_vector(self._vector_call(Request.READ, ReadReq.pack(self.object_id, items))).data)

    def _read_one(self, el: Any) -> bytes:
        if not isinstance(el, IOVector):
            raise _indexed(InvalidParam("io_vector elements must be IOVector"), 0)
        sid, offset, size = el.section_id, el.offset, el.size
        try:
            if type(sid) is not bytes:
                sid = _check_bytes(sid, "section_id")
            if type(offset) is not int or not 0 <= offset <= _SIZE_MAX:
                offset = _check_int(offset, "offset")
            size = -1 if size is None else _check_int(size, "size")
        except InvalidParam as exc:
            raise _indexed(exc, 0) from None
        if len(sid) > MAX_SECTION_ID:
            raise _indexed(NotExist("no section has an id that long"), 0)
        answer = ReadOneAnswer.decode(self._vector_call(Request.READ_ONE,
                                                        ReadOneReq.pack(self.object_id, offset, size, sid)))
        if answer.error != SaAisError.OK:
            raise _indexed(AisError.from_code(answer.error), None if answer.index < 0 else answer.index)
        return answer.data

    def _vector_call(self, msg_id: int, payload: bytes) -> bytes:
        try:
            return self._req(msg_id, payload)
        except AisError as exc:
            if not hasattr(exc, "index"):
                exc.index = None  # type: ignore[attr-defined]
            raise

    def synchronize(self, timeout: float | None = None) -> None:
        """Return once every replica has applied every change acknowledged before the call."""
        self._check()
        ns = _timeout_ns(timeout)
        self._req(Request.SYNCHRONIZE, SynchronizeReq.pack(self.object_id, ns, 0, 0), _socket_timeout(ns))

    def synchronize_async(self, invocation: int) -> None:
        """As synchronize; the result goes to the ``checkpoint_synchronize`` callback."""
        self._check()
        if self._handle._sync_fn is None:
            raise Init("no checkpoint_synchronize callback was given to initialize")
        inv = _common.check_invocation(invocation)
        self._req(Request.SYNCHRONIZE, SynchronizeReq.pack(self.object_id, _NO_TIME, 1, inv))

    def section_id_free(self, section_id: bytes) -> None:
        """Nothing to free in Python (saCkptSectionIdFree)."""
        self._check()

    def io_vector_element_data_free(self, data: bytes) -> None:
        """Nothing to free in Python (saCkptIOVectorElementDataFree)."""
        self._check()


class CkptHandle(Handle):
    """A CKPT library handle (saCkptInitialize)."""

    def __init__(self, checkpoint_open: OpenCallback | None = None,
                 checkpoint_synchronize: SyncCallback | None = None, *, path: str | None = None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self._open_fn = checkpoint_open
        self._sync_fn = checkpoint_synchronize
        self._pending_async: dict[int, list[tuple[str, int]]] = {}
        self.version = ("B", 2, 2)

    def _args_open(self, name: Any, attrs: Any, open_flags: Any) -> tuple[str, WireAttributes | None, int]:
        if isinstance(open_flags, bool) or not isinstance(open_flags, int):
            raise InvalidParam("open_flags must be int")
        if open_flags & ~OPEN_FLAGS:
            raise BadFlags(f"open_flags {open_flags:#x} has bits other than READ/WRITE/CREATE")
        error = name_error(name)
        if error is not None:
            raise error
        if open_flags & CHECKPOINT_CREATE and attrs is None:
            raise InvalidParam("CHECKPOINT_CREATE needs creation_attributes")
        if attrs is not None and not open_flags & CHECKPOINT_CREATE:
            raise InvalidParam("creation_attributes given without CHECKPOINT_CREATE")
        return name, None if attrs is None else to_wire_attributes(attrs), open_flags

    def checkpoint_open(self, name: str, creation_attributes: CreationAttributes | None, open_flags: int,
                        timeout: float | None = None) -> Checkpoint:
        """Open (or with CHECKPOINT_CREATE create) a checkpoint; waits for the cluster."""
        self._check()
        name, wire, flags = self._args_open(name, creation_attributes, open_flags)
        ns = _timeout_ns(timeout)
        answer = self._call(Request.OPEN, OpenReq.pack(name, flags, wire, ns, 0, 0), _socket_timeout(ns))
        return Checkpoint(self, OpenAnswer.decode(answer).handle, name, flags)

    def checkpoint_open_async(self, invocation: int, name: str, creation_attributes: CreationAttributes | None,
                              open_flags: int) -> None:
        """As checkpoint_open; the result goes to the ``checkpoint_open`` callback."""
        self._check()
        if self._open_fn is None:
            raise Init("no checkpoint_open callback was given to initialize")
        inv = _common.check_invocation(invocation)
        name, wire, flags = self._args_open(name, creation_attributes, open_flags)
        _common.remember_open(self._pending_async, inv, (name, flags))
        try:
            self._call(Request.OPEN, OpenReq.pack(name, flags, wire, _NO_TIME, 1, inv))
        except AisError:
            _common.forget_open(self._pending_async, inv)
            raise

    def checkpoint_unlink(self, name: str) -> None:
        """Remove the name for the whole cluster (openers keep their checkpoint until they close)."""
        self._check()
        error = name_error(name)
        if error is not None:
            raise error
        self._call(Request.UNLINK, NameReq.pack(name))

    def listing(self) -> dict:
        """Every checkpoint of the local replica as a JSON-able document (``openais-ckpttool``)."""
        import json

        return json.loads(JsonAnswer.decode(self._call(Request.LIST, b"")).text)

    def peek(self, name: str, section_id: bytes, offset: int = 0, size: int | None = None) -> bytes:
        """A section's bytes read from the local replica without opening the checkpoint (the tool)."""
        error = name_error(name)
        if error is not None:
            raise error
        req = PeekReq.pack(name, _check_bytes(section_id, "section_id"), _check_int(offset, "offset"),
                           -1 if size is None else _check_int(size, "size"))
        return JsonAnswer.decode(self._call(Request.PEEK, req)).text

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.OPEN_DONE:
            done = OpenDone.decode(payload)
            name, flags = _common.claim_open(self._pending_async, done.invocation, ("", 0))
            checkpoint = Checkpoint(self, done.handle, name, flags) if done.error == SaAisError.OK else None
            if self._open_fn is not None:
                self._open_fn(done.invocation, checkpoint, SaAisError(done.error))
        elif msg_id == Callback.SYNC_DONE:
            done = SyncDone.decode(payload)
            if self._sync_fn is not None:
                self._sync_fn(done.invocation, SaAisError(done.error))

    def finalize(self, *args: Any, **kwargs: Any) -> None:
        """Close the handle; every checkpoint and iteration derived from it is closed with it."""
        try:
            super().finalize(*args, **kwargs)
        finally:
            if self._finalized:
                for child in list(self.__dict__.get("_object_handles", {}).values()):
                    child._forget()


def initialize(checkpoint_open: OpenCallback | None = None, checkpoint_synchronize: SyncCallback | None = None,
               *, version: tuple = ("B", 2, 2), path: str | None = None) -> CkptHandle:
    """Connect to the local executive's CKPT service (saCkptInitialize)."""
    _common.check_version(version, "CKPT", (1, 2), "B.02.02 (release 'B', major 1 or 2)")
    return CkptHandle(checkpoint_open, checkpoint_synchronize, path=path)


__all__ = [
    "CHECKPOINT_COLLOCATED", "CHECKPOINT_CREATE", "CHECKPOINT_READ", "CHECKPOINT_WRITE", "DEFAULT_SECTION_ID",
    "DISPATCH_ALL", "GENERATED_SECTION_ID", "MAX_IO_SIZE", "SECTIONS_ANY", "SECTIONS_CORRUPTED",
    "SECTIONS_FOREVER", "SECTIONS_GEQ_EXPIRATION_TIME", "SECTIONS_LEQ_EXPIRATION_TIME", "SERVICE_ID", "TIME_END",
    "WR_ACTIVE_REPLICA", "WR_ACTIVE_REPLICA_WEAK", "WR_ALL_REPLICAS", "Checkpoint", "CheckpointDescriptor",
    "CkptHandle", "CreationAttributes", "IOVector", "SectionCreationAttributes", "SectionDescriptor",
    "SectionIteration", "SectionState", "SectionsChosen", "initialize",
]
