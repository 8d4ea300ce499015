"""CLM engine on the in-process cluster: node table, view numbers, tracking and error codes."""

from __future__ import annotations

import pytest

from aisexec.testing import ServiceCluster
from openais import clm
from openais.clm import ClusterChange, Request
from openais.errors import SaAisError
from plugins.clm.engine import ClmEngine

OK = SaAisError.OK
SID = clm.SERVICE_ID


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([ClmEngine], nodes=[1, 2, 3])
    c.run()
    return c


def track(c: ServiceCluster, conn, flags: int, want_buffer: bool = False) -> tuple[int, bytes]:
    rid = c.request(conn, Request.TRACK, clm.TrackRequest.pack(flags, want_buffer))
    return conn.response(rid)


def node_get(c: ServiceCluster, conn, node_id: int) -> tuple[int, bytes]:
    return conn.response(c.request(conn, Request.NODE_GET, clm.NodeGetRequest.pack(node_id)))


def callbacks(conn) -> list[tuple[clm.NotificationBuffer, int, int]]:
    return [(b, n, e) for n, e, b in (clm.TrackCallback.decode(p) for m, p in conn.dispatched
                                       if m == clm.Callback.TRACK)]


def changes(buffer: clm.NotificationBuffer) -> dict[int, ClusterChange]:
    return {n.node.node_id: n.cluster_change for n in buffer.notifications}


def test_every_node_agrees_on_the_table(cluster):
    tables = [cluster.engine(n, SID).current_buffer() for n in (1, 2, 3)]
    assert tables[0] == tables[1] == tables[2]
    assert tables[0].view_number == 1
    nodes = [n.node for n in tables[0].notifications]
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert [n.node_address for n in nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert all(n.member and n.initial_view_number == 1 and n.boot_timestamp > 0 and n.node_name for n in nodes)


def test_track_current_returns_buffer_or_callback(cluster):
    conn = cluster.connect(2, SID)
    error, payload = track(cluster, conn, clm.TRACK_CURRENT, want_buffer=True)
    assert error == OK
    buffer = clm.NotificationBuffer.decode(payload)
    assert buffer.view_number == 1
    assert set(changes(buffer).values()) == {ClusterChange.NO_CHANGE}
    error, payload = track(cluster, conn, clm.TRACK_CURRENT, want_buffer=False)
    assert (error, payload) == (OK, b"")
    [(buf, members, err)] = callbacks(conn)
    assert (buf, members, err) == (buffer, 3, OK)
    # CURRENT alone does not start tracking: TrackStop has nothing to stop.
    assert conn.response(cluster.request(conn, Request.TRACK_STOP))[0] == SaAisError.NOT_EXIST


def test_changes_vs_changes_only_across_crash_and_restart(cluster):
    full = cluster.connect(1, SID)
    only = cluster.connect(2, SID)
    assert track(cluster, full, clm.TRACK_CHANGES)[0] == OK
    assert track(cluster, only, clm.TRACK_CHANGES_ONLY)[0] == OK
    boot_before = cluster.engine(3, SID).boot_timestamp

    cluster.crash(3)
    cluster.run()
    [(buf, members, err)] = callbacks(full)
    assert (buf.view_number, members, err) == (2, 2, OK)
    assert changes(buf) == {1: ClusterChange.NO_CHANGE, 2: ClusterChange.NO_CHANGE, 3: ClusterChange.LEFT}
    left = next(n.node for n in buf.notifications if n.cluster_change == ClusterChange.LEFT)
    assert not left.member and left.boot_timestamp == boot_before
    [(buf, members, _)] = callbacks(only)
    assert (buf.view_number, members) == (2, 2)
    assert changes(buf) == {3: ClusterChange.LEFT}

    cluster.restart(3)
    cluster.run()
    (buf, members, _) = callbacks(full)[-1]
    assert (buf.view_number, members) == (3, 3)
    assert changes(buf) == {1: ClusterChange.NO_CHANGE, 2: ClusterChange.NO_CHANGE, 3: ClusterChange.JOINED}
    (buf, _, _) = callbacks(only)[-1]
    assert changes(buf) == {3: ClusterChange.JOINED}
    node3 = buf.notifications[0].node
    assert node3.member and node3.initial_view_number == 3
    # Old members keep the view they joined in; the restarted node agrees on everything.
    assert cluster.engine(3, SID).current_buffer() == cluster.engine(1, SID).current_buffer()
    assert [n.node.initial_view_number for n in cluster.engine(3, SID).current_buffer().notifications] == [1, 1, 3]


def test_view_number_grows_through_partition_and_heal(cluster):
    conn = cluster.connect(3, SID)
    assert track(cluster, conn, clm.TRACK_CHANGES_ONLY)[0] == OK
    cluster.partition([[1, 2], [3]])
    cluster.run()
    assert cluster.engine(1, SID).view_number == 2
    assert cluster.engine(3, SID).view_number == 2
    assert changes(callbacks(conn)[-1][0]) == {1: ClusterChange.LEFT, 2: ClusterChange.LEFT}
    cluster.heal()
    cluster.run()
    views = {cluster.engine(n, SID).view_number for n in (1, 2, 3)}
    assert views == {3}
    assert changes(callbacks(conn)[-1][0]) == {1: ClusterChange.JOINED, 2: ClusterChange.JOINED}


def test_track_stop_and_closed_connections_get_no_more_callbacks(cluster):
    stopped = cluster.connect(1, SID)
    closed = cluster.connect(1, SID)
    for conn in (stopped, closed):
        assert track(cluster, conn, clm.TRACK_CHANGES)[0] == OK
    assert cluster.engine(1, SID).dump()["trackers"] == {stopped.id: clm.TRACK_CHANGES, closed.id: clm.TRACK_CHANGES}
    assert stopped.response(cluster.request(stopped, Request.TRACK_STOP))[0] == OK
    assert stopped.response(cluster.request(stopped, Request.TRACK_STOP))[0] == SaAisError.NOT_EXIST
    cluster.disconnect(closed)
    assert cluster.engine(1, SID).dump()["trackers"] == {}
    cluster.crash(2)
    cluster.run()
    assert callbacks(stopped) == [] and closed.dispatched == []


def test_node_get_local_remote_unknown(cluster):
    conn = cluster.connect(2, SID)
    error, payload = node_get(cluster, conn, clm.LOCAL_NODE_ID)
    assert error == OK and clm.ClusterNode.decode(payload).node_id == 2
    error, payload = node_get(cluster, conn, 3)
    assert error == OK
    node = clm.ClusterNode.decode(payload)
    assert (node.node_id, node.node_address, node.member) == (3, "127.0.0.3", True)
    assert node_get(cluster, conn, 9) == (SaAisError.NOT_EXIST, b"")
    assert node_get(cluster, conn, 0)[0] == SaAisError.INVALID_PARAM
    cluster.crash(3)
    cluster.run()
    assert node_get(cluster, conn, 3)[0] == SaAisError.NOT_EXIST


def test_node_get_async_answers_by_callback(cluster):
    conn = cluster.connect(1, SID)
    for invocation, node_id in ((7, 2), (8, 42)):
        rid = cluster.request(conn, Request.NODE_GET_ASYNC, clm.NodeGetAsyncRequest.pack(invocation, node_id))
        assert conn.response(rid) == (OK, b"")
    got = [clm.NodeGetCallback.decode(p) for m, p in conn.dispatched if m == clm.Callback.NODE_GET]
    assert got[0][0:2] == (7, OK) and got[0][2].node_id == 2
    assert got[1] == (8, SaAisError.NOT_EXIST, None)


def test_bad_flags_and_malformed_requests(cluster):
    conn = cluster.connect(1, SID)
    for flags in (clm.TRACK_CHANGES | clm.TRACK_CHANGES_ONLY, 0x08, 0):
        assert track(cluster, conn, flags)[0] == SaAisError.BAD_FLAGS
    assert cluster.engine(1, SID).dump()["trackers"] == {}
    assert conn.response(cluster.request(conn, Request.TRACK, b"\x01"))[0] == SaAisError.INVALID_PARAM
    assert conn.response(cluster.request(conn, Request.NODE_GET, b"\x00\x01"))[0] == SaAisError.INVALID_PARAM


def test_track_current_before_first_view_is_try_again():
    engine = ClmEngine()

    class Api:
        nodeid = 5

        def node_address(self, nodeid):
            return None

    engine.exec_init(Api())
    error, node = engine.lookup(clm.LOCAL_NODE_ID)
    assert error == OK and node.node_id == 5 and not node.member

    class Conn:
        id = 1
        private: dict = {}
        answers: list = []

        def respond(self, service, msg_id, request_id, error, payload=b""):
            self.answers.append(error)

    conn = Conn()
    engine._lib_track(conn, 1, clm.TrackRequest.pack(clm.TRACK_CURRENT, True))
    assert conn.answers == [SaAisError.TRY_AGAIN]


def test_dropped_and_foreign_records_do_not_corrupt_the_table(cluster):
    engine = cluster.engine(1, SID)
    before = engine.current_buffer()
    engine._exec_node_record(2, b"\x00garbage")
    assert engine.current_buffer() == before


def test_plugin_entry_points_return_fresh_engines():
    import plugins.cfg
    import plugins.clm
    from plugins.cfg.engine import CfgEngine

    first, second = plugins.clm.openais_service_engine(), plugins.clm.openais_service_engine()
    assert isinstance(first, ClmEngine) and first is not second and first.id == 1
    assert isinstance(plugins.cfg.openais_service_engine(), CfgEngine)
    assert plugins.cfg.openais_service_engine().id == 7


def test_aborted_round_and_stale_records_are_ignored():
    from plugins.clm import messages

    class Api:
        nodeid = 1

        def node_address(self, nodeid):
            return f"127.0.0.{nodeid}"

        def mcast(self, service, msg_id, payload, safe=False):
            self.last = payload

    api = Api()
    engine = ClmEngine()
    engine.exec_init(api)
    engine.sync_init((), (1, 2), (1, 4))
    engine.sync_process()
    engine._exec_node_record(1, api.last)
    stale = messages.NodeRecord(1, 4, 0, 0, 5, (), "127.0.0.2", "b")
    engine.sync_abort()
    engine.sync_init((), (1, 2), (1, 8))
    engine.sync_process()
    engine._exec_node_record(1, api.last)
    engine._exec_node_record(2, stale.encode())  # record of the aborted ring
    engine._exec_node_record(3, stale._replace(ring_seq=8).encode())  # not a member
    engine.sync_activate()  # node 2's record for this ring is missing: nothing changes
    assert (engine.view_number, engine.nodes, engine.activated) == (0, {}, False)
    engine.sync_init((), (1, 2), (1, 12))
    engine.sync_process()
    engine._exec_node_record(1, api.last)
    engine._exec_node_record(2, stale._replace(ring_seq=12).encode())
    engine.sync_activate()
    assert engine.view_number == 1 and sorted(engine.nodes) == [1, 2]
    assert engine.nodes[2].node_address == "127.0.0.2" and engine.nodes[2].initial_view_number == 1


def test_sync_process_retries_when_the_ring_is_full():
    from aisexec.totem.api import QueueFull

    class Api:
        nodeid = 1
        sent: list = []
        full = True

        def node_address(self, nodeid):
            return "127.0.0.1"

        def mcast(self, service, msg_id, payload, safe=False):
            if self.full:
                self.full = False
                raise QueueFull()
            self.sent.append(payload)

    engine = ClmEngine()
    engine.exec_init(Api())
    engine.sync_init((), (1,), (1, 4))
    assert engine.sync_process() is True
    assert engine.sync_process() is False
    assert engine.sync_process() is False
    assert len(Api.sent) == 1
