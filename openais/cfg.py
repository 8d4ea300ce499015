"""Configuration and ring administration (CFG, service 7): the library and its IPC messages.

What operators and probes ask the local executive (``openais-cfgtool`` is
built on it)::

    from openais import cfg

    with cfg.initialize() as h:
        h.ring_status()   # RingStatus: node id, rings with id/address/status, state, members, synced
        h.members()       # Membership: ring id and (nodeid, address) per member
        h.state()         # (nodeid, ready): ready = in a ring and service sync completed
        h.shutdown()      # ask the executive to stop cleanly

The IPC message layouts (network byte order) are defined once here and
imported by the executive's CFG engine (``plugins.cfg``); every decoder
raises :class:`CfgMessageError` on anything malformed.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any, NamedTuple

from openais._client import Handle

#: Service id of CFG.
SERVICE_ID = 7
#: Longest address text, in bytes.
MAX_ADDRESS = 64
#: Ring status strings.
RING_ACTIVE = "active"
RING_FAULTY = "faulty"


class CfgMessageError(ValueError):
    """A CFG IPC message that does not decode."""


class Request(enum.IntEnum):
    """Library request message ids."""

    RING_STATUS = 0  #: empty -> RingStatus (JSON object)
    MEMBERS = 1  #: empty -> Membership
    STATE = 2  #: empty -> (nodeid, ready)
    SHUTDOWN = 3  #: empty -> empty; the executive then stops cleanly


class Ring(NamedTuple):
    """One ring of the local node: its number, id (``rep.seq`` hex), local address and status."""

    ringnumber: int
    ring_id: str
    address: str
    status: str


class RingStatus(NamedTuple):
    """The local executive's view of its rings."""

    nodeid: int
    rings: list[Ring]
    state: str
    members: list[int]
    synced: bool
    stats: dict

    @property
    def faulty(self) -> bool:
        """True when any ring is not active."""
        return any(r.status != RING_ACTIVE for r in self.rings)


class Member(NamedTuple):
    """A member of the current ring and its ring-0 address ("" when unknown)."""

    nodeid: int
    address: str


class Membership(NamedTuple):
    """The current regular ring: its id (representative, sequence) and members."""

    ring_rep: int
    ring_seq: int
    members: list[Member]

    @property
    def ring_id(self) -> str:
        """The ring id as tools print it: ``rep.seq`` in hex."""
        return f"{self.ring_rep:x}.{self.ring_seq:x}"


_U16 = struct.Struct("!H")
_MEMBERS_HEAD = struct.Struct("!IQI")  # ring rep, ring seq, member count
_MEMBER = struct.Struct("!I")
_STATE = struct.Struct("!IB")


def _field(doc: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CfgMessageError(f"ring status field {key!r} missing or of the wrong type")
    return value


def encode_ring_status(status: RingStatus) -> bytes:
    """RING_STATUS response: a JSON object (UTF-8)."""
    doc = {
        "nodeid": status.nodeid,
        "rings": [r._asdict() for r in status.rings],
        "state": status.state,
        "members": list(status.members),
        "synced": status.synced,
        "stats": status.stats,
    }
    return json.dumps(doc, default=str, separators=(",", ":")).encode("utf-8")


def decode_ring_status(payload: bytes) -> RingStatus:
    """Decode a RING_STATUS response, checking every field's type."""
    try:
        doc = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CfgMessageError(f"ring status is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CfgMessageError("ring status is not a JSON object")
    rings = []
    for raw in _field(doc, "rings", list):
        if not isinstance(raw, dict):
            raise CfgMessageError("ring entry is not an object")
        rings.append(Ring(_field(raw, "ringnumber", int), _field(raw, "ring_id", str),
                          _field(raw, "address", str), _field(raw, "status", str)))
    members = _field(doc, "members", list)
    if not all(isinstance(m, int) and not isinstance(m, bool) for m in members):
        raise CfgMessageError("ring status members must be node ids")
    return RingStatus(_field(doc, "nodeid", int), rings, _field(doc, "state", str), members,
                      _field(doc, "synced", bool), _field(doc, "stats", dict))


def encode_membership(membership: Membership) -> bytes:
    """MEMBERS response: ring id, count, then (nodeid, u16 address length, address) per member."""
    parts = [_MEMBERS_HEAD.pack(membership.ring_rep, membership.ring_seq, len(membership.members))]
    for member in membership.members:
        raw = member.address.encode("utf-8")
        if len(raw) > MAX_ADDRESS:
            raise CfgMessageError(f"address longer than {MAX_ADDRESS} bytes")
        parts.append(_MEMBER.pack(member.nodeid) + _U16.pack(len(raw)) + raw)
    return b"".join(parts)


def decode_membership(payload: bytes) -> Membership:
    """Decode a MEMBERS response (the count must agree with the length)."""
    buf = memoryview(payload)
    if len(buf) < _MEMBERS_HEAD.size:
        raise CfgMessageError("truncated membership")
    rep, seq, count = _MEMBERS_HEAD.unpack_from(buf)
    offset = _MEMBERS_HEAD.size
    members = []
    for _ in range(count):
        if offset + _MEMBER.size + _U16.size > len(buf):
            raise CfgMessageError("member count exceeds the payload")
        (nodeid,) = _MEMBER.unpack_from(buf, offset)
        (length,) = _U16.unpack_from(buf, offset + _MEMBER.size)
        offset += _MEMBER.size + _U16.size
        if length > MAX_ADDRESS or offset + length > len(buf):
            raise CfgMessageError(f"address length {length} out of range")
        try:
            address = bytes(buf[offset : offset + length]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CfgMessageError("address is not UTF-8") from exc
        offset += length
        members.append(Member(nodeid, address))
    if offset != len(buf):
        raise CfgMessageError(f"{len(buf) - offset} trailing bytes")
    return Membership(rep, seq, members)


def encode_state(nodeid: int, ready: bool) -> bytes:
    """STATE response: nodeid and the ready flag."""
    return _STATE.pack(nodeid, 1 if ready else 0)


def decode_state(payload: bytes) -> tuple[int, bool]:
    """Decode a STATE response into (nodeid, ready)."""
    if len(payload) != _STATE.size:
        raise CfgMessageError("state response must be 5 bytes")
    nodeid, ready = _STATE.unpack(payload)
    if ready not in (0, 1):
        raise CfgMessageError(f"ready flag {ready} is not 0 or 1")
    return nodeid, bool(ready)


class CfgHandle(Handle):
    """One CFG handle (no callbacks)."""

    def __init__(self, *, path: str | None = None) -> None:
        super().__init__(SERVICE_ID, path=path)

    def ring_status(self) -> RingStatus:
        """The local node's rings, state, members and counters."""
        return decode_ring_status(self._call(Request.RING_STATUS, b""))

    def members(self) -> Membership:
        """Members of the current regular ring with their addresses."""
        return decode_membership(self._call(Request.MEMBERS, b""))

    def state(self) -> tuple[int, bool]:
        """(nodeid, ready): ready once the node is in a ring and service sync completed."""
        return decode_state(self._call(Request.STATE, b""))

    def shutdown(self) -> None:
        """Ask the executive to stop cleanly (Access unless root or the executive's own user)."""
        self._call(Request.SHUTDOWN, b"")

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        raise CfgMessageError(f"CFG has no callbacks (got {msg_id})")


def initialize(*, path: str | None = None) -> CfgHandle:
    """Connect to the local executive's CFG service (``path``: its IPC socket) and return a handle."""
    return CfgHandle(path=path)
