"""An attempt abandoned in COMMIT/RECOVERY does not carry its gather's fail set into the next gather.

Seed 501045 of the simulator: after the network healed, 14 nodes split into two groups, A (8 nodes)
and B (6), that re-formed separately about 240 times in 8.5 s and never merged.  Each round, B
installed first and kept multicasting (a pg backlog); A's representative installed, heard B's data
(a foreign message), cleared B from its fail set and re-entered GATHER.  Its join reached A's other
members while they were still in RECOVERY: they went back to GATHER too, but with the fail set of the
gather that had formed A (all of B) still in place, and their joins named B's nodes failed.  A node
that finds itself in a join's fail set fails the sender (the symmetric rule consensus needs), so B
failed A's nodes again and the two groups formed apart once more, in the same phase, every round.

An installation resets the sets (proc = members, fail = {}); entering COMMIT now does the same, so an
abandoned attempt starts its next gather as a just-installed ring would.
"""

from __future__ import annotations

from aisexec.totem.api import MULTICAST, MembState
from aisexec.totem.config import TotemConfig
from aisexec.totem.srp import SrpCore
from aisexec.totem.wire import CommitToken, Join, MembEntry, decode

BLANK = MembEntry(0, 0, 0, 0, 0)


def _committed(now: float) -> SrpCore:
    """Node 2 in COMMIT of ring (1, 12) with members (1, 2), formed by a gather that failed node 3."""
    core = SrpCore(2, TotemConfig())
    core.start(0.0)
    core.take_ready()
    core.proc_set = {1, 2, 3}
    core.fail_set = {3}  # 3 was in another partition when this gather ran
    core.gather_enter(0.0)  # (start formed the one-node ring (2, 4); this gather is with node 1)
    assert core.state == MembState.GATHER
    entries = (MembEntry(1, 4, 0, 0, 1), BLANK)
    core.receive(now, CommitToken(1, 1, 1, 12, 0, 1, (1, 2), entries).encode())
    assert core.state == MembState.COMMIT
    core.take_ready()
    return core


def _joins_sent(core: SrpCore) -> list[Join]:
    sent = [decode(packet) for dest, packet in core.take_ready().sends if dest == MULTICAST]
    return [m for m in sent if isinstance(m, Join)]


def test_entering_commit_resets_the_gather_sets_to_the_new_ring() -> None:
    core = _committed(0.01)
    assert core.proc_set == {1, 2}
    assert core.fail_set == set()


def test_a_join_from_a_member_that_hears_node_3_again_does_not_fail_node_3() -> None:
    core = _committed(0.01)
    # node 1 installed ring (1, 12), heard node 3's traffic and gathers with it: fail set empty
    core.receive(0.02, Join(1, 12, (1, 2, 3), ()).encode())
    assert core.state == MembState.GATHER
    joins = _joins_sent(core)
    assert joins, "node 2 must announce its gather"
    assert joins[-1].proc == (1, 2, 3)
    assert joins[-1].fail == ()  # before the fix: (3,), and node 3 would fail node 2 in return
    assert core.candidates() == {1, 2, 3}


def test_in_recovery_a_members_join_that_fails_a_node_still_fails_it() -> None:
    core = _committed(0.01)
    full = (MembEntry(1, 4, 0, 0, 1), MembEntry(2, 0, 0, 0, 1))
    core.receive(0.015, CommitToken(1, 3, 1, 12, 0, 2, (1, 2), full).encode())  # second rotation
    assert core.state == MembState.RECOVERY
    core.take_ready()
    # node 1, a member of the ring being installed, gathers and names node 3 failed: that still counts
    core.receive(0.02, Join(1, 12, (1, 2, 3), (3,)).encode())
    assert core.state == MembState.GATHER
    assert core.fail_set == {3}
    assert _joins_sent(core)[-1].fail == (3,)


def test_token_loss_in_commit_gathers_with_the_attempted_members_only() -> None:
    from aisexec.totem.api import TimerName

    core = _committed(0.01)
    core.timer_expired(0.02 + TotemConfig().token / 1000.0, TimerName.TOKEN_LOSS)
    assert core.state == MembState.GATHER
    joins = _joins_sent(core)
    assert joins[-1].proc == (1, 2) and joins[-1].fail == ()
