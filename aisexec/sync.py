"""The synchronisation engine: brings every service's replicated state in line after a ring change.

Sans-IO, like the Totem core.  After each REGULAR configuration:

1. every node multicasts its list of sync-capable services, each with its
   *sync priority* (round 0); when the lists of all members are in, the
   union ordered by (priority, id) is the plan for this round (a service's
   priority is the highest any member declared; a node without one of the
   services passes through it at once, so mixed installations cannot
   deadlock);
2. per service of the plan: ``sync_init``, then ``sync_process`` whenever
   the driver pumps (it multicasts a bounded share and returns True while
   more remains), then a *barrier* message carrying the ring id and the
   service id; when every member's barrier for this ring and service has
   been delivered, ``sync_activate`` and on to the next service;
3. the services of one priority form a *tier*: once the last of a tier is
   activated, the tier is *released* (:meth:`SyncEngine.holds` turns False
   for its services and the release listeners run, so the router hands over
   their held messages and the IPC layer takes their requests again) while
   the next tiers still synchronise; services outside the plan are released
   as soon as the plan is known;
4. after the last service the round is complete (``on_complete``), which
   releases the last tier.

Priorities are small integers, lower first: :data:`PRIORITY_NORMAL` (the
default) and :data:`PRIORITY_BULK` for a service whose state may be large
(CKPT), so every other service is served again while bulk state streams.
Within a tier services still go in id order and nothing of the tier is
released before all of it is active, as when every service was one tier.
All of it happens at the same point of the agreed order on every member.

A configuration change during a round calls ``sync_abort`` on the service
in progress and starts over; barriers of any other ring are ignored.  The
engine talks to services through :class:`SyncParticipant` and to the ring
through the ``send`` callable given to it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aisexec.totem.api import ConfigChange, ConfKind, RingId
from openais.message import U8, U16, U32, U64, List, Message, MessageError


class SyncMsg(enum.IntEnum):
    """Sync control message types (carried under the executive's own service id, as the first byte)."""

    SERVICE_LIST = 1
    BARRIER = 2


#: Sync priority of an ordinary service (the default).
PRIORITY_NORMAL = 0
#: Sync priority of a service whose state may be large: it synchronises after the others.
PRIORITY_BULK = 10


class ServiceEntry(Message):
    """One sync-capable service of a node and the priority that node gives it."""

    service_id = U16()
    priority = U8()


class ServiceList(Message):
    """Round 0: the sender's sync-capable services for ring ``(ring_rep, ring_seq)``, ascending ids."""

    ring_rep = U32()
    ring_seq = U64()
    services = List(ServiceEntry, max_count=1 << 16)


class Barrier(Message):
    """The sender finished sending ``service_id``'s state for ring ``(ring_rep, ring_seq)``."""

    ring_rep = U32()
    ring_seq = U64()
    service_id = U16()


_TYPES: dict[int, type[ServiceList] | type[Barrier]] = {SyncMsg.SERVICE_LIST: ServiceList, SyncMsg.BARRIER: Barrier}
_TYPE_BYTE = {cls: bytes([kind]) for kind, cls in _TYPES.items()}


def encode(msg: ServiceList | Barrier) -> bytes:
    """A sync control message on the wire: its type byte, then the message."""
    return _TYPE_BYTE[type(msg)] + msg.encode()


def encode_service_list(ring_id: RingId, services: Iterable[int] | Mapping[int, int]) -> bytes:
    """Round 0 message: the sender's sync-capable services (ids, or ids to priorities) for ``ring_id``."""
    prio = dict(services) if isinstance(services, Mapping) else dict.fromkeys(services, PRIORITY_NORMAL)
    return encode(ServiceList(ring_id.rep, ring_id.seq, [ServiceEntry(k, prio[k]) for k in sorted(prio)]))


def encode_barrier(ring_id: RingId, service_id: int) -> bytes:
    """Barrier message: the sender finished sending ``service_id``'s state for ``ring_id``."""
    return encode(Barrier(ring_id.rep, ring_id.seq, service_id))


def decode(payload: bytes | memoryview) -> tuple[SyncMsg, RingId, tuple]:
    """Decode a sync control message; MessageError when malformed.

    Returns (type, ring id, what): for a barrier ``what`` is ``(service_id,)``,
    for a service list the ``(service_id, priority)`` pairs, ascending ids.
    """
    view = memoryview(payload)
    if not view:
        raise MessageError("SyncMessage", "type", "truncated")
    cls = _TYPES.get(view[0])
    if cls is None:
        raise MessageError("SyncMessage", "type", f"unknown sync message type {view[0]}")
    msg = cls.decode(view[1:])
    if isinstance(msg, Barrier):
        return SyncMsg.BARRIER, RingId(msg.ring_rep, msg.ring_seq), (msg.service_id,)
    entries = tuple((e.service_id, e.priority) for e in msg.services)
    ids = [sid for sid, _ in entries]
    if ids != sorted(set(ids)):
        raise MessageError("ServiceList", "services", "ids not ascending and unique")
    return SyncMsg.SERVICE_LIST, RingId(msg.ring_rep, msg.ring_seq), entries


class SyncParticipant(Protocol):
    """What the engine needs of one service (the executive adapts EngineHost to it).

    A participant may also have ``sync_priority`` (int, :data:`PRIORITY_NORMAL`
    when absent), read at the start of every round.
    """

    service_id: int

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: RingId) -> None:
        """Start this service's round."""

    def sync_process(self) -> bool:
        """Send a share of state; True while more remains."""

    def sync_activate(self) -> None:
        """Commit the rebuilt state."""

    def sync_abort(self) -> None:
        """Discard the round's state."""


def _priority(participant: SyncParticipant) -> int:
    """A participant's ``sync_priority``, kept within what the service list carries (0-255)."""
    return max(0, min(255, int(getattr(participant, "sync_priority", PRIORITY_NORMAL))))


class Phase(enum.Enum):
    """Where the engine is in a round."""

    IDLE = "idle"
    SERVICE_LIST = "service-list"
    PROCESS = "process"
    BARRIER = "barrier"


@dataclass(slots=True)
class SyncStats:
    """Counters for tools and tests."""

    rounds_started: int = 0
    rounds_completed: int = 0
    rounds_aborted: int = 0
    stale_messages: int = 0


class SyncEngine:
    """Drives sync rounds; the executive feeds it configuration changes and sync messages.

    ``send(payload) -> bool`` multicasts a sync control message and returns
    False when the ring cannot take it now (the engine retries on the next
    ``pump``).  ``on_complete(ring_id)`` is called once per completed round.
    Every callable in :attr:`release_listeners` is called (no arguments)
    whenever services are released during a round (:meth:`holds` turned
    False for some), at the same point of the agreed order on every member.
    """

    def __init__(
        self,
        nodeid: int,
        participants: Iterable[SyncParticipant],
        send: Callable[[bytes], bool],
        on_complete: Callable[[RingId], None] | None = None,
    ) -> None:
        self.nodeid = nodeid
        self._participants = {p.service_id: p for p in participants}
        self._send = send
        self._on_complete = on_complete
        self.phase = Phase.IDLE
        self.ring_id: RingId | None = None
        self.members: tuple[int, ...] = ()
        self._transitional: tuple[int, ...] = ()
        self._plan: list[int] = []
        self._index = 0
        self._lists: dict[int, tuple[tuple[int, int], ...]] = {}
        self._priority: dict[int, int] = {}
        self._plan_known = False
        self._holding: set[int] = set()  # plan services not released yet (once the plan is known)
        self._barriers: set[int] = set()
        self._outbox: bytes | None = None
        self._activated: list[tuple[RingId, int]] = []
        self._pumping = False
        #: ``fn()`` called whenever services are released during a round (the router's held messages).
        self.release_listeners: list[Callable[[], None]] = []
        self.stats = SyncStats()

    # -- inputs ---------------------------------------------------------

    @property
    def in_progress(self) -> bool:
        """True from a REGULAR configuration until its round completes."""
        return self.phase is not Phase.IDLE

    def holds(self, service_id: int) -> bool:
        """True while this round must hold ``service_id``'s cluster messages (and refuse its requests).

        Every service is held from the REGULAR configuration until the plan is
        known; then a service outside the plan is free at once and one in the
        plan from the moment its tier (every service of its priority) is active.
        """
        if self.phase is Phase.IDLE:
            return False
        return not self._plan_known or service_id in self._holding

    @property
    def plan(self) -> tuple[int, ...]:
        """This round's services in sync order (empty until every service list is in)."""
        return tuple(self._plan)

    def priority_of(self, service_id: int) -> int | None:
        """The sync priority this round gives ``service_id`` (None when it is not in the plan)."""
        return self._priority.get(service_id)

    @property
    def current_service(self) -> int | None:
        """The service id being synchronised, or None."""
        if self.phase in (Phase.PROCESS, Phase.BARRIER) and self._index < len(self._plan):
            return self._plan[self._index]
        return None

    def on_config_change(self, change: ConfigChange) -> None:
        """Feed every configuration change delivered by Totem, in order."""
        if change.kind is ConfKind.TRANSITIONAL:
            self._transitional = change.members
            self._abort()
            return
        self._abort()
        self.ring_id = change.ring_id
        self.members = change.members
        transitional = tuple(n for n in self._transitional if n in change.members)
        self._transitional = transitional
        self.stats.rounds_started += 1
        self.phase = Phase.SERVICE_LIST
        self._lists = {}
        self._plan = []
        self._priority = {}
        self._plan_known = False
        self._holding = set()
        self._index = 0
        self._outbox = encode_service_list(change.ring_id, {
            sid: _priority(p) for sid, p in self._participants.items()})
        self.pump()

    def on_message(self, sender: int, payload: bytes) -> None:
        """Feed a delivered sync control message (agreed order)."""
        kind, ring_id, ids = decode(payload)
        if ring_id != self.ring_id or sender not in self.members or self.phase is Phase.IDLE:
            self.stats.stale_messages += 1
            return
        if kind is SyncMsg.SERVICE_LIST:
            if self.phase is not Phase.SERVICE_LIST:
                self.stats.stale_messages += 1
                return
            self._lists[sender] = ids
            if len(self._lists) == len(self.members):
                self._make_plan()
                self._released()  # the services outside the plan are free from here on
                if self.phase is Phase.SERVICE_LIST:
                    self._start_service()
            return
        if self.phase is Phase.SERVICE_LIST or ids[0] != self.current_service:
            self.stats.stale_messages += 1
            return
        self._barriers.add(sender)
        if self.phase is Phase.BARRIER and len(self._barriers) == len(self.members):
            self._activate_current()

    def pump(self) -> None:
        """Make progress: send what is waiting, run the current service's ``sync_process``."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump()
        finally:
            self._pumping = False

    def _pump(self) -> None:
        if self._outbox is not None:
            if not self._send(self._outbox):
                return
            self._outbox = None
        if self.phase is Phase.PROCESS:
            participant = self._participants.get(self.current_service)  # type: ignore[arg-type]
            more = participant.sync_process() if participant is not None else False
            if more:
                return
            self.phase = Phase.BARRIER
            self._outbox = encode_barrier(self.ring_id, self.current_service)  # type: ignore[arg-type]
            if self._send(self._outbox):
                self._outbox = None

    # -- internals ------------------------------------------------------

    def _make_plan(self) -> None:
        """Every list is in: the union in (priority, id) order; a service's priority is the highest declared."""
        priority: dict[int, int] = {}
        for entries in self._lists.values():
            for sid, prio in entries:
                priority[sid] = max(prio, priority.get(sid, prio))
        self._priority = priority
        self._plan = sorted(priority, key=lambda sid: (priority[sid], sid))
        self._holding = set(priority)
        self._index = 0
        self._plan_known = True

    def _released(self) -> None:
        for listener in list(self.release_listeners):
            listener()

    def _start_service(self) -> None:
        if self._index < len(self._plan):
            self._barriers = set()
            self.phase = Phase.PROCESS
            participant = self._participants.get(self._plan[self._index])
            if participant is not None:
                participant.sync_init(self._transitional, self.members, self.ring_id)  # type: ignore[arg-type]
            self.pump()
            return
        self._complete()

    def _activate_current(self) -> None:
        service_id = self.current_service
        participant = self._participants.get(service_id)  # type: ignore[arg-type]
        if participant is not None:
            participant.sync_activate()
        self._activated.append((self.ring_id, service_id))  # type: ignore[arg-type]
        self._index += 1
        tier = self._priority[service_id]  # type: ignore[index]
        if self._index < len(self._plan) and self._priority[self._plan[self._index]] != tier:
            # a tier ends and another follows (after the last one, _complete releases everything)
            self._holding.difference_update([s for s in self._plan if self._priority[s] == tier])
            self._released()
            if self.phase is Phase.IDLE:
                return  # a listener's work ended the round (not from agreed order; defensive)
        self._start_service()

    def _complete(self) -> None:
        self.phase = Phase.IDLE
        self._holding = set()
        self.stats.rounds_completed += 1
        self._outbox = None
        if self._on_complete is not None:
            self._on_complete(self.ring_id)  # type: ignore[arg-type]
        self._released()  # the last tier (the router already let go of everything in on_complete)

    def abort(self) -> None:
        """Abort the running round, if any (``sync_abort`` on the service in progress)."""
        self._abort()

    def _abort(self) -> None:
        if self.phase is Phase.IDLE:
            return
        service_id = self.current_service
        if service_id is not None and service_id in self._participants:
            self._participants[service_id].sync_abort()
        self.stats.rounds_aborted += 1
        self.phase = Phase.IDLE
        self._outbox = None
        self._barriers = set()
        self._holding = set()

    def take_activations(self) -> list[tuple[RingId, int]]:
        """Return and clear the (ring id, service id) activations since the last call (tests, tools)."""
        done, self._activated = self._activated, []
        return done
