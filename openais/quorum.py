"""Quorum (votequorum): is this partition allowed to act, and why.

With a ``quorum { }`` section in openais.conf the cluster computes quorum
from every configuration, identically on every member; LCK, AMF and CKPT
stop granting, activating and writing in a partition without it::

    from openais import quorum

    with quorum.initialize(notify=lambda quorate, ring_id, members: print(quorate, members)) as h:
        print(h.getquorate(), h.info())
        h.track(openais.TRACK_CHANGES)
        h.dispatch(openais.DISPATCH_BLOCKING)

The IPC messages are defined here and imported by the engine (``plugins.quorum``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from openais import TRACK_CHANGES, TRACK_CHANGES_ONLY, TRACK_CURRENT
from openais._client import Handle
from openais.errors import BadFlags, InvalidParam
from openais.message import U8, U32, Bool, List, Message, Optional, Str

#: Service id of the quorum service.
SERVICE_ID = 9

__all__ = ["SERVICE_ID", "TRACK_CHANGES", "TRACK_CHANGES_ONLY", "TRACK_CURRENT", "QuorumHandle", "QuorumInfo",
           "initialize"]



class Request(enum.IntEnum):
    """Library request message ids."""

    GETQUORATE = 0
    GETINFO = 1
    TRACK = 2
    TRACK_STOP = 3
    SET_EXPECTED = 4


class Callback(enum.IntEnum):
    """Dispatch message ids."""

    NOTIFY = 0


class QuorumInfo(NamedTuple):
    """votequorum_getinfo: the quorum state of the partition (``node_votes`` per member)."""

    quorate: bool
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    node_votes: dict[int, int]
    flags: frozenset[str]


# -- IPC messages -------------------------------------------------------------------------------


class Quorate(Message):
    """GETQUORATE answer."""

    quorate = Bool()


class InfoRequest(Message):
    """GETINFO: the whole partition, or one node."""

    nodeid = Optional(U32())


class NodeEntry(Message):
    """A member node and its votes."""

    nodeid = U32()
    votes = U32()


class InfoAnswer(Message):
    """GETINFO answer."""

    quorate = Bool()
    expected_votes = U32()
    highest_expected = U32()
    total_votes = U32()
    quorum = U32()
    nodes = List(NodeEntry, max_count=65536)
    flags = List(Str(max_len=32), max_count=16)


class TrackRequest(Message):
    """TRACK: flags TRACK_CURRENT / TRACK_CHANGES."""

    flags = U8()


class SetExpected(Message):
    """SET_EXPECTED: the new expected votes."""

    votes = U32()


class Notify(Message):
    """NOTIFY callback: quorate, ring id, members."""

    quorate = Bool()
    ring_id = Str(max_len=64)
    members = List(U32(), max_count=65536)


# -- the library ----------------------------------------------------------------------------------

NotifyFn = Callable[[bool, str, list[int]], None]


class QuorumHandle(Handle):
    """A quorum handle: status calls and quorum change notifications through ``dispatch``."""

    def __init__(self, notify: NotifyFn | None = None, *, path: str | None = None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self._notify = notify
        try:
            self.getquorate()  # NotExist when no quorum is configured
        except BaseException:
            self.finalize()
            raise

    def getquorate(self) -> bool:
        """True when this node's partition is quorate."""
        return Quorate.decode(self._call(Request.GETQUORATE, b"")).quorate

    def info(self, nodeid: int | None = None) -> QuorumInfo:
        """The partition's votequorum state; with ``nodeid`` only that node's votes (NotExist if unknown)."""
        answer = InfoAnswer.decode(self._call(Request.GETINFO, InfoRequest.pack(nodeid)))
        return QuorumInfo(answer.quorate, answer.expected_votes, answer.highest_expected, answer.total_votes,
                          answer.quorum, {n.nodeid: n.votes for n in answer.nodes}, frozenset(answer.flags))

    def track(self, flags: int) -> None:
        """Start notifications: TRACK_CURRENT (one now), TRACK_CHANGES (on every change); BadFlags otherwise."""
        if not flags or flags & ~(TRACK_CURRENT | TRACK_CHANGES):
            raise BadFlags(f"track flags must combine TRACK_CURRENT and TRACK_CHANGES, not {flags}")
        if self._notify is None:
            from openais.errors import Init

            raise Init("track needs the notify callback given to initialize")
        self._call(Request.TRACK, TrackRequest.pack(flags))

    def track_stop(self) -> None:
        """Stop notifications (NotExist when not tracking)."""
        self._call(Request.TRACK_STOP, b"")

    def set_expected(self, votes: int) -> None:
        """Set the cluster's expected votes (root only: Access; InvalidParam below the votes present)."""
        if not isinstance(votes, int) or not 1 <= votes <= 100_000:
            raise InvalidParam(f"expected votes must be an integer from 1 to 100000, not {votes!r}")
        self._call(Request.SET_EXPECTED, SetExpected.pack(votes))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id != Callback.NOTIFY:
            raise InvalidParam(f"unknown quorum callback {msg_id}")
        note = Notify.decode(payload)
        if self._notify is not None:
            self._notify(note.quorate, note.ring_id, list(note.members))


def initialize(notify: NotifyFn | None = None, *, path: str | None = None) -> QuorumHandle:
    """Connect to the local executive's quorum service (NotExist when no quorum is configured)."""
    return QuorumHandle(notify, path=path)
