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

The IPC message layouts (requests, responses and callbacks, network byte
order) are defined once here and imported by the executive's CPG engine
(``plugins.cpg``).  Every decoder raises :class:`CpgMessageError` on
anything malformed.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import NamedTuple

from openais._client import Handle
from openais.errors import InvalidParam, TooBig

#: Service id of CPG.
SERVICE_ID = 8
#: Longest group name, in bytes of UTF-8.
MAX_GROUP_NAME = 128
#: Largest message ``mcast`` accepts, in bytes.
MAX_MESSAGE = 1024 * 1024

#: Delivery guarantees for :meth:`CpgHandle.mcast`.
AGREED = 0
SAFE = 1


class Reason(enum.IntEnum):
    """Why a process appears in a configuration change (corosync ``cpg_reason_t`` values)."""

    JOIN = 1
    LEAVE = 2
    NODEDOWN = 3
    NODEUP = 4
    PROCDOWN = 5


class Member(NamedTuple):
    """One process of a group: its node, its pid and why it is listed."""

    nodeid: int
    pid: int
    reason: Reason = Reason.JOIN


class CpgMessageError(ValueError):
    """A CPG IPC message that does not decode."""


class Request(enum.IntEnum):
    """Library request message ids."""

    JOIN = 0  #: GroupRequest -> empty
    LEAVE = 1  #: GroupRequest -> empty
    MCAST = 2  #: McastRequest -> empty
    MEMBERSHIP = 3  #: GroupRequest -> member list
    LOCAL_NODEID = 4  #: empty -> nodeid
    ITERATE = 5  #: empty -> groups with their members


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    DELIVER = 0
    CONFCHG = 1


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MEMBER = struct.Struct("!IIB")
_GUARANTEE = struct.Struct("!B")
_SENDER = struct.Struct("!II")


# -- building blocks -----------------------------------------------------------


def group_name_bytes(group: str) -> bytes:
    """UTF-8 of a group name; raises CpgMessageError unless it is a str of 1..128 bytes."""
    if not isinstance(group, str):
        raise CpgMessageError(f"group name must be str, not {type(group).__name__}")
    raw = group.encode("utf-8")
    if not 1 <= len(raw) <= MAX_GROUP_NAME:
        raise CpgMessageError(f"group name must be 1..{MAX_GROUP_NAME} bytes of UTF-8, not {len(raw)}")
    return raw


def pack_group_name(group: str) -> bytes:
    """A group name on the wire: u16 length, then UTF-8 (shared with the engine's cluster messages)."""
    raw = group_name_bytes(group)
    return _U16.pack(len(raw)) + raw


def unpack_group_name(buf: memoryview, offset: int) -> tuple[str, int]:
    """Read a group name at ``offset``; return it and the offset after it."""
    if offset + _U16.size > len(buf):
        raise CpgMessageError("truncated group name length")
    (length,) = _U16.unpack_from(buf, offset)
    offset += _U16.size
    if not 1 <= length <= MAX_GROUP_NAME:
        raise CpgMessageError(f"group name length {length} out of range")
    end = offset + length
    if end > len(buf):
        raise CpgMessageError("truncated group name")
    try:
        name = bytes(buf[offset:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CpgMessageError("group name is not UTF-8") from exc
    return name, end


def _pack_members(members: list[Member] | tuple[Member, ...]) -> bytes:
    parts = [_U32.pack(len(members))]
    parts.extend(_MEMBER.pack(m.nodeid, m.pid, m.reason) for m in members)
    return b"".join(parts)


def _unpack_members(buf: memoryview, offset: int) -> tuple[list[Member], int]:
    if offset + _U32.size > len(buf):
        raise CpgMessageError("truncated member count")
    (count,) = _U32.unpack_from(buf, offset)
    offset += _U32.size
    end = offset + count * _MEMBER.size
    if end > len(buf):
        raise CpgMessageError(f"member count {count} exceeds the message")
    members = []
    for nodeid, pid, reason in _MEMBER.iter_unpack(buf[offset:end]):
        try:
            members.append(Member(nodeid, pid, Reason(reason)))
        except ValueError as exc:
            raise CpgMessageError(f"unknown member reason {reason}") from exc
    return members, end


def _expect_end(buf: memoryview, offset: int) -> None:
    if offset != len(buf):
        raise CpgMessageError(f"{len(buf) - offset} trailing bytes")


# -- requests -------------------------------------------------------------------


def encode_group_request(group: str) -> bytes:
    """JOIN, LEAVE and MEMBERSHIP request: one group name."""
    return pack_group_name(group)


def decode_group_request(payload: bytes) -> str:
    """Decode a JOIN, LEAVE or MEMBERSHIP request into its group name."""
    buf = memoryview(payload)
    group, offset = unpack_group_name(buf, 0)
    _expect_end(buf, offset)
    return group


def encode_mcast_request(data: bytes, guarantee: int = AGREED) -> bytes:
    """MCAST request: the guarantee byte, then the message."""
    if guarantee not in (AGREED, SAFE):
        raise CpgMessageError(f"unknown guarantee {guarantee}")
    return _GUARANTEE.pack(guarantee) + bytes(data)


def decode_mcast_request(payload: bytes) -> tuple[int, memoryview]:
    """Decode an MCAST request into (guarantee, data)."""
    buf = memoryview(payload)
    if len(buf) < _GUARANTEE.size:
        raise CpgMessageError("empty mcast request")
    (guarantee,) = _GUARANTEE.unpack_from(buf)
    if guarantee not in (AGREED, SAFE):
        raise CpgMessageError(f"unknown guarantee {guarantee}")
    return guarantee, buf[_GUARANTEE.size :]


def decode_empty_request(payload: bytes) -> None:
    """LOCAL_NODEID and ITERATE take no payload."""
    if payload:
        raise CpgMessageError(f"{len(payload)} unexpected bytes")


# -- responses ------------------------------------------------------------------


def encode_member_list(members: list[Member] | tuple[Member, ...]) -> bytes:
    """MEMBERSHIP response: count, then (nodeid, pid, reason) per member."""
    return _pack_members(members)


def decode_member_list(payload: bytes) -> list[Member]:
    """Decode a MEMBERSHIP response."""
    buf = memoryview(payload)
    members, offset = _unpack_members(buf, 0)
    _expect_end(buf, offset)
    return members


def encode_nodeid(nodeid: int) -> bytes:
    """LOCAL_NODEID response."""
    return _U32.pack(nodeid)


def decode_nodeid(payload: bytes) -> int:
    """Decode a LOCAL_NODEID response."""
    if len(payload) != _U32.size:
        raise CpgMessageError("nodeid response must be 4 bytes")
    return _U32.unpack(payload)[0]


def encode_group_list(groups: dict[str, list[Member]]) -> bytes:
    """ITERATE response: group count, then per group its name and member list."""
    parts = [_U32.pack(len(groups))]
    for name, members in groups.items():
        parts.append(pack_group_name(name))
        parts.append(_pack_members(members))
    return b"".join(parts)


def decode_group_list(payload: bytes) -> dict[str, list[Member]]:
    """Decode an ITERATE response (group order kept)."""
    buf = memoryview(payload)
    if len(buf) < _U32.size:
        raise CpgMessageError("truncated group count")
    (count,) = _U32.unpack_from(buf)
    offset = _U32.size
    groups: dict[str, list[Member]] = {}
    for _ in range(count):
        name, offset = unpack_group_name(buf, offset)
        if name in groups:
            raise CpgMessageError(f"group {name!r} listed twice")
        groups[name], offset = _unpack_members(buf, offset)
    _expect_end(buf, offset)
    return groups


# -- callbacks ------------------------------------------------------------------


def encode_deliver(group: str, nodeid: int, pid: int, data: bytes | memoryview) -> bytes:
    """DELIVER callback: group, sender nodeid and pid, message."""
    return b"".join((pack_group_name(group), _SENDER.pack(nodeid, pid), data))


def decode_deliver(payload: bytes) -> tuple[str, int, int, bytes]:
    """Decode a DELIVER callback into (group, nodeid, pid, data)."""
    buf = memoryview(payload)
    group, offset = unpack_group_name(buf, 0)
    if offset + _SENDER.size > len(buf):
        raise CpgMessageError("truncated sender")
    nodeid, pid = _SENDER.unpack_from(buf, offset)
    return group, nodeid, pid, bytes(buf[offset + _SENDER.size :])


def encode_confchg(group: str, members: list[Member], left: list[Member], joined: list[Member]) -> bytes:
    """CONFCHG callback: group, then the member, left and joined lists."""
    return b"".join((pack_group_name(group), _pack_members(members), _pack_members(left), _pack_members(joined)))


def decode_confchg(payload: bytes) -> tuple[str, list[Member], list[Member], list[Member]]:
    """Decode a CONFCHG callback into (group, members, left, joined)."""
    buf = memoryview(payload)
    group, offset = unpack_group_name(buf, 0)
    members, offset = _unpack_members(buf, offset)
    left, offset = _unpack_members(buf, offset)
    joined, offset = _unpack_members(buf, offset)
    _expect_end(buf, offset)
    return group, members, left, joined


# -- the library ----------------------------------------------------------------

DeliverFn = Callable[[str, int, int, bytes], None]
ConfchgFn = Callable[[str, list[Member], list[Member], list[Member]], None]


def _checked_group(group: str) -> str:
    try:
        group_name_bytes(group)
    except CpgMessageError as exc:
        raise InvalidParam(str(exc)) from exc
    return group


class CpgHandle(Handle):
    """One CPG handle: at most one joined group, callbacks run by ``dispatch``."""

    def __init__(self, deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None) -> None:
        super().__init__(SERVICE_ID)
        self._deliver_fn = deliver
        self._confchg_fn = confchg

    def join(self, group: str) -> None:
        """Join ``group``; returns once every node has applied the join (Exist if already joined)."""
        self._call(Request.JOIN, encode_group_request(_checked_group(group)))
        self._joined = group

    def leave(self, group: str) -> None:
        """Leave ``group`` (NotExist if this handle has not joined it)."""
        self._call(Request.LEAVE, encode_group_request(_checked_group(group)))
        self._joined = None

    def mcast(self, data: bytes, guarantee: int = AGREED) -> None:
        """Multicast ``data`` to the joined group; TryAgain when the executive is backed up."""
        if guarantee not in (AGREED, SAFE):
            raise InvalidParam(f"unknown guarantee {guarantee}")
        if len(data) > MAX_MESSAGE:
            raise TooBig(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        if getattr(self, "_joined", None) is None:
            self._call(Request.MCAST, encode_mcast_request(data, guarantee))  # the executive says NotExist
            return
        # Pipelined: up to PIPELINE_WINDOW messages in flight; TryAgain when the executive is backed
        # up; an error the executive found for an earlier message is raised by a later call.
        self._send_pipelined(Request.MCAST, encode_mcast_request(data, guarantee))

    def membership(self, group: str) -> list[Member]:
        """Current members of ``group`` as this node knows them (empty if nobody joined it)."""
        return decode_member_list(self._call(Request.MEMBERSHIP, encode_group_request(_checked_group(group))))

    def local_nodeid(self) -> int:
        """Nodeid of the executive this handle is connected to."""
        return decode_nodeid(self._call(Request.LOCAL_NODEID, b""))

    def iteration(self) -> dict[str, list[Member]]:
        """Every group with members, in name order, each with its members."""
        return decode_group_list(self._call(Request.ITERATE, b""))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.DELIVER:
            group, nodeid, pid, data = decode_deliver(payload)
            if self._deliver_fn is not None:
                self._deliver_fn(group, nodeid, pid, data)
        elif msg_id == Callback.CONFCHG:
            group, members, left, joined = decode_confchg(payload)
            if self._confchg_fn is not None:
                self._confchg_fn(group, members, left, joined)
        else:
            raise CpgMessageError(f"unknown CPG callback {msg_id}")


def initialize(deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None) -> CpgHandle:
    """Connect to the local executive's CPG service and return a handle."""
    return CpgHandle(deliver=deliver, confchg=confchg)


def groups() -> dict[str, list[Member]]:
    """Every group of the cluster with its members (opens and closes a handle)."""
    with CpgHandle() as handle:
        return handle.iteration()
