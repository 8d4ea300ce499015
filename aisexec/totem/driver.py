"""The gevent driver: runs the sans-IO Totem core with real sockets, timers and a monotonic clock.

Per received batch the driver opens every datagram (authentication, replay
check; the datagrams of admitted senders in runs, one ``open_many`` pass),
drops what is not for it, feeds data packets to the core before
tokens (so a token never overtakes the data that travelled with it; the data
in one ``receive_many`` call, delivered once per run), then
applies the core's :class:`~aisexec.totem.api.Ready`: the ring sequence is
persisted first, then packets are sealed and sent, timers armed, and events
handed to the layer above.  The core keeps its own multicasts itself, so
none is fed back (copies the kernel loops back are dropped).  A pause detector logs
``Process pause detected for N ms`` when the hub was blocked for longer
than half the token timeout.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import gevent

from aisexec.totem import wire
from aisexec.totem.api import MULTICAST, ConfigChange, ConfKind, Delivery, Guarantee, Ready, TimerName
from aisexec.totem.crypto import PacketCrypto, PacketRejected

log = logging.getLogger("aisexec.totem")
_TOKEN_TYPES = (wire.T_ORF_TOKEN, wire.T_COMMIT_TOKEN)
_TYPE_OFFSET = 3
#: Deliveries in one turn up to which the other members' copies wait for the local clients' writes.
HOLD_BACK_MAX_EVENTS = 4
_EPOCH = slice(12, 28)  # the sender's epoch in the crypto envelope header
_SENDER = slice(4, 8)  # and its nodeid
_SENDER_ID = struct.Struct("!I")


class TotemDriver:
    """Drive one SrpCore under gevent."""

    def __init__(
        self,
        core: Any,
        transport: Any,
        crypto: PacketCrypto,
        store: Any,
        *,
        on_events: Callable[[list[Delivery | ConfigChange]], None],
        clock: Callable[[], float] = time.monotonic,
        faults: Any = None,
        guard: Any = None,
    ) -> None:
        self.core = core
        self.guard = guard  #: a SenderGuard (aisexec/totem/senderguard.py), or None to take every sender
        self._known_raw: dict[bytes, str] = {}  # envelope sender id bytes -> admitted address (fast path)
        self._me_id = _SENDER_ID.pack(core.nodeid)
        self.transport = transport
        self.crypto = crypto
        self.store = store
        self.nodeid = core.nodeid
        self._on_events = on_events
        self._clock = clock
        self._faults = faults
        # Timers are lazy: the core re-arms the token timers on every visit, which must not cost a loop
        # watcher each time.  ``_deadlines`` holds what the core wants; ``_watchers`` the one libev timer per
        # name, which may fire early (it then re-arms for the rest); ``_generation`` voids stale expiries.
        self._loop = gevent.get_hub().loop
        self._deadlines: dict[TimerName, float] = {}
        self._watchers: dict[TimerName, tuple[Any, float]] = {}
        self._generation: dict[TimerName, int] = dict.fromkeys(TimerName, 0)
        self._due: list[tuple[TimerName, int]] = []  # timers armed for "now", fired before _apply returns
        self._local: list[bytes] = []
        self._running = False
        self._applying = False
        self._fanout_scheduled = False
        self._pause_greenlet: gevent.Greenlet | None = None
        core_config = getattr(core, "cfg", None)
        token_ms = core_config.token if core_config is not None else 1000
        if core_config is not None and core_config.heartbeat_failures_allowed and not core_config.heartbeat_timeout:
            log.warning("heartbeat_failures_allowed %d x token_retransmit + max_network_delay is not below the "
                        "token timeout (%d ms): the heartbeat is disabled", core_config.heartbeat_failures_allowed,
                        token_ms)
        self._token_ms = token_ms
        self._pause_limit = token_ms / 2000.0
        self._seen = {"token_losses": 0, "retransmit_requests": 0}
        self._addresses: dict[int, str] = getattr(transport, "addresses", {})  # the transport's own, live
        self._core_counters: dict[str, int] = getattr(core, "stats_counters", None) or {}  # the core's own, live
        # A run of data packets in one call where the core takes them so (SrpCore.receive_many).
        self._receive_many: Callable[[float, list[bytes]], None] = getattr(core, "receive_many", None) or \
            self._receive_each
        self._last_duplicate_log = -1e9
        self.stats = {"rejected": 0, "not_for_me": 0, "malformed": 0, "pauses": 0, "max_pause_ms": 0,
                      "memberships": 0}
        self._last_members: tuple[int, ...] = ()

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Open the transport and start forming a ring."""
        self._running = True
        self.transport.start(self._on_batch)
        self.core.start(self._clock())
        self._apply()
        self._pause_greenlet = gevent.spawn(self._pause_watch)
        if self._faults is not None:
            self._faults.start(self._reinject)

    def leave(self) -> None:
        """Multicast a leave (orderly shutdown) and flush it out."""
        if not self._running:
            return
        self.core.leave(self._clock())
        self._apply()

    def stop(self) -> None:
        """Cancel timers and close the transport."""
        self._running = False
        for watcher, _deadline in self._watchers.values():
            watcher.stop()
        self._watchers.clear()
        self._deadlines.clear()
        self._due.clear()
        if self._pause_greenlet is not None:
            self._pause_greenlet.kill(block=False)
        if self._faults is not None:
            self._faults.stop()
        self.transport.send_deferred()  # a leave or last token already handed over still goes out
        self.transport.stop()

    # -- inputs -----------------------------------------------------------------

    def submit(self, payload: bytes, guarantee: Guarantee = Guarantee.AGREED) -> None:
        """Queue one frame in the core (raises QueueFull); sent on the next token."""
        self.core.submit(self._clock(), payload, guarantee)
        self._apply()

    def now(self) -> float:
        """The driver's clock (monotonic seconds), as the core is given it."""
        return self._clock()

    def apply(self) -> None:
        """Carry out what the core asked for since the last input (after direct ``core.submit`` calls)."""
        self._apply()

    def _on_batch(self, batch: list[tuple[bytes, tuple]]) -> None:
        """One transport batch: screen every datagram, open them, feed data before tokens, apply.

        Before anything is decrypted, own multicasts looped back by the kernel are dropped and the
        sender guard is asked about every claimed sender it has not admitted at that address.  The
        datagrams of admitted senders are opened in runs (:meth:`PacketCrypto.open_many`); a datagram
        the guard must look at first ends the run before it, so every check and every guard decision
        happens in the same order as one datagram at a time.
        """
        if not self._running:
            return
        data: list[bytes] = []
        tokens: list[bytes] = []
        me_id, my_epoch = self._me_id, self.crypto.epoch
        guard = self.guard
        guard_now = self._clock() if guard is not None else 0.0
        known_raw = self._known_raw  # raw envelope sender id -> the address the guard admitted it at
        heard: set[int] = set()
        run: list[bytes] = []  # datagrams of admitted senders (or every datagram, without a guard)
        sources: list[tuple] = []
        for datagram, source in batch:
            raw = datagram[_SENDER]
            if raw == me_id and datagram[_EPOCH] == my_epoch:
                continue  # our own multicast looped back by the kernel: dropped without opening it
            if guard is not None and known_raw.get(raw) != source[0]:
                if run:  # what came before is opened (and its senders admitted) before this one is screened
                    self._take(run, sources, data, tokens, heard, guard_now)
                    run, sources = [], []
                claimed = int.from_bytes(raw, "big")
                if self._addresses.get(claimed) != source[0] and guard.refuses(claimed, source[0], guard_now):
                    self.stats["refused_sender"] = self.stats.get("refused_sender", 0) + 1
                    continue  # refused before decryption: its packets never touch that node id's crypto state
                self._take([datagram], [source], data, tokens, heard, guard_now)
                continue
            run.append(datagram)
            sources.append(source)
        if run:
            self._take(run, sources, data, tokens, heard, guard_now)
        for sender in heard:  # once per sender and batch: keeps each admitted address's claim fresh
            guard.heard(sender, guard_now)
        if self._faults is not None:
            data = self._faults.filter(data)
            tokens = self._faults.filter(tokens)
        now = self._clock()
        if data:
            self._receive_many(now, data)
        receive = self.core.receive
        for packet in tokens:
            receive(now, packet)
        self._apply()

    def _take(self, datagrams: list[bytes], sources: list[tuple], data: list[bytes], tokens: list[bytes],
              heard: set[int], guard_now: float) -> None:
        """Open a run of screened datagrams; sort what is for this node into ``data`` and ``tokens``."""
        me = self.nodeid
        stats = self.stats
        guard = self.guard
        addresses = self._addresses  # what the transport already knows; learn() the rest
        for result, datagram, source in zip(self.crypto.open_many(datagrams), datagrams, sources, strict=True):
            if result.__class__ is PacketRejected:
                stats["rejected"] += 1
                continue
            sender, target, packet = result  # type: ignore[misc]
            if sender == me:
                if datagram[_EPOCH] != self.crypto.epoch:
                    self._duplicate_nodeid(source)
                continue  # our own multicast looped back by the kernel
            if addresses.get(sender) != source[0]:
                if guard is not None:
                    if not guard.admit(sender, source[0], guard_now):
                        stats["refused_sender"] = stats.get("refused_sender", 0) + 1
                        continue
                    self._known_raw[datagram[_SENDER]] = source[0]
                self.transport.learn(sender, source)
            elif guard is not None:
                heard.add(sender)
            if target and target != me:
                stats["not_for_me"] += 1
                continue
            if len(packet) <= _TYPE_OFFSET:
                stats["malformed"] += 1
                continue
            (tokens if packet[_TYPE_OFFSET] in _TOKEN_TYPES else data).append(packet)

    def _receive_each(self, now: float, packets: list[bytes]) -> None:
        """``receive_many`` for a core without it: one ``receive`` per packet."""
        receive = self.core.receive
        for packet in packets:
            receive(now, packet)

    def _duplicate_nodeid(self, source: tuple) -> None:
        """Another process sends with our nodeid: a configuration error that must be seen."""
        self.stats["duplicate_nodeid"] = self.stats.get("duplicate_nodeid", 0) + 1
        now = self._clock()
        if now - self._last_duplicate_log >= 5.0:
            self._last_duplicate_log = now
            log.error("Duplicate nodeid %d: another node at %s uses it too; give every node its own totem.nodeid",
                      self.nodeid, source[0])

    def _reinject(self, packets: list[bytes]) -> None:
        """Feed packets the fault layer held back (data before tokens, as in a batch)."""
        if not self._running:
            return
        now = self._clock()
        receive = self.core.receive
        for packet in sorted(packets, key=lambda p: p[_TYPE_OFFSET] in _TOKEN_TYPES):
            receive(now, packet)
        self._apply()

    def _set_timer(self, name: TimerName, deadline: float | None, now: float) -> None:
        """Record what the core asked for; touch the event loop only when a timer must fire sooner."""
        self._generation[name] += 1
        if deadline is None:
            self._deadlines.pop(name, None)
            return  # a watcher left armed fires, finds no deadline and does nothing
        if deadline <= now:  # due at once (a released hold): fired by _apply, no loop timer in between
            self._deadlines.pop(name, None)
            self._due.append((name, self._generation[name]))
            return
        self._deadlines[name] = deadline
        armed = self._watchers.get(name)
        if armed is not None:
            if armed[1] <= deadline:
                return  # it fires no later than needed and re-arms itself for the rest
            armed[0].stop()
        self._start_watcher(name, deadline, now)

    def _start_watcher(self, name: TimerName, deadline: float, now: float) -> None:
        watcher = self._loop.timer(max(deadline - now, 0.0))
        self._watchers[name] = (watcher, deadline)
        watcher.start(self._watcher_fired, name)

    def _watcher_fired(self, name: TimerName) -> None:
        """Loop callback (must not block): re-arm if the deadline moved on, else run the expiry in a greenlet."""
        self._watchers.pop(name, None)
        deadline = self._deadlines.get(name)
        if deadline is None or not self._running:
            return
        now = self._clock()
        if now < deadline - 0.0005:  # re-armed later since, or the loop's cached time ran ahead
            self._start_watcher(name, deadline, now)
            return
        del self._deadlines[name]
        # A greenlet, not the loop callback itself: the core's outputs may block (IPC sends).
        gevent.spawn(self._timer_fired, name, self._generation[name])

    def _timer_fired(self, name: TimerName, generation: int) -> None:
        if not self._running or self._generation[name] != generation:
            return  # re-armed or cancelled after the expiry was scheduled
        self.core.timer_expired(self._clock(), name)
        self._apply()

    # -- outputs ----------------------------------------------------------------

    def _apply(self) -> None:
        """Carry out everything the core asked for, feeding own multicasts back until quiet."""
        if self._applying:
            return
        self._applying = True
        inline_expiries = 1  # then yield to the hub: a busy one-node ring must not starve its clients
        try:
            take_ready = self.core.take_ready
            counters = self._core_counters
            seen = self._seen
            while True:
                ready: Ready = take_ready()
                # Ready's own truth test, inline: this loop runs after every input, and asks once more
                if ready.sends or ready.timers or ready.events or ready.ring_seq_to_persist is not None:
                    self._carry_out(ready)
                    if (ready.timers or ready.events) and (
                            counters.get("token_losses", 0) != seen["token_losses"]
                            or counters.get("retransmit_requests", 0) != seen["retransmit_requests"]):
                        self._log_protocol_events()
                elif not self._local and not self._due:
                    break
                if self._local:
                    local, self._local = self._local, []
                    now = self._clock()
                    for packet in local:
                        self.core.receive(now, packet)
                if self._due:
                    due, self._due = self._due, []
                    for name, generation in due:
                        if inline_expiries <= 0:
                            gevent.spawn(self._timer_fired, name, generation)
                        elif self._running and self._generation[name] == generation:
                            self.core.timer_expired(self._clock(), name)
                    inline_expiries -= 1
        finally:
            self._applying = False

    def _log_protocol_events(self) -> None:
        """Turn the core's counters into the log lines operators grep for."""
        stats = self._core_counters
        losses = stats.get("token_losses", 0)
        if losses > self._seen["token_losses"]:
            log.log(25, "A processor failed, forming new configuration. (token not received in %d ms)",
                    self._token_ms)
        requests = stats.get("retransmit_requests", 0)
        if requests > self._seen["retransmit_requests"]:
            log.info("Retransmit List: %d message(s) requested (%d in all)",
                     requests - self._seen["retransmit_requests"], requests)
        self._seen["token_losses"] = losses
        self._seen["retransmit_requests"] = requests

    def _carry_out(self, ready: Ready) -> None:
        if ready.ring_seq_to_persist is not None:
            self.store.save(ready.ring_seq_to_persist)
        # A turn with few deliveries (one-at-a-time traffic) lets them reach local clients before the
        # copies that only have to beat the token to the other members; a busy turn sends everything at
        # once, or those members would wait for every local delivery of up to a window of frames.
        held_back = self._send(ready.sends, len(ready.events) <= HOLD_BACK_MAX_EVENTS) if ready.sends else False
        if ready.timers:
            now = self._clock()
            set_timer = self._set_timer
            for name, deadline in ready.timers.items():
                set_timer(name, deadline, now)
        if ready.events:
            for event in ready.events:
                if type(event) is ConfigChange and event.kind is ConfKind.REGULAR:
                    self._log_membership(event)
            self._on_events(ready.events)
        if held_back and not self._fanout_scheduled:
            # After the deliveries above queued their IPC writes: those loop callbacks run first.
            self._fanout_scheduled = True
            self._loop.run_callback(self._send_deferred)

    def _send(self, sends: list[tuple[int, bytes]], hold_back: bool = False) -> bool:
        """Seal and send in the core's order; consecutive multicasts leave together (one batch per member).

        ``hold_back``: the transport may hold back the copies for members other than the token's
        next hop; True when it did (sent by :meth:`_send_deferred`).
        """
        seal, seal_many = self.crypto.seal, self.crypto.seal_many
        held_back = False
        batch: list[bytes] = []  # consecutive multicasts, sealed together in one pass when they leave
        for dest, packet in sends:
            if dest == MULTICAST:
                # The core keeps its own messages when it originates them: no local copy is fed back.
                batch.append(packet)
                continue
            if dest == self.nodeid:
                if batch:
                    self.transport.multicast_many(seal_many(batch))
                    batch = []
                self._local.append(packet)
            elif batch:
                # The successor gets the data and the token now; the other members' copies only have
                # to arrive before the token does, a hop later: they leave after this turn's deliveries.
                if self.transport.multicast_then_unicast(seal_many(batch), dest, seal(packet, dest),
                                                         defer_others=hold_back):
                    held_back = True
                batch = []
            else:
                self.transport.unicast(dest, seal(packet, dest))
        if batch:
            self.transport.multicast_many(seal_many(batch))
        return held_back

    def _send_deferred(self) -> None:
        """Loop callback (never blocks: the sockets are non-blocking): send the copies held back."""
        self._fanout_scheduled = False
        try:
            self.transport.send_deferred()
        except Exception:
            log.exception("sending held-back multicast copies failed")

    def _log_membership(self, change: ConfigChange) -> None:
        self.stats["memberships"] += 1
        before = set(self._last_members)
        joined = [n for n in change.members if n not in before]
        left = [n for n in self._last_members if n not in change.members]
        self._last_members = change.members
        log.log(25, "A new membership (%s) was formed. Members joined: %s left: %s",
                change.ring_id, " ".join(map(str, joined)) or "none", " ".join(map(str, left)) or "none")

    # -- pause detection ----------------------------------------------------------

    def _pause_watch(self) -> None:
        interval = max(self._pause_limit / 2.5, 0.01)
        last = self._clock()
        while self._running:
            gevent.sleep(interval)
            now = self._clock()
            lag = now - last - interval
            last = now
            if lag > self._pause_limit:
                self.stats["pauses"] += 1
                self.stats["max_pause_ms"] = max(self.stats["max_pause_ms"], int(lag * 1000))
                log.warning("Process pause detected for %d ms, flushing membership messages.", int(lag * 1000))
