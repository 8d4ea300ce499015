"""Recovery (§2.7) and installation of the new ring with EVS configuration delivery (§2.8)."""

from __future__ import annotations

from aisexec.totem.api import ConfigChange, ConfKind, Delivery, Guarantee, MembState, TimerName
from aisexec.totem.wire import MalformedPacket, Mcast, OrfToken, decode

_SAFE = Guarantee.SAFE


class RecoveryMixin:
    """Rebroadcast old-ring messages encapsulated, then install: old msgs, TRANSITIONAL, post-hole msgs, REGULAR."""

    def recovery_enter(self, now: float, ct) -> None:
        """From the full commit token: transitional set, deliver set, recovery queue, fresh counters."""
        old = tuple(self.old_ring_id)
        old_memb = set(self.old_memb)
        trans = []
        trans_entries = []
        for member, entry in zip(ct.members, ct.entries, strict=True):
            if member in old_memb and (entry.old_ring_rep, entry.old_ring_seq) == old:
                trans.append(member)
                trans_entries.append(entry)
        self.transitional = tuple(trans)
        self.deliver_set = frozenset(trans)
        # the highest old-ring seq some transitional member delivered in the old regular configuration:
        # everything up to it is delivered there by all of them (virtual synchrony), SAFE messages too
        self.trans_high_delivered = max((e.high_delivered for e in trans_entries), default=0)
        self.recovery_queue.clear()
        if not all(e.received_flg for e in trans_entries):
            low_aru = min(e.aru for e in trans_entries)
            osq = self.old_sort_queue
            for seq in range(low_aru + 1, self.old_high_seq + 1):
                m = osq.get(seq)
                if m is not None:
                    self.recovery_queue.append(m[3])
        self.my_memb = tuple(ct.members)
        self.memb_state = MembState.RECOVERY
        self.reset_ring_counters()
        self.first_token_sent = False
        self.arm(now, TimerName.TOKEN_LOSS, self.cfg.token)

    def send_initial_token(self, now: float) -> None:
        """The rep starts the new ring's first ORF token (seq = aru = 0, empty aru_addr) with its own visit."""
        self.first_token_sent = True
        self.last_token_copy = None
        self.on_token(now, OrfToken(self._nodeid, self.ring_id.rep, self.ring_id.seq, 0, 0, 0, 0, 0, 0, 0, ()))

    def recovery_token_counters(self, seq: int, aru: int, retrans_flg: int) -> int:
        """Maintain ``retrans_flg`` and the installation counters on a RECOVERY visit; return the new flag."""
        if self.recovery_queue:
            if not retrans_flg:
                retrans_flg = 1
                self.my_set_retrans_flg = True
        elif self.my_set_retrans_flg and retrans_flg:
            retrans_flg = 0
            self.my_set_retrans_flg = False
        if retrans_flg:
            self.retrans_flg_count = 0
            self.install_aru_ok = 0
            return retrans_flg
        self.retrans_flg_count += 1
        if self.retrans_flg_count == 2:
            self.install_seq = seq
        if self.retrans_flg_count >= 2 and self.my_aru >= self.install_seq:
            self.my_received_all = True
        if self.retrans_flg_count >= 3 and aru >= self.install_seq and self.my_received_all:
            self.install_aru_ok += 1
        else:
            self.install_aru_ok = 0
        return retrans_flg

    def keep_recovered(self) -> int:
        """Move the old-ring messages that came encapsulated in this ring into the old ring's queue.

        Done at installation, and also when a recovery is abandoned (:meth:`restore_old_ring`): what an
        attempt recovered is kept, so the next attempt starts from higher arus with less to resend.
        Returns the highest old-ring seq moved (0: none).
        """
        osq = self.old_sort_queue
        old_ring = tuple(self.old_ring_id)
        floor = self.old_last_released
        high = 0
        for _seq, m in sorted(self.sort_queue.items()):
            if not m[4]:
                continue
            try:
                inner = decode(m[2])
            except MalformedPacket:
                self.count("packets_malformed")
                continue
            if isinstance(inner, Mcast) and (inner.ring_rep, inner.ring_seq) == old_ring:
                seq = inner.seq
                if seq > floor and seq not in osq:
                    osq[seq] = (inner.sender, inner.guarantee, inner.payload, m[2], False)
                    if seq > high:
                        high = seq
        return high

    def install(self, now: float) -> None:
        """Deliver the old ring's remainder and both configurations, then become OPERATIONAL."""
        osq = self.old_sort_queue
        self.keep_recovered()
        high = max(osq, default=0)
        delivered = self.old_high_delivered
        stable = self.trans_high_delivered
        # step 2: contiguous old-ring messages, in the old regular configuration, but no SAFE message that
        # no transitional member delivered there: nobody knows that every old member has it, so EVS
        # delivers it (and, for total order, everything after it) in the transitional configuration
        while delivered + 1 in osq and (delivered + 1 <= stable or osq[delivered + 1][1] != _SAFE):
            delivered += 1
            self.deliver_old(osq[delivered], delivered)
        me = self._nodeid
        trans = tuple(sorted(set(self.transitional) | {me}))
        if self.regular_delivered:  # a node's very first configuration is REGULAR only (simulator's §9.6 check)
            self.emit(ConfigChange(ConfKind.TRANSITIONAL, trans, tuple(sorted(set(self.old_memb) - set(trans))), (),
                                   self.ring_id))
        holed = False
        for seq in range(delivered + 1, high + 1):  # step 4: the rest; after a hole only from the deliver set
            m = osq.get(seq)
            if m is None:
                holed = True
            elif not holed or m[0] in self.deliver_set:
                self.deliver_old(m, seq)
        members = tuple(sorted(self.my_memb))
        self.emit(ConfigChange(ConfKind.REGULAR, members, (), tuple(sorted(set(members) - set(trans))), self.ring_id))
        self.count("rings_installed")
        self.regular_delivered = True
        self.old_sort_queue = {}
        self.old_memb = members
        self.old_ring_id = self.ring_id
        self.proc_set = set(members)
        self.fail_set = set()
        self.commit_members = ()
        self.memb_state = MembState.OPERATIONAL
        self.install_aru_ok = 0
        self.deliver_ready()

    def deliver_old(self, m, seq: int) -> None:
        """Deliver one old-ring message (in the old regular or the transitional configuration)."""
        self.emit(Delivery(m[0], m[2], self.old_ring_id, seq, m[1]))
        self.stats_counters["messages_delivered"] += 1
