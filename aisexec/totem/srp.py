"""SrpCore: the sans-IO Totem single-ring ordering and membership protocol (public entry).

Initial configuration convention: ``start`` forms a one-node ring at once; its installation
delivers only ``REGULAR(members=(me,), joined=())`` (no TRANSITIONAL before a node's first
REGULAR, as the simulator's alternation check requires).
Later rings deliver TRANSITIONAL (old members still with me) then REGULAR.

Pause detection (totem.md §2.3, §2.9): a PAUSE_CHECK timer runs every ``token/5`` ms and stamps
the time; a join that arrives more than ``token/2`` ms after the last stamp was queued while the
process was descheduled, so it is stale and dropped (counted as ``joins_after_pause``).  Joins
are resent every ``join`` ms, so the fresh ones that follow the next stamp are acted on.

Token callbacks: ``add_token_callback(fn)`` registers ``fn(now)``, called on every accepted
ORF token visit *before* this node originates messages, so a packing layer can flush into
``submit`` and have the frames leave on this very visit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from aisexec.totem.api import MULTICAST, Guarantee, MembState, MessageTooBig, QueueFull, Ready, RingId, TimerName
from aisexec.totem.config import MAX_RTR_ENTRIES, TotemConfig
from aisexec.totem.srp_membership import MembershipMixin
from aisexec.totem.srp_ordering import OrderingMixin, new_tuple
from aisexec.totem.srp_recovery import RecoveryMixin
from aisexec.totem.srp_state import PENDING_CAPACITY, SrpState
from aisexec.totem.wire import (
    FLAG_ENCAPSULATED,
    MAGIC,
    MCAST_OVERHEAD,
    MCAST_PREFIX,
    RTR_ENTRY,
    T_MCAST,
    T_ORF_TOKEN,
    TOKEN_PREFIX,
    VERSION,
    CommitToken,
    HoldCancel,
    Join,
    MalformedPacket,
    MergeDetect,
    OrfToken,
    decode,
)

_OPERATIONAL = MembState.OPERATIONAL
_unpack_mcast = MCAST_PREFIX.unpack_from
_unpack_token = TOKEN_PREFIX.unpack_from
_TOKEN_SIZE = TOKEN_PREFIX.size


class SrpCore(OrderingMixin, MembershipMixin, RecoveryMixin, SrpState):
    """One node's Totem protocol engine; deterministic given its ``rng``; never touches IO or clocks."""

    def __init__(self, nodeid: int, config: TotemConfig, ring_seq: int = 0, rng: random.Random | None = None) -> None:
        SrpState.__init__(self, nodeid, config, ring_seq, rng)
        self.linger_ms = float(config.token_linger)
        self._dispatch = {
            OrfToken: self.on_token,
            Join: self.on_join,
            CommitToken: self.on_commit_token,
            MergeDetect: self.on_merge_detect,
            HoldCancel: self.on_hold_cancel,
        }

    # ------------------------------------------------------------ driver inputs
    def start(self, now: float) -> None:
        """Enter GATHER and form a (possibly one-node) ring."""
        if self.started:
            return
        self.started = True
        self.pause_stamp = now
        self.arm(now, TimerName.PAUSE_CHECK, self.cfg.token / 5)
        self.gather_enter(now)

    def receive(self, now: float, packet: bytes) -> None:
        """Handle one plaintext Totem packet; malformed packets are dropped and counted."""
        self.receive_many(now, (packet,))

    def receive_many(self, now: float, packets: Iterable[bytes]) -> None:
        """Handle plaintext Totem packets in order, as that many :meth:`receive` calls would.

        Data messages of a run are checked and stored one by one; the deliveries they make
        possible are made once, when the run ends (at the last packet, or before any other
        kind of packet is handled), in the order one call per packet would have made them.
        """
        if self.left or not self.started:
            return
        counters = self.stats_counters
        me = self._nodeid
        store = self.store_mcast
        stored = False  # a data message was stored in an operational ring: deliver before anything else
        received = 0
        for packet in packets:
            received += 1
            if len(packet) >= MCAST_OVERHEAD and packet[3] == T_MCAST:
                # the hot path: data messages are checked and stored without building a message object
                magic, version, _type, flags, sender, rep, rseq, seq, guarantee = _unpack_mcast(packet)
                if magic != MAGIC or version != VERSION or flags > FLAG_ENCAPSULATED or guarantee > 1:
                    counters["packets_malformed"] += 1
                elif sender != me:  # else my own multicast looped back: already handled locally
                    if store(now, sender, rep, rseq, seq, guarantee, bytes(packet), flags):
                        stored = True
                continue
            counters["packets_received"] += received
            received = 0
            if stored:
                stored = False
                if self.memb_state is _OPERATIONAL:
                    self.deliver_ready()
            self._receive_other(now, packet)
        counters["packets_received"] += received
        # A foreign message later in the run delivered what was stored before it and left OPERATIONAL.
        if stored and self.memb_state is _OPERATIONAL:
            self.deliver_ready()

    def _receive_other(self, now: float, packet: bytes) -> None:
        """Every packet but a data message: the token (hot path), then the rest through ``wire.decode``."""
        counters = self.stats_counters
        if len(packet) >= _TOKEN_SIZE and packet[3] == T_ORF_TOKEN:
            # the other hot path: the token, unpacked in one call (the same checks as wire.decode)
            (magic, version, _type, flags, sender, rep, rseq, token_seq, seq, aru, aru_addr, backlog, fcc,
             retrans_flg, count) = _unpack_token(packet)
            if (magic != MAGIC or version != VERSION or flags or retrans_flg > 1 or count > MAX_RTR_ENTRIES
                    or len(packet) != _TOKEN_SIZE + count * RTR_ENTRY.size):
                counters["packets_malformed"] += 1
            elif sender != self._nodeid:
                rtr = tuple(RTR_ENTRY.unpack_from(packet, _TOKEN_SIZE + i * RTR_ENTRY.size)
                            for i in range(count)) if count else ()
                self.on_token(now, new_tuple(OrfToken, (sender, rep, rseq, token_seq, seq, aru, aru_addr, backlog,
                                                         fcc, retrans_flg, rtr)))
            return
        try:
            msg = decode(packet)
        except MalformedPacket:
            counters["packets_malformed"] += 1
            return
        if msg.sender == self._nodeid:
            return  # my own multicast looped back: already handled locally
        self._dispatch[type(msg)](now, msg)

    def timer_expired(self, now: float, name: TimerName) -> None:
        """A timer armed through ``Ready.timers`` fired."""
        if self.left or not self.started:
            return
        if name == TimerName.TOKEN_LOSS or name == TimerName.HEARTBEAT:
            if self.memb_state != MembState.GATHER:
                if name == TimerName.HEARTBEAT:
                    self.count("heartbeat_losses")
                self.count("token_losses")
                self.gather_enter(now)
        elif name == TimerName.TOKEN_RETRANSMIT:
            self.on_token_retransmit(now)
        elif name == TimerName.HOLD:
            self.release_held_token(now)
        elif name == TimerName.JOIN:
            self.on_join_timer(now)
        elif name == TimerName.CONSENSUS:
            self.on_consensus_timeout(now)
        elif name == TimerName.MERGE_DETECT:
            self.on_merge_timer(now)
        elif name == TimerName.SEND_JOIN:
            self.on_send_join_timer(now)
        elif name == TimerName.PAUSE_CHECK:
            self.pause_stamp = now
            self.arm(now, TimerName.PAUSE_CHECK, self.cfg.token / 5)

    def submit(self, now: float, payload: bytes, guarantee: Guarantee = Guarantee.AGREED) -> None:
        """Queue one frame for ordering; raises MessageTooBig or QueueFull."""
        if len(payload) > self.max_payload_size:
            raise MessageTooBig(f"{len(payload)} > {self.max_payload_size}")
        if len(self.pending) >= PENDING_CAPACITY:
            raise QueueFull("pending queue full")
        self.pending.append((bytes(payload), int(guarantee)))
        if self.started and not self.left:
            self.request_hold_cancel(now)

    def submit_many(self, now: float, frames: list[tuple[bytes, int]]) -> int:
        """Queue ``(frame, guarantee)`` pairs in order while there is room; return how many were taken.

        The batch form of :meth:`submit`; raises MessageTooBig (taking nothing) if any frame is too big.
        """
        limit = self.max_payload_size
        for frame, _guarantee in frames:
            if len(frame) > limit:
                raise MessageTooBig(f"{len(frame)} > {limit}")
        pending = self.pending
        taken = min(len(frames), PENDING_CAPACITY - len(pending))
        if taken <= 0:
            return 0
        pending.extend(frames if taken == len(frames) else frames[:taken])
        if self.started and not self.left:
            self.request_hold_cancel(now)
        return taken

    def withdraw_pending(self) -> list[tuple[bytes, int]]:
        """Take back every queued frame not yet originated, oldest first, as ``(frame, guarantee)``.

        For a packing layer that re-queues its messages at a configuration change (totempg keeps
        per-sender FIFO across a message cut by the change this way).
        """
        frames = list(self.pending)
        self.pending.clear()
        return frames

    def leave(self, now: float) -> None:
        """Orderly shutdown: multicast a leave (a join with dummy sender 0 naming me failed) and go quiet."""
        if self.left:
            return
        fail = tuple(sorted(self.fail_set | {self._nodeid}))
        proc = tuple(sorted(self.proc_set | set(self.my_memb)))
        self.send(MULTICAST, Join(0, self.ring_seq_floor, proc, fail).encode())
        self.left = True
        self.cancel(*TimerName)

    def take_ready(self) -> Ready:
        """Drain the outputs accumulated since the last call (read it before the next input).

        With nothing accumulated the same empty :class:`Ready` is returned each time and kept: the
        driver asks once more after every input, and that answer costs no allocation.
        """
        out = self.out
        if out.sends or out.timers or out.events or out.ring_seq_to_persist is not None:
            self.out = Ready()
        return out

    def add_token_callback(self, callback: Callable[[float], None]) -> None:
        """Register ``callback(now)`` to run on each accepted token visit, before origination."""
        self.token_callbacks.append(callback)

    # ------------------------------------------------------------ introspection
    @property
    def nodeid(self) -> int:
        """This node's id."""
        return self._nodeid

    @property
    def state(self) -> MembState:
        """Current membership state."""
        return self.memb_state

    @property
    def members(self) -> tuple[int, ...]:
        """Members of the current (installed or being installed) ring, sorted."""
        return self.my_memb

    @property
    def pending_count(self) -> int:
        """Frames waiting to be originated."""
        return len(self.pending)

    @property
    def max_payload(self) -> int:
        """Largest payload ``submit`` accepts."""
        return self.max_payload_size

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the statistics counters."""
        return dict(self.stats_counters)

    @property
    def ring(self) -> RingId:
        """Alias of ``ring_id``."""
        return self.ring_id
