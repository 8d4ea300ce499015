"""The executive: one node's Totem link, service layer and IPC server, run under gevent.

:class:`Executive` owns the wiring and nothing else: the ring lives in
:class:`aisexec.totemlink.TotemLink`, routing and sync in
:class:`aisexec.servicelayer.ServiceLayer`, the local socket in
:class:`aisexec.ipc.server.IpcServer`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from aisexec.ipc.auth import Authorizer
from aisexec.ipc.limits import IpcLimits
from aisexec.ipc.server import IpcServer
from aisexec.plugins import LoadedService
from aisexec.servicelayer import ServiceLayer
from aisexec.totem.api import ConfigChange, MembState, RingId
from aisexec.totemlink import TotemLink, resolve_nodeid

log = logging.getLogger("aisexec.main")



def _logged(fn: Callable[[], None]) -> None:
    """Run a loop callback; what it raises is logged, never left to the hub."""
    try:
        fn()
    except Exception:
        logging.getLogger("aisexec.serv").exception("deferred call %r failed", fn)

class Executive:
    """One running node: start it, wait for ``ready_event``, stop it."""

    def __init__(
        self,
        config: Any,
        env: Any,
        services: list[LoadedService],
        *,
        authkey: bytes | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.services = services
        self.authkey = authkey
        self.log = logger or log
        self.nodeid = resolve_nodeid(config)
        self.ready_event = gevent.event.Event()
        #: ``fn(change)`` for every configuration change (the daemon tells systemd)
        self.membership_listeners: list[Callable[[ConfigChange], None]] = []
        self.stopped_event = gevent.event.Event()
        self.stop_requested = gevent.event.Event()
        self.link: TotemLink | None = None
        self.ipc: IpcServer | None = None
        self.layer = ServiceLayer(self.nodeid, services, host=self, config=config,
                                  logger=logging.getLogger("aisexec.serv"), on_sync_complete=self._synced)
        self._pump_greenlet: gevent.Greenlet | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Bring up the service engines, the IPC socket and the ring (returns at once)."""
        Path(self.env.state_dir).mkdir(parents=True, exist_ok=True)
        self.link = TotemLink(self.config, self.env, self.nodeid, self.authkey,
                              on_message=self.layer.deliver, on_config=self._config_change,
                              on_room=self._room)
        self.layer.exec_init()
        self.ipc = IpcServer(self.env.ipc_socket, router=self.layer, authorizer=self._authorizer(),
                             max_frame=self.link.max_message + 65536, limits=IpcLimits.from_config(self.config),
                             logger=logging.getLogger("aisexec.ipc"))
        self.ipc.start()
        self.link.start()
        self._pump_greenlet = gevent.spawn(self._pump_loop)
        self.log.info("node %d listening on %s", self.nodeid, self.env.ipc_socket)

    def stop(self) -> None:
        """Leave the ring, close every connection, run the engines' exit hooks, remove the socket."""
        if self.stopped_event.is_set():
            return
        self.layer.exec_stopping()  # engines hand work over while the ring still runs (AMF: switchover)
        if self._pump_greenlet is not None:
            self._pump_greenlet.kill(block=False)
        if self.link is not None:
            self.log.debug("node %d leaving the ring", self.nodeid)
            self.link.leave()
        if self.ipc is not None:
            self.log.debug("closing the IPC socket %s and every library connection", self.env.ipc_socket)
            self.ipc.stop()
        self.log.debug("running the exit hooks of %d service(s)", len(self.services))
        self.layer.exec_exit()
        if self.link is not None:
            self.link.stop()
        self.stopped_event.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block the calling greenlet until the first membership and sync completed."""
        return self.ready_event.wait(timeout)

    # -- NodeHost for the service layer -----------------------------------------------

    def send(self, message: bytes, safe: bool) -> None:
        """Multicast one cluster message (raises QueueFull when the ring is backed up)."""
        assert self.link is not None
        self.link.mcast(message, safe)

    def has_room(self, size: int) -> bool:
        """True when the ring can queue ``size`` more bytes now."""
        return self.link is not None and self.link.has_room(size)

    def node_address(self, nodeid: int) -> str | None:
        """Ring-0 address of ``nodeid`` as the transport knows it."""
        return None if self.link is None else self.link.node_address(nodeid)

    def ring_operational(self) -> bool:
        """True while the Totem core is OPERATIONAL (not gathering, committing or recovering)."""
        return self.link is not None and self.link.core.state is MembState.OPERATIONAL

    def ring_status(self) -> dict:
        """Ring state for tools."""
        status = {} if self.link is None else self.link.status()
        status["ipc"] = {} if self.ipc is None else self.ipc.stats()
        status["routing"] = dataclasses.asdict(self.layer.router.stats)
        return status

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` in a greenlet of its own after ``seconds``; return its canceller.

        A bare loop timer that spawns the greenlet only when it fires: most timers (request
        deadlines) are cancelled first, and a greenlet made and killed for each cost three times as
        much.  The canceller also stops a callback already running (as killing its greenlet did).
        """
        return _Timer(seconds, fn).cancel

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the hub at the end of this loop turn (a loop callback: no greenlet; must not block)."""
        gevent.get_hub().loop.run_callback(_logged, fn)

    def shutdown(self) -> None:
        """Ask the daemon to stop (``openais-cfgtool -H``)."""
        self.stop_requested.set()

    # -- internals ----------------------------------------------------------------

    def _authorizer(self) -> Authorizer:
        return Authorizer.from_config(self.config)

    def _config_change(self, change: ConfigChange) -> None:
        self.layer.config_change(change)
        if change.kind.name == "REGULAR":
            self._check_alone(change)
        for listener in list(self.membership_listeners):
            listener(change)

    #: Seconds alone in a ring, with other members configured, before the executive says why that may be.
    ALONE_WARNING_AFTER = 10.0

    def _check_alone(self, change: ConfigChange) -> None:
        """Alone while the member list names others: warn once the ring stays that way (a likely misconfiguration)."""
        members = [str(m.get("memberaddr")) for m in (self.config.interfaces[0].get("members", [])
                                                      if self.config.interfaces else [])]
        if change.members != (self.nodeid,) or len(members) < 2:
            return
        ring = change.ring_id

        def still_alone() -> None:
            if self.layer.ring_id() == ring and self.layer.members() == (self.nodeid,):
                local = self.link.transport.local_address if self.link is not None else "?"
                logging.getLogger("aisexec.totem").warning(
                    "This node (%d at %s) has been alone in its ring for %.0f s although its member list names %d "
                    "other node(s): if they are running, check that %s is in their member lists and that every "
                    "node has its own totem.nodeid (their logs say which)", self.nodeid, local,
                    self.ALONE_WARNING_AFTER, len(members) - 1, local)

        self.call_later(self.ALONE_WARNING_AFTER, still_alone)

    def _synced(self, ring_id: RingId) -> None:
        if not self.ready_event.is_set():
            logging.getLogger("aisexec.sync").log(
                25, "Completed service synchronization, ready to provide service.")
        self.ready_event.set()
        if self.ipc is not None:
            self.ipc.room_available()  # requests parked while sync held their service

    def _room(self) -> None:
        """The ring's send queue shrank: sync rounds go on, parked IPC requests are woken."""
        self.layer.pump()
        if self.ipc is not None:
            self.ipc.room_available()

    def _pump_loop(self) -> None:
        """Keep sync rounds moving even when no token callback arrives."""
        while True:
            syncing = self.layer.sync.in_progress
            gevent.sleep(0.01 if syncing else 0.1)  # an idle node wakes 10 times a second, not 100
            if syncing:
                self.layer.pump()


class _Timer:
    """One :meth:`Executive.call_later`: a loop timer that spawns ``fn`` in a greenlet unless cancelled first."""

    __slots__ = ("fn", "running", "timer")

    def __init__(self, seconds: float, fn: Callable[[], None]) -> None:
        self.fn: Callable[[], None] | None = fn
        self.running: gevent.Greenlet | None = None
        self.timer = gevent.get_hub().loop.timer(max(seconds, 0.0))
        self.timer.start(self._fire)

    def _fire(self) -> None:
        if self.fn is not None:
            self.running = gevent.spawn(self._run)

    def _run(self) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:  # not cancelled between the expiry and this greenlet's turn
            fn()

    def cancel(self) -> None:
        """Stop the timer; a callback already running is killed (GreenletExit at its next switch)."""
        self.fn = None
        self.timer.stop()
        running = self.running
        if running is not None:
            running.kill(block=False)
