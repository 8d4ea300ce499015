"""An abandoned recovery keeps the old-ring messages it brought (totem.md §2.7), so a retry resends less.

Seed 777168 of the simulator: three nodes with receive buffers smaller than one rotation's traffic and
the heartbeat on.  Every recovery of a 99-message backlog (250 encapsulated sends: each member resends
all it holds) overflowed the buffers, lost two tokens in a rotation and failed on the heartbeat; each
retry started from the same arus, resent the same backlog and failed the same way, for 4.5 s, until the
run ended with nine messages never delivered.
"""

from __future__ import annotations

from aisexec.totem.api import MembState, RingId, TimerName
from aisexec.totem.config import TotemConfig
from aisexec.totem.srp import SrpCore
from aisexec.totem.wire import MCAST_OVERHEAD, CommitToken, Mcast, MembEntry, decode

OLD = RingId(1, 4)
NEW = RingId(1, 8)


def _old_packet(seq: int, sender: int = 1, ring: RingId = OLD) -> bytes:
    return Mcast(sender, ring.rep, ring.seq, seq, 0, b"old-%d" % seq).encode()


def _stored(seq: int) -> tuple:
    """A sort-queue entry of old-ring message ``seq``, as ``store_mcast`` keeps it."""
    raw = _old_packet(seq)
    return (1, 0, raw[MCAST_OVERHEAD:], raw, False)


def _in_recovery() -> SrpCore:
    """Node 2 in RECOVERY of ring NEW: of old ring OLD (members 1, 2; seqs 1..4) it held only seq 1.

    The new ring's sort queue holds what the recovery brought so far, encapsulated: old seqs 2 and 3,
    and one message of another old ring (a member that came from elsewhere).
    """
    core = SrpCore(2, TotemConfig())
    core.start(0.0)
    core.take_ready()
    core.memb_state = MembState.RECOVERY
    core.ring_id = NEW
    core.my_memb = (1, 2)
    core.proc_set = {1, 2}
    core.commit_members = (1, 2)
    core.old_ring_id = OLD
    core.old_memb = (1, 2)
    core.old_sort_queue = {1: _stored(1)}
    core.old_aru = 1
    core.old_high_seq = 4
    core.old_high_delivered = 1
    core.old_last_released = 0
    core.sort_queue = {}
    for new_seq, inner in enumerate((_old_packet(2), _old_packet(3), _old_packet(9, 5, RingId(5, 6))), start=1):
        outer = Mcast(1, NEW.rep, NEW.seq, new_seq, 0, inner, True).encode()
        core.sort_queue[new_seq] = (1, 0, inner, outer, True)
    core.my_aru = core.my_high_seq_received = 3
    return core


def test_abandoned_recovery_keeps_the_old_ring_messages_it_received() -> None:
    core = _in_recovery()
    core.timer_expired(1.0, TimerName.TOKEN_LOSS)  # the recovery fails: back to GATHER in the old ring
    assert core.state == MembState.GATHER
    assert core.ring_id == OLD
    assert sorted(core.sort_queue) == [1, 2, 3]  # seq 9 of the other old ring is not taken
    assert core.sort_queue[2][2] == b"old-2" and core.sort_queue[3][2] == b"old-3"
    assert core.sort_queue[2][3] == _old_packet(2)  # the original packet: resent as it was in a retry
    assert not any(m[4] for m in core.sort_queue.values())
    assert core.my_aru == 3
    assert core.my_high_seq_received == 4
    assert core.my_high_delivered == 1  # nothing is delivered before a ring is installed


def test_the_retry_starts_from_the_higher_aru() -> None:
    core = _in_recovery()
    core.timer_expired(1.0, TimerName.TOKEN_LOSS)
    core.take_ready()
    # the next attempt: node 1's commit token comes round for node 2's entry
    blank = MembEntry(0, 0, 0, 0, 0)
    ct = CommitToken(1, 5, 1, 12, 0, 1, (1, 2), (MembEntry(OLD.rep, OLD.seq, 1, 1, 0), blank))
    core.receive(1.01, ct.encode())
    assert core.state == MembState.COMMIT
    sent = [decode(p) for _, p in core.take_ready().sends]
    mine = [m for m in sent if isinstance(m, CommitToken)][-1].entries[1]
    assert (mine.old_ring_rep, mine.old_ring_seq, mine.aru, mine.high_delivered) == (OLD.rep, OLD.seq, 3, 1)
    assert mine.received_flg == 0  # seq 4 is still missing


def test_a_failed_commit_changes_nothing() -> None:
    core = _in_recovery()
    core.memb_state = MembState.COMMIT  # no recovery ran: nothing was brought
    core.sort_queue = {}
    core.timer_expired(1.0, TimerName.TOKEN_LOSS)
    assert sorted(core.sort_queue) == [1]
    assert core.my_aru == 1 and core.my_high_seq_received == 4
