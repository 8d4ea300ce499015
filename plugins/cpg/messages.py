"""CPG cluster messages: what the engines multicast to each other, defined once.

The sender's nodeid is not carried: the ring delivers it with every message.
Decoding raises :class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum

from openais.cpg import MAX_MESSAGE, Reason, group_field
from openais.message import U32, U64, Enum, List, Message, Tail

#: Most (pid, group) entries one SYNC_MEMBERS share may carry.
MAX_SYNC_ENTRIES = 1 << 16


class Exec(enum.IntEnum):
    """Cluster message ids of the CPG service."""

    JOIN = 0  #: JoinMsg
    LEAVE = 1  #: LeaveMsg
    MCAST = 2  #: McastMsg
    SYNC_MEMBERS = 3  #: SyncMembersMsg


class JoinMsg(Message):
    """A process of the sender's node joins ``group``; ``conn_id``/``request_id`` find the asker."""

    conn_id = U64()
    request_id = U64()
    pid = U32()
    group = group_field()


class LeaveMsg(Message):
    """A process of the sender's node leaves ``group`` (LEAVE) or died in it (PROCDOWN)."""

    conn_id = U64()
    request_id = U64()
    pid = U32()
    reason = Enum(Reason, values=(Reason.LEAVE, Reason.PROCDOWN))
    group = group_field()


class McastMsg(Message):
    """A message from process ``pid`` of the sender's node to ``group`` (``data`` decodes to a view)."""

    pid = U32()
    group = group_field()
    data = Tail(max_len=MAX_MESSAGE, view=True)


class SyncEntry(Message):
    """One membership of a sync share: process ``pid`` of the sender's node is in ``group``."""

    pid = U32()
    group = group_field()


class SyncMembersMsg(Message):
    """Sync traffic: a share of the sender's own (pid, group) memberships for ring ``(rep, seq)``."""

    ring_rep = U32()
    ring_seq = U64()
    entries = List(SyncEntry, max_count=MAX_SYNC_ENTRIES)
