"""The service layer of one node: engines, routing and sync between the ring and the IPC server.

The executive runs one :class:`ServiceLayer` over the Totem stack; the
in-process test harness (:mod:`aisexec.testing`) runs one per virtual node
over an in-memory agreed-order bus.  Either way the layer is what engines see
as their :class:`aisexec.service.ExecutiveApi`, and what the IPC server asks
to find engines and to know whether cluster requests can be taken now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from aisexec.plugins import LoadedService
from aisexec.routing import FLAG_SYNC, SYNC_SERVICE_ID, ClusterRouter, encode
from aisexec.service import EngineHost, ServiceEngine
from aisexec.sync import PRIORITY_BULK, PRIORITY_NORMAL, Phase, SyncEngine
from aisexec.totem.api import ConfigChange, ConfKind, QueueFull, RingId

#: Bytes of the ring's send queue new requests leave free while a bulk service streams its sync state.
BULK_RESERVE = 3 << 19  # 1.5 MiB of the 4 MiB the executive queues at most

#: Sync rounds are logged under SYNC (``--debug``: each service's init, activate and abort).
sync_log = logging.getLogger("aisexec.sync")


class NodeHost(Protocol):
    """What the layer needs from whatever carries it (the executive, or a test harness)."""

    def send(self, message: bytes, safe: bool) -> None:
        """Multicast one cluster message on the ring; raise QueueFull when there is no room."""

    def has_room(self, size: int) -> bool:
        """True when a message of ``size`` bytes can be queued now."""

    def node_address(self, nodeid: int) -> str | None:
        """Ring-0 address of ``nodeid``, if known."""

    def ring_status(self) -> dict:
        """Ring state for tools (see ``openais-cfgtool``)."""

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` after ``seconds``; return a function that cancels it."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the work in hand is done (the rest of this turn of the event loop); it must not block."""

    def shutdown(self) -> None:
        """Stop the executive cleanly."""


class QuorumProvider(Protocol):
    """What a quorum service registers with the layer (see :meth:`ServiceLayer.set_quorum_provider`)."""

    def quorate(self) -> bool:
        """True when the current configuration may act (same answer on every member)."""

    def quorum_status(self) -> dict:
        """Quorum state for tools and metrics (``quorate``, ``expected_votes``, ``total_votes``, ...)."""

    def holds_readiness(self) -> bool:
        """True when the executive must not report ready before the first quorate configuration."""


class _SyncAdapter:
    """Presents one engine's sync hooks to the sync engine, marking what it sends as sync traffic."""

    def __init__(self, layer: ServiceLayer, entry: LoadedService) -> None:
        self.service_id = entry.engine.id
        self.name = entry.engine.name
        #: the engine's ``sync_priority`` (lower syncs first; ``aisexec.sync.PRIORITY_BULK`` for large state)
        self.sync_priority = int(getattr(entry.engine, "sync_priority", PRIORITY_NORMAL))
        self._layer = layer
        self._hook = entry.host.hook

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: RingId) -> None:
        sync_log.debug("sync of ring %s: %s starts (members %s, transitional %s)", ring_id, self.name,
                       list(members), list(transitional))
        with self._layer.sync_context():
            self._hook.sync_init(transitional=transitional, members=members, ring_id=ring_id)

    def sync_process(self) -> bool:
        with self._layer.sync_context():
            return bool(self._hook.sync_process())

    def sync_activate(self) -> None:
        sync_log.debug("sync of ring %s: %s activated", self._layer.sync.ring_id, self.name)
        self._hook.sync_activate()

    def sync_abort(self) -> None:
        sync_log.debug("sync of ring %s: %s aborted", self._layer.sync.ring_id, self.name)
        self._hook.sync_abort()


class EngineApi:
    """The api one engine is given (``exec_init``): its node's :class:`ServiceLayer`, readiness its own.

    Every attribute is the layer's (methods are looked up once, then kept),
    except :meth:`ready`, which for a service taking part in sync rounds
    answers for that service: True as soon as the running round released it
    (its priority tier is active), even while a bulk service still syncs.
    """

    def __init__(self, layer: ServiceLayer, service_id: int, syncs: bool) -> None:
        self._layer = layer
        self._service_id = service_id if syncs else None
        self.nodeid = layer.nodeid
        self.config = layer.config

    def ready(self) -> bool:
        """In an operational ring, and this service's state (without sync hooks: every service's) is synchronised."""
        return self._layer.ready(self._service_id)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._layer, name)
        if callable(value):
            setattr(self, name, value)  # a bound method of the layer: found directly from now on
        return value


def _no_trace(*_args: object) -> None:
    """The after-call half of the hook-call monitor: nothing to log."""


def _has_sync_hooks(host: EngineHost) -> bool:
    hooks = host.hook
    return any(getattr(hooks, name).get_hookimpls() for name in ("sync_init", "sync_process", "sync_activate"))


class _SyncContext:
    def __init__(self, layer: ServiceLayer) -> None:
        self._layer = layer

    def __enter__(self) -> None:
        self._layer._sync_depth += 1

    def __exit__(self, *exc: object) -> None:
        self._layer._sync_depth -= 1


class ServiceLayer:
    """Engines, router and sync engine of one node; implements ExecutiveApi for the engines."""

    def __init__(
        self,
        nodeid: int,
        services: list[LoadedService],
        host: NodeHost,
        config: Any = None,
        logger: logging.Logger | None = None,
        on_sync_complete: Callable[[RingId], None] | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.config = config
        self.log = logger or logging.getLogger("aisexec.serv")
        self._host = host
        self._services = {s.engine.id: s for s in services}
        self._sync_depth = 0
        self._ring_id = RingId(nodeid, 0)
        self._members: tuple[int, ...] = ()
        self._synced = False
        self._on_sync_complete = on_sync_complete
        self._quorum_provider: QuorumProvider | None = None
        self._quorum_listeners: list[Callable[[bool], None]] = []
        participants = self._participants = [_SyncAdapter(self, s) for s in services if _has_sync_hooks(s.host)]
        self._sync_names = ", ".join(p.name for p in participants) or "none"
        self.sync = SyncEngine(nodeid, participants, self._send_sync, on_complete=self._sync_completed)
        self.router = ClusterRouter(self._services, self.sync, self.log)
        for entry in services:
            entry.host.add_hookcall_monitoring(self._trace_connection, _no_trace)

    # -- lifecycle ----------------------------------------------------------

    def exec_init(self) -> None:
        """Call every engine's ``exec_init`` with this layer as its api (an :class:`EngineApi` of it)."""
        syncing = {p.service_id for p in self._participants}
        for sid, entry in self._services.items():
            entry.host.hook.exec_init(api=EngineApi(self, sid, sid in syncing))

    def exec_stopping(self) -> None:
        """Call every engine's ``exec_stopping`` (clean stop, before leaving the ring); errors are logged."""
        for entry in self._services.values():
            try:
                entry.host.hook.exec_stopping()
            except Exception:
                self.log.exception("service %s failed in exec_stopping", entry.engine.name)

    def exec_exit(self) -> None:
        """Call every engine's ``exec_exit`` (errors are logged, never stop the others)."""
        for entry in self._services.values():
            try:
                entry.host.hook.exec_exit()
            except Exception:
                self.log.exception("service %s failed in exec_exit", entry.engine.name)

    @property
    def services(self) -> list[LoadedService]:
        """Loaded services in id order."""
        return [self._services[k] for k in sorted(self._services)]

    # -- inputs from the ring -----------------------------------------------

    def deliver(self, sender: int, message: bytes) -> None:
        """A complete cluster message delivered in agreed order."""
        self.router.deliver(sender, message)

    def config_change(self, change: ConfigChange) -> None:
        """A configuration change delivered by the ring."""
        if self.sync.in_progress:
            sync_log.debug("sync round of ring %s aborted by a configuration change", self._ring_id)
        self.log.debug("%s configuration of ring %s: members %s, left %s, joined %s", change.kind.name,
                       change.ring_id, list(change.members), list(change.left), list(change.joined))
        if change.kind is ConfKind.REGULAR:
            sync_log.debug("sync round of ring %s starts (services %s)", change.ring_id, self._sync_names)
            self._ring_id = change.ring_id
            self._members = change.members
            self._synced = False
        self.router.config_change(change)

    def pump(self) -> None:
        """Let a running sync round make progress (call when the ring has room)."""
        if self.sync.in_progress:
            self.sync.pump()

    # -- ExecutiveApi -------------------------------------------------------

    def sync_context(self) -> _SyncContext:
        """Context in which multicasts are marked as sync traffic."""
        return _SyncContext(self)

    def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Multicast a cluster message of ``service``; raises QueueFull when the ring is backed up."""
        flags = FLAG_SYNC if self._sync_depth else 0
        self._host.send(encode(service, msg_id, payload, flags), safe)

    def members(self) -> tuple[int, ...]:
        """Members of the current regular configuration."""
        return self._members

    def ring_id(self) -> RingId:
        """Id of the current regular ring."""
        return self._ring_id

    def ready(self, service_id: int | None = None) -> bool:
        """In an operational ring and the sync round of its configuration completed.

        False from the moment the ring leaves OPERATIONAL (token lost, a join
        seen) until the next configuration's sync completes.  With
        ``service_id``: until the round released that service (its priority
        tier is active), which for all but bulk services comes before the
        round completes.
        """
        if not self._members:
            return False
        if not self._synced and (service_id is None or not self.sync.in_progress or self.sync.holds(service_id)):
            return False
        operational = getattr(self._host, "ring_operational", None)
        return True if operational is None else bool(operational())

    def node_address(self, nodeid: int) -> str | None:
        """Ring-0 address of ``nodeid``, if known."""
        return self._host.node_address(nodeid)

    def ring_status(self) -> dict:
        """Ring state for tools."""
        status = dict(self._host.ring_status())
        status.setdefault("nodeid", self.nodeid)
        status["ring_id"] = str(self._ring_id)
        status["members"] = list(self._members)
        status["synced"] = self.ready()
        quorum = self.quorum_status()
        if quorum is not None:
            status["quorum"] = quorum
        return status

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` after ``seconds``; return a function that cancels it."""
        return self._host.call_later(seconds, fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the work in hand is done: after every request read in this turn of the event
        loop and every message delivered with it, before the loop waits again.  ``fn`` must not block;
        an exception it raises is logged.  For work that pays to do once per turn (one cluster message
        for all the requests a connection sent together)."""
        self._host.call_soon(fn)

    def shutdown(self) -> None:
        """Ask the executive to stop cleanly."""
        self._host.shutdown()

    # -- quorum (a provider service registers; the others ask) ---------------

    def set_quorum_provider(self, provider: QuorumProvider) -> None:
        """Install the quorum service; without one every configuration is quorate (openais behaviour)."""
        if self._quorum_provider is not None and self._quorum_provider is not provider:
            raise RuntimeError("a quorum provider is already registered")
        self._quorum_provider = provider

    def quorum_configured(self) -> bool:
        """True when a quorum provider is installed (a quorum service registered itself)."""
        return self._quorum_provider is not None

    def quorate(self) -> bool:
        """May the current configuration act?  Every member of a configuration gets the same answer."""
        provider = self._quorum_provider
        return True if provider is None else provider.quorate()

    def quorum_holds_readiness(self) -> bool:
        """True when the provider asks that readiness wait for quorum (votequorum's ``wait_for_all``)."""
        provider = self._quorum_provider
        return provider is not None and bool(getattr(provider, "holds_readiness", lambda: False)())

    def quorum_status(self) -> dict | None:
        """The provider's status for tools, or None without quorum."""
        provider = self._quorum_provider
        return None if provider is None else provider.quorum_status()

    def on_quorum_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(quorate)`` whenever the provider reports a change (services that must react)."""
        self._quorum_listeners.append(listener)

    def quorum_changed(self, quorate: bool) -> None:
        """The provider reports a change of quorum: tell every listener (errors are logged)."""
        for listener in list(self._quorum_listeners):
            try:
                listener(quorate)
            except Exception:
                self.log.exception("quorum listener %r failed", listener)

    # -- IPC router -----------------------------------------------------------

    def engine_for(self, service_id: int) -> tuple[ServiceEngine, EngineHost] | None:
        """The engine serving ``service_id`` and its host, or None."""
        entry = self._services.get(service_id)
        return None if entry is None else (entry.engine, entry.host)

    def cluster_ready(self, service_id: int | None = None) -> bool:
        """May a request of ``service_id`` that needs the cluster be taken now?  (Else TRY_AGAIN.)

        False while the running sync round holds that service's messages:
        from the REGULAR configuration until the service's priority tier is
        active (at once for a service outside the round's plan).  Without a
        service id: False while any sync round runs.
        """
        sync = self.sync
        if sync.phase is Phase.IDLE:  # the common case, without a call: this runs for every request
            return True
        if service_id is None:
            return False
        return not sync.holds(service_id)

    def has_room(self, size: int) -> bool:
        """True when the ring can queue ``size`` more bytes now (the admission test of new requests).

        While a bulk service (``aisexec.sync.PRIORITY_BULK``) streams its sync
        state, new requests must leave :data:`BULK_RESERVE` bytes of the send
        queue free, so the bulk transfer keeps its share of the ring instead of
        being starved by the services already released; its own chunks, sent
        from its sync hooks, are not subject to this.
        """
        if self.sync.phase is not Phase.IDLE and self._bulk_syncing():
            size += BULK_RESERVE
        return self._host.has_room(size)

    def _bulk_syncing(self) -> bool:
        sync = self.sync
        if not sync.in_progress:
            return False
        current = sync.current_service
        if current is None:
            return False
        priority = sync.priority_of(current)
        return priority is not None and priority >= PRIORITY_BULK

    # -- internals ----------------------------------------------------------

    def _send_sync(self, payload: bytes) -> bool:
        try:
            self._host.send(encode(SYNC_SERVICE_ID, 0, payload, FLAG_SYNC), False)
        except QueueFull:
            return False
        return True

    def _trace_connection(self, hook_name: str, _impls: object, kwargs: dict) -> None:
        """Hook-call monitor of every engine host: log library connections opening and closing (debug)."""
        if hook_name in ("lib_init", "lib_exit") and self.log.isEnabledFor(logging.DEBUG):
            conn = kwargs.get("conn")
            engine = self._services.get(getattr(conn, "service", None))
            self.log.debug("library connection %s (pid %s, uid %s) %s service %s",
                           getattr(conn, "id", "?"), getattr(conn, "pid", "?"), getattr(conn, "uid", "?"),
                           "opened to" if hook_name == "lib_init" else "closed from",
                           engine.engine.name if engine is not None else getattr(conn, "service", "?"))

    def _sync_completed(self, ring_id: RingId) -> None:
        sync_log.debug("sync round of ring %s complete", ring_id)
        self._synced = True
        self.router.sync_completed(ring_id)
        if self._on_sync_complete is not None:
            self._on_sync_complete(ring_id)
