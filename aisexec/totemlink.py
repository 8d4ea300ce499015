"""One node's Totem stack, assembled: transport, crypto, SRP core, packing, gevent driver.

:class:`TotemLink` is what the executive sees of the ring: ``mcast`` whole
cluster messages (up to 1 MiB), receive whole messages and configuration
changes through callbacks, ask for room, and read the ring's status.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from aisexec.totem.api import ConfigChange, Delivery, MessageTooBig
from aisexec.totem.config import MAX_MESSAGE_SIZE
from aisexec.totem.senderguard import DEFAULT_HOLD, SenderGuard

log = logging.getLogger("aisexec.totem")


class NodeIdError(ValueError):
    """No usable nodeid: IPv6 without ``totem.nodeid``, or an address that gives 0."""


def resolve_nodeid(config: Any) -> int:
    """``totem.nodeid`` if set, else the ring-0 IPv4 address in network order (bit 31 cleared if asked)."""
    nodeid = int(config.totem.get("nodeid") or 0)
    if nodeid:
        return nodeid
    bind = config.interfaces[0]["bindnetaddr"]
    addr = ipaddress.ip_address(bind)
    if addr.version != 4:
        raise NodeIdError("totem.nodeid is required with an IPv6 interface")
    nodeid = int(addr)
    if config.totem.get("clear_node_high_bit") in (True, "yes", "on"):
        nodeid &= 0x7FFFFFFF
    if nodeid == 0:
        raise NodeIdError(f"bindnetaddr {bind} gives nodeid 0, which is reserved; set totem.nodeid")
    return nodeid


def sender_guard(config: Any, totem_config: Any) -> SenderGuard:
    """The guard that keeps unknown addresses (udpu member list) and duplicate node ids out of the ring."""
    members = None
    if str(config.totem.get("transport") or "udp") == "udpu" and config.interfaces:
        members = [str(m["memberaddr"]) for m in config.interfaces[0].get("members", [])]
    hold = max(DEFAULT_HOLD, 4 * (totem_config.token + totem_config.consensus) / 1000.0)
    return SenderGuard(members, hold=hold)


class TotemLink:
    """The ring as the executive uses it."""

    def __init__(
        self,
        config: Any,
        env: Any,
        nodeid: int,
        authkey: bytes | None,
        *,
        on_message: Callable[[int, bytes], None],
        on_config: Callable[[ConfigChange], None],
        on_room: Callable[[], None] | None = None,
    ) -> None:
        from aisexec.totem import wire
        from aisexec.totem.crypto import OVERHEAD, PacketCrypto
        from aisexec.totem.driver import TotemDriver
        from aisexec.totem.faults import FaultLayer
        from aisexec.totem.pg import PgEndpoint
        from aisexec.totem.ringseq import RingSeqStore
        from aisexec.totem.srp import SrpCore
        from aisexec.totem.transport import make_transport

        self.config = config
        self.nodeid = nodeid
        self._on_message = on_message
        self._on_config = on_config
        self._on_room = on_room
        self._room_freed = False  # a token visit moved frames into the core: on_room at the next flush
        secauth = config.totem.get("secauth") in (True, "on", "yes")
        totem_config = config.totem_config
        self.store = RingSeqStore(env.state_dir, nodeid)
        self.crypto = PacketCrypto(nodeid, authkey if secauth else None, cipher=totem_config.crypto_cipher,
                                   state_dir=env.state_dir)
        self.cipher = self.crypto.cipher  # the AEAD this node seals with, or "none"
        log.info("Initializing transmit/receive security: %s", self.cipher)
        self.transport = make_transport(config, nodeid)
        self.core = SrpCore(nodeid, totem_config, ring_seq=self.store.load())
        frame = min(self.core.max_payload, totem_config.netmtu - 28 - OVERHEAD - wire.MCAST_OVERHEAD)
        self.pg = PgEndpoint(nodeid, frame, withdraw=self.core.withdraw_pending)
        self.faults = FaultLayer.from_environ()  # None unless OPENAIS_FAULTS / OPENAIS_FAULTS_FILE is set
        self.driver = TotemDriver(self.core, self.transport, self.crypto, self.store, on_events=self._on_events,
                                  faults=self.faults, guard=sender_guard(config, totem_config))
        self.max_message = MAX_MESSAGE_SIZE
        # Frames the core may hold beyond what one visit sends: enough to keep the ring busy; more only
        # moves memory from the packer (whole messages, bounded) into the core (frames).
        self.pump_ahead = 4 * max(totem_config.window_size, totem_config.max_messages)
        self._flush_scheduled = False
        # One long-lived greenlet runs the deferred flushes: a greenlet spawned per hub turn cost an
        # allocation (and, on Python 3.11, an mmap for its frame stack) on every message's path.
        self._flush_wanted = gevent.event.Event()
        self._flusher: gevent.Greenlet | None = None
        self.core.add_token_callback(self._on_token)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Open the sockets and start forming a ring."""
        self._flusher = gevent.spawn(self._flush_loop)
        self.driver.start()

    def leave(self) -> None:
        """Tell the ring we are going (orderly shutdown)."""
        self.driver.leave()

    def stop(self) -> None:
        """Close the sockets and cancel every timer."""
        if self._flusher is not None:
            self._flusher.kill(block=False)
            self._flusher = None
        self.driver.stop()

    # -- sending ------------------------------------------------------------------

    def mcast(self, message: bytes, safe: bool = False) -> None:
        """Queue one whole cluster message; raises QueueFull when the ring is backed up.

        ``safe``: delivered only once every member has it (its frames go to
        the core as SAFE; a frame never mixes safe and agreed messages).
        """
        try:
            self.pg.send(message, safe)
        except ValueError as exc:
            raise MessageTooBig(str(exc)) from None
        if not self._flush_scheduled:  # pack everything queued in this turn of the hub into few frames
            self._flush_scheduled = True
            self._flush_wanted.set()

    def _flush_loop(self) -> None:
        """The flusher: after the hub turn that queued messages, move their frames into the core."""
        wanted = self._flush_wanted
        while True:
            wanted.wait()
            wanted.clear()
            self._flush_scheduled = False
            try:
                self._flush()
            except Exception:
                log.exception("flushing queued messages into the ring failed")

    def _pump(self, now: float) -> int:
        """Hand the core frames until it holds ``pump_ahead`` not yet sent (the rest wait as whole messages)."""
        room = self.pump_ahead - self.core.pending_count
        if room <= 0:
            return 0
        frames = self.pg.packer.take(room)
        if frames:
            self.core.submit_many(now, frames)
        return len(frames)

    def _on_token(self, now: float) -> None:
        """Token visit (inside the core): hand it what the packer holds, so it leaves on this visit."""
        if self.pg.packer.has_frames():  # most visits of a node that sends nothing stop here
            if self._pump(now):
                self._room_freed = True  # told outside the core, by the next flush

    def has_room(self, size: int) -> bool:
        """True when a message of ``size`` bytes can be queued now."""
        packer = self.pg.packer
        return packer.queued_count < packer.max_count and packer.queued_bytes + size <= packer.max_bytes

    def _flush(self) -> None:
        """Move packed frames into the core while it has room; tell ``on_room`` when the send queue shrank."""
        if self._pump(self.driver.now()):
            self.driver.apply()
            self._room_freed = True
        if self._room_freed:
            self._room_freed = False
            if self._on_room is not None:
                self._on_room()

    # -- receiving ----------------------------------------------------------------

    def _on_events(self, events: list[Delivery | ConfigChange]) -> None:
        """The core's events of one turn, through pg: whole messages and configuration changes, in order."""
        on_message = self._on_message
        for item in self.pg.on_events(events):
            if item.__class__ is tuple:  # (sender, message): pg's plain pairs (a ConfigChange is a NamedTuple)
                on_message(item[0], item[1])
            else:
                self._on_config(item)  # type: ignore[arg-type]
        self._flush()

    # -- status --------------------------------------------------------------------

    def node_address(self, nodeid: int) -> str | None:
        """Ring-0 address the transport knows for ``nodeid``."""
        return self.transport.address_of(nodeid)

    def status(self) -> dict:
        """Ring state for tools and metrics."""
        core = self.core
        iface = self.config.interfaces[0]
        faulty = not self.transport.healthy() if hasattr(self.transport, "healthy") else False
        return {
            "nodeid": self.nodeid,
            "state": core.state.name,
            "rings": [{
                "ringnumber": iface.get("ringnumber", 0),
                "address": self.transport.local_address,
                "transport": self.config.totem.get("transport", "udp"),
                "status": "faulty" if faulty else "active",
                "ring_id": str(core.ring_id),
            }],
            "crypto": self.cipher,
            "pending": core.pending_count + self.pg.packer.queued_count,
            "stats": dict(core.stats),
            "transport_stats": dict(getattr(self.transport, "stats", {}) or {}),
            "driver": dict(getattr(self.driver, "stats", {}) or {}),
            "sender_guard": self.driver.guard.stats() if getattr(self.driver, "guard", None) else {},
            "crypto_stats": self.crypto.stats.as_dict(),
            "faults": dict(self.faults.stats) if self.faults is not None else {},
        }
