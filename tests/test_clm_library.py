"""The CLM library over the engine: client-side checks and callbacks, without a daemon.

The handle's transport is replaced by a bridge into the in-process cluster,
so requests reach the real engine and callbacks come back through
``_on_dispatch`` exactly as ``dispatch`` would run them.
"""

from __future__ import annotations

import pytest

from aisexec.testing import ServiceCluster
from openais import clm
from openais.errors import AisError, SaAisError
from plugins.clm.engine import ClmEngine


class BridgedHandle(clm.ClmHandle):
    """A ClmHandle whose requests go to one node of a ServiceCluster."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, **callbacks) -> None:  # no socket
        self._track_fn = callbacks.get("track")
        self._node_get_fn = callbacks.get("node_get")
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, clm.SERVICE_ID)
        self.calls = 0

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self.calls += 1
        error, answer = self.conn.response(self.cluster.request(self.conn, msg_id, payload))
        if error != SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def run_callbacks(self) -> None:
        pending, self.conn.dispatched[:] = list(self.conn.dispatched), []
        for msg_id, payload in pending:
            self._on_dispatch(msg_id, payload)


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([ClmEngine], nodes=[1, 2, 3])
    c.run()
    return c


def code(excinfo) -> int:
    return excinfo.value.code


def test_track_current_without_callback_returns_buffer(cluster):
    h = BridgedHandle(cluster, 1)
    buffer = h.track(clm.TRACK_CURRENT)
    assert [n.node.node_id for n in buffer.notifications] == [1, 2, 3]
    with pytest.raises(AisError) as err:
        h.track(clm.TRACK_CHANGES)
    assert code(err) == SaAisError.INIT
    with pytest.raises(AisError) as err:
        h.track(clm.TRACK_CURRENT, buffer=False)
    assert code(err) == SaAisError.INIT
    with pytest.raises(AisError) as err:
        h.node_get_async(1, 2)
    assert code(err) == SaAisError.INIT


def test_client_side_errors_do_not_reach_the_executive(cluster):
    h = BridgedHandle(cluster, 1, track=lambda *a: None)
    for flags in (clm.TRACK_CHANGES | clm.TRACK_CHANGES_ONLY, 0x40, True, "1"):
        with pytest.raises(AisError) as err:
            h.track(flags)
        assert code(err) == SaAisError.BAD_FLAGS
    with pytest.raises(AisError) as err:
        h.node_get(2, timeout=0)
    assert code(err) == SaAisError.TIMEOUT
    for bad in ({"node_id": 2, "timeout": -1}, {"node_id": 0}, {"node_id": 2**32}):
        with pytest.raises(AisError) as err:
            h.node_get(**bad)
        assert code(err) == SaAisError.INVALID_PARAM
    assert h.calls == 0
    with pytest.raises(AisError) as err:
        h.track_stop()
    assert code(err) == SaAisError.NOT_EXIST


def test_tracking_callbacks_and_node_get(cluster):
    seen: list = []
    answers: list = []
    h = BridgedHandle(cluster, 2, track=lambda *a: seen.append(a), node_get=lambda *a: answers.append(a))
    assert h.track(clm.TRACK_CURRENT | clm.TRACK_CHANGES_ONLY) is None
    h.run_callbacks()
    assert len(seen) == 1 and seen[0][1] == 3
    cluster.crash(1)
    cluster.run()
    h.run_callbacks()
    buffer, members, error = seen[-1]
    assert (members, error) == (2, SaAisError.OK)
    assert [(n.node.node_id, n.cluster_change) for n in buffer.notifications] == [(1, clm.ClusterChange.LEFT)]
    assert h.node_get(clm.LOCAL_NODE_ID, timeout=1.0).node_id == 2
    with pytest.raises(AisError) as err:
        h.node_get(1)
    assert code(err) == SaAisError.NOT_EXIST
    h.node_get_async(99, 3)
    h.run_callbacks()
    assert answers[0][0] == 99 and answers[0][1].node_address == "127.0.0.3" and answers[0][2] == SaAisError.OK
    h.track_stop()
