"""Cluster message routing: handlers by service id, held messages during sync."""

from __future__ import annotations

from aisexec.plugins import LoadedService, PluginOrigin
from aisexec.routing import FLAG_SYNC, SYNC_SERVICE_ID, ClusterRouter, encode
from aisexec.service import EngineHost, ExecHandler, ServiceEngine
from aisexec.sync import SyncEngine
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
