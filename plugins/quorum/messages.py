"""Quorum cluster messages (the sender's nodeid comes with every delivery)."""

from __future__ import annotations

import enum

from openais.message import U32, U64, Bool, List, Message


class Exec(enum.IntEnum):
    """Cluster message ids of the quorum service."""

    SYNC = 0  #: a StateTransfer chunk carrying one SyncRecordMsg
    SET_EXPECTED = 1
    SHRINK = 2


class NodeVotes(Message):
    """One known node and its votes."""

    nodeid = U32()
    votes = U32()


class SyncRecordMsg(Message):
    """A node's view of quorum for the sync round."""

    own_votes = U32()
    expected_votes = U32()
    wfa_cleared = Bool()
    known = List(NodeVotes, max_count=65536)


class SetExpectedMsg(Message):
    """An operator set the expected votes (answered on the origin node when delivered)."""

    conn_id = U64()
    request_id = U32()
    votes = U32()


class ShrinkMsg(Message):
    """last_man_standing: the owner decided to shrink expected votes for this configuration."""

    members = List(U32(), max_count=65536)
    expected_votes = U32()
