"""The token linger: a visit waits a little for a local answer to what it just delivered.

Cores driven by the in-test network (virtual time, FIFO, no loss); node 1 sends requests, node 2
answers them "at once after the token came", the way a client in another process does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aisexec.totem import srp_ordering
from aisexec.totem.api import MULTICAST, MembState, TimerName
from aisexec.totem.config import TotemConfig
from aisexec.totem.wire import T_ORF_TOKEN, HoldCancel
from tests.totem.srp_harness import Loop

Hook = Callable[[Loop, int, bytes], None]


def _ring(linger_ms: float = float(TotemConfig().token_linger)) -> Loop:
    net = Loop([1, 2, 3])
    for core in net.cores.values():
        core.linger_ms = linger_ms
    net.start()
    net.run(2.0)
    assert all(c.state == MembState.OPERATIONAL and c.members == (1, 2, 3) for c in net.cores.values())
    return net


def _run(net: Loop, until: float, hook: Hook | None = None) -> None:
    """Loop.run with ``hook(net, target, packet)`` called after each packet is received and collected."""
    for _ in range(200_000):
        if net.queue:
            target, packet = net.queue.popleft()
            net.cores[target].receive(net.now, packet)
            net.collect(target)
            if hook is not None:
                hook(net, target, packet)
            continue
        if not net.timers:
            return
        key = min(net.timers, key=lambda k: (net.timers[k], k))
        if net.timers[key] > until:
            net.now = until
            return
        net.now = max(net.now, net.timers.pop(key))
        net.cores[key[0]].timer_expired(net.now, key[1])
        net.collect(key[0])
    raise AssertionError("too many steps")


def _is_token(packet: bytes) -> bool:
    return packet[3] == T_ORF_TOKEN


def _answer_after_token(ready_sends: list) -> Hook:
    """Node 2 answers each request once the token has reached it behind the request."""
    answered: set[bytes] = set()

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if target != 2 or not _is_token(packet):
            return
        for request in net.deliveries(2):
            if request.startswith(b"req") and request not in answered:
                answered.add(request)
                core = net.cores[2]
                core.submit(net.now, b"ans" + request[3:])
                ready = core.take_ready()
                ready_sends.append(list(ready.sends))  # (an empty Ready is reused by the core)
                # hand the rest to the network as collect() would
                for name, when in ready.timers.items():
                    if when is None:
                        net.timers.pop((2, name), None)
                    else:
                        net.timers[(2, name)] = when
                net.events[2].extend(ready.events)
                for dest, pkt in ready.sends:
                    for t in ([n for n in net.cores if n != 2] if dest == MULTICAST else [dest]):
                        net.queue.append((t, pkt))

    return hook


def _request(net: Loop, k: int) -> None:
    net.cores[1].submit(net.now, b"req%d" % k)
    net.collect(1)


def test_an_answer_submitted_after_the_token_came_leaves_on_that_visit() -> None:
    net = _ring()
    sends: list = []
    hook = _answer_after_token(sends)
    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    core = net.cores[2]
    assert core.stats_counters["token_lingers"] == 1
    assert core.stats_counters.get("token_lingers_unanswered", 0) == 0
    # the submission itself carried the answer out, with the token, to the successor
    assert [d for d, p in sends[0] if d == MULTICAST and p.endswith(b"ans0")]
    assert [d for d, p in sends[0] if d == 3 and _is_token(p)]
    assert net.deliveries(1)[-2:] == [b"req0", b"ans0"] and net.deliveries(3)[-2:] == [b"req0", b"ans0"]


def test_without_the_linger_the_answer_waits_for_the_next_visit() -> None:
    net = _ring(linger_ms=0)
    sends: list = []
    hook = _answer_after_token(sends)
    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    assert sends == [[]]  # nothing left with the submission: the token had gone on
    assert net.cores[2].stats_counters.get("token_lingers", 0) == 0
    assert net.deliveries(1)[-2:] == [b"req0", b"ans0"]


def _unanswered(net: Loop, k: int) -> float:
    """Request ``k`` from node 1 that node 2 does not answer; the time its wait ended."""
    core = net.cores[2]
    before = core.stats_counters.get("token_lingers_unanswered", 0)
    ended: list[float] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if not ended and core.stats_counters.get("token_lingers_unanswered", 0) > before:
            ended.append(net.now)

    _request(net, k)
    _run(net, net.now + 0.5, hook)
    assert len(ended) == 1 and core.stats_counters["token_lingers_unanswered"] == before + 1
    return ended[0]


def test_an_unanswered_wait_ends_on_the_hold_timer_and_the_node_backs_off() -> None:
    net = _ring()
    core = net.cores[2]
    armed: list[float] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if target == 2 and core.lingering is not None and not armed:
            armed.append(net.timers[(2, TimerName.HOLD)] - net.now)

    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    linger_s = TotemConfig().token_linger / 1000.0
    assert armed == [pytest.approx(linger_s)]
    assert core.stats_counters["token_lingers"] == core.stats_counters["token_lingers_unanswered"] == 1
    assert core.lingering is None and net.deliveries(3)[-1] == b"req0"
    # one unanswered wait of a node whose waits were answered: it still waits at the next visit
    assert core.linger_answered == pytest.approx(7 / 8) and core.linger_probe_ms == 0.0
    _unanswered(net, 1)
    assert core.linger_answered == pytest.approx(49 / 64) and core.linger_probe_ms == 0.0
    # the third in a row takes the estimate below 3/4: from now on it only probes, later each time
    ended = _unanswered(net, 2)
    assert core.linger_answered < srp_ordering.LINGER_ANSWERED_MIN
    assert core.linger_probe_ms == 1.0 and core.linger_probe_at == pytest.approx(ended + linger_s)
    ended = _unanswered(net, 3)
    assert core.linger_probe_ms == 2.0 and core.linger_probe_at == pytest.approx(ended + 2 * linger_s)
    core.linger_probe_at = net.now + 0.002  # as if it had just ended: requests before the probe go at once
    for k in range(4, 7):
        _request(net, k)
        _run(net, net.now + 0.0005)
    assert core.stats_counters["token_lingers"] == 4
    _run(net, core.linger_probe_at + 0.001)
    _unanswered(net, 7)  # the probe
    assert core.stats_counters["token_lingers"] == 5 and core.linger_probe_ms == 4.0
    assert [net.deliveries(i)[-8:] for i in (1, 2, 3)] == [[b"req%d" % k for k in range(8)]] * 3
    assert all(c.state == MembState.OPERATIONAL for c in net.cores.values())
    assert sum(c.stats_counters["token_losses"] for c in net.cores.values()) == 0


def test_a_node_whose_waits_go_unanswered_probes_every_quarter_second() -> None:
    net = _ring()
    core = net.cores[2]
    core.linger_answered, core.linger_probe_ms = 0.0, srp_ordering.LINGER_PROBE_MAX_MS
    ended = _unanswered(net, 0)
    assert core.linger_probe_ms == srp_ordering.LINGER_PROBE_MAX_MS
    assert core.linger_probe_at == pytest.approx(ended + 0.256)
    core.linger_probe_at = net.now + 0.256
    for k in range(1, 9):  # eligible visits before the probe is due (time, not a count of visits): none waits
        _request(net, k)
        _run(net, net.now + 0.01)
    assert core.stats_counters["token_lingers"] == 1
    _run(net, core.linger_probe_at + 0.001)
    _unanswered(net, 9)
    assert core.stats_counters["token_lingers"] == 2


def test_an_answer_makes_a_probing_node_wait_at_the_next_visit() -> None:
    net = _ring()
    core = net.cores[2]
    core.linger_answered, core.linger_probe_ms = 0.5, 64.0
    sends: list = []
    hook = _answer_after_token(sends)
    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    assert core.linger_answered == pytest.approx(0.5 + 0.5 / 8)
    assert core.linger_probe_ms == 0.0 and core.linger_probe_at < net.now
    _request(net, 1)
    _run(net, net.now + 0.5, hook)
    assert core.stats_counters["token_lingers"] == 2
    assert core.stats_counters.get("token_lingers_unanswered", 0) == 0
    assert net.deliveries(1)[-4:] == [b"req0", b"ans0", b"req1", b"ans1"]


def test_a_visit_waits_for_a_message_still_on_its_way() -> None:
    """Node 1's copy of node 2's answer comes after the token (node 2 sent it last): node 1 still waits."""
    net = _ring()
    core1 = net.cores[1]
    held: list[bytes] = []
    seen: list[tuple[int, int]] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        # hold node 2's data messages for node 1 back until node 1 has the token
        for i, (t, p) in enumerate(list(net.queue)):
            if t == 1 and not _is_token(p) and p.endswith(b"ans0"):
                del net.queue[i]
                held.append(p)
                break
        if target == 1 and _is_token(packet) and held:
            seen.append((core1.my_aru, core1.lingering is not None))
            for p in held:
                net.queue.append((1, p))
            held.clear()

    answered: set[bytes] = set()
    asked: list[bool] = []

    def both(net: Loop, target: int, packet: bytes) -> None:
        hook(net, target, packet)
        if target == 2 and _is_token(packet):  # node 2 answers once the request is in
            for request in net.deliveries(2):
                if request.startswith(b"req") and request not in answered:
                    answered.add(request)
                    net.cores[2].submit(net.now, b"ans" + request[3:])
                    net.collect(2)
                    hook(net, 0, b"")  # the copy for node 1 is held back at once
        if target == 1 and not _is_token(packet) and b"ans0" in net.deliveries(1) and core1.lingering is not None:
            asked.append(core1.lingering is not None)
            core1.submit(net.now, b"req1")  # node 1's client asks again once it has the answer
            ready = core1.take_ready()  # the question leaves on the visit that waited, with the token
            asked.append(any(d == MULTICAST and p.endswith(b"req1") for d, p in ready.sends)
                         and any(d == 2 and _is_token(p) for d, p in ready.sends))
            for name, when in ready.timers.items():
                if when is None:
                    net.timers.pop((1, name), None)
                else:
                    net.timers[(1, name)] = when
            net.events[1].extend(ready.events)
            for dest, pkt in ready.sends:
                net.queue.extend((t, pkt) for t in ([2, 3] if dest == MULTICAST else [dest]))

    _request(net, 0)
    _run(net, net.now + 0.5, both)
    assert seen and seen[0][1] is True  # the token came first, and node 1 waited for what it announced
    assert net.deliveries(3)[-4:] == [b"req0", b"ans0", b"req1", b"ans1"]
    assert asked[:2] == [True, True]


def test_a_busy_ring_does_not_wait() -> None:
    net = _ring()
    net.cores[1].submit_many(net.now, [(b"bulk%d" % k, 0) for k in range(srp_ordering.LINGER_MAX_DELIVERIES + 1)])
    net.collect(1)
    _run(net, net.now + 0.5)
    assert len([p for p in net.deliveries(2) if p.startswith(b"bulk")]) == srp_ordering.LINGER_MAX_DELIVERIES + 1
    assert net.cores[2].stats_counters.get("token_lingers", 0) == 0


def test_a_node_with_its_own_messages_does_not_wait() -> None:
    net = _ring()
    sent: list[int] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if target == 2 and not _is_token(packet) and not sent:
            sent.append(1)  # node 2 has something of its own queued before the token comes
            net.cores[2].submit(net.now, b"own")
            net.collect(2)

    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    assert net.cores[2].stats_counters.get("token_lingers", 0) == 0
    assert net.deliveries(1)[-2:] == [b"req0", b"own"]


def test_a_token_copy_arriving_during_a_wait_is_processed_once() -> None:
    net = _ring()
    core = net.cores[2]
    copies: list[bytes] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if target == 2 and _is_token(packet) and core.lingering is not None and not copies:
            copies.append(packet)
            seq = core.my_token_seq
            core.receive(net.now, packet)  # the predecessor's retransmission of the same token
            net.collect(2)
            assert core.lingering is None and core.my_token_seq > seq
            before = core.my_token_seq
            core.receive(net.now, packet)  # and once more: a duplicate now
            net.collect(2)
            assert core.my_token_seq == before

    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    assert copies and core.stats_counters["tokens_duplicate"] >= 1
    assert [net.deliveries(i)[-1] for i in (1, 2, 3)] == [b"req0"] * 3
    assert core.stats_counters.get("token_lingers_unanswered", 0) == 0  # the wait's timer was cancelled


def test_a_hold_cancel_from_another_member_ends_the_wait() -> None:
    net = _ring()
    core = net.cores[2]
    ended: list[bool] = []

    def hook(net: Loop, target: int, packet: bytes) -> None:
        if target == 2 and core.lingering is not None and not ended:
            ring = core.ring_id
            core.receive(net.now, HoldCancel(3, ring.rep, ring.seq).encode())
            ready = core.take_ready()
            ended.append(core.lingering is None)
            assert [d for d, p in ready.sends if d == 3 and _is_token(p)]
            net.queue.extend((3, p) for d, p in ready.sends if d == 3)

    _request(net, 0)
    _run(net, net.now + 0.5, hook)
    assert ended == [True]
    assert core.stats_counters.get("token_lingers_unanswered", 0) == 0


def test_a_wait_left_from_an_old_ring_is_dropped_unprocessed() -> None:
    net = _ring()
    net.run(net.now + 1.0)  # idle: the representative holds the token
    rep = net.cores[min(net.cores[2].members)]
    assert rep.lingering is not None and rep.idle_holding
    stale = rep.lingering._replace(ring_seq=rep.lingering.ring_seq - 4)
    rep.lingering = stale
    seq = rep.my_token_seq
    rep.release_held_token(net.now)  # the hold timer fires
    ready = rep.take_ready()
    assert rep.lingering is None and not rep.idle_holding and rep.held_token is None
    assert not [d for d, p in ready.sends if _is_token(p)] and rep.my_token_seq == seq


# ---------------------------------------------------------------- the idle representative's hold


def _idle_ring(token: int = 1000) -> Loop:
    net = Loop([1, 2, 3], TotemConfig(token=token))
    net.start()
    net.run(2.0)
    assert all(c.state == MembState.OPERATIONAL and c.members == (1, 2, 3) for c in net.cores.values())
    return net


def test_an_idle_ring_s_representative_holds_the_token_unprocessed() -> None:
    net = _idle_ring()
    rep = net.cores[1]
    assert rep.lingering is not None and rep.idle_holding and rep.held_token is None
    assert rep.lingering.token_seq == rep.my_token_seq + 3  # received (a visit at 2 and 3 since), not processed
    hold = TotemConfig().validate().hold / 1000.0
    assert net.timers[(1, TimerName.HOLD)] == pytest.approx(rep.linger_since + hold)
    assert (1, TimerName.TOKEN_RETRANSMIT) not in net.timers
    # the token still goes round once per hold, as the held copy did: a visit at each node per period
    before = {i: c.stats_counters["tokens_received"] for i, c in net.cores.items()}
    net.run(net.now + 20 * hold)
    for i, c in net.cores.items():
        assert 18 <= c.stats_counters["tokens_received"] - before[i] <= 21
    assert rep.stats_counters.get("token_lingers", 0) == 0  # a hold is not a linger
    assert sum(c.stats_counters["token_losses"] for c in net.cores.values()) == 0


def test_the_representative_s_own_message_leaves_on_the_held_visit() -> None:
    net = _idle_ring()
    rep = net.cores[1]
    assert rep.idle_holding
    rep.submit(net.now, b"first")
    ready = rep.take_ready()
    # the message and the token, at once (a released processed copy would have carried nothing)
    assert [p for d, p in ready.sends if d == MULTICAST and p.endswith(b"first")]
    assert [d for d, p in ready.sends if d == 2 and _is_token(p)]
    assert rep.lingering is None and not rep.idle_holding and rep.my_seq_unchanged <= 1
    net.cores[1].out = ready  # hand it to the network as collect() would
    net.collect(1)
    net.run(net.now + 0.1)
    assert [net.deliveries(i)[-1] for i in (1, 2, 3)] == [b"first"] * 3


def test_a_member_s_hold_cancel_ends_the_idle_hold() -> None:
    net = _idle_ring()
    rep = net.cores[1]
    assert rep.idle_holding
    net.cores[2].submit(net.now, b"from2")  # node 2 sees an idle ring: it multicasts a hold cancel
    net.collect(2)
    assert net.cores[2].stats_counters["hold_cancels_sent"] == 1
    t0 = net.now
    net.run(net.now + 0.05)
    assert rep.stats_counters["tokens_received"] > 0 and not (rep.idle_holding and rep.linger_since < t0)
    assert [net.deliveries(i)[-1] for i in (1, 2, 3)] == [b"from2"] * 3


def test_a_held_token_s_loss_counts_from_its_arrival() -> None:
    """The hold keeps the deadlines the held copy had: the token's arrival plus ``token`` (and heartbeat)."""
    net = _idle_ring()
    rep = net.cores[1]
    assert rep.idle_holding
    since = rep.linger_since
    assert net.timers[(1, TimerName.TOKEN_LOSS)] == pytest.approx(since + 1.0)
    rep.release_held_token(since + 0.1)  # the hold ends (as the HOLD timer would, earlier)
    ready = rep.take_ready()
    assert ready.timers[TimerName.TOKEN_LOSS] == pytest.approx(since + 1.0)
    assert [d for d, p in ready.sends if d == 2 and _is_token(p)]
    assert not rep.idle_holding and rep.lingering is None


def test_totem_token_linger_sets_the_wait_and_is_checked() -> None:
    from aisexec.totem.config import TotemConfig, TotemConfigError
    from aisexec.totem.srp import SrpCore

    assert SrpCore(1, TotemConfig().validate()).linger_ms == 1.0
    assert SrpCore(1, TotemConfig(token_linger=0).validate()).linger_ms == 0.0
    with pytest.raises(TotemConfigError, match=r"totem\.token_linger"):
        TotemConfig(token_linger=500).validate()


def test_a_one_sender_latency_stream_makes_silent_bystanders_linger_rarely() -> None:
    """bench/run.py's latency test: node 1 sends one message at a time, nodes 2 and 3 never answer.

    After three unanswered waits each bystander only probes, at doubling intervals up to a quarter
    second, so over 1.2 s of one-at-a-time traffic it waits at about 15 visits (3 + 9 probes up to
    the cap + about 3 at the cap), not at every one: the linger stays off the latency path.
    """
    net = _ring()
    count = 600
    for k in range(count):
        _request(net, k)
        _run(net, net.now + 0.002)
    _run(net, net.now + 0.01)
    for node in (2, 3):
        counters = net.cores[node].stats_counters
        assert 10 <= counters["token_lingers"] <= 16
        assert counters["token_lingers_unanswered"] == counters["token_lingers"]
        assert counters["token_linger_us"] <= 16 * 1000 * (TotemConfig().token_linger + 0.5)
    assert net.cores[1].stats_counters.get("token_lingers", 0) == 0  # its own messages: never waits
    assert [net.deliveries(i)[-count:] for i in (1, 2, 3)] == [[b"req%d" % k for k in range(count)]] * 3
