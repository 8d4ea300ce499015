"""CPG cluster messages: what the engines multicast to each other (network byte order).

The sender's nodeid is not carried: the ring delivers it with every message.
Every decoder raises :class:`CpgClusterMessageError` on anything malformed.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from openais.cpg import CpgMessageError, Reason, pack_group_name, unpack_group_name


class CpgClusterMessageError(ValueError):
    """A CPG cluster message that does not decode."""


class Exec(enum.IntEnum):
    """Cluster message ids of the CPG service."""

    JOIN = 0
    LEAVE = 1
    MCAST = 2
    SYNC_MEMBERS = 3


_JOIN = struct.Struct("!QQI")  # conn id, request id, pid
_LEAVE = struct.Struct("!QQIB")  # conn id, request id, pid, reason
_MCAST = struct.Struct("!I")  # pid
_SYNC_HEAD = struct.Struct("!IQI")  # ring rep, ring seq, entry count
_PID = struct.Struct("!I")


class JoinMsg(NamedTuple):
    """A process of the sender's node joins ``group``; ``conn_id``/``request_id`` find the asker."""

    conn_id: int
    request_id: int
    pid: int
    group: str


class LeaveMsg(NamedTuple):
    """A process of the sender's node leaves ``group`` (LEAVE) or died in it (PROCDOWN)."""

    conn_id: int
    request_id: int
    pid: int
    reason: Reason
    group: str


class McastMsg(NamedTuple):
    """A message from process ``pid`` of the sender's node to ``group``."""

    pid: int
    group: str
    data: memoryview


class SyncMembersMsg(NamedTuple):
    """Sync traffic: a share of the sender's own (pid, group) memberships for ring ``(rep, seq)``."""

    ring_rep: int
    ring_seq: int
    entries: list[tuple[int, str]]


def _group(buf: memoryview, offset: int) -> tuple[str, int]:
    try:
        return unpack_group_name(buf, offset)
    except CpgMessageError as exc:
        raise CpgClusterMessageError(str(exc)) from exc


def _pack_group(group: str) -> bytes:
    try:
        return pack_group_name(group)
    except CpgMessageError as exc:
        raise CpgClusterMessageError(str(exc)) from exc


def encode_join(conn_id: int, request_id: int, pid: int, group: str) -> bytes:
    """Encode a JOIN."""
    return _JOIN.pack(conn_id, request_id, pid) + _pack_group(group)


def decode_join(payload: bytes) -> JoinMsg:
    """Decode a JOIN."""
    buf = memoryview(payload)
    if len(buf) < _JOIN.size:
        raise CpgClusterMessageError("truncated join")
    conn_id, request_id, pid = _JOIN.unpack_from(buf)
    group, offset = _group(buf, _JOIN.size)
    if offset != len(buf):
        raise CpgClusterMessageError("join has trailing bytes")
    return JoinMsg(conn_id, request_id, pid, group)


def encode_leave(conn_id: int, request_id: int, pid: int, reason: Reason, group: str) -> bytes:
    """Encode a LEAVE (reason LEAVE or PROCDOWN)."""
    return _LEAVE.pack(conn_id, request_id, pid, reason) + _pack_group(group)


def decode_leave(payload: bytes) -> LeaveMsg:
    """Decode a LEAVE."""
    buf = memoryview(payload)
    if len(buf) < _LEAVE.size:
        raise CpgClusterMessageError("truncated leave")
    conn_id, request_id, pid, reason = _LEAVE.unpack_from(buf)
    if reason not in (Reason.LEAVE, Reason.PROCDOWN):
        raise CpgClusterMessageError(f"leave with reason {reason}")
    group, offset = _group(buf, _LEAVE.size)
    if offset != len(buf):
        raise CpgClusterMessageError("leave has trailing bytes")
    return LeaveMsg(conn_id, request_id, pid, Reason(reason), group)


def encode_mcast(pid: int, group: str, data: bytes | memoryview) -> bytes:
    """Encode an MCAST."""
    return b"".join((_MCAST.pack(pid), _pack_group(group), data))


def decode_mcast(payload: bytes) -> McastMsg:
    """Decode an MCAST (``data`` is a view into ``payload``)."""
    buf = memoryview(payload)
    if len(buf) < _MCAST.size:
        raise CpgClusterMessageError("truncated mcast")
    (pid,) = _MCAST.unpack_from(buf)
    group, offset = _group(buf, _MCAST.size)
    return McastMsg(pid, group, buf[offset:])


def encode_sync_members(ring_rep: int, ring_seq: int, entries: list[tuple[int, str]]) -> bytes:
    """Encode a SYNC_MEMBERS share."""
    parts = [_SYNC_HEAD.pack(ring_rep, ring_seq, len(entries))]
    for pid, group in entries:
        parts.append(_PID.pack(pid))
        parts.append(_pack_group(group))
    return b"".join(parts)


def decode_sync_members(payload: bytes) -> SyncMembersMsg:
    """Decode a SYNC_MEMBERS share (the count must match the entries present exactly)."""
    buf = memoryview(payload)
    if len(buf) < _SYNC_HEAD.size:
        raise CpgClusterMessageError("truncated sync members")
    rep, seq, count = _SYNC_HEAD.unpack_from(buf)
    offset = _SYNC_HEAD.size
    entries = []
    for _ in range(count):
        if offset + _PID.size > len(buf):
            raise CpgClusterMessageError(f"sync members count {count} exceeds the message")
        (pid,) = _PID.unpack_from(buf, offset)
        group, offset = _group(buf, offset + _PID.size)
        entries.append((pid, group))
    if offset != len(buf):
        raise CpgClusterMessageError("sync members has trailing bytes")
    return SyncMembersMsg(rep, seq, entries)
