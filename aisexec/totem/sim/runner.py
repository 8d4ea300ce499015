"""The event loop: virtual clock, packet and timer delivery, faults, application load."""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.totem.api import MULTICAST, Guarantee, MessageTooBig, QueueFull, Ready
from aisexec.totem.config import TotemConfig
from aisexec.totem.pg import PgEndpoint
from aisexec.totem.sim.invariants import Violation, check_all
from aisexec.totem.sim.network import Network
from aisexec.totem.sim.node import SimNode, app_message
from aisexec.totem.sim.online import OnlineChecker
from aisexec.totem.sim.scenario import Scenario, generate
from aisexec.totem.srp_state import PENDING_CAPACITY

CoreFactory = Callable[[int, TotemConfig, int, random.Random], Any]

_PACKET, _TIMER, _ACTION, _SUBMIT, _DEFERRED = 0, 1, 2, 3, 4
#: Receive buffer of a paused node when the scenario sets none (packets; a kernel buffer of ~200 KiB).
PAUSED_RCVBUF = 1024
_T_MCAST = 1  # wire.T_MCAST, as the byte the network looks at


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
    #: how often the run reached situations worth reaching (SAFE in a transitional configuration, ...)
    coverage: Counter[str] = field(default_factory=Counter)

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
        #: ids of the messages submitted with SAFE delivery
        self.safe_ids: set[tuple[int, int]] = set()
        self.safe_rng = random.Random(scenario.seed ^ 0x5AFE)
        self.online = OnlineChecker(self)
        self.rx_dropped = 0

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
        node.rx_busy_until = 0.0
        node.rx_deferred = 0
        self.online.node_started(nodeid)
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

    def _drain(self, node: SimNode, token_visit: bool = False) -> None:
        ready: Ready = node.core.take_ready()
        self.online.on_ready(node, ready, token_visit)
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
            data = len(packet) > 3 and packet[3] == _T_MCAST
            for target in targets:
                if target not in self.nodes:
                    continue
                for delay in self.net.arrivals(node.nodeid, target, data):
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
            if self.scenario.safe_ratio and self.safe_rng.random() < self.scenario.safe_ratio:
                self.safe_ids.add((nodeid, node.counter))
        message = node.outbox[0]
        safe = (nodeid, node.counter) in self.safe_ids
        try:
            if node.pg is not None:
                node.pg.send(message, safe=safe)
            elif safe:
                node.core.submit(self.now, message, Guarantee.SAFE)
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
        if kind == _DEFERRED:
            node.rx_deferred -= 1
            kind = _PACKET
        if node.paused_until > self.now:
            if kind == _PACKET:
                # a paused process's socket buffer fills up; what does not fit is lost
                limit = self.scenario.rcvbuf or PAUSED_RCVBUF
                if node.rx_deferred >= limit:
                    self.rx_dropped += 1
                    return
                node.rx_deferred += 1
                kind = _DEFERRED
            self._push(node.paused_until, kind, data)  # a paused process sees everything late, in order
            return
        if kind == _SUBMIT:
            self._submit(nodeid)
        elif kind == _PACKET:
            rcvbuf = self.scenario.rcvbuf
            if rcvbuf:
                cost = self.scenario.rx_cost
                busy = node.rx_busy_until - self.now
                if busy > rcvbuf * cost:
                    self.rx_dropped += 1
                    return
                node.rx_busy_until = self.now + max(busy, 0.0) + cost
            self._receive(node, data[2])
            if self.scenario.replay_tokens and self.online.recent.get(nodeid):
                if self.online.replay_rng.random() < self.scenario.replay_tokens and data[2][3:4] == b"\x00":
                    old = self.online.replay_candidate(node)
                    if old is not None:
                        self.online.coverage["replayed_tokens"] += 1
                        self._receive(node, old)
        else:
            _, incarnation, name, gen = data
            if incarnation != node.incarnation or node.timer_gen.get(name) != gen:
                return
            node.timer_gen[name] = gen + 1
            node.core.timer_expired(self.now, name)
            self._drain(node)

    def _receive(self, node: SimNode, packet: bytes) -> None:
        before = self.online.before_packet(node, packet)
        node.core.receive(self.now, packet)
        self.online.after_packet(node, packet, before)
        self._drain(node, token_visit=before is not None and before[0] == "token")

    def _act(self, action: tuple) -> None:
        verb, *args = action
        self._note(f"fault {action}")
        if verb == "partition":
            self.net.partition(args[0])
        elif verb == "cut":
            self.net.cut.add((args[0], args[1]))
        elif verb == "heal":
            self.net.heal()
        elif verb == "dataloss":
            self.net.lose_data(args[0], args[1])
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

    def coverage(self) -> Counter[str]:
        """What the application layer saw: SAFE messages, pg chains cut at each kind of change, drops."""
        out: Counter[str] = Counter()
        for node in self.nodes.values():
            out.update(node.coverage)
        out["safe_submitted"] = len(self.safe_ids)
        out["rx_dropped"] = self.rx_dropped
        return +out

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
        violations = sim.online.final() + check_all(sim)
    submitted = sum(len(n.accepted) for n in sim.nodes.values())
    delivered = sum(1 for n in sim.nodes.values() for t in n.trace if t[0] == "msg")
    coverage = sim.online.coverage + sim.coverage()
    return SimResult(
        scenario.seed, scenario.nodes, violations, sim.trace_hash(), sim.events, delivered, submitted, sim.log[-60:],
        coverage,
    )


def run_seed(
    seed: int, nodes: tuple[int, int] = (2, 16), core_factory: CoreFactory | None = None, **kwargs: Any
) -> SimResult:
    """Generate the scenario of ``seed`` and run it."""
    return run_scenario(generate(seed, nodes, **kwargs), core_factory)
