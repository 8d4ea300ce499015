"""CLM cluster messages: what the engines multicast to each other (network byte order).

There is one: during sync every node multicasts its own node record and the
view it comes from.  The sender's nodeid is not carried (the ring delivers
it).  The decoder raises :class:`ClmClusterMessageError` on anything malformed.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from openais.clm import MAX_ADDRESS, MAX_NAME

#: Most previous-view members one record may list (far above any ring's size).
MAX_PREVIOUS_MEMBERS = 4096


class ClmClusterMessageError(ValueError):
    """A CLM cluster message that does not decode."""


class Exec(enum.IntEnum):
    """Cluster message ids of the CLM service."""

    NODE_RECORD = 0


# ring rep, ring seq, previous view, initial view (0 = none yet), boot timestamp, previous member count
_RECORD_HEAD = struct.Struct("!IQQQqI")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class NodeRecord(NamedTuple):
    """Sync traffic for ring ``(ring_rep, ring_seq)``: the sender's own node and the view it comes from.

    ``previous_view`` and ``previous_members`` describe the last view the
    sender activated (0 and empty after boot); ``initial_view`` is the view
    in which the sender joined (0 if it has not joined one yet).
    """

    ring_rep: int
    ring_seq: int
    previous_view: int
    initial_view: int
    boot_timestamp: int
    previous_members: tuple[int, ...]
    address: str
    name: str


def _pack_text(text: str, limit: int, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise ClmClusterMessageError(f"{what} longer than {limit} bytes")
    return _U16.pack(len(raw)) + raw


def _unpack_text(buf: memoryview, offset: int, limit: int, what: str) -> tuple[str, int]:
    if offset + _U16.size > len(buf):
        raise ClmClusterMessageError(f"truncated {what} length")
    (length,) = _U16.unpack_from(buf, offset)
    offset += _U16.size
    if length > limit or offset + length > len(buf):
        raise ClmClusterMessageError(f"{what} length {length} out of range")
    try:
        return bytes(buf[offset : offset + length]).decode("utf-8"), offset + length
    except UnicodeDecodeError as exc:
        raise ClmClusterMessageError(f"{what} is not UTF-8") from exc


def encode_node_record(record: NodeRecord) -> bytes:
    """Encode a NODE_RECORD message."""
    if len(record.previous_members) > MAX_PREVIOUS_MEMBERS:
        raise ClmClusterMessageError("too many previous members")
    return b"".join((
        _RECORD_HEAD.pack(record.ring_rep, record.ring_seq, record.previous_view, record.initial_view,
                          record.boot_timestamp, len(record.previous_members)),
        b"".join(_U32.pack(n) for n in record.previous_members),
        _pack_text(record.address, MAX_ADDRESS, "node address"),
        _pack_text(record.name, MAX_NAME, "node name"),
    ))


def decode_node_record(payload: bytes) -> NodeRecord:
    """Decode a NODE_RECORD message (strict: counts must agree with the length, no trailing bytes)."""
    buf = memoryview(payload)
    if len(buf) < _RECORD_HEAD.size:
        raise ClmClusterMessageError("truncated node record")
    rep, seq, previous, initial, boot, count = _RECORD_HEAD.unpack_from(buf)
    offset = _RECORD_HEAD.size
    if count > MAX_PREVIOUS_MEMBERS or offset + count * _U32.size > len(buf):
        raise ClmClusterMessageError(f"previous member count {count} does not fit the payload")
    members = tuple(n for (n,) in _U32.iter_unpack(buf[offset : offset + count * _U32.size]))
    offset += count * _U32.size
    address, offset = _unpack_text(buf, offset, MAX_ADDRESS, "node address")
    name, offset = _unpack_text(buf, offset, MAX_NAME, "node name")
    if offset != len(buf):
        raise ClmClusterMessageError(f"{len(buf) - offset} trailing bytes")
    return NodeRecord(rep, seq, previous, initial, boot, members, address, name)

