"""Configuration and ring administration (CFG, service 7): the library and its IPC messages.

What operators and probes ask the local executive (``openais-cfgtool`` is
built on it)::

    from openais import cfg

    with cfg.initialize() as h:
        h.ring_status()   # RingStatus: node id, rings with id/address/status, state, members, synced
        h.members()       # Membership: ring id and (nodeid, address) per member
        h.state()         # (nodeid, ready): ready = in a ring and service sync completed
        h.dump()          # Dump: the effective configuration (no secrets) and the whole status
        h.shutdown()      # ask the executive to stop cleanly

Every call takes ``timeout=`` (seconds to wait for the answer), ``initialize``
takes ``path=`` (the executive's socket) and ``timeout=`` (seconds to connect).

The IPC messages are :class:`openais.message.Message` definitions, here once
and imported by the executive's CFG engine (``plugins.cfg``); decoding
raises :class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum

from openais._client import Handle, checked_timeout
from openais.message import U32, U64, Bool, Json, List, Message, MessageError, Str

#: Service id of CFG.
SERVICE_ID = 7
#: Longest address text, in bytes.
MAX_ADDRESS = 64
#: Ring status strings.
RING_ACTIVE = "active"
RING_FAULTY = "faulty"
#: Most rings, and most members, one answer lists; the largest counters document.
MAX_RINGS = 16
MAX_MEMBERS = 1 << 16
MAX_STATS = 1 << 20

#: The old name, still caught by the operator tool: decoding raises :class:`openais.message.MessageError`.
CfgMessageError = MessageError


class Request(enum.IntEnum):
    """Library request message ids."""

    RING_STATUS = 0  #: empty -> RingStatus
    MEMBERS = 1  #: empty -> Membership
    STATE = 2  #: empty -> State
    SHUTDOWN = 3  #: empty -> empty; the executive then stops cleanly
    DUMP = 4  #: empty -> Dump


class Ring(Message):
    """One ring of the local node: its number, id (``rep.seq`` hex), local address and status."""

    ringnumber = U32()
    ring_id = Str(max_len=64)
    address = Str(max_len=MAX_ADDRESS)
    status = Str(max_len=64)


class RingStatus(Message):
    """The local executive's view of its rings (RING_STATUS response); ``stats``: counters for tools."""

    nodeid = U32()
    rings = List(Ring, max_count=MAX_RINGS)
    state = Str(max_len=64)
    members = List(U32(), max_count=MAX_MEMBERS)
    synced = Bool()
    stats = Json(max_len=MAX_STATS, kind=dict)

    @property
    def faulty(self) -> bool:
        """True when any ring is not active."""
        return any(r.status != RING_ACTIVE for r in self.rings)


class Member(Message):
    """A member of the current ring and its ring-0 address ("" when unknown)."""

    nodeid = U32()
    address = Str(max_len=MAX_ADDRESS)


class Membership(Message):
    """The current regular ring: its id (representative, sequence) and members (MEMBERS response)."""

    ring_rep = U32()
    ring_seq = U64()
    members = List(Member, max_count=MAX_MEMBERS)

    @property
    def ring_id(self) -> str:
        """The ring id as tools print it: ``rep.seq`` in hex."""
        return f"{self.ring_rep:x}.{self.ring_seq:x}"


class State(Message):
    """STATE response: the nodeid and whether the node is ready."""

    nodeid = U32()
    ready = Bool()


class Dump(Message):
    """DUMP response: the effective configuration (secrets left out) and the executive's whole status."""

    config = Json(max_len=MAX_STATS, kind=dict)
    status = Json(max_len=MAX_STATS, kind=dict)


#: Key names whose values a dump never carries (matched whole, or as the last ``_`` word).
SECRET_WORDS = frozenset({"key", "authkey", "secret", "password", "passwd", "passphrase"})
#: What a left-out value is replaced with.
REDACTED = "(not shown)"


def redact(value: object) -> object:
    """``value`` with the value of every key naming a secret replaced (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: (REDACTED if _secret(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _secret(key: str) -> bool:
    key = key.lower()
    return key in SECRET_WORDS or key.rsplit("_", 1)[-1] in SECRET_WORDS


class CfgHandle(Handle):
    """One CFG handle (no callbacks)."""

    def __init__(self, *, path: str | None = None, timeout: float | None = None) -> None:
        super().__init__(SERVICE_ID, path=path, timeout=timeout)

    def ring_status(self, *, timeout: float | None = None) -> RingStatus:
        """The local node's rings, state, members and counters."""
        return RingStatus.decode(self._call(Request.RING_STATUS, b"", timeout=checked_timeout(timeout)))

    def members(self, *, timeout: float | None = None) -> Membership:
        """Members of the current regular ring with their addresses."""
        return Membership.decode(self._call(Request.MEMBERS, b"", timeout=checked_timeout(timeout)))

    def state(self, *, timeout: float | None = None) -> tuple[int, bool]:
        """(nodeid, ready): ready once the node is in a ring and service sync completed."""
        nodeid, ready = State.decode(self._call(Request.STATE, b"", timeout=checked_timeout(timeout)))
        return nodeid, ready

    def dump(self, *, timeout: float | None = None) -> Dump:
        """The effective configuration (validated, every default filled in, secrets left out) and the
        executive's whole status: ring, members and every counter section."""
        return Dump.decode(self._call(Request.DUMP, b"", timeout=checked_timeout(timeout)))

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Ask the executive to stop cleanly (Access unless root or the executive's own user)."""
        self._call(Request.SHUTDOWN, b"", timeout=checked_timeout(timeout))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        raise MessageError("CFG callback", None, f"CFG has no callbacks (got {msg_id})")


def initialize(*, path: str | None = None, timeout: float | None = None) -> CfgHandle:
    """Connect to the local executive's CFG service and return a handle.

    ``path``: its IPC socket (default ``$OPENAIS_IPC_SOCKET``); ``timeout``: seconds to connect.
    """
    return CfgHandle(path=path, timeout=timeout)
