"""One simulated node: its core, its timers, its application and its recorded trace."""

from __future__ import annotations

import hashlib
import struct
from collections import Counter, deque
from typing import Any

from aisexec.totem.api import ConfigChange, ConfKind, Delivery, TimerName
from aisexec.totem.pg import PgEndpoint

_APP_HEADER = struct.Struct("!IIII")  # sender, counter, incarnation, length of the filler


def app_message(sender: int, counter: int, incarnation: int, size: int) -> bytes:
    """Build a self-checking application message: header plus filler derived from its id."""
    filler = hashlib.blake2b(_APP_HEADER.pack(sender, counter, incarnation, size), digest_size=32).digest()
    body = (filler * (size // 32 + 1))[:size]
    return _APP_HEADER.pack(sender, counter, incarnation, size) + body


def parse_app_message(payload: bytes) -> tuple[int, int, int] | None:
    """Return ``(sender, counter, incarnation)`` of an intact app message, else ``None``."""
    if len(payload) < _APP_HEADER.size:
        return None
    sender, counter, incarnation, size = _APP_HEADER.unpack_from(payload, 0)
    if len(payload) != _APP_HEADER.size + size or app_message(sender, counter, incarnation, size) != payload:
        return None
    return sender, counter, incarnation


class SimNode:
    """A node slot: survives crashes; ``core`` is replaced on restart (a new incarnation).

    ``trace`` holds tuples, in order, for the invariant checker:
    ``("start", inc, ring_seq, persisted)``, ``("crash", inc)``, ``("conf", inc, ConfigChange, epoch)``,
    ``("msg", inc, (sender, counter), ring_id, seq, sender_of_frame, epoch, guarantee)``, ``("bad", inc, sender)``
    (``guarantee``: of the frame that completed the message).
    ``epoch`` on ``conf`` (``("conf", inc, change, epoch)``) and ``msg`` entries is the ring-id epoch of the ring's
    rep when this node adopted the ring (see ``ring_id_epoch``): a ring id is unique only within one epoch of its rep.
    """

    def __init__(self, nodeid: int) -> None:
        self.nodeid = nodeid
        self.core: Any = None
        self.pg: PgEndpoint | None = None
        self.incarnation = 0
        self.alive = False
        self.paused_until = 0.0
        self.timer_gen: dict[TimerName, int] = {}
        self.persisted_ring_seq = 0
        self.counter = 0
        self.outbox: deque[bytes] = deque()
        self.accepted: list[tuple[int, int]] = []  # ids accepted by the core or packer, this incarnation
        self.trace: list[tuple] = []
        self.queue_full = 0
        #: Bumped each time this node restarts without its ring-id file: its old ring ids may be reused after that.
        self.ring_id_epoch = 0
        #: ``epoch_of(rep)``: the current ``ring_id_epoch`` of node ``rep`` (set by the simulation).
        self.epoch_of: Any = lambda rep: 0
        #: ring id -> the rep's ``ring_id_epoch`` when this node last adopted (persisted) that ring id.
        self.ring_epochs: dict[Any, int] = {}
        #: receive-buffer model: when the last queued packet is drained; packets waiting out a pause
        self.rx_busy_until = 0.0
        self.rx_deferred = 0
        #: situations reached (pg chains across changes, ...), summed into ``SimResult.coverage``
        self.coverage: Counter[str] = Counter()

    def adopted(self, ring_id: Any) -> None:
        """The core just adopted and persisted ``ring_id``: remember which epoch of its rep minted it."""
        self.ring_epochs[ring_id] = self.epoch_of(ring_id.rep)

    def epoch_for(self, ring_id: Any) -> int:
        """The epoch of ``ring_id`` as this node knows it (the rep's current one if never adopted here)."""
        epoch = self.ring_epochs.get(ring_id)
        return self.epoch_of(ring_id.rep) if epoch is None else epoch

    def record_events(self, events: list[Delivery | ConfigChange]) -> None:
        """Append the core's events to the trace (through pg when it is on)."""
        inc = self.incarnation
        if self.pg is None:
            for event in events:
                if isinstance(event, ConfigChange):
                    self.trace.append(("conf", inc, event, self.epoch_for(event.ring_id)))
                else:
                    self._record_message(event.payload, event.sender, event.ring_id, event.seq, event.guarantee)
            return
        ring_seq: dict[int, tuple] = {}
        pg = self.pg
        for event in events:
            if isinstance(event, Delivery):
                ring_seq[event.sender] = (event.ring_id, event.seq, event.guarantee)
            else:
                self._note_chains(event)
            for item in pg.on_events([event]):
                if isinstance(item, ConfigChange):
                    self.trace.append(("conf", inc, item, self.epoch_for(item.ring_id)))
                else:
                    sender, message = item
                    ring_id, seq, guarantee = ring_seq[sender]
                    self._record_message(message, sender, ring_id, seq, guarantee)

    def _note_chains(self, change: ConfigChange) -> None:
        """Count the fragment chains a configuration change cuts, as sender and as receiver."""
        assert self.pg is not None
        partial = self.pg.assembler.partial_senders
        own = sum(1 for c in self.pg.packer._in_flight.values() if 0 < c.seen < c.total)
        kind = "transitional" if change.kind == ConfKind.TRANSITIONAL else "regular"
        if partial:
            self.coverage[f"pg_chain_at_{kind}"] += len(partial)
            if kind == "transitional":
                self.coverage["pg_chain_at_transitional_kept"] += sum(1 for s in partial if s in change.members)
        if own:
            self.coverage[f"pg_own_chain_at_{kind}"] += own

    def _record_message(self, payload: bytes, frame_sender: int, ring_id: Any, seq: int, guarantee: int = 0) -> None:
        parsed = parse_app_message(payload)
        if parsed is None:
            self.trace.append(("bad", self.incarnation, frame_sender))
            return
        sender, counter, _ = parsed
        epoch = self.epoch_for(ring_id)
        self.trace.append(("msg", self.incarnation, (sender, counter), ring_id, seq, frame_sender, epoch, guarantee))
