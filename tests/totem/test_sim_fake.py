"""The simulator, the invariant checker and pg, driven by a tiny fake core (no real Totem needed)."""

from __future__ import annotations

import random
import struct

import pytest

from aisexec.totem.api import (
    MULTICAST,
    ConfigChange,
    ConfKind,
    Delivery,
    Guarantee,
    MembState,
    QueueFull,
    Ready,
    RingId,
    TimerName,
)
from aisexec.totem.config import TotemConfig
from aisexec.totem.sim.invariants import check_all
from aisexec.totem.sim.runner import Simulation, run_scenario
from aisexec.totem.sim.scenario import generate

_PKT = struct.Struct("!BII")  # kind (0 request to sequencer, 1 sequenced data), seq, sender


class SequencerCore:
    """Fake core: node 1 sequences everything; static membership; correct only on a lossless network."""

    members: tuple[int, ...] = ()

    def __init__(self, nodeid: int, config: TotemConfig, ring_seq: int = 0, rng: random.Random | None = None) -> None:
        self.nodeid = nodeid
        self.ring_id = RingId(1, ring_seq + 4)
        self.state = MembState.OPERATIONAL
        self.max_payload = 1200
        self._ready = Ready()
        self._next = 1
        self._expect = 1
        self._held: dict[int, tuple[int, bytes]] = {}
        self._outstanding = 0
        self._req_out = 0
        self._req_in: dict[int, int] = {}
        self._req_held: dict[tuple[int, int], bytes] = {}

    @property
    def pending_count(self) -> int:
        return self._outstanding

    def start(self, now: float) -> None:
        self._ready.ring_seq_to_persist = self.ring_id.seq
        self._ready.events.append(ConfigChange(ConfKind.REGULAR, self.members, (), self.members, self.ring_id))
        self._ready.timers[TimerName.TOKEN_LOSS] = now + 1.0

    def submit(self, now: float, payload: bytes, guarantee: Guarantee = Guarantee.AGREED) -> None:
        if self._outstanding >= 5:
            raise QueueFull("fake queue full")
        self._outstanding += 1
        if self.nodeid == 1:
            self._sequence(self.nodeid, payload)
        else:
            self._req_out += 1
            self._ready.sends.append((1, _PKT.pack(0, self._req_out, self.nodeid) + payload))

    def _sequence(self, sender: int, payload: bytes) -> None:
        self._ready.sends.append((MULTICAST, _PKT.pack(1, self._next, sender) + payload))
        self._next += 1

    def receive(self, now: float, packet: bytes) -> None:
        kind, seq, sender = _PKT.unpack_from(packet)
        payload = packet[_PKT.size :]
        self._ready.timers[TimerName.TOKEN_LOSS] = now + 1.0
        if kind == 0:  # requests reach the sequencer reordered: put them back in sender order
            self._req_held[(sender, seq)] = payload
            while (sender, self._req_in.get(sender, 0) + 1) in self._req_held:
                self._req_in[sender] = self._req_in.get(sender, 0) + 1
                self._sequence(sender, self._req_held.pop((sender, self._req_in[sender])))
            return
        self._held.setdefault(seq, (sender, payload))
        while self._expect in self._held:
            sender, payload = self._held.pop(self._expect)
            if sender == self.nodeid:
                self._outstanding -= 1
            self._ready.events.append(Delivery(sender, payload, self.ring_id, self._expect, 0))
            self._expect += 1

    def timer_expired(self, now: float, name: TimerName) -> None:
        self._ready.timers[name] = now + 1.0

    def leave(self, now: float) -> None:
        self.state = MembState.GATHER

    def take_ready(self) -> Ready:
        ready, self._ready = self._ready, Ready()
        return ready


def fake_factory(nodes: int):
    """A core factory building sequencer cores for a ``nodes``-node cluster."""
    SequencerCore.members = tuple(range(1, nodes + 1))

    def make(nodeid, config, ring_seq, rng):
        return SequencerCore(nodeid, config, ring_seq, rng)

    return make


@pytest.mark.parametrize("seed", range(12))
def test_fault_free_runs_are_clean(seed: int) -> None:
    scenario = generate(seed, (2, 8), faults=False, safe_ratio=0.0)
    result = run_scenario(scenario, fake_factory(scenario.nodes))
    assert result.ok, [str(v) for v in result.violations]
    assert result.submitted > 0
    assert result.delivered == result.submitted * scenario.nodes


@pytest.mark.parametrize("seed", range(6))
def test_fragmented_traffic_through_pg_arrives_intact(seed: int) -> None:
    scenario = generate(seed, (2, 5), faults=False, safe_ratio=0.0, use_pg=True)
    scenario.large_ratio = 0.5
    scenario.large_sizes = (3000, 300_000)
    result = run_scenario(scenario, fake_factory(scenario.nodes))
    assert result.ok, [str(v) for v in result.violations]
    assert result.delivered == result.submitted * scenario.nodes


def test_same_seed_gives_identical_trace_hash() -> None:
    first = run_scenario(generate(3, (4, 4), faults=False, safe_ratio=0.0, use_pg=True), fake_factory(4))
    again = run_scenario(generate(3, (4, 4), faults=False, safe_ratio=0.0, use_pg=True), fake_factory(4))
    other = run_scenario(generate(4, (4, 4), faults=False, safe_ratio=0.0, use_pg=True), fake_factory(4))
    assert first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash


def _ran(seed: int = 1, nodes: int = 3) -> Simulation:
    scenario = generate(seed, (nodes, nodes), faults=False, safe_ratio=0.0, use_pg=False)
    sim = Simulation(scenario, fake_factory(nodes))
    sim.run()
    assert check_all(sim) == []
    return sim


def _msgs(sim: Simulation, nodeid: int) -> list[int]:
    return [i for i, e in enumerate(sim.nodes[nodeid].trace) if e[0] == "msg"]


def _names(sim: Simulation) -> set[str]:
    return {v.invariant for v in check_all(sim)}


def test_checker_catches_reordering() -> None:
    sim = _ran()
    trace = sim.nodes[2].trace
    i, j = _msgs(sim, 2)[:2]
    trace[i], trace[j] = trace[j], trace[i]
    assert "2 total order" in _names(sim)


def test_checker_catches_duplicate_and_creation() -> None:
    sim = _ran()
    trace = sim.nodes[3].trace
    trace.append(trace[_msgs(sim, 3)[0]])
    forged = list(trace[_msgs(sim, 3)[0]])
    forged[2] = (2, 999)
    forged[5] = 2
    trace.append(tuple(forged))
    names = _names(sim)
    assert "1 no duplicates" in names
    assert "1 no creation" in names


def test_checker_catches_missing_self_delivery_and_liveness() -> None:
    sim = _ran()
    own = [i for i in _msgs(sim, 1) if sim.nodes[1].trace[i][2][0] == 1]
    if not own:
        pytest.skip("seed gave node 1 nothing to send")
    del sim.nodes[1].trace[own[-1]]
    assert "10 self delivery" in _names(sim)


def test_checker_catches_bad_configuration_sequences() -> None:
    sim = _ran()
    trace = sim.nodes[2].trace
    reg = next(e for e in trace if e[0] == "conf")[2]
    lower = reg._replace(ring_id=RingId(1, reg.ring_id.seq - 1))
    trace.append(("conf", 1, lower))
    names = _names(sim)
    assert "6 alternation" in names
    assert "7 monotone ring ids" in names
    assert "4 configuration agreement" not in names
    trace.append(("conf", 1, reg._replace(kind=ConfKind.TRANSITIONAL, members=(1, 3), joined=())))
    assert "5 self inclusion" in _names(sim)


def test_checker_catches_virtual_synchrony_break() -> None:
    sim = _ran(nodes=3)
    reg = next(e for e in sim.nodes[1].trace if e[0] == "conf")[2]
    trans = ConfigChange(ConfKind.TRANSITIONAL, (1, 2, 3), (), (), reg.ring_id)
    new = ConfigChange(ConfKind.REGULAR, (1, 2, 3), (), (), RingId(1, reg.ring_id.seq + 4))
    for nodeid in (1, 2):
        sim.nodes[nodeid].trace += [("conf", 1, trans), ("conf", 1, new)]
    del sim.nodes[2].trace[_msgs(sim, 2)[-1]]
    names = _names(sim)
    assert "9 virtual synchrony" in names


def test_checker_allows_ring_id_reuse_only_after_the_rep_lost_its_ring_id_file() -> None:
    sim = _ran(nodes=3)
    reg = next(e for e in sim.nodes[1].trace if e[0] == "conf")[2]
    alone = reg._replace(members=(2,), joined=())
    sim.nodes[2].trace.append(("conf", 1, alone, 0))  # same ring id, other members, same epoch of rep n1
    assert "4 configuration agreement" in _names(sim)
    sim.nodes[2].trace[-1] = ("conf", 1, alone, 1)  # minted again after n1 restarted without its file
    assert "4 configuration agreement" not in _names(sim)


def test_restart_without_ring_id_file_starts_a_new_epoch() -> None:
    scenario = generate(2, (3, 3), faults=False, safe_ratio=0.0, use_pg=False)
    scenario.actions += [(0.3, ("crash", 1)), (0.6, ("restart", 1, False))]
    scenario.actions.sort(key=lambda item: item[0])
    sim = Simulation(scenario, fake_factory(3))
    sim.run()
    epochs = [e[3] for e in sim.nodes[2].trace if e[0] == "conf"]
    assert sim.nodes[1].ring_id_epoch == 1
    assert epochs[0] == 0


def test_partition_drops_packets_between_groups() -> None:
    sim = _ran(nodes=4)
    sim.net.partition([[1, 2], [3, 4]])
    assert sim.net.reachable(1, 2) and not sim.net.reachable(1, 3)
    assert sim.net.arrivals(2, 4) == []
    sim.net.heal()
    assert sim.net.reachable(1, 3)


def test_crash_and_restart_keep_the_persisted_ring_seq() -> None:
    scenario = generate(2, (3, 3), faults=False, safe_ratio=0.0, use_pg=False)
    scenario.actions += [
        (0.3, ("crash", 3)),
        (0.6, ("restart", 3, True)),
        (0.7, ("crash", 2)),
        (0.8, ("restart", 2, False)),
    ]
    scenario.actions.sort(key=lambda item: item[0])
    sim = Simulation(scenario, fake_factory(3))
    sim.run()
    starts = [e for e in sim.nodes[3].trace if e[0] == "start"]
    assert [s[2] for s in starts] == [0, 4]  # the fake core persists ring_seq + 4 at start
    assert [e[0] for e in sim.nodes[3].trace].count("crash") == 1
    assert [s[2] for s in sim.nodes[2].trace if s[0] == "start"] == [0, 0]
    assert sim.nodes[3].incarnation == 2


def test_paused_node_sees_its_input_late_but_in_order() -> None:
    scenario = generate(3, (3, 3), faults=False, safe_ratio=0.0, use_pg=False)
    scenario.actions.append((0.2, ("pause", 2, 0.5)))
    scenario.actions.sort(key=lambda item: item[0])
    sim = Simulation(scenario, fake_factory(3))
    sim.log_limit = 10**6
    sim.run()
    assert check_all(sim) == []
    times = [float(line.split()[0]) for line in sim.log if line.split()[1:2] == ["n2"]]
    assert times, "node 2 delivered nothing"
    assert not [t for t in times if 0.2 < t < 0.7]
    assert [t for t in times if t == pytest.approx(0.7)], "the backlog is handled when the pause ends"
