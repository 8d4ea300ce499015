"""Invariants checked while the simulation runs, after every step (totem.md §9.12-9.15 and SAFE delivery).

The trace checks of :mod:`aisexec.totem.sim.invariants` look at what each node delivered; the
checks here need what was on the wire and in the core at the moment of each step:

* **SAFE delivery** (§1.6, §2.12): a SAFE message delivered by a node in a regular
  configuration has been received by every member of that configuration; delivered in a
  transitional configuration, by every member of the transitional configuration.
* **12 gap rule** (frame level): in a regular configuration frames are delivered without a
  hole; in a transitional one, a frame after a hole comes from a transitional member.
* **13 flow control**: from the tokens on the wire, new messages per visit <= ``max_messages``
  and per rotation (any ``n`` consecutive visits) <= ``window_size``; every mcast a node sends
  on one visit (new and retransmitted) <= ``max_messages``; rtr list <= 30; pending queue and
  sort-queue window within their bounds.
* **14 buffer release**: a node frees a buffer only after delivering it and after every
  member of its ring has received it; ``last_released`` never goes back on a ring; at
  quiescence everything is freed.
* **15 stale token**: a token of another ring (also an older one with the same
  representative), with ``token_seq <= my_token_seq``, or arriving in GATHER/COMMIT, changes no
  state and produces no output; two different tokens never carry the same ring and token_seq.
  With ``Scenario.replay_tokens`` the simulator also hands nodes tokens captured earlier.

"Received" is what the wire and the core show: a node holds ``(ring, seq)`` once its core has
stored the multicast (or, for a core the checker cannot look into, once it arrived), or once it
sent it itself; an encapsulated recovery message gives its holder the old-ring message inside.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from aisexec.totem.api import ConfigChange, ConfKind, Delivery, Guarantee, MembState, Ready, RingId
from aisexec.totem.config import MAX_RTR_ENTRIES, SORT_QUEUE_CAPACITY
from aisexec.totem.sim.invariants import Violation
from aisexec.totem.wire import MAGIC, MCAST_OVERHEAD, MCAST_PREFIX, T_MCAST, T_ORF_TOKEN, TOKEN_PREFIX

if TYPE_CHECKING:
    from aisexec.totem.sim.node import SimNode
    from aisexec.totem.sim.runner import Simulation

RingKey = tuple[RingId, int]
_MAX_VIOLATIONS = 20
_TOKEN_FIELDS = TOKEN_PREFIX.size


_INTROSPECTABLE: dict[type, bool] = {}


def introspectable(core: Any) -> bool:
    """True for a core whose ordering state the checker may read (the real ``SrpCore``)."""
    known = _INTROSPECTABLE.get(type(core))
    if known is None:
        known = _INTROSPECTABLE[type(core)] = all(
            hasattr(core, name) for name in ("sort_queue", "my_token_seq", "out", "old_ring_id"))
    return known


def fingerprint(core: Any) -> tuple:
    """Every piece of protocol state a token visit could change (statistics excluded)."""
    return (
        core.memb_state, core.ring_id, core.my_aru, core.my_high_seq_received, core.my_high_delivered,
        core.last_released, core.my_token_seq, core.my_last_aru, core.safe_aru, core.my_last_seq,
        core.my_seq_unchanged, core.my_aru_count, core.my_trc, core.my_pbl, len(core.sort_queue),
        len(core.pending), len(core.recovery_queue), core.retrans_flg_count, core.install_aru_ok,
        core.install_seq, core.my_received_all, core.held_token, core.last_token_copy, core.merge_armed,
        tuple(sorted(core.proc_set)), tuple(sorted(core.fail_set)), core.my_memb, core.failed_to_recv,
    )


def parse_mcast(packet: bytes) -> tuple[int, int, int, int, int, int] | None:
    """``(sender, rep, ring_seq, seq, guarantee, flags)`` of a Totem mcast, else None."""
    if len(packet) < MCAST_OVERHEAD or packet[3] != T_MCAST:
        return None
    magic, _v, _t, flags, sender, rep, rseq, seq, guarantee = MCAST_PREFIX.unpack_from(packet)
    if magic != MAGIC:
        return None
    return sender, rep, rseq, seq, guarantee, flags


def parse_token(packet: bytes) -> tuple[int, int, int, int, int] | None:
    """``(rep, ring_seq, token_seq, seq, rtr_count)`` of an ORF token, else None."""
    if len(packet) < _TOKEN_FIELDS or packet[3] != T_ORF_TOKEN:
        return None
    fields = TOKEN_PREFIX.unpack_from(packet)
    if fields[0] != MAGIC:
        return None
    return fields[5], fields[6], fields[7], fields[8], fields[14]


class OnlineChecker:
    """Per-step checks of one :class:`~aisexec.totem.sim.runner.Simulation`; fills ``violations``."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.violations: list[Violation] = []
        self.coverage: Counter[str] = Counter()
        self.cfg = sim.config
        #: (ring, epoch) -> seq -> nodes holding that message
        self.received: dict[RingKey, dict[int, set[int]]] = {}
        #: (ring, epoch) -> highest seq originated encapsulated (recovery traffic, never delivered)
        self.encap_high: dict[RingKey, int] = {}
        #: (ring, epoch) -> token_seq -> (seq, packet)
        self.tokens: dict[RingKey, dict[int, tuple[int, bytes]]] = {}
        self.conf: dict[int, ConfigChange | None] = {}
        #: node -> (ring key, next expected seq, a hole was passed)
        self.gap: dict[int, tuple[RingKey, int, bool]] = {}
        #: node -> ring key -> highest last_released seen in OPERATIONAL
        self.released: dict[int, dict[RingKey, int]] = {}
        self.recent: dict[int, deque[tuple[bytes, RingKey]]] = {}
        self.old_rings: dict[int, dict[RingKey, list[bytes]]] = {}
        self.replay_rng = random.Random(sim.scenario.seed ^ 0x7E7E)

    # ------------------------------------------------------------------ helpers
    def fail(self, invariant: str, detail: str) -> None:
        """Record one violation (the first few of a run are kept)."""
        if len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(Violation(invariant, f"t={self.sim.now:.4f} {detail}"))

    def key(self, node: SimNode, rep: int, rseq: int) -> RingKey:
        """The ring key of ``(rep, rseq)`` as ``node`` knows it (a plain tuple hashes like the RingId)."""
        ring = (rep, rseq)
        epoch = node.ring_epochs.get(ring)
        return ring, node.epoch_of(rep) if epoch is None else epoch  # type: ignore[return-value]

    def hold(self, key: RingKey, seq: int, nodeid: int) -> None:
        """``nodeid`` now holds message ``seq`` of ring ``key``."""
        self.received.setdefault(key, {}).setdefault(seq, set()).add(nodeid)

    def node_started(self, nodeid: int) -> None:
        """A new incarnation: no configuration yet."""
        self.conf[nodeid] = None
        self.gap.pop(nodeid, None)
        self.released.pop(nodeid, None)

    # ------------------------------------------------------------------ inputs
    def before_packet(self, node: SimNode, packet: bytes) -> tuple | None:
        """Called before ``core.receive``; returns what :meth:`after_packet` needs."""
        core = node.core
        if not introspectable(core):
            return None
        token = parse_token(packet)
        if token is None:
            return None
        rep, rseq, token_seq, _seq, _n = token
        ring = core.ring_id
        state = core.memb_state
        stale = (state not in (MembState.OPERATIONAL, MembState.RECOVERY) or (rep, rseq) != tuple(ring)
                 or token_seq <= core.my_token_seq)
        if not stale:
            return ("token", token, None)
        if core.out:
            return None  # outputs not drained (cannot happen in the simulator's loop)
        return ("stale", token, fingerprint(core))

    def after_packet(self, node: SimNode, packet: bytes, before: tuple | None) -> None:
        """Called after ``core.receive`` and before the outputs are drained."""
        core = node.core
        nodeid = node.nodeid
        if before is not None:
            what, token, fp = before
            if what == "stale":
                self.coverage["stale_tokens"] += 1
                rep, rseq = token[0], token[1]
                if rep == core.ring_id.rep and rseq != core.ring_id.seq:
                    self.coverage["stale_tokens_same_rep_other_ring"] += 1
                after = fingerprint(core)
                if after != fp or core.out:
                    changed = [i for i, (a, b) in enumerate(zip(fp, after, strict=True)) if a != b]
                    self.fail("15 stale token", f"n{nodeid} changed state on stale token ring={rep:x}.{rseq:x} "
                              f"token_seq={token[2]} (my ring {core.ring_id}, my_token_seq was {fp[6]}): "
                              f"fields {changed}, output {bool(core.out)}")
            if self.sim.scenario.replay_tokens:
                self._capture(node, packet, token)
            return
        mcast = parse_mcast(packet)
        if mcast is None:
            return
        _sender, rep, rseq, seq, _g, flags = mcast
        if introspectable(core):
            if (rep, rseq) != tuple(core.ring_id):
                return
            stored = core.sort_queue.get(seq)
            if stored is None or stored[3] != packet:
                return
        self.hold(self.key(node, rep, rseq), seq, nodeid)
        if flags:
            self._hold_inner(node, packet[MCAST_OVERHEAD:])

    def _hold_inner(self, node: SimNode, inner: bytes) -> None:
        parsed = parse_mcast(inner)
        if parsed is None:
            return
        core = node.core
        if introspectable(core) and (parsed[1], parsed[2]) != tuple(core.old_ring_id):
            return  # another ring's recovery traffic: this node will not unwrap it
        self.hold(self.key(node, parsed[1], parsed[2]), parsed[3], node.nodeid)

    def _capture(self, node: SimNode, packet: bytes, token: tuple) -> None:
        key = self.key(node, token[0], token[1])
        recent = self.recent.setdefault(node.nodeid, deque(maxlen=24))
        recent.append((packet, key))
        rings = self.old_rings.setdefault(node.nodeid, {})
        kept = rings.get(key)
        if kept is None:
            if len(rings) >= 16:
                del rings[next(iter(rings))]
            kept = rings[key] = []
        if len(kept) < 3:
            kept.append(packet)

    def replay_candidate(self, node: SimNode) -> bytes | None:
        """An older token ``node`` received, stale for it now (None when there is none)."""
        core = node.core
        if not introspectable(core):
            return None
        rng = self.replay_rng
        rings = self.old_rings.get(node.nodeid)
        if rng.random() < 0.5 and rings:
            key = rng.choice(list(rings))
            packet = rng.choice(rings[key])
        else:
            recent = self.recent.get(node.nodeid)
            if not recent:
                return None
            packet, key = recent[rng.randrange(len(recent))]
        token = parse_token(packet)
        assert token is not None
        ring = core.ring_id
        same_ring = (token[0], token[1]) == tuple(ring)
        if same_ring and key[1] != node.epoch_for(ring):
            return None  # the same ring id minted again after its rep lost its ring-id file
        stale = (core.memb_state not in (MembState.OPERATIONAL, MembState.RECOVERY) or not same_ring
                 or token[2] <= core.my_token_seq)
        return packet if stale else None

    # ------------------------------------------------------------------ outputs
    def on_ready(self, node: SimNode, ready: Ready, token_visit: bool) -> None:
        """Check one drained :class:`Ready` of ``node`` (sends first, then events, then the core)."""
        nodeid = node.nodeid
        mcasts = 0
        for dest, packet in ready.sends:
            kind = packet[3] if len(packet) > 3 else -1
            if kind == T_MCAST:
                parsed = parse_mcast(packet)
                if parsed is None:
                    continue
                mcasts += 1
                key = self.key(node, parsed[1], parsed[2])
                self.hold(key, parsed[3], nodeid)
                if parsed[5]:
                    self._hold_inner(node, packet[MCAST_OVERHEAD:])
                    if parsed[3] > self.encap_high.get(key, 0):
                        self.encap_high[key] = parsed[3]
            elif kind == T_ORF_TOKEN and dest:
                self._token_sent(node, packet)
        for event in ready.events:
            if isinstance(event, ConfigChange):
                self.conf[nodeid] = event
            else:
                self._delivered(node, event)
        if token_visit:  # the bounds move on token visits (release, origination); checked on each one
            if mcasts > self.cfg.max_messages:
                self.fail("13 flow control", f"n{nodeid} sent {mcasts} mcasts on one token visit "
                          f"(max_messages {self.cfg.max_messages})")
            self._core_bounds(node)

    def _token_sent(self, node: SimNode, packet: bytes) -> None:
        token = parse_token(packet)
        if token is None:
            return
        rep, rseq, token_seq, seq, rtr = token
        key = self.key(node, rep, rseq)
        if rtr > MAX_RTR_ENTRIES:
            self.fail("13 flow control", f"n{node.nodeid} token with {rtr} rtr entries")
        seen = self.tokens.setdefault(key, {})
        known = seen.get(token_seq)
        if known is not None:
            if known[1] != packet:
                self.fail("15 stale token", f"two different tokens of ring {rep:x}.{rseq:x} token_seq {token_seq}")
            return
        seen[token_seq] = (seq, packet)
        if not introspectable(node.core):
            return
        n = len(node.core.members)
        cfg = self.cfg
        prev = seen.get(token_seq - 1, (0, b"")) if token_seq > 1 else (0, b"")
        if (token_seq == 1 or token_seq - 1 in seen) and seq - prev[0] > cfg.max_messages:
            self.fail("13 flow control", f"n{node.nodeid} originated {seq - prev[0]} messages on one visit of "
                      f"ring {rep:x}.{rseq:x} (max_messages {cfg.max_messages})")
        back = token_seq - n
        if back <= 0 or back in seen:
            base = seen[back][0] if back > 0 else 0
            if seq - base > cfg.window_size:
                self.fail("13 flow control", f"{seq - base} messages originated in one rotation of ring "
                          f"{rep:x}.{rseq:x} ({n} nodes) up to token_seq {token_seq} (window_size {cfg.window_size})")
        if len(seen) > 4 * n + 64:
            for old in [t for t in seen if t < token_seq - 2 * n - 8]:
                del seen[old]

    def _delivered(self, node: SimNode, d: Delivery) -> None:
        nodeid = node.nodeid
        conf = self.conf.get(nodeid)
        key = self.key(node, d.ring_id.rep, d.ring_id.seq)
        if conf is None:
            return
        transitional = conf.kind == ConfKind.TRANSITIONAL
        if d.guarantee == Guarantee.SAFE:
            self.coverage["safe_in_transitional" if transitional else "safe_in_regular"] += 1
            holders = self.received.get(key, {}).get(d.seq, ())
            missing = [m for m in conf.members if m not in holders]
            if missing:
                self.fail("safe delivery", f"n{nodeid} delivered SAFE {d.ring_id}/{d.seq} from n{d.sender} in "
                          f"{conf.kind.name} {conf.members} before {missing} had it")
        gap = self.gap.get(nodeid)
        if gap is None or gap[0] != key:
            gap = (key, self.encap_high.get(key, 0) + 1, False)
        _key, expected, holed = gap
        if d.seq < expected:
            self.fail("2 total order", f"n{nodeid} delivered {d.ring_id}/{d.seq} after {expected - 1}")
        elif d.seq > expected:
            if not transitional:
                self.fail("12 gap rule", f"n{nodeid} delivered {d.ring_id}/{d.seq} past a hole at {expected} "
                          f"in REGULAR {conf.members}")
            holed = True
        if holed and transitional:
            self.coverage["after_hole_in_transitional"] += 1
            if d.sender not in conf.members:
                self.fail("12 gap rule", f"n{nodeid} delivered {d.ring_id}/{d.seq} of n{d.sender} after a hole in "
                          f"TRANSITIONAL {conf.members}")
        self.gap[nodeid] = (key, max(expected, d.seq + 1), holed)

    def _core_bounds(self, node: SimNode) -> None:
        from aisexec.totem.srp_state import PENDING_CAPACITY

        core = node.core
        nodeid = node.nodeid
        if len(core.pending) > PENDING_CAPACITY:
            self.fail("13 flow control", f"n{nodeid} pending queue {len(core.pending)} > {PENDING_CAPACITY}")
        if (len(core.sort_queue) > SORT_QUEUE_CAPACITY
                or core.my_high_seq_received - core.last_released > SORT_QUEUE_CAPACITY):
            self.fail("13 flow control", f"n{nodeid} sort queue beyond {SORT_QUEUE_CAPACITY}")
        if core.memb_state != MembState.OPERATIONAL:
            return
        key = self.key(node, core.ring_id.rep, core.ring_id.seq)
        mine = self.released.setdefault(nodeid, {})
        before = mine.get(key)
        now = core.last_released
        if before is None:
            mine[key] = now
            return
        if now < before:
            self.fail("14 buffer release", f"n{nodeid} last_released went back from {before} to {now} on {key[0]}")
            return
        if now == before:
            return
        mine[key] = now
        if now > core.my_high_delivered:
            self.fail("14 buffer release", f"n{nodeid} freed up to {now} but delivered only {core.my_high_delivered}")
        held = self.received.get(key, {})
        members = core.members
        for seq in range(before + 1, now + 1):
            holders = held.get(seq, ())
            missing = [m for m in members if m not in holders]
            if missing:
                self.fail("14 buffer release", f"n{nodeid} freed {key[0]}/{seq} before {missing} had it")
                break
        self.coverage["released"] += now - before

    # ------------------------------------------------------------------ the end
    def final(self) -> list[Violation]:
        """Quiescence checks at the end of the stable period, then every violation seen."""
        sim = self.sim
        for node in sim.nodes.values():
            core = node.core
            if not node.alive or not introspectable(core) or core.memb_state != MembState.OPERATIONAL:
                continue
            if core.last_released != core.my_high_seq_received or core.pending:
                self.fail("14 buffer release", f"n{node.nodeid} at quiescence: released {core.last_released}, "
                          f"received {core.my_high_seq_received}, {len(core.pending)} pending")
        return self.violations
