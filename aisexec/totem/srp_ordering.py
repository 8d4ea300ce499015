"""Ordering on an established ring: the ORF token, retransmission, flow control, delivery, release."""

from __future__ import annotations

from aisexec.totem.api import MULTICAST, Delivery, Guarantee, MembState, TimerName
from aisexec.totem.config import MAX_RTR_ENTRIES, SORT_QUEUE_CAPACITY
from aisexec.totem.wire import (
    _MCAST,
    FLAG_ENCAPSULATED,
    HEADER,
    MAGIC,
    MCAST_OVERHEAD,
    T_MCAST,
    VERSION,
    HoldCancel,
    OrfToken,
)

_MCAST_HDR = HEADER.pack  # bound once: hot path
# Enum members bound once: looking one up on its class costs more than the rest of a token visit's checks.
_OPERATIONAL = MembState.OPERATIONAL
_RECOVERY = MembState.RECOVERY
_COMMIT = MembState.COMMIT
_SAFE = Guarantee.SAFE
_TOKEN_LOSS = TimerName.TOKEN_LOSS
_HEARTBEAT = TimerName.HEARTBEAT
_TOKEN_RETRANSMIT = TimerName.TOKEN_RETRANSMIT
_HOLD = TimerName.HOLD
_MCAST_BODY = _MCAST.pack
#: ``new_tuple(OrfToken, fields)``: the same named tuple as ``OrfToken(*fields)``, built in C (a NamedTuple's
#: generated ``__new__`` is Python code, run on every token and every delivery).
new_tuple = tuple.__new__

#: Other members' messages originated since the last visit, and the token's backlog and sends of the last
#: rotation, up to which a visit may wait: more means the ring is busy, and the token goes at once.
LINGER_MAX_DELIVERIES = 4
#: A node waits at every eligible visit while its estimate of the share of waits that were answered (a
#: moving average, weight 1/8 for each wait's outcome) is at least this; below, it only probes.
LINGER_ANSWERED_MIN = 0.75
#: The longest time between two probes (ms): after each unanswered probe the next comes twice as late.
LINGER_PROBE_MAX_MS = 256.0


class OrderingMixin:
    """Token visit (§1.3), data receipt (§1.4), agreed/safe delivery (§1.6) and release (§1.8)."""

    # The token linger (:meth:`linger_check`): class defaults, shadowed per instance once used.
    #: Longest a visit waits (ms; 0: never), ``totem.token_linger`` (SrpCore sets it from the config).  The
    #: event loop's timers have a 1 ms resolution (libev's epoll backend), so a wait lasts at least ~1.1 ms.
    linger_ms: float = 0.0
    lingering: OrfToken | None = None  # the token a visit waits with, not yet processed
    idle_holding = False  # that wait is the idle representative's hold (:meth:`idle_hold`), not a linger
    linger_seq = -1  # its token_seq: processed without a second wait when the wait ends
    linger_since = 0.0
    linger_seen_seq = -1  # the seq of the token this node last sent on: what came after is new at its next visit
    linger_answered = 1.0  # moving average of the waits' outcomes (1 answered, 0 not)
    linger_probe_ms = 0.0  # while that is low: the time between probes (0: the next is the first)
    linger_probe_at = 0.0  # and no probe before this time

    # ------------------------------------------------------------ data messages
    def on_mcast(self, now: float, sender: int, ring_rep: int, ring_seq: int, seq: int, guarantee: int,
                 raw: bytes, encapsulated: int) -> None:
        """Store a data message of my ring (``raw``: the whole packet) and deliver what it completes."""
        if self.store_mcast(now, sender, ring_rep, ring_seq, seq, guarantee, raw, encapsulated):
            self.deliver_ready()

    def store_mcast(self, now: float, sender: int, ring_rep: int, ring_seq: int, seq: int, guarantee: int,
                    raw: bytes, encapsulated: int) -> bool:
        """Store a data message of my ring; a foreign one may start a membership change.

        True when the message was stored in an operational ring: :meth:`deliver_ready` is due (the
        caller may make one call for a run of stored messages, before anything else happens).
        """
        counters = self.stats_counters
        counters["mcasts_received"] += 1
        rep, rseq = self.ring_id
        state = self.memb_state
        if ring_rep != rep or ring_seq != rseq:
            if state is _OPERATIONAL:  # a run's stored messages are delivered before this one is acted on
                self.deliver_ready()  # (after a single stored message this finds nothing left to do)
            self.on_foreign(now, sender, ring_seq)
            return False
        if state is _COMMIT:
            return False
        sq = self.sort_queue
        last_released = self.last_released
        if seq <= last_released or seq in sq or seq > last_released + SORT_QUEUE_CAPACITY:
            counters["mcasts_duplicate"] += 1
            return False
        sq[seq] = (sender, guarantee, raw[MCAST_OVERHEAD:], raw, bool(encapsulated))
        if seq > self.my_high_seq_received:
            self.my_high_seq_received = seq
        if seq == self.my_aru + 1:
            self.advance_aru()
        return state is _OPERATIONAL

    def advance_aru(self) -> None:
        """Walk ``my_aru`` forward to the first hole."""
        sq = self.sort_queue
        aru = self.my_aru
        while aru + 1 in sq:
            aru += 1
        if aru != self.my_aru:
            self.my_aru = aru
            if self.miss_counts:
                for s in [s for s in self.miss_counts if s <= aru]:
                    del self.miss_counts[s]

    def deliver_ready(self) -> None:
        """Deliver the contiguous prefix (agreed); a safe message also waits for the two-visit aru."""
        high = self.my_high_delivered
        aru = self.my_aru
        if high >= aru:
            return
        sq = self.sort_queue
        ring = self.ring_id
        events = self.out.events
        counters = self.stats_counters
        safe_aru = self.safe_aru
        while high < aru:
            seq = high + 1
            sender, guarantee, payload, _raw, encapsulated = sq[seq]
            if guarantee == _SAFE and seq > safe_aru:
                break
            high = seq
            if not encapsulated:
                events.append(new_tuple(Delivery, (sender, payload, ring, seq, guarantee)))
                counters["messages_delivered"] += 1
        self.my_high_delivered = high

    def release(self, release_to: int) -> None:
        """Free every buffer up to ``release_to`` (already seen by all on two visits and delivered here)."""
        sq = self.sort_queue
        for seq in range(self.last_released + 1, release_to + 1):
            sq.pop(seq, None)
        if release_to > self.last_released:
            self.last_released = release_to

    # ------------------------------------------------------------ the token
    def on_token(self, now: float, tok: OrfToken) -> None:
        """One visit of the ORF token (§1.3 steps 1-19).

        The hottest code of the ring (every node, every visit): the token's fields and the ring id
        are unpacked into locals once, and nothing is called that has nothing to do.
        """
        state = self.memb_state
        if state is not _OPERATIONAL and state is not _RECOVERY:
            self.count("packets_ignored")
            return
        rep, rseq = self.ring_id
        _sender, t_rep, t_rseq, token_seq, seq_now, tok_aru, tok_aru_addr, tok_backlog, tok_fcc, tok_retrans, rtr = tok
        if t_rep != rep or t_rseq != rseq:
            self.count("tokens_foreign")
            return
        if token_seq <= self.my_token_seq:
            self.count("tokens_duplicate")
            return
        if (self.lingering is not None or token_seq != self.linger_seq) and self.linger_check(now, tok):
            return
        counters = self.stats_counters
        counters["tokens_received"] += 1
        self.held_token = None
        me = self._nodeid
        operational = state is _OPERATIONAL
        is_rep = rep == me
        # idle detection (step 3)
        if seq_now == self.my_last_seq:
            self.my_seq_unchanged += 1
            if is_rep and not self.merge_armed and operational:
                self.merge_armed = True
                self.arm(now, TimerName.MERGE_DETECT, self.cfg.merge)
        else:
            self.my_seq_unchanged = 0
        self.my_last_seq = seq_now
        for callback in self.token_callbacks:
            callback(now)
        last_aru = self.my_last_aru
        self.my_last_aru = tok_aru
        if operational:
            safe_aru = tok_aru if tok_aru < last_aru else last_aru
            self.safe_aru = safe_aru
            release_to = min(safe_aru, self.my_high_delivered)
            if release_to > self.last_released:
                self.release(release_to)
        # flow control (§1.7)
        cfg = self.cfg
        window = cfg.window_size
        queue = self.pending if operational else self.recovery_queue
        cbl = len(queue)
        allowed = min(cfg.max_messages, window - tok_fcc)
        backlog_total = tok_backlog + cbl - self.my_pbl
        if backlog_total > 0:
            share = window * cbl // backlog_total
            if 0 < share < allowed:
                allowed = share
        if allowed < 0:
            allowed = 0
        # serve retransmission requests (step 9)
        sent = 0
        sq = self.sort_queue
        rtr_out = []
        for entry in rtr:
            rrep, rrseq, seq = entry
            if rrep == rep and rrseq == rseq and seq in sq and sent < allowed:
                self.send(MULTICAST, sq[seq][3])
                sent += 1
                counters["retransmits"] += 1
            elif rrep == rep and rrseq == rseq and seq <= self.last_released:
                continue  # everybody had it: stale request
            else:
                rtr_out.append(entry)
        # add my own gaps (step 10)
        my_aru = self.my_aru
        if my_aru < seq_now and len(rtr_out) < MAX_RTR_ENTRIES:
            listed = {e[2] for e in rtr_out if e[0] == rep and e[1] == rseq}
            miss = self.miss_counts
            for s in range(my_aru + 1, seq_now + 1):
                if len(rtr_out) >= MAX_RTR_ENTRIES:
                    break
                if s in sq:
                    continue
                c = miss.get(s, 0) + 1
                miss[s] = c
                if c >= cfg.miss_count_const and s not in listed:
                    rtr_out.append((rep, rseq, s))
                    counters["retransmit_requests"] += 1
        # originate (steps 11-12)
        room = self.last_released + SORT_QUEUE_CAPACITY - (seq_now + allowed + window)
        new = min(allowed - sent, cbl) if room > 0 else 0
        if operational:
            if token_seq >= self.token_seq_limit or (new > 0 and seq_now + 1 >= self.seq_limit):
                # 32-bit counters near their end: reform the ring (same members, counters from 0) rather
                # than wrap; the join makes every member follow, and EVS delivers the change as usual.
                self.count("seq_wrap_reconfigurations")
                self.gather_enter(now)
                return
            new = min(new, self.seq_limit - 1 - seq_now)
        if new > 0:
            encapsulated = not operational
            flags = FLAG_ENCAPSULATED if encapsulated else 0
            header = _MCAST_HDR(MAGIC, VERSION, T_MCAST, flags, me)
            sends = self.out.sends
            for _ in range(new):
                if encapsulated:
                    payload, guarantee = queue.popleft(), 0
                    counters["recovery_messages"] += 1
                else:
                    payload, guarantee = queue.popleft()
                    if guarantee:  # SAFE (AGREED is 0)
                        self.last_safe_seq = seq_now + 1
                seq_now += 1
                raw = header + _MCAST_BODY(rep, rseq, seq_now, guarantee) + payload
                sq[seq_now] = (me, guarantee, payload, raw, encapsulated)
                sends.append((MULTICAST, raw))
            counters["messages_originated"] += new
            if seq_now > self.my_high_seq_received:
                self.my_high_seq_received = seq_now
            self.advance_aru()
            sent += new
        # flow-control bookkeeping (step 13)
        fcc = tok_fcc + sent - self.my_trc
        backlog = tok_backlog + cbl - self.my_pbl
        self.my_trc = sent
        self.my_pbl = cbl
        # aru rule (§1.5)
        aru, aru_addr = tok_aru, tok_aru_addr
        my_aru = self.my_aru
        if my_aru < aru or aru_addr == me or aru_addr == 0:
            aru = my_aru
            aru_addr = 0 if aru == seq_now else me
        # fail to receive (§2.9)
        if aru_addr != 0 and aru == last_aru and aru != seq_now and operational:
            self.my_aru_count += 1
            if self.my_aru_count > cfg.fail_recv_const and aru_addr == me:
                self.count("fail_to_recv")
                self.failed_to_recv = True
                self.fail_set.add(me)
                self.gather_enter(now)
                return
        else:
            self.my_aru_count = 0
        self.my_token_seq = token_seq
        self.linger_seen_seq = seq_now
        retrans_flg = tok_retrans
        if not operational:
            retrans_flg = self.recovery_token_counters(seq_now, aru, retrans_flg)
        out = new_tuple(OrfToken, (me, rep, rseq, token_seq + 1, seq_now, aru, aru_addr,
                                    backlog if backlog > 0 else 0, fcc if fcc > 0 else 0, retrans_flg,
                                    tuple(rtr_out)))
        self.forward_token(now, out, is_rep and operational and self.my_seq_unchanged > cfg.seqno_unchanged_const)
        if operational:
            self.deliver_ready()
        elif self.install_aru_ok >= 2:
            self.install(now)

    def forward_token(self, now: float, tok: OrfToken, hold: bool) -> None:
        """Send the token to my successor (a one-node ring keeps it, paced by the hold timer when ``hold``).

        An idle ring's representative holds the token *before* processing it (:meth:`idle_hold`), so
        the multi-node case always sends.
        """
        cfg = self.cfg
        out = self.out
        timers = out.timers
        timers[_TOKEN_LOSS] = now + cfg.token / 1000.0
        heartbeat = self.heartbeat_ms
        if heartbeat:
            # optional faster failure detection: a token must come round within the heartbeat period
            timers[_HEARTBEAT] = now + heartbeat / 1000.0
        dest = self.successor()
        if dest == self._nodeid:
            # one-node ring: the token comes straight back; pace it by the hold timer when idle
            self.held_token = tok
            # a SAFE message waiting for its second visit keeps the token going too (else each waits a hold)
            busy = (bool(self.pending) or bool(self.recovery_queue) or self.memb_state == MembState.RECOVERY
                    or self.last_safe_seq > self.my_high_delivered)
            self.cancel(_TOKEN_RETRANSMIT)
            self.arm(now, TimerName.HOLD, 0 if busy and not hold else cfg.hold)
            return
        raw = tok.encode()
        self.last_token_copy = raw
        self.last_token_dest = dest
        out.sends.append((dest, raw))
        timers[_TOKEN_RETRANSMIT] = now + cfg.token_retransmit / 1000.0

    def linger_check(self, now: float, tok: OrfToken) -> bool:
        """True when this visit waits a little before the token is processed (kept in ``lingering``).

        One-at-a-time traffic between clients on different nodes (a request and its answer, a lock
        grant and the unlock) otherwise loses a rotation at the answering node: the token arrives
        right behind the request and is passed on before the local client has answered.  So a visit
        waits up to ``linger_ms`` when other members originated 1..LINGER_MAX_DELIVERIES messages since
        this node's last visit (delivered here already, or still on their way: a member's copies may
        reach this node after the token does), this node has nothing of its own to send, and the
        token shows a ring busy with nothing else (backlog and last rotation's sends within that
        bound, no retransmission request).  The first local submission (:meth:`request_hold_cancel`)
        ends the wait and leaves on this visit.  A node waits at each such visit while at least
        LINGER_ANSWERED_MIN of its recent waits were answered (a moving average); below that it only
        probes, each unanswered probe doubling the time to the next (up to LINGER_PROBE_MAX_MS).  So a
        node whose clients never answer (a bystander of another pair's traffic) costs the ring one
        wait a quarter second, and one whose traffic turns to requests and answers (or whose clients
        were only slow for a while) waits again after a few probes: an answer makes the next
        eligible visit a probe.  The wait is like a slower link: the token is processed whole when it
        ends, and no Totem timer is changed by it.
        """
        if self.lingering is not None:  # a copy came while one waited (a retransmission): this one goes now
            self.lingering = None
            self.idle_holding = False
            self.cancel(_HOLD)
            return False
        if (tok[4] == self.my_last_seq and self.my_seq_unchanged >= self.cfg.seqno_unchanged_const
                and self.ring_id[0] == self._nodeid and not self.pending and self.memb_state is _OPERATIONAL
                and self.successor() != self._nodeid):
            return self.idle_hold(now, tok)
        if not self.linger_ms:  # off: nothing more is counted or checked on the token's hot path
            return False
        # Every message originated since this node's last visit is another member's (its own were
        # originated before the token it sent then, whose seq is linger_seen_seq).
        fresh = tok[4] - self.linger_seen_seq
        if (fresh <= 0 or fresh > LINGER_MAX_DELIVERIES or self.pending or tok[7] > LINGER_MAX_DELIVERIES
                or tok[8] > LINGER_MAX_DELIVERIES or tok[10] or self.memb_state is not _OPERATIONAL):
            return False
        if self.linger_answered < LINGER_ANSWERED_MIN and now < self.linger_probe_at:
            return False
        if self.successor() == self._nodeid:
            return False
        self.lingering = tok
        self.linger_seq = tok[3]
        self.linger_since = now
        self.arm(now, _HOLD, self.linger_ms)
        counters = self.stats_counters
        counters["token_lingers"] = counters.get("token_lingers", 0) + 1
        return True

    def idle_hold(self, now: float, tok: OrfToken) -> bool:
        """The representative of a ring idle for ``seqno_unchanged_const`` visits keeps the token, unprocessed.

        For up to ``hold`` ms, until a local submission (which then leaves on this very visit) or a
        member's hold cancel; the expiry processes and passes it on, and it comes back to be held
        again.  Holding the token before processing it, rather than its processed copy, is what
        lets the representative's own first message after a quiet spell leave at once: a processed
        copy released for it would carry nothing, and the message would wait a whole rotation.
        """
        self.lingering = tok
        self.linger_seq = tok[3]
        self.linger_since = now
        self.idle_holding = True
        # the token arrived: its loss (and heartbeat) deadlines count from now, as at any visit
        timers = self.out.timers
        timers[_TOKEN_LOSS] = now + self.cfg.token / 1000.0
        if self.heartbeat_ms:
            timers[_HEARTBEAT] = now + self.heartbeat_ms / 1000.0
        self.cancel(_TOKEN_RETRANSMIT)
        self.arm(now, _HOLD, self.cfg.hold)
        return True

    def end_linger(self, now: float, answered: bool | None) -> bool:
        """Process the token a visit waited with; False (nothing done) when it is of a ring since left.

        ``answered``: True for a local submission, False when the wait timed out, None when another
        member asked for the token (a hold cancel).  The end of an idle hold (:meth:`idle_hold`) with
        work to do makes the ring count as busy again.
        """
        tok = self.lingering
        self.lingering = None
        idle = self.idle_holding
        self.idle_holding = False
        if tok is None or self.memb_state is not _OPERATIONAL or (tok[1], tok[2]) != tuple(self.ring_id):
            return False
        if idle:
            self.cancel(_HOLD)
            if answered is not False:
                self.my_seq_unchanged = 0
            self.on_token(now, tok)
            # The token was received when the hold began: its deadlines still count from then.
            timers = self.out.timers
            since = self.linger_since
            if timers.get(_TOKEN_LOSS) is not None:
                timers[_TOKEN_LOSS] = since + self.cfg.token / 1000.0
            if self.heartbeat_ms and timers.get(_HEARTBEAT) is not None:
                timers[_HEARTBEAT] = since + self.heartbeat_ms / 1000.0
            return True
        counters = self.stats_counters
        if answered is False:
            self.linger_answered -= self.linger_answered / 8
            if self.linger_answered < LINGER_ANSWERED_MIN:
                self.linger_probe_ms = probe = min(max(2 * self.linger_probe_ms, self.linger_ms), LINGER_PROBE_MAX_MS)
                self.linger_probe_at = now + probe / 1000.0
            counters["token_lingers_unanswered"] = counters.get("token_lingers_unanswered", 0) + 1
        else:
            self.cancel(_HOLD)
            if answered:
                self.linger_answered += (1.0 - self.linger_answered) / 8
                self.linger_probe_ms = 0.0
                self.linger_probe_at = now
        waited_us = int((now - self.linger_since) * 1e6)
        counters["token_linger_us"] = counters.get("token_linger_us", 0) + waited_us
        self.on_token(now, tok)
        return True

    def release_held_token(self, now: float) -> None:
        """Hold expired or was cancelled: pass the held token on (or end a visit's wait)."""
        if self.lingering is not None and self.end_linger(now, False):
            return
        tok = self.held_token
        if tok is None:
            return
        self.held_token = None
        if self.successor() == self._nodeid:
            self.on_token(now, tok)
            return
        self.send(self.last_token_dest, self.last_token_copy)
        self.arm(now, TimerName.TOKEN_RETRANSMIT, self.cfg.token_retransmit)

    def on_hold_cancel(self, now: float, hc: HoldCancel) -> None:
        """A member has something to send: stop treating the ring as idle."""
        if (hc.ring_rep, hc.ring_seq) != tuple(self.ring_id) or self.memb_state != MembState.OPERATIONAL:
            return
        if self.lingering is not None and self.end_linger(now, None):  # another member waits for the token
            return
        self.my_seq_unchanged = 0
        if self.held_token is not None:
            self.release_held_token(now)

    def on_token_retransmit(self, now: float) -> None:
        """No newer token arrived in time: resend my last copy (ORF or commit token)."""
        if self.memb_state == MembState.GATHER or self.last_token_copy is None or self.held_token is not None:
            return
        self.count("token_retransmits")
        self.send(self.last_token_dest, self.last_token_copy)
        self.arm(now, TimerName.TOKEN_RETRANSMIT, self.cfg.token_retransmit)

    def request_hold_cancel(self, now: float) -> None:
        """New work: end this visit's wait, or, while the ring looks idle, ask the rep to release the token."""
        if self.lingering is not None and self.end_linger(now, True):
            return
        if self.memb_state != MembState.OPERATIONAL:
            return
        if self.held_token is not None:
            if self.successor() == self._nodeid:
                self.arm(now, TimerName.HOLD, 0)
            else:
                self.my_seq_unchanged = 0
                self.release_held_token(now)
            return
        if self.my_seq_unchanged >= self.cfg.seqno_unchanged_const:
            self.my_seq_unchanged = 0
            self.count("hold_cancels_sent")
            self.send(MULTICAST, HoldCancel(self._nodeid, self.ring_id.rep, self.ring_id.seq).encode())
