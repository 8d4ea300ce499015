"""The pure CKPT state, its records, the merge rule and the crash-safe store, without any engine."""

from __future__ import annotations

import os
import random

import pytest

from openais.ckpt import (
    CHECKPOINT_COLLOCATED,
    CHECKPOINT_CREATE,
    TIME_END,
    WR_ACTIVE_REPLICA,
    WireAttributes,
    WriteItem,
)
from openais.errors import SaAisError
from plugins.ckpt import messages as m
from plugins.ckpt.records import RecordBuilder, merge, state_records
from plugins.ckpt.state import CkptState
from plugins.ckpt.store import Store, StoreError

OK = int(SaAisError.OK)
BIG = 1 << 40
ATTRS = WireAttributes(1, 10_000, -1, 8, 4000, 8)


def opened(state: CkptState, name: str = "c", attrs: WireAttributes = ATTRS, node: int = 1, uid: int = 77) -> int:
    out = state.apply(node, m.Exec.OPEN, m.ExOpen(1, 1, name, 7, attrs, uid, 10, BIG))
    assert out.error == OK
    return out.value


def create(state: CkptState, uid: int, sid: bytes | None, data: bytes = b"", exp: int = TIME_END) -> object:
    return state.apply(1, m.Exec.SECTION_CREATE, m.ExSectionCreate(1, 1, uid, sid, exp, 20, BIG, data))


def write(state: CkptState, uid: int, *items: tuple[bytes, int, bytes], limit: int = BIG) -> object:
    return state.apply(1, m.Exec.WRITE, m.ExWrite(1, 1, uid, 30, limit, [WriteItem(*i) for i in items]))


def test_same_messages_same_state_random_sequences():
    rng = random.Random(5)
    msgs = []
    for i in range(300):
        kind = rng.choice(["create", "write", "delete", "overwrite"])
        sid = bytes([97 + rng.randrange(5)])
        if kind == "create":
            data = b"x" * rng.randrange(50)
            msgs.append((m.Exec.SECTION_CREATE, m.ExSectionCreate(1, i, 77, sid, TIME_END, i, BIG, data)))
        elif kind == "write":
            item = WriteItem(sid, rng.randrange(100), b"y" * rng.randrange(30))
            msgs.append((m.Exec.WRITE, m.ExWrite(1, i, 77, i, BIG, [item])))
        elif kind == "delete":
            msgs.append((m.Exec.SECTION_DELETE, m.ExSectionDelete(1, i, 77, sid)))
        else:
            msgs.append((m.Exec.OVERWRITE, m.ExOverwrite(1, i, 77, i, BIG, sid, b"z" * rng.randrange(60))))
    states = [CkptState(), CkptState()]
    results = []
    for s in states:
        opened(s)
        results.append([s.apply(1, k, msg) for k, msg in msgs])
    assert results[0] == results[1]
    a, b = ({sid: bytes(sec.data) for sid, sec in s.by_uid[77].sections.items()} for s in states)
    assert a == b
    ck = states[0].by_uid[77]
    assert ck.used == sum(len(s.data) for s in ck.sections.values()) <= ATTRS.checkpoint_size
    assert states[0].memory == ck.footprint()


def test_write_checks_everything_before_applying_anything():
    s = CkptState()
    uid = opened(s)
    create(s, uid, b"a", b"abc")
    out = write(s, uid, (b"a", 0, b"Z"), (b"nope", 0, b"q"))
    assert (out.error, out.index) == (int(SaAisError.NOT_EXIST), 1)
    assert bytes(s.by_uid[uid].sections[b"a"].data) == b"abc"
    out = write(s, uid, (b"a", 3990, b"x" * 11))
    assert (out.error, out.index) == (int(SaAisError.NO_RESOURCES), 0)
    out = write(s, uid, (b"a", 10, b"x"), limit=s.memory + 5)
    assert (out.error, out.index) == (int(SaAisError.NO_RESOURCES), -1)


def test_generated_ids_and_default_section():
    s = CkptState()
    uid = opened(s, attrs=WireAttributes(1, 0, -1, 12, 0, 1))
    ids = [create(s, uid, None).value for _ in range(10)]
    assert sorted(ids) == [str(i).encode() for i in range(10)]
    assert create(s, uid, None).error == int(SaAisError.NO_SPACE)  # 1-byte ids are used up
    one = opened(s, "one", WireAttributes(1, 10, -1, 1, 10, 0), uid=5)
    assert list(s.by_uid[one].sections) == [b""]


def test_unlink_then_create_again_and_delete_at_last_close():
    s = CkptState()
    old = opened(s, "n")
    assert s.apply(1, m.Exec.UNLINK, m.ExUnlink(1, 1, "n")).error == OK
    assert s.apply(1, m.Exec.OPEN, m.ExOpen(1, 1, "n", 1, None, 9, 0, BIG)).error == int(SaAisError.NOT_EXIST)
    new = opened(s, "n", uid=99)
    assert new != old and s.by_name["n"].uid == new
    s.apply(1, m.Exec.CLOSE, m.ExClose(1, 1, old, 40))
    assert old not in s.by_uid and new in s.by_uid


def test_retention_timer_effects_and_stale_expiry():
    s = CkptState()
    uid = opened(s, attrs=ATTRS._replace(retention_ns=1000))
    s.drain_timers()
    s.apply(1, m.Exec.CLOSE, m.ExClose(1, 1, uid, 500))
    assert s.drain_timers() == [(("r", uid), 1500)]
    assert s.apply(1, m.Exec.RETENTION_EXPIRE, m.ExRetentionExpire(uid, 1400)).error != OK  # stale
    assert uid in s.by_uid
    assert s.apply(1, m.Exec.RETENTION_EXPIRE, m.ExRetentionExpire(uid, 1500)).error == OK
    assert uid not in s.by_uid


def test_nodes_left_moves_active_and_asks_for_a_stamp():
    s = CkptState()
    act = opened(s, "act", ATTRS._replace(creation_flags=WR_ACTIVE_REPLICA), node=3, uid=1)
    col = opened(s, "col", ATTRS._replace(creation_flags=WR_ACTIVE_REPLICA | CHECKPOINT_COLLOCATED), node=3, uid=2)
    s.apply(3, m.Exec.ACTIVE_SET, m.ExActive(1, 1, col))
    assert s.nodes_left({3}, (1, 2)) == [act, col]
    assert s.by_uid[act].active == 1 and s.by_uid[col].active is None
    assert s.unstamped() == []  # retention forever: no clock to start
    assert s.apply(1, m.Exec.STAMP, m.ExStamp(act, 5)).error == OK


def test_records_round_trip_with_large_sections():
    s = CkptState()
    uid = opened(s, attrs=WireAttributes(1, 3 << 20, 5, 4, 3 << 20, 4))
    create(s, uid, b"big", os.urandom(700_000))
    write(s, uid, (b"big", 700_000, os.urandom(1 << 20)))
    create(s, uid, b"e", b"small", exp=12345)
    b = RecordBuilder()
    for rec in state_records(s.by_uid):
        assert len(rec) < 300 * 1024
        b.add(rec)
    got = b.checkpoints[uid]
    assert {k: bytes(v.data) for k, v in got.sections.items()} == \
        {k: bytes(v.data) for k, v in s.by_uid[uid].sections.items()}
    assert got.sections[b"e"].expiration == 12345 and got.attrs == s.by_uid[uid].attrs
    assert got.used == s.by_uid[uid].used and b.errors == 0
    b.add(b"\x09junk")
    b.add(b"\x03" + b"\x00" * 5)
    assert b.errors == 2


def test_merge_rule():
    s1, s2 = CkptState(), CkptState()
    opened(s1, "x", uid=1)
    opened(s2, "x", uid=2)
    create(s2, 2, b"a")
    opened(s1, "only1", uid=3)
    merged, notes = merge({1: s1.by_uid, 2: s2.by_uid})
    assert sorted(ck.name for ck in merged.values()) == ["only1", "x"]
    assert merged[2].name == "x" and 1 not in merged  # more changes wins
    assert len(notes) == 1 and "node 2" in notes[0]
    s3 = CkptState()
    opened(s3, "x", uid=9)
    create(s3, 9, b"b")
    merged, _ = merge({4: s3.by_uid, 2: s2.by_uid})
    assert 2 in merged and 9 not in merged  # equal counts: the lowest node's partition


# -- the store ---------------------------------------------------------------------------------------


def logged(store: Store, state: CkptState, sender: int, msg_id: int, msg) -> None:
    state.apply(sender, msg_id, msg)
    store.append(sender, msg_id, msg.encode())


def test_store_replays_log_over_snapshot(tmp_path):
    store = Store(tmp_path / "p")
    assert store.load() == {}
    s = CkptState()
    logged(store, s, 1, m.Exec.OPEN, m.ExOpen(1, 1, "c", 7, ATTRS, 77, 10, BIG))
    logged(store, s, 1, m.Exec.SECTION_CREATE, m.ExSectionCreate(1, 1, 77, b"a", TIME_END, 1, BIG, b"one"))
    store.snapshot(s.by_uid)
    logged(store, s, 1, m.Exec.WRITE, m.ExWrite(1, 1, 77, 2, BIG, [WriteItem(b"a", 0, b"TWO")]))
    logged(store, s, 1, m.Exec.OPEN, m.ExOpen(1, 1, "gone", 7, ATTRS, 78, 10, BIG))
    logged(store, s, 1, m.Exec.UNLINK, m.ExUnlink(1, 1, "gone"))
    store.close()
    again = Store(tmp_path / "p").load()
    assert list(again) == [77]
    assert bytes(again[77].sections[b"a"].data) == b"TWO" and again[77].opener_count == 0
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700


def test_store_torn_tail_gives_last_or_previous_state(tmp_path):
    path = tmp_path / "p"
    store = Store(path)
    store.load()
    s = CkptState()
    logged(store, s, 1, m.Exec.OPEN, m.ExOpen(1, 1, "c", 7, ATTRS, 77, 10, BIG))
    logged(store, s, 1, m.Exec.SECTION_CREATE, m.ExSectionCreate(1, 1, 77, b"a", TIME_END, 1, BIG, b""))
    sizes = []
    for i in range(5):
        logged(store, s, 1, m.Exec.WRITE, m.ExWrite(1, 1, 77, 2, BIG, [WriteItem(b"a", 0, str(i).encode() * 50)]))
        sizes.append(store.log_bytes)
    store.close()
    whole = (path / "log").read_bytes()
    for cut in [*range(sizes[2], sizes[3], 7), sizes[3]]:  # every point of the fourth append
        (path / "log").write_bytes(whole[:cut])
        got = Store(path).load()
        value = bytes(got[77].sections[b"a"].data)
        assert value in (b"2" * 50, b"3" * 50)
    (path / "log").write_bytes(whole[:sizes[3]] + b"\x00\x00\x00\x30garbage")
    st = Store(path)
    assert bytes(st.load()[77].sections[b"a"].data) == b"3" * 50
    assert (path / "log").stat().st_size == sizes[3]  # the torn tail was cut off


def test_store_snapshot_then_crash_before_log_truncate(tmp_path):
    path = tmp_path / "p"
    store = Store(path)
    store.load()
    s = CkptState()
    logged(store, s, 1, m.Exec.OPEN, m.ExOpen(1, 1, "c", 7, ATTRS, 77, 10, BIG))
    logged(store, s, 1, m.Exec.SECTION_CREATE, m.ExSectionCreate(1, 1, 77, b"a", TIME_END, 1, BIG, b""))
    logged(store, s, 1, m.Exec.WRITE, m.ExWrite(1, 1, 77, 2, BIG, [WriteItem(b"a", 10, b"X")]))
    saved_log = (path / "log").read_bytes()
    store.snapshot(s.by_uid)
    store.close()
    (path / "log").write_bytes(saved_log)  # as if killed between the rename and the truncate
    got = Store(path).load()
    assert bytes(got[77].sections[b"a"].data) == b"\x00" * 10 + b"X"  # not applied twice


def test_store_unusable_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"ckpt\.persist_dir"):
        Store(blocker / "sub")


def test_open_create_flag_needs_valid_attributes():
    s = CkptState()
    out = s.apply(1, m.Exec.OPEN, m.ExOpen(1, 1, "c", CHECKPOINT_CREATE, ATTRS._replace(max_sections=0), 5, 0, BIG))
    assert out.error == int(SaAisError.INVALID_PARAM)


def test_store_recount_lets_replay_decide_as_the_cluster_did(tmp_path):
    path = tmp_path / "p"
    store = Store(path)
    store.load()
    s = CkptState()
    logged(store, s, 2, m.Exec.OPEN, m.ExOpen(1, 1, "r", 7, ATTRS._replace(retention_ns=100), 77, 10, BIG))
    s.by_uid[77].openers = {}  # the sync round found no opener left (its node went)
    s.by_uid[77].closed_at = 50
    store.append_recount(s.by_uid)
    logged(store, s, 1, m.Exec.RETENTION_EXPIRE, m.ExRetentionExpire(77, 150))
    assert 77 not in s.by_uid
    store.close()
    assert Store(path).load() == {}  # deleted by retention: it does not come back
