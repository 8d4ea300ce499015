"""Extended virtual synchrony (EVS): the raw ring as groups; the library and its IPC messages.

A handle joins any number of named groups; messages multicast to groups are
delivered, in agreed order, to every handle on every node that has joined
one of them (the sender's own included).  Configuration changes report the
ring's node membership to every handle::

    from openais import evs

    def deliver(nodeid, data): ...
    def confchg(members, left, joined): ...

    with evs.initialize(deliver=deliver, confchg=confchg) as h:
        h.join(["a", "b"])
        h.mcast_joined(b"hello")

The IPC message layouts are defined once here and imported by the
executive's EVS engine (``plugins.evs``); every decoder raises
:class:`EvsMessageError` on anything malformed.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable

from openais._client import Handle
from openais.errors import InvalidParam, TooBig

#: Service id of EVS.
SERVICE_ID = 0
#: Longest group name, in bytes of UTF-8 (openais ``struct evs_group``).
MAX_GROUP_NAME = 32
#: Most groups in one request, and joined by one handle.
MAX_GROUPS = 256
#: Largest message, in bytes.
MAX_MESSAGE = 1024 * 1024

AGREED = 0
SAFE = 1


class EvsMessageError(ValueError):
    """An EVS IPC message that does not decode."""


class Request(enum.IntEnum):
    """Library request message ids."""

    JOIN = 0  #: group list -> empty
    LEAVE = 1  #: group list -> empty
    MCAST_JOINED = 2  #: guarantee, data -> empty
    MCAST_GROUPS = 3  #: guarantee, group list, data -> empty
    MEMBERSHIP = 4  #: empty -> local nodeid, member nodeids


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    DELIVER = 0
    CONFCHG = 1


_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def pack_groups(groups: Iterable[str]) -> bytes:
    """A group list on the wire: u16 count, then per group u8 length and UTF-8."""
    names = list(groups)
    if len(names) > MAX_GROUPS:
        raise EvsMessageError(f"{len(names)} groups exceed {MAX_GROUPS}")
    parts = [_U16.pack(len(names))]
    for name in names:
        if not isinstance(name, str):
            raise EvsMessageError(f"group name must be str, not {type(name).__name__}")
        raw = name.encode("utf-8")
        if not 1 <= len(raw) <= MAX_GROUP_NAME:
            raise EvsMessageError(f"group name must be 1..{MAX_GROUP_NAME} bytes of UTF-8, not {len(raw)}")
        parts.append(_U8.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def unpack_groups(buf: memoryview, offset: int) -> tuple[list[str], int]:
    """Read a group list at ``offset``; return it and the offset after it."""
    if offset + _U16.size > len(buf):
        raise EvsMessageError("truncated group count")
    (count,) = _U16.unpack_from(buf, offset)
    if count > MAX_GROUPS:
        raise EvsMessageError(f"{count} groups exceed {MAX_GROUPS}")
    offset += _U16.size
    names = []
    for _ in range(count):
        if offset + _U8.size > len(buf):
            raise EvsMessageError(f"group count {count} exceeds the message")
        (length,) = _U8.unpack_from(buf, offset)
        offset += _U8.size
        if not 1 <= length <= MAX_GROUP_NAME or offset + length > len(buf):
            raise EvsMessageError("bad group name length")
        try:
            names.append(bytes(buf[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EvsMessageError("group name is not UTF-8") from exc
        offset += length
    return names, offset


def _guarantee(buf: memoryview) -> int:
    if len(buf) < _U8.size:
        raise EvsMessageError("missing guarantee")
    (guarantee,) = _U8.unpack_from(buf)
    if guarantee not in (AGREED, SAFE):
        raise EvsMessageError(f"unknown guarantee {guarantee}")
    return guarantee


def _pack_nodeids(nodeids: Iterable[int]) -> bytes:
    ids = list(nodeids)
    return _U32.pack(len(ids)) + b"".join(_U32.pack(n) for n in ids)


def _unpack_nodeids(buf: memoryview, offset: int) -> tuple[list[int], int]:
    if offset + _U32.size > len(buf):
        raise EvsMessageError("truncated nodeid count")
    (count,) = _U32.unpack_from(buf, offset)
    offset += _U32.size
    end = offset + count * _U32.size
    if end > len(buf):
        raise EvsMessageError(f"nodeid count {count} exceeds the message")
    return [n for (n,) in _U32.iter_unpack(buf[offset:end])], end


# -- requests -------------------------------------------------------------------


def encode_group_request(groups: Iterable[str]) -> bytes:
    """JOIN and LEAVE request: a group list."""
    return pack_groups(groups)


def decode_group_request(payload: bytes) -> list[str]:
    """Decode a JOIN or LEAVE request."""
    buf = memoryview(payload)
    groups, offset = unpack_groups(buf, 0)
    if offset != len(buf):
        raise EvsMessageError("trailing bytes after group list")
    return groups


def encode_mcast_joined(data: bytes, guarantee: int = AGREED) -> bytes:
    """MCAST_JOINED request: guarantee byte, then the message."""
    if guarantee not in (AGREED, SAFE):
        raise EvsMessageError(f"unknown guarantee {guarantee}")
    return _U8.pack(guarantee) + bytes(data)


def decode_mcast_joined(payload: bytes) -> tuple[int, memoryview]:
    """Decode an MCAST_JOINED request into (guarantee, data)."""
    buf = memoryview(payload)
    return _guarantee(buf), buf[_U8.size :]


def encode_mcast_groups(groups: Iterable[str], data: bytes, guarantee: int = AGREED) -> bytes:
    """MCAST_GROUPS request: guarantee byte, group list, then the message."""
    if guarantee not in (AGREED, SAFE):
        raise EvsMessageError(f"unknown guarantee {guarantee}")
    return _U8.pack(guarantee) + pack_groups(groups) + bytes(data)


def decode_mcast_groups(payload: bytes) -> tuple[int, list[str], memoryview]:
    """Decode an MCAST_GROUPS request into (guarantee, groups, data)."""
    buf = memoryview(payload)
    guarantee = _guarantee(buf)
    groups, offset = unpack_groups(buf, _U8.size)
    return guarantee, groups, buf[offset:]


def decode_empty_request(payload: bytes) -> None:
    """MEMBERSHIP takes no payload."""
    if payload:
        raise EvsMessageError(f"{len(payload)} unexpected bytes")


# -- responses and callbacks ----------------------------------------------------


def encode_membership(local_nodeid: int, members: Iterable[int]) -> bytes:
    """MEMBERSHIP response: local nodeid, then the member nodeids."""
    return _U32.pack(local_nodeid) + _pack_nodeids(members)


def decode_membership(payload: bytes) -> tuple[int, list[int]]:
    """Decode a MEMBERSHIP response into (local nodeid, members)."""
    buf = memoryview(payload)
    if len(buf) < _U32.size:
        raise EvsMessageError("truncated membership")
    (local,) = _U32.unpack_from(buf)
    members, offset = _unpack_nodeids(buf, _U32.size)
    if offset != len(buf):
        raise EvsMessageError("trailing bytes after membership")
    return local, members


def encode_deliver(nodeid: int, data: bytes | memoryview) -> bytes:
    """DELIVER callback: sender nodeid, then the message."""
    return _U32.pack(nodeid) + bytes(data)


def decode_deliver(payload: bytes) -> tuple[int, bytes]:
    """Decode a DELIVER callback into (nodeid, data)."""
    if len(payload) < _U32.size:
        raise EvsMessageError("truncated deliver")
    return _U32.unpack_from(payload)[0], bytes(payload[_U32.size :])


def encode_confchg(members: Iterable[int], left: Iterable[int], joined: Iterable[int]) -> bytes:
    """CONFCHG callback: member, left and joined nodeid lists."""
    return _pack_nodeids(members) + _pack_nodeids(left) + _pack_nodeids(joined)


def decode_confchg(payload: bytes) -> tuple[list[int], list[int], list[int]]:
    """Decode a CONFCHG callback into (members, left, joined)."""
    buf = memoryview(payload)
    members, offset = _unpack_nodeids(buf, 0)
    left, offset = _unpack_nodeids(buf, offset)
    joined, offset = _unpack_nodeids(buf, offset)
    if offset != len(buf):
        raise EvsMessageError("trailing bytes after confchg")
    return members, left, joined


# -- the library ----------------------------------------------------------------

DeliverFn = Callable[[int, bytes], None]
ConfchgFn = Callable[[list[int], list[int], list[int]], None]


def _checked_groups(groups: Iterable[str]) -> bytes:
    if isinstance(groups, str):
        raise InvalidParam("groups must be a list of names, not one str")
    try:
        return pack_groups(groups)
    except EvsMessageError as exc:
        raise InvalidParam(str(exc)) from exc


def _checked_message(data: bytes, guarantee: int) -> None:
    if guarantee not in (AGREED, SAFE):
        raise InvalidParam(f"unknown guarantee {guarantee}")
    if len(data) > MAX_MESSAGE:
        raise TooBig(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")


class EvsHandle(Handle):
    """One EVS handle: any number of joined groups, callbacks run by ``dispatch``."""

    def __init__(self, deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None) -> None:
        super().__init__(SERVICE_ID)
        self._deliver_fn = deliver
        self._confchg_fn = confchg

    def join(self, groups: Iterable[str]) -> None:
        """Add ``groups`` to this handle's groups (joining one twice is harmless)."""
        self._call(Request.JOIN, _checked_groups(groups))

    def leave(self, groups: Iterable[str]) -> None:
        """Remove ``groups``; NotExist (and no change) if any of them is not joined."""
        self._call(Request.LEAVE, _checked_groups(groups))

    def mcast_joined(self, data: bytes, guarantee: int = AGREED) -> None:
        """Multicast ``data`` to this handle's groups; TryAgain when the executive is backed up."""
        _checked_message(data, guarantee)
        self._call(Request.MCAST_JOINED, _U8.pack(guarantee) + bytes(data))

    def mcast_groups(self, groups: Iterable[str], data: bytes, guarantee: int = AGREED) -> None:
        """Multicast ``data`` to ``groups`` (joined or not)."""
        _checked_message(data, guarantee)
        self._call(Request.MCAST_GROUPS, _U8.pack(guarantee) + _checked_groups(groups) + bytes(data))

    def membership(self) -> tuple[int, list[int]]:
        """(local nodeid, nodeids of the current ring)."""
        return decode_membership(self._call(Request.MEMBERSHIP, b""))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.DELIVER:
            nodeid, data = decode_deliver(payload)
            if self._deliver_fn is not None:
                self._deliver_fn(nodeid, data)
        elif msg_id == Callback.CONFCHG:
            members, left, joined = decode_confchg(payload)
            if self._confchg_fn is not None:
                self._confchg_fn(members, left, joined)
        else:
            raise EvsMessageError(f"unknown EVS callback {msg_id}")


def initialize(deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None) -> EvsHandle:
    """Connect to the local executive's EVS service and return a handle."""
    return EvsHandle(deliver=deliver, confchg=confchg)
