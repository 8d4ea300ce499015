"""An in-process cluster of service layers for deterministic engine tests.

:class:`ServiceCluster` runs the real :class:`aisexec.servicelayer.ServiceLayer`
(routing, sync engine, engines) of several virtual nodes over an in-memory
agreed-order bus instead of Totem.  Configuration changes follow extended
virtual synchrony: messages already sent in a configuration are delivered to
every member that stays, then the transitional and regular configurations.
Service authors use it to test multi-node behaviour (sync after partitions
and merges, node loss, client death) without sockets or timing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.plugins import LoadedService, PluginOrigin
from aisexec.service import EngineHost, ServiceEngine
from aisexec.servicelayer import ServiceLayer
from aisexec.totem.api import ConfigChange, ConfKind, QueueFull, RingId

TRY_AGAIN = 6
LIBRARY = 2
INVALID_PARAM = 7
TOO_BIG = 26

_conn_ids = itertools.count(1)
_request_ids = itertools.count(1)


@dataclass(eq=False)
class FakeConnection:
    """A library connection as an engine sees it; records what it is sent."""

    node: int
    service: int
    pid: int
    uid: int = 0
    gid: int = 0
    id: int = field(default_factory=lambda: next(_conn_ids))
    private: dict = field(default_factory=dict)
    responses: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    dispatched: list[tuple[int, bytes]] = field(default_factory=list)
    _closed: bool = False

    def respond(self, service: int, msg_id: int, request_id: int, error: int, payload: bytes = b"") -> None:
        """Record a response (dropped once closed, as the IPC server does)."""
        if not self._closed:
            self.responses.append((msg_id, request_id, error, bytes(payload)))

    def dispatch(self, service: int, msg_id: int, payload: bytes) -> None:
        """Record a callback message (dropped once closed)."""
        if not self._closed:
            self.dispatched.append((msg_id, bytes(payload)))

    @property
    def closed(self) -> bool:
        """True after disconnect."""
        return self._closed

    def response(self, request_id: int) -> tuple[int, bytes]:
        """(error, payload) of the answer to ``request_id``; KeyError if none yet."""
        for _msg, rid, error, payload in self.responses:
            if rid == request_id:
                return error, payload
        raise KeyError(request_id)


class _Host:
    """The NodeHost of one virtual node: sends onto its component's bus."""

    def __init__(self, cluster: ServiceCluster, nodeid: int) -> None:
        self.cluster = cluster
        self.nodeid = nodeid
        self.shutdown_requested = False

    def send(self, message: bytes, safe: bool) -> None:
        if self.cluster.queue_limit is not None and len(self.cluster._queue) >= self.cluster.queue_limit:
            raise QueueFull()
        self.cluster._queue.append((self.nodeid, bytes(message)))

    def has_room(self, size: int) -> bool:
        return self.cluster.queue_limit is None or len(self.cluster._queue) < self.cluster.queue_limit

    def node_address(self, nodeid: int) -> str | None:
        return f"127.0.0.{nodeid}" if nodeid in self.cluster._live else None

    def ring_status(self) -> dict:
        layer = self.cluster._layers[self.nodeid]
        return {
            "nodeid": self.nodeid,
            "state": "OPERATIONAL",
            "rings": [{"ringnumber": 0, "address": self.node_address(self.nodeid), "status": "active",
                       "ring_id": str(layer.ring_id())}],
        }

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        entry = [self.cluster.now + seconds, fn, True]
        self.cluster._timers.append(entry)

        def cancel() -> None:
            entry[2] = False

        return cancel

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.cluster._soon.append(fn)

    def shutdown(self) -> None:
        self.shutdown_requested = True


class ServiceCluster:
    """Several virtual nodes, each with fresh engines from ``factories``, on one agreed-order bus."""

    def __init__(self, factories: list[Callable[[], ServiceEngine]], nodes: list[int] | None = None,
                 config: Any = None) -> None:
        """``config``: the Config every node's engines see as ``api.config``, or ``fn(nodeid) -> Config``."""
        self.factories = factories
        self.config = config
        self.now = 0.0
        self.queue_limit: int | None = None
        self._queue: list[tuple[int, bytes]] = []
        self._timers: list[list] = []
        self._soon: list[Callable[[], None]] = []  # call_soon: run once the request or delivery in hand is done
        self._layers: dict[int, ServiceLayer] = {}
        self._hosts: dict[int, _Host] = {}
        self._live: set[int] = set()
        self._components: list[set[int]] = []
        self._ring_seq = 0
        self._connections: list[FakeConnection] = []
        for n in nodes or [1, 2, 3]:
            self._boot(n)
        self._components = [set(self._live)]
        self._install([set(self._live)], first=True)

    # -- nodes ---------------------------------------------------------------

    def _boot(self, nodeid: int) -> None:
        services = []
        for factory in self.factories:
            engine = factory()
            services.append(LoadedService(engine, EngineHost(engine), PluginOrigin("test", "0", engine.name, "")))
        host = _Host(self, nodeid)
        config = self.config(nodeid) if callable(self.config) else self.config
        layer = ServiceLayer(nodeid, services, host, config=config)
        self._hosts[nodeid] = host
        self._layers[nodeid] = layer
        self._live.add(nodeid)
        layer.exec_init()

    def node(self, nodeid: int) -> ServiceLayer:
        """The service layer of ``nodeid`` (``.engine(id)`` finds an engine)."""
        return self._layers[nodeid]

    def engine(self, nodeid: int, service_id: int) -> ServiceEngine:
        """The engine of ``service_id`` on ``nodeid``."""
        found = self._layers[nodeid].engine_for(service_id)
        if found is None:
            raise KeyError(service_id)
        return found[0]

    def host(self, nodeid: int) -> _Host:
        """The host object of ``nodeid`` (``shutdown_requested`` etc.)."""
        return self._hosts[nodeid]

    # -- connections -----------------------------------------------------------

    def connect(self, nodeid: int, service_id: int, pid: int = 1000, uid: int = 0) -> FakeConnection:
        """Open a library connection to ``service_id`` on ``nodeid`` (runs lib_init)."""
        conn = FakeConnection(node=nodeid, service=service_id, pid=pid, uid=uid)
        _engine, host = self._layers[nodeid].engine_for(service_id)  # type: ignore[misc]
        host.hook.lib_init(conn=conn)
        self._connections.append(conn)
        return conn

    def request(self, conn: FakeConnection, msg_id: int, payload: bytes = b"", request_id: int | None = None) -> int:
        """Send a library request as the IPC server would; return its request id."""
        rid = request_id if request_id is not None else next(_request_ids)
        layer = self._layers[conn.node]
        engine, _host = layer.engine_for(conn.service)  # type: ignore[misc]
        handler = engine.lib_handlers.get(msg_id)
        if handler is None:
            conn.respond(conn.service, msg_id, rid, INVALID_PARAM)
            return rid
        if len(payload) > handler.max_size:
            conn.respond(conn.service, msg_id, rid, TOO_BIG)
            return rid
        if handler.needs_cluster and (not layer.cluster_ready(conn.service) or not layer.has_room(len(payload))):
            conn.respond(conn.service, msg_id, rid, TRY_AGAIN)
            return rid
        try:
            handler.fn(conn, rid, payload)
        except Exception:
            conn.respond(conn.service, msg_id, rid, LIBRARY)
            raise
        finally:
            self._run_soon()
        return rid

    def _run_soon(self) -> None:
        """Run what ``call_soon`` deferred, in order (and what those defer in turn)."""
        while self._soon:
            soon, self._soon = self._soon, []
            for fn in soon:
                fn()

    def disconnect(self, conn: FakeConnection) -> None:
        """Close a connection (the client died or finalized): runs lib_exit once."""
        if conn.closed:
            return
        conn._closed = True
        if conn.node in self._live:
            _engine, host = self._layers[conn.node].engine_for(conn.service)  # type: ignore[misc]
            host.hook.lib_exit(conn=conn)
            self._run_soon()

    # -- running -------------------------------------------------------------

    def _component_of(self, nodeid: int) -> set[int]:
        for comp in self._components:
            if nodeid in comp:
                return comp
        return set()

    def step(self) -> bool:
        """Deliver one queued message to its component; return False when nothing was queued."""
        self._run_soon()  # what a configuration change or a direct call deferred
        if not self._queue:
            return False
        sender, message = self._queue.pop(0)
        for n in sorted(self._component_of(sender)):
            self._layers[n].deliver(sender, message)
        self._run_soon()
        return True

    def run(self, max_steps: int = 100_000) -> None:
        """Deliver everything and let sync rounds finish, until the cluster is quiet."""
        for _ in range(max_steps):
            if self.step():
                continue
            for n in sorted(self._live):
                self._layers[n].pump()
            if not self._queue:
                if any(self._layers[n].sync.in_progress for n in self._live):
                    continue
                return
        raise RuntimeError("cluster did not become quiet")

    def advance(self, seconds: float) -> None:
        """Move the virtual clock and run due ``call_later`` timers."""
        self.now += seconds
        due = [t for t in self._timers if t[0] <= self.now and t[2]]
        self._timers = [t for t in self._timers if t[0] > self.now and t[2]]
        for t in sorted(due, key=lambda t: t[0]):
            t[1]()
        self._run_soon()

    # -- configuration changes ---------------------------------------------------

    def _flush(self) -> None:
        """Deliver messages already sent in the current configurations (virtual synchrony)."""
        while self.step():
            pass

    def _install(self, components: list[set[int]], first: bool = False) -> None:
        """Make ``components`` the rings; only components that differ from before get configuration changes."""
        old_members = {n: set(self._layers[n].members()) for n in self._live}
        unchanged = [c for c in self._components if c in components and not first]
        self._components = [set(c) for c in components if c]
        for comp in self._components:
            if comp in unchanged and all(old_members.get(n) == comp for n in comp):
                continue
            self._ring_seq += 4
            ring = RingId(min(comp), self._ring_seq)
            members = tuple(sorted(comp))
            for n in members:
                old = old_members.get(n, set())
                if not first:
                    trans = tuple(sorted(old & comp)) or (n,)
                    left = tuple(sorted(old - set(trans)))
                    self._layers[n].config_change(ConfigChange(ConfKind.TRANSITIONAL, trans, left, (), ring))
                else:
                    trans = ()
                joined = tuple(sorted(comp - set(trans)))
                self._layers[n].config_change(ConfigChange(ConfKind.REGULAR, members, (), joined, ring))

    def partition(self, groups: list[list[int]]) -> None:
        """Split the live nodes into ``groups`` (each becomes its own ring)."""
        self._flush()
        self._install([set(g) & self._live for g in groups])

    def heal(self) -> None:
        """Merge every live node into one ring."""
        self._flush()
        self._install([set(self._live)])

    def crash(self, nodeid: int) -> None:
        """Kill ``nodeid``: its engines vanish; the survivors of its ring form a new one."""
        self._flush()
        self._live.discard(nodeid)
        for conn in self._connections:
            if conn.node == nodeid:
                conn._closed = True
        comps = [c - {nodeid} for c in self._components]
        self._install(comps)

    def restart(self, nodeid: int) -> None:
        """Boot ``nodeid`` again with fresh engines and merge it into the ring of every live node."""
        self._flush()
        self._boot(nodeid)
        self._install([set(self._live)])
