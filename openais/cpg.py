"""Closed process groups (CPG): the application library and its IPC messages.

A process joins a named group through a handle and from then on receives,
in agreed order and identically on every node, every message multicast to
the group (its own included) and a configuration change callback whenever a
process joins, leaves, dies, or appears or vanishes with its node::

    from openais import cpg

    def deliver(group, nodeid, pid, data): ...
    def confchg(group, members, left, joined): ...

    with cpg.initialize(deliver=deliver, confchg=confchg) as h:
        h.join("workers")
        h.mcast(b"hello")
        h.dispatch(openais.DISPATCH_ALL)

The IPC messages (requests, responses and callbacks) are
:class:`openais.message.Message` definitions, here once and imported by the
executive's CPG engine (``plugins.cpg``); decoding raises
:class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from openais._client import Handle, checked_timeout
from openais.errors import InvalidParam, TooBig
from openais.message import U32, Enum, List, Message, MessageError, Str, Tail

#: Service id of CPG.
SERVICE_ID = 8
#: Longest group name, in bytes of UTF-8.
MAX_GROUP_NAME = 128
#: Largest message ``mcast`` accepts, in bytes: delivered intact to every member.
MAX_MESSAGE = 1024 * 1024
#: Most members one list carries, and most groups one ITERATE answer lists.
MAX_MEMBERS = 1 << 16
MAX_GROUPS = 1 << 16


class Guarantee(enum.IntEnum):
    """Delivery guarantee of :meth:`CpgHandle.mcast`."""

    AGREED = 0
    SAFE = 1


AGREED = Guarantee.AGREED
SAFE = Guarantee.SAFE


class Reason(enum.IntEnum):
    """Why a process appears in a configuration change (corosync ``cpg_reason_t`` values)."""

    JOIN = 1
    LEAVE = 2
    NODEDOWN = 3
    NODEUP = 4
    PROCDOWN = 5


class Request(enum.IntEnum):
    """Library request message ids."""

    JOIN = 0  #: GroupRequest -> empty
    LEAVE = 1  #: GroupRequest -> empty
    MCAST = 2  #: McastRequest -> empty
    MEMBERSHIP = 3  #: GroupRequest -> MemberList
    LOCAL_NODEID = 4  #: empty -> NodeId
    ITERATE = 5  #: empty -> GroupList


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    DELIVER = 0  #: Deliver
    CONFCHG = 1  #: Confchg


# -- the IPC messages ------------------------------------------------------------


def group_field() -> Str:
    """A group name field: 1..128 bytes of UTF-8 (shared with the engine's cluster messages)."""
    return Str(max_len=MAX_GROUP_NAME, min_len=1)


class Member(Message):
    """One process of a group: its node, its pid and why it is listed."""

    nodeid = U32()
    pid = U32()
    reason = Enum(Reason, default=Reason.JOIN)


class GroupRequest(Message):
    """JOIN, LEAVE and MEMBERSHIP request: one group name."""

    group = group_field()


class McastRequest(Message):
    """MCAST request: the guarantee, then the message (the rest of the frame)."""

    guarantee = Enum(Guarantee)
    data = Tail(max_len=MAX_MESSAGE, view=True)


class MemberList(Message):
    """MEMBERSHIP response."""

    members = List(Member, max_count=MAX_MEMBERS)


class NodeId(Message):
    """LOCAL_NODEID response."""

    nodeid = U32()


class GroupEntry(Message):
    """One group of an ITERATE response with its members."""

    group = group_field()
    members = List(Member, max_count=MAX_MEMBERS)


class GroupList(Message):
    """ITERATE response: every group with members, in name order."""

    groups = List(GroupEntry, max_count=MAX_GROUPS)


class Deliver(Message):
    """DELIVER callback: the group, the sender's node and pid, the message."""

    group = group_field()
    nodeid = U32()
    pid = U32()
    data = Tail(max_len=MAX_MESSAGE, view=True)


class Confchg(Message):
    """CONFCHG callback: the group, then the member, left and joined lists."""

    group = group_field()
    members = List(Member, max_count=MAX_MEMBERS)
    left = List(Member, max_count=MAX_MEMBERS)
    joined = List(Member, max_count=MAX_MEMBERS)


def group_dict(listing: GroupList) -> dict[str, list[Member]]:
    """An ITERATE answer as ``{group: members}`` (group order kept; a group listed twice is malformed)."""
    groups: dict[str, list[Member]] = {}
    for entry in listing.groups:
        if entry.group in groups:
            raise MessageError("GroupList", "groups", f"group {entry.group!r} listed twice")
        groups[entry.group] = entry.members
    return groups


# -- the library ----------------------------------------------------------------

DeliverFn = Callable[[str, int, int, bytes], None]
ConfchgFn = Callable[[str, list[Member], list[Member], list[Member]], None]


def _group_request(group: str) -> bytes:
    try:
        return GroupRequest.pack(group)
    except MessageError as exc:
        raise InvalidParam(str(exc)) from None


class CpgHandle(Handle):
    """One CPG handle: at most one joined group, callbacks run by ``dispatch``.

    ``path``: the executive's socket (default ``$OPENAIS_IPC_SOCKET``); ``timeout``: seconds to connect.
    Every blocking call takes ``timeout=`` (seconds to wait for the answer; default
    ``openais._client.CALL_TIMEOUT``): ``Timeout`` when it passes, ``InvalidParam`` when negative.
    """

    def __init__(self, deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None, *,
                 path: str | None = None, timeout: float | None = None) -> None:
        super().__init__(SERVICE_ID, path=path, timeout=timeout)
        self._deliver_fn = deliver
        self._confchg_fn = confchg

    def join(self, group: str, *, timeout: float | None = None) -> None:
        """Join ``group``; returns once every node has applied the join (Exist if already joined)."""
        self._call(Request.JOIN, _group_request(group), timeout=checked_timeout(timeout))
        self._joined = group

    def leave(self, group: str, *, timeout: float | None = None) -> None:
        """Leave ``group`` (NotExist if this handle has not joined it)."""
        self._call(Request.LEAVE, _group_request(group), timeout=checked_timeout(timeout))
        self._joined = None

    def mcast(self, data: bytes, guarantee: int = AGREED, *, timeout: float | None = None) -> None:
        """Multicast ``data`` to the joined group; TryAgain when the executive is backed up.

        ``timeout``: seconds a send may wait while the executive takes no data (then ``Timeout``).
        """
        if timeout is not None:
            timeout = checked_timeout(timeout)
        if len(data) > MAX_MESSAGE:
            raise TooBig(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        try:
            request = McastRequest.pack(guarantee, data)
        except MessageError as exc:  # an unknown guarantee, data that is not bytes-like
            raise InvalidParam(str(exc)) from None
        if getattr(self, "_joined", None) is None:
            self._call(Request.MCAST, request, timeout=timeout)  # the executive says NotExist
            return
        # Pipelined: up to PIPELINE_WINDOW messages in flight; TryAgain when the executive is backed
        # up; an error the executive found for an earlier message is raised by the next call,
        # dispatch, flush or finalize.
        self._send_pipelined(Request.MCAST, request, timeout)

    def membership(self, group: str, *, timeout: float | None = None) -> list[Member]:
        """Current members of ``group`` as this node knows them (empty if nobody joined it)."""
        payload = self._call(Request.MEMBERSHIP, _group_request(group), timeout=checked_timeout(timeout))
        return MemberList.decode(payload).members

    def local_nodeid(self, *, timeout: float | None = None) -> int:
        """Nodeid of the executive this handle is connected to."""
        return NodeId.decode(self._call(Request.LOCAL_NODEID, b"", timeout=checked_timeout(timeout))).nodeid

    def iteration(self, *, timeout: float | None = None) -> dict[str, list[Member]]:
        """Every group with members, in name order, each with its members."""
        return group_dict(GroupList.decode(self._call(Request.ITERATE, b"", timeout=checked_timeout(timeout))))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.DELIVER:
            group, nodeid, pid, data = Deliver.unpack(payload)
            if self._deliver_fn is not None:
                self._deliver_fn(group, nodeid, pid, bytes(data))
        elif msg_id == Callback.CONFCHG:
            group, members, left, joined = Confchg.decode(payload)
            if self._confchg_fn is not None:
                self._confchg_fn(group, members, left, joined)
        else:
            raise MessageError("CPG callback", None, f"unknown callback id {msg_id}")


def initialize(deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None, *,
               path: str | None = None, timeout: float | None = None) -> CpgHandle:
    """Connect to the local executive's CPG service and return a handle.

    ``path``: its IPC socket (default ``$OPENAIS_IPC_SOCKET``); ``timeout``: seconds to connect.
    """
    return CpgHandle(deliver=deliver, confchg=confchg, path=path, timeout=timeout)


def groups(*, path: str | None = None, timeout: float | None = None) -> dict[str, list[Member]]:
    """Every group of the cluster with its members (opens and closes a handle)."""
    with CpgHandle(path=path, timeout=timeout) as handle:
        return handle.iteration(timeout=timeout)
