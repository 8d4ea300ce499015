"""Cluster message routing: ring deliveries to service handlers, gated by the sync engine.

Every cluster message starts with one :class:`Header`, ``service (u16), msg_id (u16),
flags (u16)``, network order.  Service id :data:`SYNC_SERVICE_ID` carries the
sync engine's own control messages.  A message flagged :data:`FLAG_SYNC` is
sync traffic (state a service multicasts from its sync hooks) and reaches its
handler at once.  Any other message of a service the running sync round still
holds (:meth:`aisexec.sync.SyncEngine.holds`: every service until the round's
plan is known, then each until its priority tier is active) is held, and
handed over, in delivery order, at the point the round releases that service;
the messages of a released service (or of one outside the plan) are
dispatched at once, so CPG is served while a bulk service such as CKPT still
streams its state.  When a round is aborted everything held is handed over
before the next one starts.  No service handles new cluster messages before
its state is synchronised, and all members hold and release at the same
point of the agreed order, so they stay identical.

Nothing held is ever dropped: a held message was accepted by some node (a
client may wait for its answer).  The IPC layer refuses a held service's
requests (``cluster_ready(service)``), so what is held is only what was in
flight and engines' own cleanups; past :data:`HELD_WARNING` held messages the
router logs a warning, once per round, and counts it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aisexec.plugins import LoadedService
from aisexec.sync import Phase, SyncEngine
from aisexec.totem.api import ConfigChange, ConfKind, RingId
from openais.message import U16, Message, MessageError

#: Service id reserved for the executive's sync control messages.
SYNC_SERVICE_ID = 0xFFFF
#: Header flag: the message is sync traffic.
FLAG_SYNC = 0x0001
_IDLE = Phase.IDLE


class Header(Message):
    """What every cluster message starts with; the service's own message follows."""

    service = U16()
    msg_id = U16()
    flags = U16()


#: The header's struct: the delivery path unpacks it directly (three u16, nothing to validate).
HEADER = Header.fixed
assert HEADER is not None
#: Held messages past which the router warns (once per round; nothing is dropped).
HELD_WARNING = 100_000


def encode(service: int, msg_id: int, payload: bytes, flags: int = 0) -> bytes:
    """Prefix ``payload`` with the cluster message header."""
    return HEADER.pack(service, msg_id, flags) + payload


def decode_header(message: bytes) -> tuple[int, int, int]:
    """Return (service, msg_id, flags) of a cluster message."""
    if len(message) < HEADER.size:
        raise MessageError("Header", None, f"cluster message of {len(message)} bytes is shorter than its header")
    return HEADER.unpack_from(message)


@dataclass(slots=True)
class RoutingStats:
    """Counters for tools and tests (every field only grows: the metrics export them as counters)."""

    delivered: int = 0
    held: int = 0
    held_released: int = 0
    held_over_warning: int = 0
    malformed: int = 0
    unknown_service: int = 0
    unknown_message: int = 0
    handler_errors: int = 0


class ClusterRouter:
    """Hands delivered cluster messages and configuration changes to the engines."""

    def __init__(
        self,
        engines: dict[int, LoadedService],
        sync: SyncEngine,
        logger: logging.Logger | None = None,
    ) -> None:
        self._engines = engines
        self._sync = sync
        self._log = logger or logging.getLogger("aisexec.serv")
        self._held: deque[tuple[int, int, bytes]] = deque()  # (service, sender, message), delivery order
        self._warned = False
        self.stats = RoutingStats()
        sync.release_listeners.append(self._release_free)

    @property
    def held_count(self) -> int:
        """Messages waiting for the running sync round to release their service."""
        return len(self._held)

    def held_for(self, service: int) -> int:
        """Messages of ``service`` held now."""
        return sum(1 for s, _, _ in self._held if s == service)

    def deliver(self, sender: int, message: bytes) -> None:
        """One complete cluster message delivered by the ring, in agreed order."""
        try:
            service, msg_id, flags = decode_header(message)
        except MessageError as exc:
            self.stats.malformed += 1
            self._log.warning("dropping cluster message from node %d: %s", sender, exc)
            return
        payload = message[HEADER.size :]
        if service == SYNC_SERVICE_ID:
            try:
                self._sync.on_message(sender, payload)
            except MessageError as exc:
                self.stats.malformed += 1
                self._log.warning("dropping sync message from node %d: %s", sender, exc)
            return
        sync = self._sync
        if sync.phase is not _IDLE and not flags & FLAG_SYNC and sync.holds(service):
            self._hold(service, sender, message)
            return
        self._dispatch(sender, service, msg_id, payload)

    def _hold(self, service: int, sender: int, message: bytes) -> None:
        held = self._held
        held.append((service, sender, message))
        self.stats.held += 1
        if len(held) > HELD_WARNING:
            self.stats.held_over_warning += 1
            if not self._warned:
                self._warned = True
                self._log.warning("%d cluster messages held by a sync round (service %d now; none is dropped)",
                                  len(held), service)

    def release_held(self) -> None:
        """Hand over every held message, in delivery order (sync completed or was aborted)."""
        self._release(lambda _service: True)
        self._warned = False

    def _release_free(self) -> None:
        """The round released services: hand over their held messages, in delivery order."""
        holds = self._sync.holds
        self._release(lambda service: not holds(service))

    def _release(self, free: Callable[[int], bool]) -> None:
        if not self._held:
            return
        keep: deque[tuple[int, int, bytes]] = deque()
        # handlers never deliver (the ring does), so nothing is added to the queue while it is walked
        held, self._held = self._held, keep
        while held:
            entry = held.popleft()
            service, sender, message = entry
            if not free(service):
                keep.append(entry)
                continue
            self.stats.held_released += 1
            _, msg_id, _ = decode_header(message)
            self._dispatch(sender, service, msg_id, message[HEADER.size :])

    def config_change(self, change: ConfigChange) -> None:
        """A configuration change from the ring: engines' confchg hooks, then the sync engine."""
        if self._sync.in_progress:
            # Abort first (the round's shadow state goes), then apply what was held to the live state.
            self._sync.abort()
            self.release_held()
        if change.kind is ConfKind.TRANSITIONAL:
            self._sync.on_config_change(change)
        for entry in self._engines.values():
            self._call(entry, "confchg", kind=change.kind, members=change.members, left=change.left,
                       joined=change.joined, ring_id=change.ring_id)
        if change.kind is ConfKind.REGULAR:
            self._sync.on_config_change(change)

    def sync_completed(self, ring_id: RingId) -> None:
        """The sync engine finished a round: release held messages."""
        self.release_held()

    def _dispatch(self, sender: int, service: int, msg_id: int, payload: bytes) -> None:
        entry = self._engines.get(service)
        if entry is None:
            self.stats.unknown_service += 1
            return
        handler = entry.engine.exec_handlers.get(msg_id)
        if handler is None:
            self.stats.unknown_message += 1
            self._log.warning("service %s has no cluster message %d (from node %d)", entry.engine.name, msg_id, sender)
            return
        self.stats.delivered += 1
        try:
            handler.fn(sender, payload)
        except Exception:
            self.stats.handler_errors += 1
            self._log.exception("service %s failed on cluster message %d from node %d",
                                entry.engine.name, msg_id, sender)

    def _call(self, entry: LoadedService, hook: str, **kwargs: object) -> None:
        try:
            getattr(entry.host.hook, hook)(**kwargs)
        except Exception:
            self.stats.handler_errors += 1
            self._log.exception("service %s failed in %s", entry.engine.name, hook)

