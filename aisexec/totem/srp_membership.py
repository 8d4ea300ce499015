"""Membership: GATHER with join messages (§2.2-2.3), consensus (§2.4), commit token rotations (§2.5)."""

from __future__ import annotations

from aisexec.totem.api import MULTICAST, MembState, RingId, TimerName
from aisexec.totem.wire import CommitToken, Join, MembEntry, MergeDetect

_BLANK = MembEntry(0, 0, 0, 0, 0)


class MembershipMixin:
    """Join processing, consensus and the two rotations of the commit token."""

    def my_join(self) -> Join:
        """My current join message."""
        return Join(self._nodeid, self.ring_seq_floor, tuple(sorted(self.proc_set)), tuple(sorted(self.fail_set)))

    def gather_enter(self, now: float) -> None:
        """(Re-)enter GATHER: send my join, restart join and consensus timers, clear the consensus table."""
        if self.memb_state in (MembState.COMMIT, MembState.RECOVERY):
            self.restore_old_ring()
        self.memb_state = MembState.GATHER
        self.count("gather_entered")
        self.held_token = None
        self.last_token_copy = None
        self.merge_armed = False
        self.cancel(TimerName.TOKEN_LOSS, TimerName.TOKEN_RETRANSMIT, TimerName.HOLD, TimerName.MERGE_DETECT,
                    TimerName.HEARTBEAT)
        self.send_join_message(now)
        self.arm(now, TimerName.JOIN, self.cfg.join)
        self.arm(now, TimerName.CONSENSUS, self.cfg.consensus)
        self.consensus_set = {self._nodeid}
        self.check_consensus(now)

    def candidates(self) -> set[int]:
        """``proc_set - fail_set``: the nodes the next ring should hold."""
        return self.proc_set - self.fail_set

    def check_consensus(self, now: float) -> None:
        """If every candidate agreed and I am the lowest, create the commit token."""
        cands = self.candidates()
        if self.failed_to_recv:
            if cands <= self.consensus_set:
                self.form_singleton(now)
            return
        if cands and cands <= self.consensus_set and min(cands) == self._nodeid:
            self.create_commit_token(now, tuple(sorted(cands)))

    def form_singleton(self, now: float) -> None:
        """Self-exclusion after failing to receive: shrink to a one-node ring."""
        self.failed_to_recv = False
        self.proc_set = {self._nodeid}
        self.fail_set = set()
        self.create_commit_token(now, (self._nodeid,))

    # ------------------------------------------------------------ joins
    def on_join(self, now: float, j: Join) -> None:
        """Process a received join (§2.3), including the stale-join filter and leave messages.

        A join handled more than ``token/2`` after the last pause stamp waited out a process pause
        (§2.9): it is stale and dropped; its sender resends it within ``join`` ms.
        """
        self.count("joins_received")
        if now - self.pause_stamp > self.cfg.token / 2000.0:
            self.count("joins_after_pause")
            return
        me = self._nodeid
        leave = j.sender == 0
        if leave:
            self.count("leaves_received")
        if j.ring_seq > self.max_seen_ring_seq:
            self.max_seen_ring_seq = j.ring_seq
        state = self.memb_state
        if state == MembState.OPERATIONAL and not leave:
            if me in j.fail or (j.sender in self.my_memb and j.ring_seq < self.ring_id.seq):
                return
        if state in (MembState.COMMIT, MembState.RECOVERY):
            involved = set(j.fail) if leave else {j.sender}
            if not involved & set(self.commit_members) or (not leave and j.ring_seq < self.ring_seq_floor):
                return
        proc, fail = set(j.proc), set(j.fail)
        if not leave and proc == self.proc_set and fail == self.fail_set:
            if state == MembState.GATHER:
                self.consensus_set.add(j.sender)
                self.check_consensus(now)
                return
        elif proc <= self.proc_set and fail <= self.fail_set:
            pass
        elif not leave and j.sender in self.fail_set:
            pass
        else:
            before = (len(self.proc_set), len(self.fail_set))
            self.proc_set |= proc
            if me in fail and not leave:
                self.fail_set.add(j.sender)
            elif leave or j.sender in self.my_memb:
                self.fail_set |= fail - {me}
            if state != MembState.GATHER or (len(self.proc_set), len(self.fail_set)) != before:
                self.gather_enter(now)
            # else: the join taught me nothing (its fail set names nodes I may not take from a
            # non-member); re-entering GATHER would only echo my join back and forth (a join storm).
            return
        if state != MembState.GATHER:
            self.gather_enter(now)

    def on_foreign(self, now: float, sender: int, ring_seq: int) -> None:
        """A message from another ring (mcast or merge detect): gather with its sender."""
        if sender in self.my_memb and ring_seq <= self.ring_id.seq:
            return  # late message of an older ring of ours
        self.count("mcasts_foreign")
        state = self.memb_state
        if state == MembState.OPERATIONAL:
            self.proc_set.add(sender)
            self.fail_set.discard(sender)
            self.gather_enter(now)
        elif state == MembState.GATHER and sender not in self.proc_set:
            self.proc_set.add(sender)
            self.gather_enter(now)

    def on_merge_detect(self, now: float, md: MergeDetect) -> None:
        """A representative of another ring announces itself."""
        if (md.ring_rep, md.ring_seq) == tuple(self.ring_id):
            return
        self.on_foreign(now, md.sender, md.ring_seq)

    def on_join_timer(self, now: float) -> None:
        """Resend my join while gathering."""
        if self.memb_state == MembState.GATHER:
            self.send_join_message(now)
            self.arm(now, TimerName.JOIN, self.cfg.join)

    def send_join_message(self, now: float) -> None:
        """Multicast my join now, or after a random ``0..send_join`` ms delay when that is configured.

        Delayed joins coalesce: while one is scheduled, another request sends nothing more, and the
        join that leaves carries the sets as they are when the delay expires.
        """
        limit = self.cfg.send_join
        if limit <= 0:
            self.send(MULTICAST, self.my_join().encode())
            return
        if not self.join_send_pending:
            self.join_send_pending = True
            self.arm(now, TimerName.SEND_JOIN, self.rng.uniform(0, limit))

    def on_send_join_timer(self, now: float) -> None:
        """The random join delay expired: send the join if still gathering."""
        self.join_send_pending = False
        if self.memb_state == MembState.GATHER:
            self.send(MULTICAST, self.my_join().encode())

    def on_consensus_timeout(self, now: float) -> None:
        """Consensus expiry: fail those who did not agree, or wait one more round if all did."""
        if self.memb_state != MembState.GATHER:
            return
        self.count("consensus_timeouts")
        cands = self.candidates()
        if self.failed_to_recv:
            self.form_singleton(now)
            return
        if cands <= self.consensus_set:
            self.consensus_set = {self._nodeid}
            self.arm(now, TimerName.CONSENSUS, self.cfg.consensus)
            return
        self.fail_set |= cands - self.consensus_set
        self.gather_enter(now)

    def on_merge_timer(self, now: float) -> None:
        """The idle rep announces its ring so partitions that healed find each other."""
        self.merge_armed = False
        if self.memb_state == MembState.OPERATIONAL and self.ring_id.rep == self._nodeid:
            self.count("merge_detects_sent")
            self.send(MULTICAST, MergeDetect(self._nodeid, self.ring_id.rep, self.ring_id.seq).encode())

    # ------------------------------------------------------------ commit token
    def create_commit_token(self, now: float, members: tuple[int, ...]) -> None:
        """As rep: new ring id = (me, max seen seq + 4), blank entries, then take my own turn."""
        self.count("commit_tokens_created")
        seq = max(self.max_seen_ring_seq, self.ring_seq_floor, self.ring_id.seq) + 4
        ct = CommitToken(self._nodeid, 0, self._nodeid, seq, 0, 0, members, (_BLANK,) * len(members))
        self.on_commit_token(now, ct)

    def on_commit_token(self, now: float, ct: CommitToken) -> None:
        """Rotation 1 (collect) in GATHER, rotation 2 (distribute) in COMMIT, first ORF token in RECOVERY."""
        me = self._nodeid
        n = len(ct.members)
        state = self.memb_state
        if me not in ct.members:
            return
        new_ring = RingId(ct.ring_rep, ct.ring_seq)
        if state == MembState.GATHER:
            if (ct.memb_index >= n or ct.members[ct.memb_index] != me or ct.ring_seq <= self.ring_seq_floor
                    or set(ct.members) != self.candidates()):
                return
            entries = list(ct.entries)
            flg = 1 if self.my_aru == self.my_high_seq_received else 0
            mine = MembEntry(self.ring_id.rep, self.ring_id.seq, self.my_aru, self.my_high_delivered, flg)
            best = max([e.aru for e in entries[: ct.memb_index] if (e.old_ring_rep, e.old_ring_seq) ==
                        tuple(self.ring_id)] + [self.my_aru])
            for i in range(ct.memb_index):
                e = entries[i]
                if (e.old_ring_rep, e.old_ring_seq) == tuple(self.ring_id) and e.aru < best:
                    entries[i] = e._replace(received_flg=0)
            if self.my_aru < best:
                mine = mine._replace(received_flg=0)
            entries[ct.memb_index] = mine
            self.commit_enter(now, new_ring, ct.members)
            out = ct._replace(sender=me, token_seq=ct.token_seq + 1, memb_index=ct.memb_index + 1,
                              entries=tuple(entries))
            self.pass_commit_token(now, out)
        elif state == MembState.COMMIT:
            if new_ring != self.ring_id or ct.memb_index != n:
                return
            self.recovery_enter(now, ct)
            nxt = ct.members[(ct.members.index(me) + 1) % n]
            self.pass_commit_token(now, ct._replace(sender=me, token_seq=ct.token_seq + 1), nxt)
        elif state == MembState.RECOVERY:
            if new_ring != self.ring_id or ct.memb_index != n or me != ct.ring_rep or self.first_token_sent:
                return
            self.send_initial_token(now)

    def pass_commit_token(self, now: float, ct: CommitToken, dest: int | None = None) -> None:
        """Forward the commit token to ``dest`` or ``members[memb_index % n]`` (locally if that is me)."""
        if dest is None:
            dest = ct.members[ct.memb_index % len(ct.members)]
        if dest == self._nodeid:
            self.on_commit_token(now, ct)
            return
        raw = ct.encode()
        self.last_token_copy = raw
        self.last_token_dest = dest
        self.send(dest, raw)
        self.arm(now, TimerName.TOKEN_RETRANSMIT, self.cfg.token_retransmit)

    def commit_enter(self, now: float, new_ring: RingId, members: tuple[int, ...]) -> None:
        """Adopt and persist the new ring id, save the old ring, enter COMMIT."""
        self.old_ring_id = self.ring_id
        self.old_memb = self.my_memb
        self.old_sort_queue = self.sort_queue
        self.old_aru = self.my_aru
        self.old_high_seq = self.my_high_seq_received
        self.old_high_delivered = self.my_high_delivered
        self.old_last_released = self.last_released
        self.sort_queue = {}
        self.ring_id = new_ring
        self.commit_members = members
        # The gather's sets did their work: they chose ``members``.  From here on they describe this
        # attempt, as an installation's do (proc = members, fail = {}), so that an attempt abandoned in
        # COMMIT/RECOVERY does not carry the old fail set into the next gather (see totem.md, "stale
        # fail set"): that fail set may name nodes a member that already installed now hears again, and
        # the symmetric-fail rule would split the two groups once more, at every retry (seed 501045).
        self.proc_set = set(members)
        self.fail_set = set()
        self.ring_seq_floor = max(self.ring_seq_floor, new_ring.seq)
        self.max_seen_ring_seq = max(self.max_seen_ring_seq, new_ring.seq)
        self.out.ring_seq_to_persist = new_ring.seq
        self.memb_state = MembState.COMMIT
        self.my_trc = self.my_pbl = 0
        self.cancel(TimerName.JOIN, TimerName.CONSENSUS, TimerName.HOLD, TimerName.MERGE_DETECT, TimerName.SEND_JOIN)
        self.join_send_pending = False
        self.arm(now, TimerName.TOKEN_LOSS, self.cfg.token)

    def restore_old_ring(self) -> None:
        """Abandon a COMMIT/RECOVERY attempt: the old ring's queue and counters come back.

        The old-ring messages an abandoned recovery brought (encapsulated) are kept, as at installation:
        without them every attempt starts from the same arus and resends the same backlog, and a backlog
        whose bursts always cost a token (receive buffers smaller than a rotation's traffic, with the
        heartbeat on) fails the same way for ever.  With them each attempt starts where the last stopped.
        """
        recovered = self.keep_recovered() if self.memb_state == MembState.RECOVERY else 0
        self.ring_id = self.old_ring_id
        self.my_memb = self.old_memb
        self.sort_queue = self.old_sort_queue
        self.reset_ring_counters()
        self.my_aru = self.old_aru
        self.my_high_seq_received = max(self.old_high_seq, recovered)
        self.my_high_delivered = self.old_high_delivered
        self.last_released = self.old_last_released
        self.recovery_queue.clear()
        self.commit_members = ()
        if recovered:
            self.advance_aru()
