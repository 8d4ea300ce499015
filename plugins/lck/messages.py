"""LCK cluster messages: what the engines multicast to each other, and the records of a sync round.

The sender's nodeid is not carried: the ring delivers it with every message.
``token`` names the pending library request on the sender's node that the
delivered message answers (0: nobody waits).  Every decoder is strict
(:class:`openais.message.MessageError` on anything malformed).
"""

from __future__ import annotations

import enum

from openais.lck import MAX_NAME
from openais.message import U8, U32, U64, Bool, List, Message, Str


class Exec(enum.IntEnum):
    """Cluster message ids of the LCK service."""

    OPEN = 0
    CLOSE = 1
    LOCK = 2
    UNLOCK = 3
    WITHDRAW = 4
    PURGE = 5
    CONN_EXIT = 6
    SYNC = 7


class OpenMsg(Message):
    """Connection ``conn_id`` (process ``pid``) of the sender opens ``name`` as its Resource ``res_handle``."""

    token = U64()
    res_handle = U64()
    conn_id = U64()
    pid = U32()
    create = Bool()
    name = Str(max_len=MAX_NAME, min_len=1)


class CloseMsg(Message):
    """Resource ``res_handle`` of the sender is closed."""

    token = U64()
    res_handle = U64()


class LockMsg(Message):
    """A lock request through Resource ``res_handle`` of the sender; ``since``: request time (ns, display only)."""

    token = U64()
    res_handle = U64()
    lock_id = U64()
    mode = U8()
    flags = U32()
    waiter_signal = U64()
    since = U64()


class UnlockMsg(Message):
    """Unlock (or withdraw) lock ``lock_id`` of Resource ``res_handle`` of the sender."""

    token = U64()
    res_handle = U64()
    lock_id = U64()


class WithdrawMsg(Message):
    """The timeout of the sender's queued request ``lock_id`` expired: withdraw it if still queued."""

    lock_id = U64()


class PurgeMsg(Message):
    """Purge the orphan locks of the resource of Resource ``res_handle`` of the sender."""

    token = U64()
    res_handle = U64()


class ConnExitMsg(Message):
    """Connection ``conn_id`` of the sender finalized or died."""

    conn_id = U64()


# -- sync records (carried in chunks by aisexec.statesync) ------------------------------------------


class Record(enum.IntEnum):
    """First byte of every sync record."""

    HELLO = 1
    META = 2
    OPENER = 3
    LOCK = 4


class NodeInc(Message):
    """A node and the incarnation (start time, ns) of its executive."""

    nodeid = U32()
    incarnation = U64()


class HelloRec(Message):
    """Every member sends one: its incarnation and the transitional members it comes with."""

    incarnation = U64()
    transitional = List(U32(), max_count=1 << 16)


class MetaRec(Message):
    """First record of a side's table: its node incarnations."""

    node_inc = List(NodeInc, max_count=1 << 16)


class OpenerRec(Message):
    """One open Resource of a side's table."""

    nodeid = U32()
    res_handle = U64()
    conn_id = U64()
    pid = U32()
    name = Str(max_len=MAX_NAME, min_len=1)


class LockRec(Message):
    """One granted lock (orphan when ``orphan``) or queued request (in ``qseq`` order) of a side's table."""

    lock_id = U64()
    granted = Bool()
    orphan = Bool()
    opener_node = U32()
    res_handle = U64()
    conn_id = U64()
    pid = U32()
    mode = U8()
    flags = U32()
    waiter_signal = U64()
    token = U64()
    since = U64()
    qseq = U64()
    name = Str(max_len=MAX_NAME, min_len=1)


RECORD_TYPES: dict[int, type[Message]] = {
    Record.HELLO: HelloRec, Record.META: MetaRec, Record.OPENER: OpenerRec, Record.LOCK: LockRec,
}


def encode_record(kind: Record, msg: Message) -> bytes:
    """One sync record: its kind byte, then the message."""
    return bytes((kind,)) + msg.encode()


def decode_record(data: bytes) -> tuple[Record, Message]:
    """Decode a sync record; raises MessageError (or ValueError) when malformed."""
    if not data:
        raise ValueError("empty LCK sync record")
    cls = RECORD_TYPES.get(data[0])
    if cls is None:
        raise ValueError(f"unknown LCK sync record kind {data[0]}")
    return Record(data[0]), cls.decode(memoryview(data)[1:])
