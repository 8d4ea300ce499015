"""Join processing (totem.md §2.3) on one core fed by hand: no join echo storms."""

from __future__ import annotations

from aisexec.totem.api import MembState
from aisexec.totem.srp import SrpCore
from aisexec.totem.wire import Join, decode
from tests.totem.srp_harness import Loop


def _gathering_core() -> SrpCore:
    """Node 6 on its own one-node ring, then pulled into GATHER by a join from node 9."""
    net = Loop([6])
    net.start()
    net.run(1.0)
    core = net.cores[6]
    assert core.state == MembState.OPERATIONAL
    core.receive(1.01, Join(9, 4, (6, 9), ()).encode())
    assert core.state == MembState.GATHER
    sent = [decode(p) for _, p in core.take_ready().sends]
    assert any(isinstance(m, Join) and m.sender == 6 for m in sent)
    return core


def test_join_that_teaches_nothing_is_not_echoed() -> None:
    core = _gathering_core()
    # Node 9 is not in my last regular ring, so its fail set is not mine to adopt: nothing changes.
    core.receive(1.02, Join(9, 4, (6, 9), (2,)).encode())
    ready = core.take_ready()
    assert ready.sends == []
    assert core.state == MembState.GATHER
    assert core.fail_set == set()


def test_join_with_new_nodes_reenters_gather_and_sends_my_join() -> None:
    core = _gathering_core()
    core.receive(1.02, Join(9, 4, (6, 9, 11), ()).encode())
    joins = [decode(p) for _, p in core.take_ready().sends]
    mine = [m for m in joins if isinstance(m, Join) and m.sender == 6]
    assert mine and mine[-1].proc == (6, 9, 11)


def test_join_naming_me_failed_excludes_its_sender() -> None:
    core = _gathering_core()
    core.receive(1.02, Join(9, 4, (6, 9), (6,)).encode())
    # Failing 9 leaves only me, so a one-node ring is committed at once; from COMMIT on the sets
    # describe that ring (proc = members, fail = {}), as after an installation: 9 is not in it.
    assert core.commit_members == (6,)
    assert 9 not in core.candidates()
    joins = [decode(p) for _, p in core.take_ready().sends]
    assert any(isinstance(m, Join) and m.sender == 6 and m.fail == (9,) for m in joins)
