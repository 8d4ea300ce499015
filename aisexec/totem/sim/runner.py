"""The event loop: virtual clock, packet and timer delivery, faults, application load."""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.totem.api import MULTICAST, MessageTooBig, QueueFull, Ready
from aisexec.totem.config import TotemConfig
from aisexec.totem.pg import PgEndpoint
from aisexec.totem.sim.invariants import Violation, check_all
from aisexec.totem.sim.network import Network
from aisexec.totem.sim.node import SimNode, app_message
from aisexec.totem.sim.scenario import Scenario, generate
from aisexec.totem.srp_state import PENDING_CAPACITY

CoreFactory = Callable[[int, TotemConfig, int, random.Random], Any]

_PACKET, _TIMER, _ACTION, _SUBMIT = 0, 1, 2, 3


def default_core_factory() -> CoreFactory:
    """The real core (``aisexec.totem.srp.SrpCore``), imported lazily."""
    from aisexec.totem.srp import SrpCore

    def make(nodeid: int, config: TotemConfig, ring_seq: int, rng: random.Random) -> Any:
        return SrpCore(nodeid, config, ring_seq=ring_seq, rng=rng)

    return make


@dataclass
class SimResult:
    """Outcome of one scenario: violations, the trace hash, counters and a readable log tail."""

    seed: int
    nodes: int
    violations: list[Violation]
    trace_hash: str
    events: int
    delivered: int
    submitted: int
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations


class Simulation:
    """N cores on one virtual clock; every random choice comes from one ``random.Random``."""

    def __init__(self, scenario: Scenario, core_factory: CoreFactory, loopback: bool = True) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.config = scenario.config
        self.factory = core_factory
        self.loopback = loopback
        ids = list(range(1, scenario.nodes + 1))
        self.net = Network(self.rng, ids)
        self.nodes = {n: SimNode(n) for n in ids}
        for node in self.nodes.values():
            node.epoch_of = self._epoch_of
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.events = 0
        self.log: list[str] = []
        self.log_limit = 400
        self.max_events = 3_000_000
        self.stable_from = scenario.stable_from
        self.accepted_all: set[tuple[int, int]] = set()

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, at: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, data))

    def _note(self, text: str) -> None:
        self.log.append(f"{self.now:9.4f} {text}")
        if len(self.log) > self.log_limit:
            del self.log[: self.log_limit // 2]

    # -- node lifecycle ---------------------------------------------------------------------

    def start_node(self, nodeid: int, persist: bool = True) -> None:
        """Start (or restart) a node; with ``persist`` it gets its last persisted ring seq."""
        node = self.nodes[nodeid]
        node.incarnation += 1
        node.alive = True
        node.timer_gen = {}
        node.outbox.clear()
        node.accepted = []
        ring_seq = node.persisted_ring_seq if persist else 0
        if not persist:
            node.persisted_ring_seq = 0
            node.ring_id_epoch += 1
        rng = random.Random(self.rng.getrandbits(64))
        node.core = self.factory(nodeid, self.config, ring_seq, rng)
        if self.scenario.seq_limit is not None and hasattr(node.core, "seq_limit"):
            node.core.seq_limit = self.scenario.seq_limit  # exercise the reconfiguration before wrap
        if self.scenario.use_pg:
            withdraw = getattr(node.core, "withdraw_pending", None)
            node.pg = PgEndpoint(nodeid, node.core.max_payload, max_count=64, withdraw=withdraw)
        node.trace.append(("start", node.incarnation, ring_seq, persist))
        self._note(f"start n{nodeid} inc={node.incarnation} ring_seq={ring_seq}")
        node.core.start(self.now)
        self._drain(node)

    def crash_node(self, nodeid: int) -> None:
        """Discard a node's core: no goodbye, its timers and in-flight packets die with it."""
        node = self.nodes[nodeid]
        if not node.alive:
            return
        node.alive = False
        node.core = None
        node.pg = None
        node.trace.append(("crash", node.incarnation))
        self._note(f"crash n{nodeid}")

    def _epoch_of(self, rep: int) -> int:
        node = self.nodes.get(rep)
        return node.ring_id_epoch if node is not None else 0

    # -- the core's outputs -------------------------------------------------------------------

    def _drain(self, node: SimNode) -> None:
        ready: Ready = node.core.take_ready()
        if ready.ring_seq_to_persist is not None:
            node.persisted_ring_seq = ready.ring_seq_to_persist
            adopted = getattr(node.core, "ring_id", None)
            if adopted is not None:
                node.adopted(adopted)
        for name, deadline in ready.timers.items():
            gen = node.timer_gen.get(name, 0) + 1
            node.timer_gen[name] = gen
            if deadline is not None:
                self._push(max(deadline, self.now), _TIMER, (node.nodeid, node.incarnation, name, gen))
        for dest, packet in ready.sends:
            targets = [n for n in self.nodes if n != node.nodeid] if dest == MULTICAST else [dest]
            if dest == MULTICAST and self.loopback:
                targets.append(node.nodeid)
            for target in targets:
                if target not in self.nodes:
                    continue
                for delay in self.net.arrivals(node.nodeid, target):
                    self._push(self.now + delay, _PACKET, (target, node.nodeid, packet))
        if ready.events:
            for event in ready.events:
                self._note(f"n{node.nodeid} {_describe(event)}")
            node.record_events(ready.events)
            if node.pg is not None:
                self._pump(node)

    def _pump(self, node: SimNode) -> None:
        assert node.pg is not None
        core = node.core
        if hasattr(core, "submit_many"):  # the daemon's path: frames in batches, as much as there is room
            frames = node.pg.packer.take(PENDING_CAPACITY - core.pending_count)
            if frames and core.submit_many(self.now, frames) != len(frames):
                raise AssertionError("the core refused frames the packer was told it had room for")
            if frames:
                self._drain(node)
        elif node.pg.pump(lambda frame: core.submit(self.now, frame)):
            self._drain(node)

    # -- application load ---------------------------------------------------------------------

    def _submit(self, nodeid: int) -> None:
        node = self.nodes[nodeid]
        if not node.alive:
            return
        if not node.outbox:
            node.counter += 1
            size = self.scenario.message_size(self.rng)
            node.outbox.append(app_message(nodeid, node.counter, node.incarnation, size))
        message = node.outbox[0]
        try:
            if node.pg is not None:
                node.pg.send(message)
            else:
                node.core.submit(self.now, message)
        except QueueFull:
            node.queue_full += 1
            self._push(self.now + 0.02, _SUBMIT, nodeid)  # retry the same message later
            return
        except (MessageTooBig, ValueError):
            node.outbox.popleft()
            return
        node.outbox.popleft()
        node.accepted.append((nodeid, node.counter))
        self.accepted_all.add((nodeid, node.counter))
        if node.pg is not None:
            self._pump(node)
        else:
            self._drain(node)

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run the scenario to its end time."""
        scenario = self.scenario
        for at, action in scenario.actions:
            self._push(at, _ACTION, action)
        for at, nodeid in scenario.submits:
            self._push(at, _SUBMIT, nodeid)
        for nodeid in self.nodes:
            self.start_node(nodeid)
        end = scenario.end
        while self._heap and self._heap[0][0] <= end:
            at, _, kind, data = heapq.heappop(self._heap)
            self.now = at
            self.events += 1
            if self.events > self.max_events:
                raise RuntimeError(f"runaway: more than {self.max_events} events by t={self.now:.3f}s")
            self._step(kind, data)
        self.now = end

    def _step(self, kind: int, data: Any) -> None:
        if kind == _ACTION:
            self._act(data)
            return
        nodeid = data if kind == _SUBMIT else data[0]
        node = self.nodes[nodeid]
        if not node.alive:
            return
        if node.paused_until > self.now:
            self._push(node.paused_until, kind, data)  # a paused process sees everything late, in order
            return
        if kind == _SUBMIT:
            self._submit(nodeid)
        elif kind == _PACKET:
            node.core.receive(self.now, data[2])
            self._drain(node)
        else:
            _, incarnation, name, gen = data
            if incarnation != node.incarnation or node.timer_gen.get(name) != gen:
                return
            node.timer_gen[name] = gen + 1
            node.core.timer_expired(self.now, name)
            self._drain(node)

    def _act(self, action: tuple) -> None:
        verb, *args = action
        self._note(f"fault {action}")
        if verb == "partition":
            self.net.partition(args[0])
        elif verb == "cut":
            self.net.cut.add((args[0], args[1]))
        elif verb == "heal":
            self.net.heal()
        elif verb == "faults":
            self.net.set_faults(*args)
        elif verb == "crash":
            self.crash_node(args[0])
        elif verb == "restart":
            if not self.nodes[args[0]].alive:
                self.start_node(args[0], persist=args[1])
        elif verb == "pause":
            node = self.nodes[args[0]]
            node.paused_until = max(node.paused_until, self.now + args[1])
        elif verb == "leave":
            node = self.nodes[args[0]]
            if node.alive and node.paused_until <= self.now:
                node.core.leave(self.now)
                self._drain(node)
                self.crash_node(args[0])

    def trace_hash(self) -> str:
        """Hash of every node's trace: equal seeds must give equal hashes."""
        digest = hashlib.blake2b(digest_size=16)
        for nodeid in sorted(self.nodes):
            digest.update(repr((nodeid, self.nodes[nodeid].trace)).encode())
        return digest.hexdigest()


def _describe(event: Any) -> str:
    if hasattr(event, "kind"):
        return f"{event.kind.name} ring={event.ring_id} members={event.members} left={event.left} joined={event.joined}"
    return f"deliver from={event.sender} ring={event.ring_id} seq={event.seq} len={len(event.payload)}"


def run_scenario(scenario: Scenario, core_factory: CoreFactory | None = None, loopback: bool = True) -> SimResult:
    """Run one scenario and check the invariants; exceptions from the core become violations."""
    sim = Simulation(scenario, core_factory or default_core_factory(), loopback=loopback)
    violations: list[Violation] = []
    try:
        sim.run()
    except Exception as exc:  # a crash of the core under test is a finding, reported with its seed
        import traceback

        violations.append(Violation("exception", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    if not violations:
        violations = check_all(sim)
    submitted = sum(len(n.accepted) for n in sim.nodes.values())
    delivered = sum(1 for n in sim.nodes.values() for t in n.trace if t[0] == "msg")
    return SimResult(
        scenario.seed, scenario.nodes, violations, sim.trace_hash(), sim.events, delivered, submitted, sim.log[-60:]
    )


def run_seed(
    seed: int, nodes: tuple[int, int] = (2, 16), core_factory: CoreFactory | None = None, **kwargs: Any
) -> SimResult:
    """Generate the scenario of ``seed`` and run it."""
    return run_scenario(generate(seed, nodes, **kwargs), core_factory)
