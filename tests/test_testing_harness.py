"""The in-process service cluster harness follows extended virtual synchrony."""

from __future__ import annotations

import struct

from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.testing import TRY_AGAIN, ServiceCluster
from aisexec.totem.api import ConfKind


class Counter(ServiceEngine):
    """A replicated counter: ADD multicasts; sync sends the value; confchgs recorded."""

    id = 90
    name = "CNT"

    def __init__(self) -> None:
        self.value = 0
        self.shadow = 0
        self.configs = []
        self.lib_handlers = {1: LibHandler(self.add, needs_cluster=True)}
        self.exec_handlers = {1: ExecHandler(self.on_add), 2: ExecHandler(self.on_state)}

    def exec_init(self, api):
        self.api = api

    def add(self, conn, rid, payload):
        self.api.mcast(self.id, 1, payload + struct.pack("!QI", conn.id, rid))

    def on_add(self, sender, payload):
        self.value += struct.unpack_from("!I", payload)[0]

    def confchg(self, kind, members, left, joined, ring_id):
        self.configs.append((kind, members))

    def sync_init(self, transitional, members, ring_id):
        self.shadow = 0
        self.sent = False

    def sync_process(self):
        if not self.sent:
            self.api.mcast(self.id, 2, struct.pack("!I", self.value))
            self.sent = True
        return False

    def on_state(self, sender, payload):
        self.shadow = max(self.shadow, struct.unpack("!I", payload)[0])

    def sync_activate(self):
        self.value = self.shadow


def test_requests_replicate_and_sync_merges_partitions():
    cluster = ServiceCluster([Counter])
    cluster.run()
    conn = cluster.connect(1, 90)
    cluster.request(conn, 1, struct.pack("!I", 5))
    cluster.run()
    assert [cluster.engine(n, 90).value for n in (1, 2, 3)] == [5, 5, 5]
    cluster.partition([[1, 2], [3]])
    cluster.run()
    cluster.request(conn, 1, struct.pack("!I", 10))
    cluster.run()
    assert [cluster.engine(n, 90).value for n in (1, 2, 3)] == [15, 15, 5]
    cluster.heal()
    cluster.run()
    assert [cluster.engine(n, 90).value for n in (1, 2, 3)] == [15, 15, 15]
    kinds = [k for k, _ in cluster.engine(3, 90).configs]
    assert kinds[0] is ConfKind.REGULAR and kinds[1:] == [ConfKind.TRANSITIONAL, ConfKind.REGULAR] * 2


def test_cluster_requests_get_try_again_during_sync_and_crash_restart():
    cluster = ServiceCluster([Counter])
    conn = cluster.connect(2, 90)
    rid = cluster.request(conn, 1, struct.pack("!I", 1))
    assert conn.response(rid)[0] == TRY_AGAIN  # the first sync round has not run yet
    cluster.run()
    cluster.request(conn, 1, struct.pack("!I", 7))
    cluster.run()
    cluster.crash(3)
    cluster.run()
    assert cluster.node(1).members() == (1, 2)
    cluster.restart(3)
    cluster.run()
    assert cluster.engine(3, 90).value == 7
    assert cluster.node(3).members() == (1, 2, 3) and cluster.node(3).ready()


class Batcher(ServiceEngine):
    """Collects the requests of one turn and multicasts them together from a call_soon callback."""

    id = 91
    name = "BAT"

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.batches: list[list[bytes]] = []
        self.lib_handlers = {1: LibHandler(self.add, needs_cluster=True)}
        self.exec_handlers = {1: ExecHandler(self.on_batch)}

    def exec_init(self, api):
        self.api = api

    def add(self, conn, rid, payload):
        if not self.pending:
            self.api.call_soon(self.flush)
        self.pending.append(bytes(payload))

    def flush(self):
        batch, self.pending = self.pending, []
        self.api.mcast(self.id, 1, b"".join(struct.pack("!H", len(p)) + p for p in batch))

    def on_batch(self, sender, payload):
        items, view = [], memoryview(payload)
        while view:
            (size,) = struct.unpack_from("!H", view)
            items.append(bytes(view[2 : 2 + size]))
            view = view[2 + size :]
        self.batches.append(items)


def test_call_soon_runs_after_the_work_in_hand_in_the_harness():
    cluster = ServiceCluster([Batcher], nodes=[1, 2])
    cluster.run()
    conn = cluster.connect(1, 91)
    cluster.request(conn, 1, b"a")
    assert cluster.engine(1, 91).pending == []  # deferred work ran once the request was handled
    cluster.run()
    assert [cluster.engine(n, 91).batches for n in (1, 2)] == [[[b"a"]], [[b"a"]]]


def test_executive_call_soon_runs_at_the_end_of_the_loop_turn_and_logs_what_raises(caplog):
    import gevent

    from aisexec.executive import Executive

    ran: list[str] = []

    def boom() -> None:
        ran.append("boom")
        raise RuntimeError("deferred failure")

    Executive.call_soon(None, lambda: ran.append("first"))  # type: ignore[arg-type]
    Executive.call_soon(None, boom)  # type: ignore[arg-type]
    Executive.call_soon(None, lambda: ran.append("after"))  # type: ignore[arg-type]
    assert ran == []  # not run inline
    gevent.sleep(0)
    assert ran == ["first", "boom", "after"]
    assert "deferred call" in caplog.text and "deferred failure" in caplog.text


def test_executive_call_later_fires_once_and_its_canceller_stops_it_before_or_while_it_runs():
    import gevent

    from aisexec.executive import Executive

    fired: list[str] = []
    Executive.call_later(None, 0.01, lambda: fired.append("due"))  # type: ignore[arg-type]
    cancel = Executive.call_later(None, 0.01, lambda: fired.append("cancelled"))  # type: ignore[arg-type]
    cancel()

    def sleeper() -> None:
        fired.append("started")
        gevent.sleep(1)
        fired.append("finished")

    stop = Executive.call_later(None, 0.0, sleeper)  # type: ignore[arg-type]
    gevent.sleep(0.05)
    assert fired == ["due", "started"] or fired == ["started", "due"]
    stop()  # running: killed, as a killed greenlet was
    gevent.sleep(0.05)
    assert "finished" not in fired and "cancelled" not in fired
    stop()  # twice: harmless
