"""The sync engine over a lossless agreed-order bus shared by several nodes."""

from __future__ import annotations

import pytest

from aisexec.sync import (
    PRIORITY_BULK,
    PRIORITY_NORMAL,
    Barrier,
    ServiceEntry,
    ServiceList,
    SyncEngine,
    decode,
    encode,
    encode_barrier,
    encode_service_list,
)
from aisexec.totem.api import ConfigChange, ConfKind, RingId
from openais.message import MessageError


class Recorder:
    """A participant that sends `chunks` shares of state and records its calls."""

    def __init__(self, service_id: int, log: list, chunks: int = 2) -> None:
        self.service_id = service_id
        self.log = log
        self.chunks = chunks
        self.left = 0

    def sync_init(self, transitional, members, ring_id):
        self.left = self.chunks
        self.log.append(("init", self.service_id, ring_id))

    def sync_process(self):
        self.left -= 1
        self.log.append(("process", self.service_id))
        return self.left > 0

    def sync_activate(self):
        self.log.append(("activate", self.service_id))

    def sync_abort(self):
        self.log.append(("abort", self.service_id))


class Bus:
    """Agreed order: every sent message is queued once and delivered to all engines in one order."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, bytes]] = []
        self.engines: dict[int, SyncEngine] = {}
        self.blocked = False

    def sender(self, nodeid: int):
        def send(payload: bytes) -> bool:
            if self.blocked:
                return False
            self.queue.append((nodeid, payload))
            return True

        return send

    def run_step(self) -> None:
        if not self.queue:
            for engine in self.engines.values():
                engine.pump()
            return
        sender, payload = self.queue.pop(0)
        for engine in self.engines.values():
            engine.on_message(sender, payload)

    def run(self) -> None:
        for _ in range(1000):
            if not self.queue:
                for engine in self.engines.values():
                    engine.pump()
                if not self.queue:
                    if not any(e.in_progress for e in self.engines.values()):
                        return
                    continue
            sender, payload = self.queue.pop(0)
            for engine in self.engines.values():
                engine.on_message(sender, payload)


def make(nodes, services_by_node):
    bus = Bus()
    logs = {n: [] for n in nodes}
    done = {n: [] for n in nodes}
    for n in nodes:
        parts = [Recorder(s, logs[n]) for s in services_by_node[n]]
        bus.engines[n] = SyncEngine(n, parts, bus.sender(n), on_complete=done[n].append)
    return bus, logs, done


def regular(members, seq):
    return ConfigChange(ConfKind.REGULAR, tuple(members), (), tuple(members), RingId(min(members), seq))


def transitional(members, seq):
    return ConfigChange(ConfKind.TRANSITIONAL, tuple(members), (), (), RingId(min(members), seq))


def test_all_nodes_activate_services_in_id_order_and_complete():
    bus, logs, done = make([1, 2, 3], {1: [8, 1], 2: [1, 8], 3: [8, 1]})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2, 3], 4))
    bus.run()
    for n in (1, 2, 3):
        activations = [e for e in logs[n] if e[0] == "activate"]
        assert activations == [("activate", 1), ("activate", 8)]
        assert done[n] == [RingId(1, 4)]
        assert not bus.engines[n].in_progress


def test_a_service_missing_on_one_node_does_not_block_the_round():
    bus, logs, done = make([1, 2], {1: [1, 64], 2: [1]})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2], 8))
    bus.run()
    assert done[1] == [RingId(1, 8)] and done[2] == [RingId(1, 8)]
    assert ("activate", 64) in logs[1]


def test_no_activation_before_every_member_reached_the_barrier():
    bus = Bus()
    logs = {1: [], 2: []}
    slow = Recorder(1, logs[2], chunks=50)
    bus.engines[1] = SyncEngine(1, [Recorder(1, logs[1])], bus.sender(1))
    bus.engines[2] = SyncEngine(2, [slow], bus.sender(2))
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2], 4))
    for _ in range(20):
        bus.run_step()
    assert ("activate", 1) not in logs[1]
    assert bus.engines[1].current_service == 1 and bus.engines[1].in_progress
    bus.run()
    assert ("activate", 1) in logs[1] and ("activate", 1) in logs[2]


def test_configuration_change_during_sync_aborts_and_restarts():
    bus, logs, done = make([1, 2, 3], {1: [1], 2: [1], 3: [1]})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2, 3], 4))
    # deliver only the service lists, so every node is inside service 1
    for _ in range(3):
        sender, payload = bus.queue.pop(0)
        for engine in bus.engines.values():
            engine.on_message(sender, payload)
    assert all(e.current_service == 1 for e in bus.engines.values())
    stale = [(3, encode_barrier(RingId(1, 4), 1)), *bus.queue]
    bus.queue = []
    for n in (1, 2):
        bus.engines[n].on_config_change(transitional([1, 2], 8))
        bus.engines[n].on_config_change(regular([1, 2], 8))
    del bus.engines[3]
    bus.queue[:0] = stale  # barriers of the superseded ring arrive late: ignored
    bus.run()
    for n in (1, 2):
        assert ("abort", 1) in logs[n]
        assert done[n] == [RingId(1, 8)]
        assert bus.engines[n].stats.stale_messages >= 1
        assert bus.engines[n].take_activations() == [(RingId(1, 8), 1)]


def test_send_refused_is_retried_on_pump():
    bus, _logs, done = make([1], {1: [1]})
    bus.blocked = True
    bus.engines[1].on_config_change(regular([1], 4))
    assert bus.queue == []
    bus.blocked = False
    bus.run()
    assert done[1] == [RingId(1, 4)]


def test_codec_round_trip_and_strictness():
    assert decode(encode_barrier(RingId(3, 9), 8)) == (2, RingId(3, 9), (8,))
    _kind, ring, entries = decode(encode_service_list(RingId(1, 4), [8, 1, 8]))
    assert entries == ((1, PRIORITY_NORMAL), (8, PRIORITY_NORMAL)) and ring == RingId(1, 4)
    _kind, _ring, entries = decode(encode_service_list(RingId(1, 4), {8: 0, 3: PRIORITY_BULK}))
    assert entries == ((3, PRIORITY_BULK), (8, 0))
    e = ServiceEntry
    for bad in (b"", b"\x02" * 5, encode_barrier(RingId(1, 1), 1) + b"x", encode_service_list(RingId(1, 1), [1])[:-1],
                b"\x09" + b"\x00" * 14, encode(ServiceList(1, 1, [e(3, 0), e(2, 0)])),
                encode(ServiceList(1, 1, [e(2, 0), e(2, 1)]))):
        with pytest.raises(MessageError):
            decode(bad)
    assert encode(Barrier(3, 9, 8)) == encode_barrier(RingId(3, 9), 8)


# -- priorities and tiers ----------------------------------------------------------------------------


def make_prio(nodes, services_by_node, chunks=None):
    """Like make(), with (service id, priority) pairs and optional per-service chunk counts."""
    bus = Bus()
    logs = {n: [] for n in nodes}
    done = {n: [] for n in nodes}
    for n in nodes:
        parts = []
        for sid, prio in services_by_node[n]:
            r = Recorder(sid, logs[n], chunks=(chunks or {}).get(sid, 2))
            r.sync_priority = prio
            parts.append(r)
        engine = SyncEngine(n, parts, bus.sender(n), on_complete=done[n].append)
        engine.release_listeners.append(lambda n=n, engine=engine: logs[n].append(
            ("release", tuple(s for s in (1, 3, 8, 64) if not engine.holds(s)))))
        bus.engines[n] = engine
    return bus, logs, done


def test_plan_orders_by_priority_then_id_and_bulk_goes_last():
    bus, logs, done = make_prio([1, 2, 3], {n: [(3, PRIORITY_BULK), (8, 0), (1, 0)] for n in (1, 2, 3)})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2, 3], 4))
    bus.run()
    for n in (1, 2, 3):
        assert [e[1] for e in logs[n] if e[0] == "activate"] == [1, 8, 3]
        assert bus.engines[n].plan == (1, 8, 3)
        assert done[n] == [RingId(1, 4)]
    assert logs[1] == logs[2] == logs[3]  # every member decided the same, in the same order


def test_members_disagreeing_on_a_priority_take_the_highest():
    bus, logs, _done = make_prio([1, 2], {1: [(3, PRIORITY_BULK), (8, 0)], 2: [(3, 0), (8, 0)]})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2], 4))
    bus.run()
    for n in (1, 2):
        assert [e[1] for e in logs[n] if e[0] == "activate"] == [8, 3]
        assert bus.engines[n].priority_of(3) == PRIORITY_BULK


def test_a_tier_is_released_once_all_of_it_is_active_while_bulk_still_syncs():
    services = [(1, 0), (8, 0), (3, PRIORITY_BULK)]
    bus, logs, done = make_prio([1, 2], {1: services, 2: services}, chunks={3: 40})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2], 4))
        assert all(engine.holds(s) for s in (1, 3, 8, 64))  # plan unknown: everything held
    for _ in range(2):  # both service lists
        bus.run_step()
    for n in (1, 2):
        engine = bus.engines[n]
        assert not engine.holds(64)  # outside the plan: free once the plan is known
        assert engine.holds(1) and engine.holds(8) and engine.holds(3)
        assert logs[n][0] == ("release", (64,)) and logs[n][1][:2] == ("init", 1)
    for _ in range(60):
        bus.run_step()
        if ("activate", 8) in logs[1]:
            break
    for n in (1, 2):
        engine = bus.engines[n]
        assert engine.in_progress and engine.current_service == 3
        assert not engine.holds(1) and not engine.holds(8) and engine.holds(3)
        # service 1 alone is no release: its tier (1 and 8) is released right after 8's activation
        activations = logs[n].index(("activate", 8))
        assert logs[n][activations + 1] == ("release", (1, 8, 64))
        assert ("release", (1, 64)) not in logs[n]
    bus.run()
    for n in (1, 2):
        assert not any(bus.engines[n].holds(s) for s in (1, 3, 8))
        assert logs[n][-1] == ("release", (1, 3, 8, 64)) and done[n] == [RingId(1, 4)]
    assert logs[1] == logs[2]


def test_abort_frees_everything():
    services = [(1, 0), (3, PRIORITY_BULK)]
    bus, logs, _done = make_prio([1, 2], {1: services, 2: services}, chunks={3: 40})
    for engine in bus.engines.values():
        engine.on_config_change(regular([1, 2], 4))
    for _ in range(20):
        bus.run_step()
    assert bus.engines[1].current_service == 3 and bus.engines[1].holds(3)
    bus.engines[1].on_config_change(transitional([1], 8))
    assert ("abort", 3) in logs[1] and not bus.engines[1].holds(3) and not bus.engines[1].in_progress


def test_out_of_range_priorities_are_clamped_to_what_the_list_carries():
    bus, _logs, _done = make_prio([1], {1: [(3, 999), (8, -5)]})
    bus.engines[1].on_config_change(regular([1], 4))
    bus.run()
    assert bus.engines[1].plan == (8, 3) and bus.engines[1].priority_of(3) == 255
