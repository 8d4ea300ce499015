"""The guarantees of totem.md §9 that the seeded slice alone does not pin: SAFE across a change,
stale tokens (§9.15), pause detection (§2.9), and that the generator still reaches the hard cases.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from aisexec.totem.api import ConfigChange, Delivery, Guarantee, MembState, TimerName
from aisexec.totem.config import TotemConfig
from aisexec.totem.sim.online import parse_token
from aisexec.totem.sim.runner import Simulation, default_core_factory, run_scenario, run_seed
from aisexec.totem.sim.scenario import generate
from aisexec.totem.srp import SrpCore
from aisexec.totem.wire import Join, OrfToken, decode
from tests.totem.srp_harness import Loop


def _stream(net: Loop, node: int) -> list[tuple]:
    """``(kind, members)`` for configurations and ``(payload, guarantee)`` for deliveries, in order."""
    out: list[tuple] = []
    for event in net.events[node]:
        if isinstance(event, ConfigChange):
            out.append((event.kind.name, event.members))
        elif isinstance(event, Delivery):
            out.append((event.payload, event.guarantee))
    return out


class _DiesOnOrigination(Loop):
    """Node 3 goes down the moment node 1 originates something after ``trigger`` messages."""

    trigger: int | None = None

    def collect(self, i: int) -> None:
        if self.trigger is not None and i == 1 and self.cores[1].stats["messages_originated"] > self.trigger:
            self.down.add(3)
        super().collect(i)


def test_old_ring_safe_message_a_departed_member_lacked_is_delivered_in_the_transitional_configuration() -> None:
    """Question 1 of issue #13, settled for EVS: SAFE needs every member of the delivery configuration.

    Node 3 dies before it receives a SAFE message and an AGREED one sent behind it.  Nodes 1 and 2
    cannot know that 3 had them, so they must not deliver the SAFE message in the old regular
    configuration {1,2,3}: it comes after TRANSITIONAL {1,2}, and the AGREED message behind it
    follows it there (total order).  An AGREED message sent before the SAFE one is delivered in the
    old ring at once.
    """
    net = _DiesOnOrigination([1, 2, 3], TotemConfig(token=300))
    net.start()
    net.run(3.0)
    assert all(net.cores[i].members == (1, 2, 3) for i in (1, 2, 3))
    core = net.cores[1]
    net.trigger = core.stats["messages_originated"]  # node 3 dies as node 1 multicasts the three
    # queued together: node 1 is the idle ring's representative, and holds the token, so a submission
    # leaves at once (three submit calls would send the first alone, the others in the next ring)
    core.submit_many(net.now, [(b"agreed-before", Guarantee.AGREED), (b"safe", Guarantee.SAFE),
                               (b"agreed-after", Guarantee.AGREED)])
    net.collect(1)
    net.run(net.now + 5.0)
    for node in (1, 2):
        stream = _stream(net, node)
        trans = stream.index(("TRANSITIONAL", (1, 2)))
        assert stream.index((b"agreed-before", Guarantee.AGREED)) < trans
        assert trans < stream.index((b"safe", Guarantee.SAFE)) < stream.index((b"agreed-after", Guarantee.AGREED))
        assert stream.index((b"agreed-after", Guarantee.AGREED)) < stream.index(("REGULAR", (1, 2)))


def test_safe_message_every_member_has_is_delivered_in_the_regular_configuration() -> None:
    net = Loop([1, 2, 3], TotemConfig(token=300))
    net.start()
    net.run(3.0)
    net.cores[2].submit(net.now, b"safe", Guarantee.SAFE)
    net.collect(2)
    net.run(net.now + 2.0)
    for node in (1, 2, 3):
        assert _stream(net, node)[-1] == (b"safe", Guarantee.SAFE)
        assert net.cores[node].state == MembState.OPERATIONAL


def test_join_after_a_process_pause_is_dropped_until_the_pause_check_runs() -> None:
    """Question 2 of issue #13: totem.md §2.9's pause rule lives in the core, on the PAUSE_CHECK timer."""
    net = Loop([6], TotemConfig(token=1000))
    net.start()
    net.run(1.0)
    core = net.cores[6]
    assert core.state == MembState.OPERATIONAL and core.pause_stamp >= 0.8
    stamp = core.pause_stamp
    join = Join(9, 4, (6, 9), ()).encode()
    core.receive(stamp + 0.6, join)  # 600 ms without the 200 ms check running: the process was paused
    assert core.state == MembState.OPERATIONAL and core.stats["joins_after_pause"] == 1
    core.timer_expired(stamp + 0.61, TimerName.PAUSE_CHECK)
    ready = core.take_ready()
    assert ready.timers[TimerName.PAUSE_CHECK] == pytest.approx(stamp + 0.61 + 0.2)
    core.receive(stamp + 0.62, join)  # the sender's next join is fresh
    assert core.state == MembState.GATHER and core.stats["joins_after_pause"] == 1


def test_a_join_within_half_a_token_of_the_last_check_is_processed() -> None:
    net = Loop([6], TotemConfig(token=1000))
    net.start()
    net.run(1.0)
    core = net.cores[6]
    core.receive(core.pause_stamp + 0.45, Join(9, 4, (6, 9), ()).encode())
    assert core.stats["joins_after_pause"] == 0 and core.state == MembState.GATHER and 9 in core.proc_set


# ---------------------------------------------------------------- §9.15: stale tokens change nothing
_VOLATILE = {"out", "stats_counters", "rng", "_successor_of", "_dispatch", "token_callbacks"}


def _state(core: SrpCore) -> dict:
    return {k: copy.deepcopy(v) for k, v in vars(core).items() if k not in _VOLATILE}


def _stale_for(core: SrpCore, packet: bytes) -> bool:
    rep, rseq, token_seq, _seq, _rtr = parse_token(packet)
    return (core.memb_state not in (MembState.OPERATIONAL, MembState.RECOVERY)
            or (rep, rseq) != tuple(core.ring_id) or token_seq <= core.my_token_seq)


@pytest.mark.parametrize("seed", [3, 11, 12, 40])
def test_every_token_captured_earlier_in_a_run_changes_no_state_when_replayed(seed: int) -> None:
    """Property (§9.15): replay each node's captured tokens into a copy of its final core."""
    scenario = generate(seed, (3, 7))
    scenario.replay_tokens = 1.0  # capture every token and replay one at each token visit
    sim = Simulation(scenario, default_core_factory())
    sim.run()
    assert not [v for v in sim.online.violations if v.invariant.startswith("15")], sim.online.violations
    replayed = same_rep_older = 0
    for nodeid, node in sim.nodes.items():
        if not node.alive:
            continue
        packets = [p for p, _key in sim.online.recent.get(nodeid, ())]
        packets += [p for kept in sim.online.old_rings.get(nodeid, {}).values() for p in kept]
        core = node.core
        for packet in packets:
            if not _stale_for(core, packet):
                continue
            twin = copy.deepcopy(core)
            before = _state(twin)
            twin.receive(sim.now, packet)
            assert not twin.take_ready(), f"n{nodeid}: a stale token produced output"
            assert _state(twin) == before, f"n{nodeid}: a stale token changed state"
            replayed += 1
            rep, rseq = parse_token(packet)[:2]
            same_rep_older += rep == core.ring_id.rep and rseq < core.ring_id.seq
    assert replayed > 0
    assert sim.online.coverage["replayed_tokens"] > 0
    if seed == 3:
        assert same_rep_older > 0  # an older ring with the same representative: issue #13 class (b)


def test_an_older_ring_token_with_the_same_representative_is_rejected() -> None:
    """The ring check compares the whole ring id, not just its representative."""
    net = Loop([1, 2], TotemConfig(token=300))
    net.start()
    net.run(2.0)
    old_ring = net.cores[2].ring_id
    captured = net.cores[2].last_token_copy
    net.cut.add(frozenset((1, 2)))
    net.run(net.now + 3.0)
    net.cut.clear()
    net.run(net.now + 6.0)
    core = net.cores[1]
    assert core.members == (1, 2) and core.ring_id.rep == old_ring.rep and core.ring_id.seq > old_ring.seq
    assert captured is not None
    old = decode(captured)
    assert isinstance(old, OrfToken) and (old.ring_rep, old.ring_seq) == tuple(old_ring)
    # the old ring's token, as if it had gone on rotating: only the ring id tells it apart
    replayed = old._replace(sender=2, token_seq=core.my_token_seq + 1).encode()
    twin = copy.deepcopy(core)
    before = _state(twin)
    twin.receive(net.now, replayed)
    assert not twin.take_ready() and _state(twin) == before
    assert twin.stats["tokens_foreign"] == core.stats["tokens_foreign"] + 1


# ---------------------------------------------------------------- the generator reaches the hard cases
#: Scenarios of the current generator that, together, reach every situation issue #13 found unreached
#: (pg chains cut at both kinds of change, holes, SAFE in a transitional configuration, ...).
COVERAGE_SEEDS = (5, 25, 64, 120)


def test_the_scenarios_reach_safe_holes_and_pg_chains_cut_at_both_kinds_of_change() -> None:
    total: Counter[str] = Counter()
    for seed in COVERAGE_SEEDS:
        result = run_seed(seed, (2, 16))
        assert result.ok, [str(v) for v in result.violations[:5]]
        total += result.coverage
    for situation in ("safe_in_regular", "safe_in_transitional", "after_hole_in_transitional",
                      "pg_chain_at_transitional_kept", "pg_chain_at_regular", "pg_own_chain_at_transitional",
                      "pg_own_chain_at_regular", "stale_tokens_same_rep_other_ring", "replayed_tokens",
                      "released", "rx_dropped"):
        assert total[situation] > 0, (situation, total)


def test_a_core_that_ignores_safe_is_caught() -> None:
    """The SAFE checker itself: a core delivering SAFE messages as soon as they are contiguous fails."""

    class Hasty(SrpCore):
        def deliver_ready(self) -> None:
            self.safe_aru = 1 << 40
            super().deliver_ready()

    def factory(nodeid, config, ring_seq, rng):
        return Hasty(nodeid, config, ring_seq=ring_seq, rng=rng)

    failures = [r for r in (run_scenario(generate(s, (3, 8)), factory) for s in range(8)) if not r.ok]
    assert failures and any(v.invariant == "safe delivery" for r in failures for v in r.violations)
