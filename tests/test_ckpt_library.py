"""openais.ckpt over the real engine on a 3-node in-process cluster: the contract's error rows, one by one.

The handle's transport is a bridge into :class:`aisexec.testing.ServiceCluster`
(as in test_cpg_library), so every call goes through the library's checks,
the engine's lib handler, the ring and the replicated state.
"""

from __future__ import annotations

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
from openais.errors import AisError
from plugins.ckpt.engine import CheckpointEngine

RW = R | W
RWC = R | W | C
MULTI = CA(checkpoint_size=1000, max_sections=4, max_section_size=400, max_section_id_size=8)


class BridgedHandle(ckpt.CkptHandle):
    """A CkptHandle whose requests go to one node of a ServiceCluster."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, pid: int = 100, **callbacks) -> None:  # no socket
        self._open_fn = callbacks.get("checkpoint_open")
        self._sync_fn = callbacks.get("checkpoint_synchronize")
        self._pending_async = {}
        self._finalized = False
        self._dead = False
        self.version = ("B", 2, 2)
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, ckpt.SERVICE_ID, pid=pid)

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self._check()
        rid = self.cluster.request(self.conn, msg_id, payload)
        self.cluster.run()
        error, answer = self.conn.response(rid)
        if error != openais.SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def run_callbacks(self) -> None:
        pending, self.conn.dispatched[:] = list(self.conn.dispatched), []
        for msg_id, payload in pending:
            self._on_dispatch(msg_id, payload)

    def finalize(self, *args) -> None:
        super().finalize(*args)
        self.cluster.disconnect(self.conn)
        self.cluster.run()


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([CheckpointEngine], nodes=[1, 2, 3])
    c.run()
    return c


@pytest.fixture
def h(cluster):
    return BridgedHandle(cluster, 1)


@pytest.fixture
def multi(h):
    return h.checkpoint_open("multi", MULTI, RWC)


def raises(exc: type, fn, *args, index=..., **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    if index is not ...:
        assert info.value.index == index
    return info.value


# -- initialize / dispatch / finalize -----------------------------------------------------------


def test_initialize_version_rows():
    for bad in [("A", 2, 2), ("B", 3, 0), ("C", 1, 1), "B.02.02"]:
        raises(openais.Version, ckpt.initialize, version=bad)


def test_initialize_without_executive_is_library(tmp_path):
    raises(openais.Library, ckpt.initialize, path=str(tmp_path / "none.sock"))


def test_finalize_twice_and_children_bad_handle(h, multi):
    it = multi.section_iteration_initialize()
    h.finalize()
    raises(openais.BadHandle, h.finalize)
    raises(openais.BadHandle, multi.status_get)
    raises(openais.BadHandle, multi.close)
    raises(openais.BadHandle, it.next)
    raises(openais.BadHandle, multi.write, [IO(b"x", b"1")], index=None)
    raises(openais.BadHandle, h.checkpoint_open, "x", None, R)


def test_with_after_explicit_close_raises_nothing(h):
    with h.checkpoint_open("w", CA(), RWC) as c:
        c.close()
    with h:
        h.finalize()


# -- open -----------------------------------------------------------------------------------------


def test_open_argument_rows(h):
    raises(openais.BadFlags, h.checkpoint_open, "a", None, 0x10)
    raises(openais.InvalidParam, h.checkpoint_open, "a", None, C)
    raises(openais.InvalidParam, h.checkpoint_open, "a", CA(), R)
    raises(openais.InvalidParam, h.checkpoint_open, "", None, R)
    raises(openais.NameTooLong, h.checkpoint_open, "n" * 257, None, R)
    raises(openais.InvalidParam, h.checkpoint_open, 5, None, R)
    raises(openais.Timeout, h.checkpoint_open, "a", CA(), RWC, timeout=0)
    raises(openais.InvalidParam, h.checkpoint_open, "a", CA(), RWC, timeout=-1)
    raises(openais.NotExist, h.checkpoint_open, "a", None, R)


@pytest.mark.parametrize("attrs", [
    CA(creation_flags=0), CA(creation_flags=ckpt.WR_ALL_REPLICAS | ckpt.WR_ACTIVE_REPLICA),
    CA(creation_flags=ckpt.CHECKPOINT_COLLOCATED), CA(creation_flags=0x10 | ckpt.WR_ALL_REPLICAS),
    CA(max_sections=0), CA(checkpoint_size=-1), CA(max_section_size=-1), CA(max_section_id_size=65536),
    CA(checkpoint_size=100, max_sections=1, max_section_size=99), CA(retention_duration=-1.0),
])
def test_open_invalid_attributes(h, attrs):
    raises(openais.InvalidParam, h.checkpoint_open, "bad", attrs, RWC)


def test_open_exist_ignores_retention(h):
    h.checkpoint_open("e", CA(retention_duration=5.0), RWC)
    h.checkpoint_open("e", CA(retention_duration=99.0), RWC)  # retention not compared
    raises(openais.Exist, h.checkpoint_open, "e", CA(checkpoint_size=10), RWC)


def test_open_valid_flag_combinations(h):
    for i, flags in enumerate([ckpt.WR_ALL_REPLICAS | ckpt.CHECKPOINT_COLLOCATED, ckpt.WR_ACTIVE_REPLICA,
                               ckpt.WR_ACTIVE_REPLICA_WEAK | ckpt.CHECKPOINT_COLLOCATED]):
        h.checkpoint_open(f"v{i}", CA(creation_flags=flags), RWC).close()


def test_open_async_rows(cluster):
    results = []
    h = BridgedHandle(cluster, 2, checkpoint_open=lambda inv, c, err: results.append((inv, c, err)))
    raises(openais.Init, BridgedHandle(cluster, 2).checkpoint_open_async, 1, "a", None, R)
    raises(openais.BadFlags, h.checkpoint_open_async, 1, "a", None, 0x40)
    raises(openais.InvalidParam, h.checkpoint_open_async, -1, "a", CA(), RWC)
    raises(openais.InvalidParam, h.checkpoint_open_async, 1 << 64, "a", CA(), RWC)
    raises(openais.NameTooLong, h.checkpoint_open_async, 1, "x" * 300, None, R)
    h.checkpoint_open_async(7, "nope", None, R)
    h.checkpoint_open_async(8, "made", CA(), RWC)
    h.checkpoint_open_async(9, "made", CA(max_sections=2), RWC)
    h.run_callbacks()
    assert [(inv, err) for inv, _c, err in results] == [
        (7, openais.SaAisError.NOT_EXIST), (8, openais.SaAisError.OK), (9, openais.SaAisError.EXIST)]
    assert results[0][1] is None and results[2][1] is None
    made = results[1][1]
    assert isinstance(made, ckpt.Checkpoint)
    made.write([IO(b"", b"async")])
    assert made.read([IO(b"")]) == [b"async"]


# -- close / unlink / retention ---------------------------------------------------------------------


def test_close_twice_is_bad_handle(h):
    c = h.checkpoint_open("c", CA(), RWC)
    c.close()
    raises(openais.BadHandle, c.close)


def test_unlink_rows_and_recreate(h):
    raises(openais.NotExist, h.checkpoint_unlink, "never")
    raises(openais.InvalidParam, h.checkpoint_unlink, "")
    raises(openais.NameTooLong, h.checkpoint_unlink, "z" * 257)
    old = h.checkpoint_open("u", CA(), RWC)
    old.write([IO(b"", b"old")])
    h.checkpoint_unlink("u")
    raises(openais.NotExist, h.checkpoint_unlink, "u")
    raises(openais.NotExist, h.checkpoint_open, "u", None, R)
    new = h.checkpoint_open("u", CA(max_sections=3, max_section_id_size=2), RWC)
    assert new.status_get().number_of_sections == 0
    assert old.read([IO(b"")]) == [b"old"]  # still fully usable
    old.write([IO(b"", b"still")])
    raises(openais.BadOperation, old.retention_duration_set, 10.0)
    raises(openais.InvalidParam, new.retention_duration_set, -2.0)
    new.retention_duration_set(3.0)
    assert new.status_get().checkpoint_creation_attributes.retention_duration == 3.0


# -- active replica / status -----------------------------------------------------------------------


def test_active_replica_rows(cluster, h):
    coll = CA(creation_flags=ckpt.WR_ACTIVE_REPLICA | ckpt.CHECKPOINT_COLLOCATED, max_sections=2,
              max_section_id_size=4)
    c = h.checkpoint_open("col", coll, RWC)
    ro = h.checkpoint_open("col", None, R)
    raises(openais.Access, ro.active_replica_set)
    raises(openais.BadOperation, h.checkpoint_open("all", CA(creation_flags=ckpt.WR_ALL_REPLICAS |
                                                               ckpt.CHECKPOINT_COLLOCATED), RWC).active_replica_set)
    raises(openais.BadOperation, h.checkpoint_open("act", CA(creation_flags=ckpt.WR_ACTIVE_REPLICA),
                                                   RWC).active_replica_set)
    # no active replica yet: every data call raises NotExist
    raises(openais.NotExist, c.status_get)
    raises(openais.NotExist, c.section_create, SA(b"s"), b"")
    raises(openais.NotExist, c.read, [IO(b"s")], index=None)
    raises(openais.NotExist, c.write, [IO(b"s", b"x")], index=None)
    raises(openais.NotExist, c.section_iteration_initialize)
    raises(openais.NotExist, c.synchronize)
    c.active_replica_set()
    c.section_create(SA(b"s"), b"data")
    assert c.status_get().number_of_sections == 1
    c.synchronize()
    other = BridgedHandle(cluster, 2).checkpoint_open("col", None, RW)
    other.active_replica_set()  # moves it for everyone
    assert all(cluster.engine(n, 3).state.by_name["col"].active == 2 for n in (1, 2, 3))


def test_status_get(h, multi):
    multi.section_create(SA(b"a"), b"123")
    multi.section_create(SA(b"b"), b"45")
    d = multi.status_get()
    assert d.number_of_sections == 2 and d.memory_used == 5
    assert d.checkpoint_creation_attributes == MULTI
    one = h.checkpoint_open("one", CA(), RWC)
    assert one.status_get().number_of_sections == 1  # the default section counts


# -- sections ----------------------------------------------------------------------------------------


def test_section_create_rows(h, multi):
    ro = h.checkpoint_open("multi", None, R)
    raises(openais.InvalidParam, multi.section_create, (b"x", 0))
    raises(openais.InvalidParam, multi.section_create, SA(b"123456789"))
    raises(openais.InvalidParam, multi.section_create, SA(b""))
    raises(openais.InvalidParam, multi.section_create, SA(b"a"), b"x" * 401)
    raises(openais.TooBig, multi.section_create, SA(b"a"), b"x" * (ckpt.MAX_IO_SIZE + 1))
    raises(openais.Access, ro.section_create, SA(b"a"))
    raises(openais.InvalidParam, ro.section_create, SA(b""))  # argument errors before Access
    multi.section_create(SA(b"a"), b"x" * 400)
    raises(openais.Exist, multi.section_create, SA(b"a"))
    multi.section_create(SA(b"b"), b"x" * 400)
    raises(openais.NoSpace, multi.section_create, SA(b"c"), b"x" * 201)  # checkpoint_size 1000
    multi.section_create(SA(b"c"))
    multi.section_create(SA(b"d"))
    raises(openais.NoSpace, multi.section_create, SA(b"e"))  # max_sections
    one = h.checkpoint_open("one", CA(max_section_id_size=4), RWC)
    raises(openais.Exist, one.section_create, SA(b"s"))  # max_sections 1
    zero = h.checkpoint_open("zero", CA(max_sections=2, checkpoint_size=10, max_section_size=10), RWC)
    raises(openais.InvalidParam, zero.section_create, SA(None))  # generated with id size 0


def test_generated_ids_are_distinct_digits(h):
    c = h.checkpoint_open("gen", CA(max_sections=20, checkpoint_size=0, max_section_size=0,
                                     max_section_id_size=2), RWC)
    ids = [c.section_create(SA(ckpt.GENERATED_SECTION_ID)) for _ in range(12)]
    assert len(set(ids)) == 12 and all(i.isdigit() and len(i) <= 2 for i in ids)
    c.section_delete(ids[0])
    assert ids[0] not in [d.section_id for d in c.section_iteration_initialize()]


def test_section_delete_and_expiration_rows(h, multi):
    ro = h.checkpoint_open("multi", None, R)
    multi.section_create(SA(b"s"))
    raises(openais.InvalidParam, multi.section_delete, b"")
    raises(openais.InvalidParam, multi.section_expiration_time_set, b"", 5)
    raises(openais.Access, ro.section_delete, b"s")
    raises(openais.Access, ro.section_expiration_time_set, b"s", 5)
    raises(openais.NotExist, multi.section_delete, b"nope")
    raises(openais.NotExist, multi.section_delete, b"waytoolongid")
    raises(openais.NotExist, multi.section_expiration_time_set, b"nope", 5)
    raises(openais.InvalidParam, multi.section_expiration_time_set, b"s", "soon")
    multi.section_delete(b"s")
    raises(openais.NotExist, multi.section_delete, b"s")


# -- iteration ------------------------------------------------------------------------------------------


def test_iteration_rows(h, multi):
    multi.section_create(SA(b"f"))
    multi.section_create(SA(b"e1", expiration_time=openais.TIME_END - 10))
    raises(openais.InvalidParam, multi.section_iteration_initialize, 9)
    with multi.section_iteration_initialize(ckpt.SECTIONS_FOREVER) as it:
        assert iter(it) is it
        assert [d.section_id for d in it] == [b"f"]
        raises(openais.NoSections, it.next)
        raises(openais.NoSections, it.next)
    raises(openais.BadHandle, it.finalize)
    leq = multi.section_iteration_initialize(ckpt.SECTIONS_LEQ_EXPIRATION_TIME, openais.TIME_END - 5)
    assert [d.section_id for d in leq] == [b"e1"]
    geq = multi.section_iteration_initialize(ckpt.SECTIONS_GEQ_EXPIRATION_TIME, openais.TIME_END - 5)
    assert [d.section_id for d in geq] == [b"f"]
    assert list(multi.section_iteration_initialize(ckpt.SECTIONS_CORRUPTED)) == []
    # sections deleted before next() are skipped; later ones are not returned
    it = multi.section_iteration_initialize()
    multi.section_delete(b"f")
    multi.section_create(SA(b"late"))
    assert [d.section_id for d in it] == [b"e1"]
    it2 = multi.section_iteration_initialize()
    multi.close()
    raises(openais.BadHandle, it2.next)


def test_iteration_needs_no_open_flag(h, multi):
    multi.section_create(SA(b"a"), b"abc")
    none = h.checkpoint_open("multi", None, 0)
    [d] = list(none.section_iteration_initialize())
    assert (d.section_id, d.section_size, d.section_state) == (b"a", 3, ckpt.SectionState.VALID)
    assert d.last_update > 0 and d.expiration_time == openais.TIME_END


# -- write / overwrite / read ------------------------------------------------------------------------------


def test_write_rows_with_index(h, multi):
    ro = h.checkpoint_open("multi", None, R)
    multi.section_create(SA(b"a"), b"abc")
    raises(openais.InvalidParam, multi.write, [], index=None)
    raises(openais.InvalidParam, multi.write, [IO(b"a", b"x" * 401)], index=0)
    raises(openais.InvalidParam, multi.write, [IO(b"a", b"x"), IO(b"a", b"yy", size=1)], index=1)
    raises(openais.TooBig, multi.write, [IO(b"a", b"x" * 300000)] * 4, index=None)
    raises(openais.Access, ro.write, [IO(b"a", b"x")], index=None)
    raises(openais.NotExist, multi.write, [IO(b"a", b"x"), IO(b"zz", b"y")], index=1)
    raises(openais.NotExist, multi.write, [IO(b"x" * 70000, b"y")], index=0)
    raises(openais.NoResources, multi.write, [IO(b"a", b"x"), IO(b"a", b"y", offset=400)], index=1)
    multi.section_create(SA(b"b"), b"x" * 400)
    multi.section_create(SA(b"c"), b"x" * 190)
    multi.section_overwrite(b"a", b"abc" + b"-" * 397)
    raises(openais.NoSpace, multi.write, [IO(b"a", b"Q"), IO(b"c", b"z" * 11, offset=190)], index=1)
    assert multi.read([IO(b"a", size=3), IO(b"c")]) == [b"abc", b"x" * 190]  # nothing of a failed write applied


def test_write_is_atomic_extends_with_zeros_and_empty_changes_nothing(h, multi):
    multi.section_create(SA(b"a"), b"abc")
    multi.write([IO(b"a", b"Z", offset=5), IO(b"a", b""), IO(b"a", b"B", offset=1)])
    assert multi.read([IO(b"a")]) == [b"aBc\x00\x00Z"]
    multi.write([IO(b"a", b"", offset=300)])
    assert multi.read([IO(b"a")]) == [b"aBc\x00\x00Z"]


def test_overwrite_rows(h, multi):
    ro = h.checkpoint_open("multi", None, R)
    multi.section_create(SA(b"a"), b"abc")
    raises(openais.InvalidParam, multi.section_overwrite, b"a", b"x" * 401)
    raises(openais.TooBig, multi.section_overwrite, b"a", b"x" * (ckpt.MAX_IO_SIZE + 1))
    raises(openais.Access, ro.section_overwrite, b"a", b"x")
    raises(openais.NotExist, multi.section_overwrite, b"q", b"x")
    multi.section_create(SA(b"b"), b"x" * 400)
    multi.section_create(SA(b"c"), b"x" * 400)
    raises(openais.NoSpace, multi.section_overwrite, b"a", b"x" * 201)
    multi.section_overwrite(b"a", b"new")
    assert multi.read([IO(b"a")]) == [b"new"]


def test_read_rows(h, multi):
    wo = h.checkpoint_open("multi", None, W)
    multi.section_create(SA(b"a"), b"0123456789")
    raises(openais.InvalidParam, multi.read, [], index=None)
    raises(openais.InvalidParam, multi.read, [IO(b"a"), IO(b"a", size=401)], index=1)
    raises(openais.InvalidParam, multi.read, [IO(b"a", offset=401)], index=0)
    raises(openais.Access, wo.read, [IO(b"a")], index=None)
    raises(openais.NotExist, multi.read, [IO(b"a"), IO(b"b")], index=1)
    assert multi.read([IO(b"a", offset=2, size=3), IO(b"a", offset=8), IO(b"a", offset=10), IO(b"a", offset=400)]) \
        == [b"234", b"89", b"", b""]


def test_read_result_too_big(h):
    big = h.checkpoint_open("big", CA(checkpoint_size=2 << 20, max_sections=2, max_section_size=1 << 20,
                                      max_section_id_size=1), RWC)
    big.section_create(SA(b"a"), b"a" * (1 << 20))
    big.section_create(SA(b"b"), b"b" * 10)
    raises(openais.TooBig, big.read, [IO(b"a"), IO(b"b")], index=1)
    assert big.read([IO(b"a", offset=(1 << 20) - 2), IO(b"b", size=2)]) == [b"aa", b"bb"]


def test_section_larger_than_max_io_written_in_pieces(h):
    size = 3 * ckpt.MAX_IO_SIZE
    c = h.checkpoint_open("huge", CA(checkpoint_size=size, max_section_size=size), RWC)
    for i in range(3):
        c.write([IO(b"", bytes([65 + i]) * ckpt.MAX_IO_SIZE, offset=i * ckpt.MAX_IO_SIZE)])
    assert c.status_get().memory_used == size
    assert c.read([IO(b"", offset=2 * ckpt.MAX_IO_SIZE - 1, size=2)]) == [b"BC"]


# -- synchronize ---------------------------------------------------------------------------------------------


def test_synchronize_rows(cluster, h):
    done = []
    sh = BridgedHandle(cluster, 3, checkpoint_synchronize=lambda inv, err: done.append((inv, err)))
    act = sh.checkpoint_open("act", CA(creation_flags=ckpt.WR_ACTIVE_REPLICA), RWC)
    ro = sh.checkpoint_open("act", None, R)
    allr = sh.checkpoint_open("all", CA(), RWC)
    raises(openais.Access, ro.synchronize)
    raises(openais.BadOperation, allr.synchronize)
    raises(openais.Timeout, act.synchronize, timeout=0)
    raises(openais.Init, h.checkpoint_open("act", None, RW).synchronize_async, 1)
    raises(openais.Access, ro.synchronize_async, 1)
    raises(openais.BadOperation, allr.synchronize_async, 1)
    raises(openais.InvalidParam, act.synchronize_async, -5)
    act.synchronize(timeout=5.0)
    act.synchronize_async(42)
    sh.run_callbacks()
    assert done == [(42, openais.SaAisError.OK)]


def test_free_calls(multi, h):
    multi.section_id_free(b"x")
    multi.io_vector_element_data_free(b"x")
    multi.close()
    raises(openais.BadHandle, multi.section_id_free, b"x")
    raises(openais.BadHandle, multi.io_vector_element_data_free, b"x")


def test_dispatch_flags(h):
    raises(openais.InvalidParam, ckpt.CkptHandle.dispatch, h, 7)


def test_try_again_during_sync_has_no_index(cluster, h, multi):
    multi.section_create(SA(b"a"))
    cluster.queue_limit = 0  # the ring is backed up
    raises(openais.TryAgain, multi.write, [IO(b"a", b"x")], index=None)
    cluster.queue_limit = None
    multi.write([IO(b"a", b"x")])


def test_iteration_with_block_after_its_checkpoint_closed_raises_nothing(h, multi):
    with multi.section_iteration_initialize() as it:
        multi.close()
    raises(openais.BadHandle, it.next)


def test_async_init_comes_before_argument_errors(h, multi):
    raises(openais.Init, h.checkpoint_open_async, -1, "", None, 0x99)
    raises(openais.Init, multi.synchronize_async, -1)


def test_tool_plain_and_json_listing(cluster, h, multi, capsys, monkeypatch):
    from openais.tools import ckpttool

    multi.section_create(SA(b"cfg"), b"v1")
    doc = h.listing()
    [entry] = doc["checkpoints"]
    assert entry["name"] == "multi" and entry["openers"] == 1 and entry["replicas"] == [1, 2, 3]
    assert entry["sections"][0]["id_text"] == "cfg" and entry["size"] == 2
    ckpttool.write_plain(doc, __import__("sys").stdout)
    text = capsys.readouterr().out
    assert "multi" in text and "all-replicas" in text and "cfg" in text
    assert h.peek("multi", b"cfg") == b"v1"
    raises(openais.NotExist, h.peek, "multi", b"nope")
    monkeypatch.setattr(ckpt, "initialize", lambda: BridgedHandle(cluster, 2))
    assert ckpttool.main(["--json"]) == 0
    assert '"multi"' in capsys.readouterr().out
    assert ckpttool.main(["-s", "multi", "nope"]) == 1


def test_negative_times_and_sizes_are_invalid(h, multi):
    multi.section_create(SA(b"s"))
    raises(openais.InvalidParam, multi.section_create, SA(b"t", expiration_time=-1))
    raises(openais.InvalidParam, multi.section_expiration_time_set, b"s", -5)
    raises(openais.InvalidParam, multi.section_iteration_initialize, ckpt.SECTIONS_ANY, -1)
    raises(openais.InvalidParam, multi.read, [IO(b"s", offset=-1)], index=0)
    raises(openais.InvalidParam, multi.read, [IO(b"s", size=-1)], index=0)
    raises(openais.InvalidParam, multi.write, [IO(b"s", b"x", offset=-3)], index=0)
    raises(openais.InvalidParam, multi.synchronize, timeout=-1.0)
