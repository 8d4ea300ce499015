"""The one state object of the Totem single-ring core and its output helpers.

All fields use the paper's vocabulary (``my_aru``, ``my_high_seq_received``, ``proc_set`` ...).
The mixins in ``srp_ordering``, ``srp_membership`` and ``srp_recovery`` operate on it.
"""

from __future__ import annotations

import random
from collections import deque

from aisexec.totem.api import ConfigChange, Delivery, MembState, Ready, RingId, TimerName
from aisexec.totem.config import SEQ_LIMIT, SORT_QUEUE_CAPACITY, TotemConfig
from aisexec.totem.wire import MCAST_OVERHEAD

#: Pending (not yet originated) application frames a node may hold.
PENDING_CAPACITY = SORT_QUEUE_CAPACITY // 2

STAT_KEYS = (
    "packets_received", "packets_malformed", "packets_ignored", "tokens_received", "tokens_duplicate",
    "tokens_foreign", "token_retransmits", "token_losses", "retransmits", "retransmit_requests",
    "messages_originated", "messages_delivered", "mcasts_received", "mcasts_duplicate", "mcasts_foreign",
    "joins_received", "gather_entered", "consensus_timeouts", "commit_tokens_created", "rings_installed",
    "recovery_messages", "hold_cancels_sent", "merge_detects_sent", "fail_to_recv", "leaves_received",
    "heartbeat_losses", "seq_wrap_reconfigurations", "joins_after_pause",
    "token_lingers", "token_lingers_unanswered", "token_linger_us",
)

# A stored message: (sender, guarantee, payload, raw packet bytes, encapsulated)
StoredMessage = tuple[int, int, bytes, bytes, bool]


class SrpState:
    """Everything one node knows: membership, ordering counters, queues and pending outputs."""

    def __init__(self, nodeid: int, config: TotemConfig, ring_seq: int = 0, rng: random.Random | None = None) -> None:
        if not 0 < nodeid < 2**32:
            raise ValueError("nodeid must be a non-zero 32-bit value")
        self._nodeid = nodeid
        self.cfg = config.validate()
        self.heartbeat_ms = self.cfg.heartbeat_timeout  # derived: computed once, read on every visit
        self._successor_of: tuple[tuple[int, ...], int] = ((), 0)  # (my_memb it was computed for, successor)
        self.rng = rng if rng is not None else random.Random(nodeid)
        self.out = Ready()
        self.stats_counters: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.token_callbacks: list = []
        self.left = False
        # 32-bit wire counters: reconfigure before message seq / token seq reach these (tests lower them)
        self.seq_limit = SEQ_LIMIT
        self.token_seq_limit = SEQ_LIMIT
        self.join_send_pending = False
        #: last time the PAUSE_CHECK timer ran (totem.md §2.9); joins seen long after it are stale
        self.pause_stamp = 0.0
        # membership
        self.memb_state = MembState.GATHER
        self.ring_id = RingId(nodeid, ring_seq)
        self.ring_seq_floor = ring_seq  # highest ring seq adopted or persisted; never reused
        self.max_seen_ring_seq = ring_seq
        self.my_memb: tuple[int, ...] = (nodeid,)
        self.proc_set: set[int] = {nodeid}
        self.fail_set: set[int] = set()
        self.consensus_set: set[int] = set()
        self.failed_to_recv = False
        self.started = False
        self.regular_delivered = False
        # ordering (current ring)
        self.sort_queue: dict[int, StoredMessage] = {}
        self.pending: deque[tuple[bytes, int]] = deque()
        self.reset_ring_counters()
        # token custody
        self.last_token_copy: bytes | None = None
        self.last_token_dest = 0
        self.held_token = None  # decoded token kept by a holding representative (or a one-node ring)
        self.merge_armed = False
        # recovery (saved old ring)
        self.old_ring_id = RingId(nodeid, ring_seq)
        self.old_memb: tuple[int, ...] = (nodeid,)
        self.old_sort_queue: dict[int, StoredMessage] = {}
        self.old_aru = 0
        self.old_high_seq = 0
        self.old_high_delivered = 0
        self.old_last_released = 0
        self.commit_members: tuple[int, ...] = ()
        self.transitional: tuple[int, ...] = ()
        self.trans_high_delivered = 0
        self.deliver_set: frozenset[int] = frozenset()
        self.recovery_queue: deque[bytes] = deque()
        self.first_token_sent = False

    def reset_ring_counters(self) -> None:
        """Zero the per-ring ordering and flow-control variables (new ring or recovery entry)."""
        self.my_aru = 0
        self.my_high_seq_received = 0
        self.my_high_delivered = 0
        self.last_released = 0
        self.my_token_seq = -1
        self.my_last_aru = 0
        self.safe_aru = 0
        self.last_safe_seq = 0  # seq of the last SAFE message this node originated (a one-node ring waits on it)
        self.my_last_seq = 0
        self.my_seq_unchanged = 0
        self.my_aru_count = 0
        self.my_trc = 0
        self.my_pbl = 0
        self.miss_counts: dict[int, int] = {}
        self.my_set_retrans_flg = False
        self.retrans_flg_count = 0
        self.install_seq = 0
        self.install_aru_ok = 0
        self.my_received_all = False

    # ---------------------------------------------------------------- outputs
    def arm(self, now: float, name: TimerName, ms: float) -> None:
        """Ask the driver to (re)arm timer ``name`` to fire ``ms`` milliseconds from ``now``."""
        self.out.timers[name] = now + ms / 1000.0

    def cancel(self, *names: TimerName) -> None:
        """Ask the driver to cancel timers."""
        for name in names:
            self.out.timers[name] = None

    def send(self, dest: int, packet: bytes) -> None:
        """Queue one packet for ``dest`` (a nodeid or MULTICAST)."""
        self.out.sends.append((dest, packet))

    def emit(self, event: Delivery | ConfigChange) -> None:
        """Queue one event for the layer above."""
        self.out.events.append(event)

    def count(self, key: str, n: int = 1) -> None:
        """Increment a statistics counter."""
        self.stats_counters[key] += n

    @property
    def max_payload_size(self) -> int:
        """Largest payload: a whole mcast must still fit in a frame when encapsulated in recovery."""
        return self.cfg.netmtu - 2 * MCAST_OVERHEAD

    def successor(self) -> int:
        """Next member in ring order after me (wrapping); remembered until ``my_memb`` changes."""
        memb = self.my_memb
        known, successor = self._successor_of
        if known is memb:
            return successor
        i = memb.index(self._nodeid)
        successor = memb[(i + 1) % len(memb)]
        self._successor_of = (memb, successor)
        return successor
