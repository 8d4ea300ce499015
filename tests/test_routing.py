"""Cluster message routing: handlers by service id, held messages during sync, released per priority tier."""

from __future__ import annotations

from aisexec import routing
from aisexec.plugins import LoadedService, PluginOrigin
from aisexec.routing import FLAG_SYNC, SYNC_SERVICE_ID, ClusterRouter, encode
from aisexec.service import EngineHost, ExecHandler, ServiceEngine
from aisexec.sync import PRIORITY_BULK, SyncEngine
from aisexec.totem.api import ConfigChange, ConfKind, RingId


class Engine(ServiceEngine):
    """Records cluster messages and lifecycle calls; one sync share per round."""

    id = 5
    name = "REC"

    def __init__(self) -> None:
        self.log: list = []
        self.exec_handlers = {1: ExecHandler(self.on_msg), 2: ExecHandler(self.boom)}

    def on_msg(self, sender, payload):
        self.log.append(("msg", sender, bytes(payload)))

    def boom(self, sender, payload):
        raise RuntimeError("handler bug")

    def confchg(self, kind, members, left, joined, ring_id):
        self.log.append(("confchg", kind, members))

    def sync_process(self):
        return False

    def sync_activate(self):
        self.log.append(("activate",))

    def sync_abort(self):
        self.log.append(("abort",))


class Participant:
    def __init__(self, host):
        self.service_id = 5
        self.host = host

    def sync_init(self, transitional, members, ring_id):
        self.host.hook.sync_init(transitional=transitional, members=members, ring_id=ring_id)

    def sync_process(self):
        return bool(self.host.hook.sync_process())

    def sync_activate(self):
        self.host.hook.sync_activate()

    def sync_abort(self):
        self.host.hook.sync_abort()


def build():
    engine = Engine()
    host = EngineHost(engine)
    sent: list[bytes] = []
    sync = SyncEngine(1, [Participant(host)], lambda p: sent.append(p) or True)
    entry = LoadedService(engine, host, PluginOrigin("d", "1", "rec", "x"))
    router = ClusterRouter({5: entry}, sync)
    sync._on_complete = router.sync_completed
    return engine, router, sent


def regular(seq):
    return ConfigChange(ConfKind.REGULAR, (1,), (), (1,), RingId(1, seq))


def test_messages_during_sync_are_held_until_the_round_completes():
    engine, router, sent = build()
    router.config_change(regular(4))
    assert ("confchg", ConfKind.REGULAR, (1,)) in engine.log
    router.deliver(2, encode(5, 1, b"early"))
    router.deliver(2, encode(5, 1, b"sync-state", flags=FLAG_SYNC))
    assert ("msg", 2, b"sync-state") in engine.log
    assert ("msg", 2, b"early") not in engine.log and router.held_count == 1
    # feed our own sync control messages back, as the ring would
    while sent:
        router.deliver(1, encode(SYNC_SERVICE_ID, 0, sent.pop(0)))
    assert engine.log[-2:] == [("activate",), ("msg", 2, b"early")]
    router.deliver(2, encode(5, 1, b"late"))
    assert engine.log[-1] == ("msg", 2, b"late")


def test_abort_applies_held_messages_before_the_next_round():
    engine, router, sent = build()
    router.config_change(regular(4))
    router.deliver(1, encode(SYNC_SERVICE_ID, 0, sent.pop(0)))  # the service list: service 5 starts
    router.deliver(2, encode(5, 1, b"held"))
    router.config_change(ConfigChange(ConfKind.TRANSITIONAL, (1,), (2,), (), RingId(1, 8)))
    assert ("abort",) in engine.log
    assert engine.log.index(("abort",)) < engine.log.index(("msg", 2, b"held"))
    assert router.held_count == 0


def test_bad_messages_are_counted_and_contained():
    engine, router, _sent = build()
    router.deliver(3, b"\x00")
    router.deliver(3, encode(99, 1, b""))
    router.deliver(3, encode(5, 42, b""))
    router.deliver(3, encode(5, 2, b""))
    router.deliver(3, encode(SYNC_SERVICE_ID, 0, b"junk"))
    router.deliver(3, encode(5, 1, b"ok"))
    s = router.stats
    assert (s.malformed, s.unknown_service, s.unknown_message, s.handler_errors) == (2, 1, 1, 1)
    assert engine.log[-1] == ("msg", 3, b"ok")


# -- per-service release over several nodes -----------------------------------------------------------


class Svc(ServiceEngine):
    """A service of a multi-node router test: logs what it applies; ``chunks`` sync shares per round."""

    def __init__(self, sid: int, log: list, bus: MultiBus, node: int, priority: int = 0, chunks: int = 1) -> None:
        self.id = sid
        self.name = f"S{sid}"
        self.sync_priority = priority
        self.log = log
        self.bus = bus
        self.node = node
        self.chunks = chunks
        self.left = 0
        self.exec_handlers = {1: ExecHandler(self.on_msg), 2: ExecHandler(self.on_sync)}

    def on_msg(self, sender, payload):
        self.log.append(("msg", self.id, sender, bytes(payload)))

    def on_sync(self, sender, payload):
        self.log.append(("sync", self.id, sender))

    def sync_init(self, transitional, members, ring_id):
        self.left = self.chunks

    def sync_process(self):
        self.bus.send(self.node, encode(self.id, 2, b"", flags=FLAG_SYNC))
        self.left -= 1
        return self.left > 0

    def sync_activate(self):
        self.log.append(("activate", self.id))

    def sync_abort(self):
        self.log.append(("abort", self.id))


class SvcParticipant(Participant):
    def __init__(self, host, engine):
        super().__init__(host)
        self.service_id = engine.id
        self.sync_priority = engine.sync_priority


class MultiBus:
    """Agreed order over several nodes' routers: one queue, every message delivered to all in one order."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, bytes]] = []
        self.routers: dict[int, ClusterRouter] = {}
        self.syncs: dict[int, SyncEngine] = {}
        self.logs: dict[int, list] = {}

    def send(self, node: int, message: bytes) -> bool:
        self.queue.append((node, message))
        return True

    def add(self, node: int, services: list[tuple[int, int, int]]) -> None:
        """``services``: (id, priority, sync chunks) of each service of ``node``."""
        log = self.logs[node] = []
        entries, parts = {}, []
        for sid, prio, chunks in services:
            engine = Svc(sid, log, self, node, prio, chunks)
            host = EngineHost(engine)
            entries[sid] = LoadedService(engine, host, PluginOrigin("d", "1", engine.name, "x"))
            parts.append(SvcParticipant(host, engine))
        sync = SyncEngine(node, parts, lambda p, node=node: self.send(node, encode(SYNC_SERVICE_ID, 0, p)))
        router = ClusterRouter(entries, sync)
        sync._on_complete = router.sync_completed
        self.syncs[node], self.routers[node] = sync, router

    def config(self, members: list[int], seq: int) -> None:
        for n in members:
            self.routers[n].config_change(ConfigChange(ConfKind.REGULAR, tuple(members), (), (), RingId(1, seq)))

    def step(self) -> bool:
        """Deliver one message everywhere, or pump every node when nothing is queued; False when quiet."""
        if not self.queue:
            for s in self.syncs.values():
                s.pump()
            return bool(self.queue)
        sender, message = self.queue.pop(0)
        for n in sorted(self.routers):
            self.routers[n].deliver(sender, message)
        return True

    def run_until(self, cond, limit: int = 10_000) -> None:
        for _ in range(limit):
            if cond():
                return
            self.step()
        raise AssertionError("condition never met")


CPG, CLM, BULK = 8, 1, 3


def cluster(bulk_chunks: int = 30) -> MultiBus:
    bus = MultiBus()
    for n in (1, 2, 3):
        bus.add(n, [(CLM, 0, 1), (BULK, PRIORITY_BULK, bulk_chunks), (CPG, 0, 1)])
    return bus


def applied(log: list, sid: int) -> list[bytes]:
    return [e[3] for e in log if e[0] == "msg" and e[1] == sid]


def test_a_normal_service_is_served_while_a_bulk_service_still_syncs():
    bus = cluster()
    bus.config([1, 2, 3], 4)
    bus.run_until(lambda: all(("activate", CPG) in log for log in bus.logs.values()))
    bus.send(2, encode(CPG, 1, b"live"))
    bus.run_until(lambda: all(applied(log, CPG) == [b"live"] for log in bus.logs.values()))
    for n in (1, 2, 3):
        assert bus.syncs[n].in_progress and bus.syncs[n].current_service == BULK
        assert ("activate", BULK) not in bus.logs[n]
        assert bus.routers[n].held_count == 0
    bus.run_until(lambda: not any(s.in_progress for s in bus.syncs.values()))
    assert bus.logs[1] == bus.logs[2] == bus.logs[3]


def test_held_messages_are_released_in_order_at_their_tier_and_before_later_ones():
    bus = cluster()
    bus.config([1, 2, 3], 4)
    # in flight from the previous configuration: delivered before the plan is known
    bus.queue[1:1] = [(2, encode(CPG, 1, b"c1")), (3, encode(BULK, 1, b"b1")), (1, encode(CLM, 1, b"m1")),
                      (3, encode(CPG, 1, b"c2"))]
    bus.run_until(lambda: bus.syncs[1].plan != ())
    assert all(r.held_count == 4 for r in bus.routers.values())
    bus.run_until(lambda: bus.syncs[1].current_service == BULK)
    for n in (1, 2, 3):
        log = bus.logs[n]
        at = log.index(("activate", CPG))
        # CLM's and CPG's held messages go, in delivery order, right after the tier's last activation
        assert log[at + 1: at + 4] == [("msg", CPG, 2, b"c1"), ("msg", CLM, 1, b"m1"), ("msg", CPG, 3, b"c2")]
        assert bus.routers[n].held_count == 1 and bus.routers[n].held_for(BULK) == 1
    bus.send(1, encode(BULK, 1, b"b2"))  # delivered during the bulk sync: held behind b1
    bus.run_until(lambda: bus.routers[1].held_count == 2)
    bus.run_until(lambda: not bus.syncs[1].in_progress)
    bus.send(2, encode(BULK, 1, b"b3"))
    bus.run_until(lambda: not bus.queue)
    for n in (1, 2, 3):
        log = bus.logs[n]
        at = log.index(("activate", BULK))
        assert log[at + 1: at + 3] == [("msg", BULK, 3, b"b1"), ("msg", BULK, 1, b"b2")]
        assert applied(log, BULK) == [b"b1", b"b2", b"b3"]
    assert bus.logs[1] == bus.logs[2] == bus.logs[3]
    assert bus.routers[1].stats.held == 5 and bus.routers[1].stats.held_released == 5


def test_abort_during_the_bulk_tier_releases_everything_before_the_next_round():
    bus = cluster()
    bus.config([1, 2, 3], 4)
    bus.run_until(lambda: bus.syncs[1].current_service == BULK)
    bus.send(3, encode(BULK, 1, b"held"))
    bus.run_until(lambda: bus.routers[1].held_count == 1)
    for n in (1, 2):
        bus.routers[n].config_change(ConfigChange(ConfKind.TRANSITIONAL, (1, 2), (3,), (), RingId(1, 8)))
        log = bus.logs[n]
        assert log[-2:] == [("abort", BULK), ("msg", BULK, 3, b"held")]
        assert bus.routers[n].held_count == 0


def test_nothing_held_is_dropped_past_the_warning_bound(monkeypatch, caplog):
    monkeypatch.setattr(routing, "HELD_WARNING", 3)
    bus = cluster()
    bus.config([1, 2, 3], 4)
    bus.run_until(lambda: bus.syncs[1].current_service == BULK)
    for i in range(6):
        bus.send(2, encode(BULK, 1, b"%d" % i))
    bus.run_until(lambda: bus.routers[1].held_count == 6)
    assert bus.routers[1].stats.held_over_warning == 3
    assert sum("held by a sync round" in r.message for r in caplog.records) == 3  # once per node
    bus.run_until(lambda: not bus.syncs[1].in_progress)
    assert applied(bus.logs[1], BULK) == [b"%d" % i for i in range(6)]
