"""heartbeat_failures_allowed, send_join and the reconfiguration before 32-bit counters wrap."""

from __future__ import annotations

from aisexec.totem.api import MULTICAST, ConfKind, MembState, TimerName
from aisexec.totem.config import SEQ_LIMIT, TotemConfig
from aisexec.totem.wire import T_JOIN
from tests.totem.srp_harness import Loop


def _loss_detected_after(config: TotemConfig) -> float:
    """Seconds from a node's silent death until a survivor leaves the old ring."""
    net = Loop([1, 2, 3], config)
    net.start()
    net.run(5.0)
    assert net.cores[1].members == (1, 2, 3)
    died = net.now
    net.down.add(3)
    core = net.cores[1]
    step = 0.005
    while core.state == MembState.OPERATIONAL:
        net.run(net.now + step)
        assert net.now < died + 10
    return net.now - died


def test_heartbeat_detects_a_lost_token_before_the_token_timeout() -> None:
    plain = TotemConfig(token=1000)
    beating = TotemConfig(token=1000, heartbeat_failures_allowed=2)
    assert beating.validate().heartbeat_timeout == 2 * beating.validate().token_retransmit + 50
    without = _loss_detected_after(plain)
    with_heartbeat = _loss_detected_after(beating)
    assert 0.7 < without <= 1.05  # the token-loss timer started at the last visit before the death
    assert with_heartbeat <= beating.validate().heartbeat_timeout / 1000 + 0.01
    assert with_heartbeat < without - 0.3


def test_heartbeat_not_below_token_is_off() -> None:
    cfg = TotemConfig(token=1000, heartbeat_failures_allowed=5).validate()
    assert cfg.heartbeat_timeout == 0
    net = Loop([1, 2], TotemConfig(token=1000, heartbeat_failures_allowed=5))
    net.start()
    net.run(3.0)
    assert not any(name == TimerName.HEARTBEAT for _node, name in net.timers)


def test_heartbeat_keeps_an_idle_ring_stable() -> None:
    net = Loop([1, 2, 3], TotemConfig(token=1000, heartbeat_failures_allowed=1))
    net.start()
    net.run(30.0)
    assert all(c.stats_counters["heartbeat_losses"] == 0 for c in net.cores.values())
    assert len(net.configs(1)) == len(net.configs(2)) == len(net.configs(3))
    assert net.cores[1].members == (1, 2, 3)


def test_send_join_delays_each_join_by_at_most_send_join_ms() -> None:
    net = Loop([1, 2], TotemConfig(token=1000, send_join=80))
    net.start()
    net.run(5.0)
    assert net.cores[1].members == (1, 2)
    net.down.add(2)
    core = net.cores[1]
    lost = net.timers.pop((1, TimerName.TOKEN_LOSS))
    core.timer_expired(lost, TimerName.TOKEN_LOSS)
    ready = core.take_ready()
    assert core.state == MembState.GATHER
    assert not [p for d, p in ready.sends if d == MULTICAST and p[3] == T_JOIN], "join left without delay"
    deadline = ready.timers[TimerName.SEND_JOIN]
    assert lost <= deadline <= lost + 0.080
    core.on_join_timer(lost + 0.001)  # a resend request while one is scheduled adds nothing
    assert not [p for d, p in core.take_ready().sends if p[3] == T_JOIN]
    core.timer_expired(deadline, TimerName.SEND_JOIN)
    joins = [p for d, p in core.take_ready().sends if d == MULTICAST and p[3] == T_JOIN]
    assert len(joins) == 1


def test_rings_form_and_reform_with_send_join() -> None:
    net = Loop([1, 2, 3, 4], TotemConfig(token=1000, send_join=80))
    net.start()
    net.run(6.0)
    assert all(c.members == (1, 2, 3, 4) for c in net.cores.values())
    net.down.add(4)
    net.run(15.0)
    assert all(net.cores[i].members == (1, 2, 3) for i in (1, 2, 3))


def test_ring_is_reformed_before_message_seq_reaches_its_limit() -> None:
    assert SEQ_LIMIT < 2**32 - 1
    net = Loop([1, 2, 3])
    net.start()
    net.run(5.0)
    for core in net.cores.values():
        core.seq_limit = 25
    first_ring = net.cores[1].ring_id
    for k in range(60):
        net.cores[1 + k % 3].submit(net.now, f"m{k}".encode())
        net.collect(1 + k % 3)
    net.run(30.0)
    orders = [net.deliveries(i) for i in (1, 2, 3)]
    assert len(orders[0]) == 60 and orders[0] == orders[1] == orders[2]
    assert sum(c.stats_counters["seq_wrap_reconfigurations"] for c in net.cores.values()) >= 2
    ring = net.cores[1].ring_id
    assert ring.seq > first_ring.seq
    regular = [c for c in net.configs(1) if c.kind == ConfKind.REGULAR]
    assert len(regular) >= 3 and all(c.members == (1, 2, 3) for c in regular[1:])
    assert all(c.my_high_seq_received < 25 for c in net.cores.values())


def test_ring_is_reformed_before_token_seq_reaches_its_limit() -> None:
    net = Loop([1, 2])
    net.start()
    net.run(5.0)
    for core in net.cores.values():
        core.token_seq_limit = net.cores[1].my_token_seq + 40
    before = net.cores[1].ring_id
    net.run(60.0)
    assert net.cores[1].stats_counters["seq_wrap_reconfigurations"] + \
        net.cores[2].stats_counters["seq_wrap_reconfigurations"] >= 1
    assert net.cores[1].ring_id.seq > before.seq
    assert net.cores[1].state == MembState.OPERATIONAL and net.cores[1].members == (1, 2)


def test_submit_many_takes_what_fits_in_order_and_refuses_oversize_frames() -> None:
    import pytest

    from aisexec.totem.api import MessageTooBig
    from aisexec.totem.srp_state import PENDING_CAPACITY

    net = Loop([1])
    net.start()
    net.run(1.0)
    core = net.cores[1]
    frames = [(f"f{i}".encode(), 0) for i in range(PENDING_CAPACITY + 5)]
    assert core.submit_many(net.now, frames) == PENDING_CAPACITY
    assert core.submit_many(net.now, frames) == 0
    net.collect(1)
    net.run(60.0)
    assert net.deliveries(1)[:3] == [b"f0", b"f1", b"f2"] and len(net.deliveries(1)) == PENDING_CAPACITY
    with pytest.raises(MessageTooBig):
        core.submit_many(net.now, [(b"ok", 0), (bytes(core.max_payload + 1), 0)])
    assert core.pending_count == 0
