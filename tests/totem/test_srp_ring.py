"""Ring formation, ordering and membership changes through a lossless in-test network."""

from __future__ import annotations

from aisexec.totem.api import ConfKind, Guarantee, MembState
from tests.totem.srp_harness import Loop


def test_single_node_forms_ring_with_initial_configs():
    net = Loop([1])
    net.start()
    net.run(1.0)
    core = net.cores[1]
    assert core.state == MembState.OPERATIONAL
    kinds = [(c.kind, c.members) for c in net.configs(1)]
    assert kinds == [(ConfKind.REGULAR, (1,))]
    assert net.persisted[1] == 4
    core.submit(net.now, b"hello")
    net.collect(1)
    net.run(2.0)
    assert net.deliveries(1) == [b"hello"]


def test_single_node_delivers_safe_without_waiting_for_the_hold_timer():
    """A one-node ring paces an idle token by the hold timer; a SAFE message (two visits) must not wait for it."""
    net = Loop([1])
    net.start()
    net.run(1.0)
    core = net.cores[1]
    hold = core.cfg.hold / 1000.0
    assert hold >= 0.05
    for k in range(3):
        sent = net.now
        core.submit(net.now, f"safe-{k}".encode(), Guarantee.SAFE)
        net.collect(1)
        deadline = sent + hold / 4
        while f"safe-{k}".encode() not in net.deliveries(1) and net.now < deadline:
            net.run(net.now + 0.001)
        assert f"safe-{k}".encode() in net.deliveries(1), f"SAFE message {k} still waits after {hold / 4:.3f} s"
        net.run(net.now + 2 * hold)  # idle again: the token is held between messages


def test_three_nodes_agree_on_ring_and_order():
    net = Loop([1, 2, 3])
    net.start()
    net.run(5.0)
    for i in (1, 2, 3):
        assert net.cores[i].state == MembState.OPERATIONAL
        assert net.cores[i].members == (1, 2, 3)
    ring = net.cores[1].ring_id
    assert all(net.cores[i].ring_id == ring for i in (1, 2, 3))
    for k in range(50):
        for i in (1, 2, 3):
            net.cores[i].submit(net.now, f"{i}-{k}".encode())
            net.collect(i)
    net.run(10.0)
    orders = [net.deliveries(i) for i in (1, 2, 3)]
    assert len(orders[0]) == 150
    assert orders[0] == orders[1] == orders[2]
    for i in (1, 2, 3):  # per-sender FIFO
        mine = [p for p in orders[0] if p.startswith(f"{i}-".encode())]
        assert mine == [f"{i}-{k}".encode() for k in range(50)]


def test_node_crash_gives_new_configuration():
    net = Loop([1, 2, 3])
    net.start()
    net.run(5.0)
    net.down.add(3)
    net.run(20.0)
    for i in (1, 2):
        assert net.cores[i].members == (1, 2)
        last = net.configs(i)[-2:]
        assert last[0].kind == ConfKind.TRANSITIONAL and last[0].members == (1, 2) and last[0].left == (3,)
        assert last[1].kind == ConfKind.REGULAR and last[1].members == (1, 2)


def test_two_one_node_rings_merge():
    net = Loop([1, 2])
    net.cut.add(frozenset((1, 2)))
    net.start()
    net.run(3.0)
    assert net.cores[1].members == (1,) and net.cores[2].members == (2,)
    net.cut.clear()
    net.run(10.0)
    assert net.cores[1].members == net.cores[2].members == (1, 2)
    assert net.cores[1].ring_id == net.cores[2].ring_id
    for i in (1, 2):
        trans, reg = net.configs(i)[-2:]
        assert trans.members == (i,) and reg.joined == (3 - i,)


def test_leave_removes_node():
    net = Loop([1, 2, 3])
    net.start()
    net.run(5.0)
    net.cores[3].leave(net.now)
    net.collect(3)
    net.down.add(3)
    net.run(8.0)
    assert net.cores[1].members == net.cores[2].members == (1, 2)
    assert net.cores[1].stats["leaves_received"] == 1
