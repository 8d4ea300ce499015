"""The CKPT engine on in-process clusters: replication, node loss, join, partitions and merges, timers.

Reproducible: :class:`aisexec.testing.ServiceCluster` delivers in one agreed
order and moves a virtual clock for ``call_later``; cluster timers compute
their delay from wall-clock deadlines, so ``advance`` past the deadline fires.
"""

from __future__ import annotations

import logging
import time

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import ckpt
from openais.ckpt import CHECKPOINT_CREATE as C
from openais.ckpt import CHECKPOINT_READ as R
from openais.ckpt import CHECKPOINT_WRITE as W
from openais.ckpt import CreationAttributes as CA
from openais.ckpt import IOVector as IO
from openais.ckpt import SectionCreationAttributes as SA
from plugins.ckpt import local as ckpt_local
from plugins.ckpt.engine import CheckpointEngine
from plugins.ckpt.messages import Exec
from tests.test_ckpt_library import BridgedHandle

RWC = R | W | C
MULTI = CA(checkpoint_size=1 << 22, max_sections=16, max_section_size=1 << 22, max_section_id_size=8)


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([CheckpointEngine], nodes=[1, 2, 3])
    c.run()
    return c


def engine(cluster: ServiceCluster, node: int) -> CheckpointEngine:
    return cluster.engine(node, ckpt.SERVICE_ID)  # type: ignore[return-value]


def replica(cluster: ServiceCluster, node: int, name: str) -> dict[bytes, bytes]:
    ck = engine(cluster, node).state.by_name.get(name)
    return {} if ck is None else {sid: bytes(s.data) for sid, s in ck.sections.items()}


def openers(cluster: ServiceCluster, node: int, name: str) -> int:
    ck = engine(cluster, node).state.by_name.get(name)
    return -1 if ck is None else ck.opener_count


def test_write_on_one_node_is_identical_everywhere(cluster):
    a = BridgedHandle(cluster, 1).checkpoint_open("rep", MULTI, RWC)
    a.section_create(SA(b"s1"), b"hello")
    a.write([IO(b"s1", b"J", offset=0), IO(b"s1", b"!", offset=7)])
    b = BridgedHandle(cluster, 3).checkpoint_open("rep", None, R | W)
    b.section_overwrite(b"s1", b"from three")
    for n in (1, 2, 3):
        assert replica(cluster, n, "rep") == {b"s1": b"from three"}
        assert openers(cluster, n, "rep") == 2
    last = {engine(cluster, n).state.by_name["rep"].sections[b"s1"].last_update for n in (1, 2, 3)}
    assert len(last) == 1 and last.pop() > 0


def test_large_write_travels_as_fragments_and_stays_atomic(cluster):
    c = BridgedHandle(cluster, 2).checkpoint_open("big", MULTI, RWC)
    c.section_create(SA(b"a"))
    data = bytes(range(256)) * 4096  # 1 MiB
    sent = []
    orig = cluster._hosts[2].send
    cluster._hosts[2].send = lambda message, safe: (sent.append(len(message)), orig(message, safe))[1]
    c.write([IO(b"a", data)])
    assert max(sent) <= ckpt_local.FRAGMENT + 64 and len(sent) >= 2
    for n in (1, 2, 3):
        assert replica(cluster, n, "big")[b"a"] == data


def test_concurrent_writers_see_one_order(cluster):
    hs = [BridgedHandle(cluster, n).checkpoint_open("order", MULTI, RWC) for n in (1, 2, 3)]
    hs[0].section_create(SA(b"x"))
    rids = []
    for i in range(20):
        for n, h in enumerate(hs, 1):
            payload = ckpt.WriteReq.pack(h.object_id, [ckpt.WriteItem(b"x", 0, f"{n}:{i}".encode())])
            rids.append(cluster.request(h._handle.conn, ckpt.Request.WRITE, payload))
    cluster.run()
    values = {replica(cluster, n, "order")[b"x"] for n in (1, 2, 3)}
    assert len(values) == 1


def test_client_death_ends_its_openers_and_unlinked_checkpoint_goes(cluster):
    h = BridgedHandle(cluster, 2)
    c = h.checkpoint_open("gone", CA(), RWC)
    c.write([IO(b"", b"x")])
    BridgedHandle(cluster, 1).checkpoint_unlink("gone")
    assert all(engine(cluster, n).state.by_uid for n in (1, 2, 3))
    cluster.disconnect(h.conn)
    cluster.run()
    assert all(not engine(cluster, n).state.by_uid for n in (1, 2, 3))


def test_retention_decided_once_by_the_lowest_node(cluster):
    h = BridgedHandle(cluster, 3)
    c = h.checkpoint_open("ret", CA(retention_duration=5.0), RWC)
    c.close()
    cluster.run()
    assert openers(cluster, 1, "ret") == 0
    armed = [n for n in (1, 2, 3) if engine(cluster, n).timers._armed]
    assert armed == [1]
    cluster.advance(2.0)
    cluster.run()
    assert all("ret" in engine(cluster, n).state.by_name for n in (1, 2, 3))
    cluster.advance(4.0)
    cluster.run()
    assert all("ret" not in engine(cluster, n).state.by_name for n in (1, 2, 3))
    with pytest.raises(openais.NotExist):
        h.checkpoint_open("ret", None, R)


def test_open_during_retention_cancels_it_and_next_close_restarts_it(cluster):
    h = BridgedHandle(cluster, 2)
    h.checkpoint_open("r2", CA(retention_duration=3.0), RWC).close()
    cluster.advance(2.0)
    c = h.checkpoint_open("r2", None, R)
    cluster.advance(2.0)
    cluster.run()
    assert "r2" in engine(cluster, 1).state.by_name
    c.close()
    cluster.advance(2.0)
    cluster.run()
    assert "r2" in engine(cluster, 3).state.by_name
    cluster.advance(2.0)
    cluster.run()
    assert "r2" not in engine(cluster, 3).state.by_name


def test_retention_owner_leaves_and_the_next_takes_over(cluster):
    h = BridgedHandle(cluster, 3)
    h.checkpoint_open("r3", CA(retention_duration=4.0), RWC).close()
    cluster.crash(1)
    cluster.run()
    assert engine(cluster, 2).timers.is_owner
    cluster.advance(5.0)
    cluster.run()
    assert all("r3" not in engine(cluster, n).state.by_name for n in (2, 3))


def test_node_loss_ends_openers_and_starts_retention(cluster):
    BridgedHandle(cluster, 3).checkpoint_open("nl", CA(retention_duration=2.0), RWC)
    assert openers(cluster, 1, "nl") == 1
    cluster.crash(3)
    cluster.run()
    ck = engine(cluster, 1).state.by_name["nl"]
    assert ck.opener_count == 0 and ck.closed_at is not None  # stamped by the owner
    cluster.advance(3.0)
    cluster.run()
    assert all("nl" not in engine(cluster, n).state.by_name for n in (1, 2))


def test_section_expiration_across_nodes(cluster):
    c = BridgedHandle(cluster, 2).checkpoint_open("exp", MULTI, RWC)
    soon = time.time_ns() + 2_000_000_000
    c.section_create(SA(b"e", expiration_time=soon), b"bye")
    c.section_create(SA(b"past", expiration_time=1), b"old")
    c.section_create(SA(b"keep"))
    cluster.advance(0.0)
    cluster.run()
    assert all(set(replica(cluster, n, "exp")) == {b"e", b"keep"} for n in (1, 2, 3))
    cluster.advance(3.0)
    cluster.run()
    assert all(set(replica(cluster, n, "exp")) == {b"keep"} for n in (1, 2, 3))
    c.section_create(SA(b"e"), b"reused")  # its id may be used again
    c.section_expiration_time_set(b"keep", 5)
    cluster.advance(0.0)
    cluster.run()
    assert all(set(replica(cluster, n, "exp")) == {b"e"} for n in (1, 2, 3))


def test_restarted_node_receives_every_checkpoint_in_chunks(cluster):
    c = BridgedHandle(cluster, 1).checkpoint_open("join", MULTI, RWC)
    data = bytes(range(256)) * 12 * 1024  # 3 MiB in one section, over several writes
    c.section_create(SA(b"d"))
    for off in range(0, len(data), ckpt.MAX_IO_SIZE):
        c.write([IO(b"d", data[off:off + ckpt.MAX_IO_SIZE], offset=off)])
    c.section_create(SA(b"t", expiration_time=openais.TIME_END - 1), b"tiny")
    BridgedHandle(cluster, 1).checkpoint_open("ul", CA(), RWC)
    BridgedHandle(cluster, 2).checkpoint_unlink("ul")
    cluster.crash(3)
    cluster.restart(3)
    cluster.run()
    assert replica(cluster, 3, "join") == {b"d": data, b"t": b"tiny"}
    e3 = engine(cluster, 3)
    assert e3.state.by_name["join"].sections[b"t"].expiration == openais.TIME_END - 1
    assert e3.state.by_name["join"].opener_count == 1
    assert any(ck.unlinked for ck in e3.state.by_uid.values())
    sent = engine(cluster, 1).round
    assert sent is None  # the round finished
    assert engine(cluster, 2).state.memory == e3.state.memory == engine(cluster, 1).state.memory


def test_only_one_member_sends_the_state_to_a_joiner(cluster):
    c = BridgedHandle(cluster, 2).checkpoint_open("one", MULTI, RWC)
    c.section_create(SA(b"d"), b"x" * 500_000)
    cluster.crash(3)
    cluster.restart(3)
    cluster.run()
    assert replica(cluster, 3, "one")[b"d"] == b"x" * 500_000
    sent = {n: engine(cluster, n).last_sync["sent_bytes"] for n in (1, 2, 3)}
    assert sent[1] > 500_000 and sent[2] < 10_000 and sent[3] < 10_000, sent


def test_partition_merge_more_changes_wins_and_is_logged(cluster, caplog):
    h1 = BridgedHandle(cluster, 1)
    c1 = h1.checkpoint_open("m", MULTI, RWC)
    c1.section_create(SA(b"s"), b"base")
    cluster.partition([[1], [2, 3]])
    cluster.run()
    c1.write([IO(b"s", b"one")])
    c3 = BridgedHandle(cluster, 3).checkpoint_open("m", None, R | W)
    c3.write([IO(b"s", b"TWO")])
    c3.write([IO(b"s", b"THREE")])
    only2 = BridgedHandle(cluster, 2).checkpoint_open("only-in-2", CA(), RWC)
    with caplog.at_level(logging.WARNING, logger="aisexec.ckpt"):
        cluster.heal()
        cluster.run()
    for n in (1, 2, 3):
        assert replica(cluster, n, "m") == {b"s": b"THREE"}
        assert "only-in-2" in engine(cluster, n).state.by_name
        assert openers(cluster, n, "m") == 2  # both handles count again
    assert any("wins over" in r.getMessage() for r in caplog.records)
    # the opener on the losing side keeps working on the winner
    c1.write([IO(b"s", b"after")])
    assert replica(cluster, 2, "m") == {b"s": b"after"}
    only2.close()


def test_merge_tie_goes_to_the_lowest_node(cluster):
    cluster.partition([[1], [2, 3]])
    cluster.run()
    BridgedHandle(cluster, 1).checkpoint_open("tie", CA(), RWC).write([IO(b"", b"low")])
    BridgedHandle(cluster, 2).checkpoint_open("tie", CA(), RWC).write([IO(b"", b"high")])
    cluster.heal()
    cluster.run()
    assert all(replica(cluster, n, "tie") == {b"": b"low"} for n in (1, 2, 3))


def test_collocated_active_replica_goes_with_its_node(cluster):
    coll = CA(creation_flags=ckpt.WR_ACTIVE_REPLICA | ckpt.CHECKPOINT_COLLOCATED)
    c2 = BridgedHandle(cluster, 2).checkpoint_open("col", coll, RWC)
    c1 = BridgedHandle(cluster, 1).checkpoint_open("col", None, R | W)
    c2.active_replica_set()
    c2.write([IO(b"", b"kept")])
    cluster.crash(2)
    cluster.run()
    with pytest.raises(openais.NotExist):
        c1.read([IO(b"")])
    c1.active_replica_set()
    assert c1.read([IO(b"")]) == [b"kept"]


def test_non_collocated_active_replica_moves_to_the_lowest_member(cluster):
    BridgedHandle(cluster, 2).checkpoint_open("act", CA(creation_flags=ckpt.WR_ACTIVE_REPLICA), RWC)
    assert engine(cluster, 1).state.by_name["act"].active == 2
    cluster.crash(2)
    cluster.run()
    assert {engine(cluster, n).state.by_name["act"].active for n in (1, 3)} == {1}


def test_open_timeout_and_late_open_is_closed_again(cluster):
    h = BridgedHandle(cluster, 2)
    h.checkpoint_open("t", CA(), RWC).close()
    conn = h.conn
    rid = cluster.request(conn, ckpt.Request.OPEN, ckpt.OpenReq.pack("t", R, None, 1_000_000_000, 0, 0))
    cluster.advance(1.5)  # the answer is not delivered yet: the engine answers Timeout
    assert conn.response(rid)[0] == openais.SaAisError.TIMEOUT
    cluster.run()
    assert all(openers(cluster, n, "t") == 0 for n in (1, 2, 3))
    assert not engine(cluster, 2).handles.of(conn)


def test_client_dies_before_its_open_is_delivered(cluster):
    h = BridgedHandle(cluster, 3)
    cluster.request(h.conn, ckpt.Request.OPEN, ckpt.OpenReq.pack("late", RWC, ckpt.to_wire_attributes(CA()),
                                                               -1, 0, 0))
    cluster.disconnect(h.conn)
    cluster.run()
    assert all(openers(cluster, n, "late") == 0 for n in (1, 2, 3))


def test_malformed_cluster_messages_are_dropped(cluster, caplog):
    BridgedHandle(cluster, 1).checkpoint_open("ok", CA(), RWC)
    with caplog.at_level(logging.WARNING):
        for msg_id in (Exec.OPEN, Exec.WRITE, Exec.FRAGMENT, Exec.SYNC_HEADER, Exec.SYNC_DATA, Exec.STAMP):
            engine(cluster, 2).api.mcast(ckpt.SERVICE_ID, msg_id, b"\xff\x01garbage")
        cluster.run()
    assert "ok" in engine(cluster, 2).state.by_name
    assert any("malformed" in r.getMessage() or "bad" in r.getMessage() for r in caplog.records)


def test_memory_limit_gives_no_resources(cluster):
    for n in (1, 2, 3):
        engine(cluster, n).mem_limit = 64 * 1024
    c = BridgedHandle(cluster, 1).checkpoint_open("mem", MULTI, RWC)
    c.section_create(SA(b"a"), b"x" * 40_000)
    with pytest.raises(openais.NoResources):
        c.write([IO(b"a", b"y" * 40_000, offset=40_000)])
    with pytest.raises(openais.NoResources):
        c.section_create(SA(b"b"), b"z" * 30_000)
    assert engine(cluster, 2).state.memory < 64 * 1024
    c.section_overwrite(b"a", b"small")  # shrinking is always allowed


def test_back_pressure_try_again_when_the_outbox_is_backed_up(cluster):
    c = BridgedHandle(cluster, 1).checkpoint_open("bp", MULTI, RWC)
    c.section_create(SA(b"a"))
    e = engine(cluster, 1)
    cluster.queue_limit = 0
    rid = cluster.request(c._handle.conn, ckpt.Request.CLOSE, ckpt.HandleReq.pack(c.object_id))
    assert len(e.outbox) == 1  # a close is always taken (queued), never refused
    with pytest.raises(openais.TryAgain):
        BridgedHandle(cluster, 1).checkpoint_unlink("bp")
    cluster.queue_limit = None
    cluster.advance(0.1)
    cluster.run()
    assert c._handle.conn.response(rid)[0] == openais.SaAisError.OK
    assert all(openers(cluster, n, "bp") == 0 for n in (1, 2, 3))


# -- persistence ------------------------------------------------------------------------------------------


def persistent(root):
    class PersistentEngine(CheckpointEngine):
        def exec_init(self, api):
            super().exec_init(api)
            self.open_store(str(root / f"node{api.nodeid}"))

    return PersistentEngine


def test_whole_cluster_restart_brings_back_every_acknowledged_change(tmp_path):
    cluster = ServiceCluster([persistent(tmp_path)], nodes=[1, 2, 3])
    cluster.run()
    c = BridgedHandle(cluster, 2).checkpoint_open("keep", MULTI, RWC)
    c.section_create(SA(b"a"), b"x" * 300_000)
    c.write([IO(b"a", b"HEAD")])
    BridgedHandle(cluster, 1).checkpoint_open("tmp", CA(), RWC)
    BridgedHandle(cluster, 1).checkpoint_unlink("tmp")  # unlinked: not stored
    c.close()
    for n in (1, 2, 3):
        engine(cluster, n).exec_exit()
    again = ServiceCluster([persistent(tmp_path)], nodes=[1, 2, 3])
    again.run()
    for n in (1, 2, 3):
        assert replica(again, n, "keep") == {b"a": b"HEAD" + b"x" * 299_996}
        assert [ck.name for ck in engine(again, n).state.by_uid.values()] == ["keep"]
        assert openers(again, n, "keep") == 0


def test_node_restarting_into_a_running_cluster_drops_its_stored_copies(tmp_path):
    cluster = ServiceCluster([persistent(tmp_path)], nodes=[1, 2, 3])
    cluster.run()
    h = BridgedHandle(cluster, 1)
    c = h.checkpoint_open("live", MULTI, RWC)
    c.section_create(SA(b"a"), b"old")
    h.checkpoint_open("doomed", CA(), RWC).close()
    cluster.crash(3)
    cluster.run()
    c.write([IO(b"a", b"NEW")])
    h.checkpoint_unlink("doomed")
    cluster.restart(3)
    cluster.run()
    assert replica(cluster, 3, "live") == {b"a": b"NEW"}
    assert "doomed" not in engine(cluster, 3).state.by_name
    assert any("running cluster" in note for note in engine(cluster, 3).merge_notes)
