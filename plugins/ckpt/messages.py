"""CKPT cluster messages: what the engines multicast to each other, defined once (openais.message).

Every change to a checkpoint is one of these, applied by every replica in
agreed order (:mod:`plugins.ckpt.state`).  ``conn_id``/``req_id`` name the
asking connection on the sender's node (0/0 for the executive's own changes:
cleanups, expiries).  ``time`` is the sender's clock when it ordered the
change (``last_update``, the start of a retention period), ``mem_limit`` the
sender's ``ckpt { max_memory }``: both travel in the message so that every
replica decides the same.  The sender's nodeid is not carried: the ring
delivers it.
"""

from __future__ import annotations

import enum

from aisexec.outbox import Fragment
from openais.ckpt import MAX_NAME, MAX_SECTION_ID, MAX_VECTOR, WireAttributes, WriteItem
from openais.message import I64, U8, U32, U64, Bytes, List, Message, Nested, Optional, Str, Tail


class Exec(enum.IntEnum):
    """Cluster message ids of the CKPT service."""

    OPEN = 1
    CLOSE = 2
    UNLINK = 3
    RETENTION_SET = 4
    ACTIVE_SET = 5
    SECTION_CREATE = 6
    SECTION_DELETE = 7
    EXPIRATION_SET = 8
    WRITE = 9
    OVERWRITE = 10
    BARRIER = 11
    RETENTION_EXPIRE = 12
    SECTION_EXPIRE = 13
    STAMP = 14
    FRAGMENT = 15
    SYNC_HEADER = 16
    SYNC_DATA = 17


_DATA = 1 << 21  # one change's data (MAX_IO_SIZE, with room)


class ExOpen(Message):
    """Open (and maybe create) the checkpoint ``name``; ``uid`` is the new checkpoint's id if created."""

    conn_id = U64()
    req_id = U32()
    name = Str(max_len=MAX_NAME, min_len=1)
    open_flags = U32()
    attrs = Optional(Nested(WireAttributes))
    uid = U64()
    time = I64()
    mem_limit = U64()


class ExClose(Message):
    """One opener of ``uid`` on the sender's node ends."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    time = I64()


class ExUnlink(Message):
    """Remove the name ``name``."""

    conn_id = U64()
    req_id = U32()
    name = Str(max_len=MAX_NAME, min_len=1)


class ExRetention(Message):
    """Set the retention duration (ns, -1 = forever)."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    retention_ns = I64()


class ExActive(Message):
    """Make the sender's replica the active one."""

    conn_id = U64()
    req_id = U32()
    uid = U64()


class ExSectionCreate(Message):
    """Create a section (``section_id`` None: generated)."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    section_id = Optional(Bytes(max_len=MAX_SECTION_ID))
    expiration = I64()
    time = I64()
    mem_limit = U64()
    data = Bytes(max_len=_DATA, view=True)


class ExSectionDelete(Message):
    """Delete a section."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)


class ExExpiration(Message):
    """Set a section's expiration time."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    expiration = I64()


class ExWrite(Message):
    """An atomic write of several elements."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    time = I64()
    mem_limit = U64()
    items = List(WriteItem, max_count=MAX_VECTOR)


class ExOverwrite(Message):
    """Replace a section's content."""

    conn_id = U64()
    req_id = U32()
    uid = U64()
    time = I64()
    mem_limit = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    data = Bytes(max_len=_DATA, view=True)


class ExBarrier(Message):
    """Synchronize: applied once every earlier change is (it is sent SAFE)."""

    conn_id = U64()
    req_id = U32()
    uid = U64()


class ExRetentionExpire(Message):
    """The owner's decision: the retention of ``uid`` that ends at ``deadline`` is over."""

    uid = U64()
    deadline = I64()


class ExSectionExpire(Message):
    """The owner's decision: the section expired at ``deadline``."""

    uid = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    deadline = I64()


class ExStamp(Message):
    """The owner starts the retention clock of an opener-less checkpoint that has none (node loss, sync)."""

    uid = U64()
    time = I64()


#: A piece of a change larger than one ring message (``Exec.FRAGMENT``): the shared outbox's fragment.
ExFragment = Fragment


class SyncHeader(Message):
    """First sync message of every member: its state's lineage (equal lineage = equal state)."""

    ring_rep = U32()
    ring_seq = U64()
    epoch_rep = U32()
    epoch_seq = U64()
    version = U64()
    running = U8()


# -- state records (sync transfer and the persistent store) ----------------------------------------


class Rec(enum.IntEnum):
    """Record kinds (first byte of each record)."""

    CHECKPOINT = 1
    SECTION = 2
    DATA = 3
    OPENERS = 4


class RecCheckpoint(Message):
    """A checkpoint's attributes and replicated bookkeeping (then its SECTION and DATA records)."""

    uid = U64()
    name = Str(max_len=MAX_NAME, min_len=1)
    unlinked = U8()
    attrs = Nested(WireAttributes)
    active = I64()  # nodeid, -1: none
    changes = U64()
    closed_at = I64()  # -1: not closed (or not yet stamped)
    gen = U64()


class RecSection(Message):
    """A section (its data follows in DATA records of bounded size)."""

    uid = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    expiration = I64()
    last_update = I64()
    size = U64()


class RecData(Message):
    """A piece of a section's data."""

    uid = U64()
    section_id = Bytes(max_len=MAX_SECTION_ID)
    offset = U64()
    data = Tail(max_len=_DATA, view=True)


class RecOpeners(Message):
    """Sync only: the sender's node has ``count`` open handles on checkpoint ``uid`` (named ``name``)."""

    uid = U64()
    name = Str(max_len=MAX_NAME, min_len=1)
    count = U32()


#: Cluster message id -> its class (the state's changes; the store replays them).
DECODERS: dict[int, type[Message]] = {
    Exec.OPEN: ExOpen, Exec.CLOSE: ExClose, Exec.UNLINK: ExUnlink, Exec.RETENTION_SET: ExRetention,
    Exec.ACTIVE_SET: ExActive, Exec.SECTION_CREATE: ExSectionCreate, Exec.SECTION_DELETE: ExSectionDelete,
    Exec.EXPIRATION_SET: ExExpiration, Exec.WRITE: ExWrite, Exec.OVERWRITE: ExOverwrite, Exec.BARRIER: ExBarrier,
    Exec.RETENTION_EXPIRE: ExRetentionExpire, Exec.SECTION_EXPIRE: ExSectionExpire, Exec.STAMP: ExStamp,
}

__all__ = [
    "DECODERS",
    "ExActive",
    "ExBarrier",
    "ExClose",
    "ExExpiration",
    "ExFragment",
    "ExOpen",
    "ExOverwrite",
    "ExRetention",
    "ExRetentionExpire",
    "ExSectionCreate",
    "ExSectionDelete",
    "ExSectionExpire",
    "ExStamp",
    "ExUnlink",
    "ExWrite",
    "Exec",
    "Rec",
    "RecCheckpoint",
    "RecData",
    "RecOpeners",
    "RecSection",
    "SyncHeader",
]
