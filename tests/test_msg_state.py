"""The replicated MSG state alone: deterministic decisions from delivered messages."""

from __future__ import annotations

import itertools
import random

import pytest

from openais import msg
from openais.errors import SaAisError
from openais.msg import QueueGroupChange, QueueGroupPolicy, SendKind
from plugins.msg import messages as m
from plugins.msg import state as st

OK = SaAisError.OK
_req = itertools.count(1)


def open_msg(name: str, conn: int = 1, create: bool = True, size=(1000,) * 4, retention: int = 0, flags: int = 0,
             cflags: int = 0, handle: int = 1, time: int = 1) -> m.Open:
    return m.Open(time, conn, next(_req), 0, False, name, create, cflags, list(size) if create else [0] * 4,
                  retention, flags | (msg.QUEUE_CREATE if create else 0), handle)


def send_msg(dest: str, data: bytes = b"x", priority: int = 3, conn: int = 9, kind: SendKind = SendKind.SYNC,
             sender_id: int = 0, time: int = 2) -> m.Send:
    body = msg.encode_body(msg.Message(data=data, priority=priority))
    return m.Send(time, conn, next(_req), int(kind), 0, 0, sender_id, time, dest, body)


def of(effects: list, cls: type) -> list:
    return [e for e in effects if isinstance(e, cls)]


def result(effects: list) -> SaAisError:
    found = of(effects, st.OpenResult) + of(effects, st.SendResult) + of(effects, st.Answer)
    assert len(found) == 1, effects
    return found[0].error


def group(s: st.MsgState, op: m.GroupOp, name: str, policy: int = 0, queue: str = "") -> SaAisError:
    return result(s.apply_group(1, m.Group(1, 1, next(_req), int(op), name, policy, queue)))


def test_create_open_close_and_attribute_rules() -> None:
    s = st.MsgState()
    assert result(s.apply_open(1, open_msg("q", create=False))) == SaAisError.NOT_EXIST
    assert result(s.apply_open(1, open_msg("q"))) == OK
    assert result(s.apply_open(2, open_msg("q", conn=5))) == SaAisError.BUSY
    assert result(s.apply_open(2, open_msg("q", conn=5, size=(1, 2, 3, 4)))) == SaAisError.EXIST
    q = s.queue("q")
    assert q is not None and q.status is st.Status.OPEN and q.home == 1
    effects = s.apply_close(1, m.Close(5, 1, 0, *q.qid))
    assert s.queue("q") is None  # retention 0: deleted at the close
    assert of(effects, st.Taken)


def test_queue_limit_gives_no_resources() -> None:
    s = st.MsgState()
    for i in range(msg.MAX_NUM_QUEUES):
        assert result(s.apply_open(1, open_msg(f"q{i}", conn=i + 1))) == OK
    assert result(s.apply_open(1, open_msg("one-more"))) == SaAisError.NO_RESOURCES


def test_group_limits_and_membership() -> None:
    s = st.MsgState()
    for i in range(msg.MAX_NUM_QUEUE_GROUPS):
        assert group(s, m.GroupOp.CREATE, f"g{i}", 1) == OK
    assert group(s, m.GroupOp.CREATE, "extra", 1) == SaAisError.NO_RESOURCES
    assert group(s, m.GroupOp.CREATE, "g0", 1) == SaAisError.EXIST
    for i in range(msg.MAX_NUM_QUEUES_PER_GROUP + 1):
        s.apply_open(1, open_msg(f"q{i}", conn=100 + i))
    for i in range(msg.MAX_NUM_QUEUES_PER_GROUP):
        assert group(s, m.GroupOp.INSERT, "g0", queue=f"q{i}") == OK
    assert group(s, m.GroupOp.INSERT, "g0", queue="q64") == SaAisError.NO_RESOURCES
    assert group(s, m.GroupOp.INSERT, "g1", queue="q64") == OK  # a queue may be in several groups
    assert group(s, m.GroupOp.INSERT, "g1", queue="q64") == SaAisError.EXIST
    assert group(s, m.GroupOp.INSERT, "g1", queue="nope") == SaAisError.NOT_EXIST
    assert group(s, m.GroupOp.REMOVE, "g1", queue="q1") == SaAisError.NOT_EXIST
    assert group(s, m.GroupOp.CREATE, "q1", 1) == SaAisError.EXIST
    assert group(s, m.GroupOp.CREATE, "bad", 9) == SaAisError.INVALID_PARAM
    assert result(s.apply_open(1, open_msg("g5"))) == SaAisError.EXIST


def test_sizes_charge_metadata_and_area_zero_takes_nothing() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q", size=(64 + 10, 0, 1000, 1000)))
    assert result(s.apply_send(2, send_msg("q", b"x" * 10, priority=0))) == OK
    assert result(s.apply_send(2, send_msg("q", b"", priority=0))) == SaAisError.QUEUE_FULL
    assert result(s.apply_send(2, send_msg("q", b"", priority=1))) == SaAisError.QUEUE_FULL
    q = s.queue("q")
    assert q is not None and q.used(0) == 74 and q.count(0) == 1
    stored = of(s.apply_send(3, send_msg("q", b"abc", priority=2)), st.Store)
    assert [(e.node, e.priority) for e in stored] == [(1, 2)]


def test_round_robin_skips_ineligible_and_full_members() -> None:
    s = st.MsgState()
    for n, name in ((1, "a"), (2, "b"), (3, "c")):
        s.apply_open(n, open_msg(name, conn=n, size=(1000, 1000, 1000, 1000 if name != "b" else 100)))
    group(s, m.GroupOp.CREATE, "g", QueueGroupPolicy.ROUND_ROBIN)
    for name in ("a", "b", "c", "d"):
        if name == "d":
            s.apply_open(1, open_msg("d", conn=4))
            s.apply_close(1, m.Close(3, 4, 0, *s.queue("d").qid))  # type: ignore[union-attr]
        group(s, m.GroupOp.INSERT, "g", queue=name)
    picks = []
    for _ in range(6):
        stores = of(s.apply_send(2, send_msg("g", b"x" * 20)), st.Store)
        picks.append(s.queues[stores[0].qid].name)
    assert picks[:3] == ["a", "b", "c"]
    assert "d" not in picks  # closed (deleted, retention 0): not eligible
    assert picks[3:] == ["a", "c", "a"]  # b is full after one message of 84 bytes


def test_local_policies() -> None:
    s = st.MsgState()
    for n, name in ((1, "a"), (2, "b"), (2, "c"), (3, "d")):
        s.apply_open(n, open_msg(name, conn=ord(name)))
    group(s, m.GroupOp.CREATE, "lrr", QueueGroupPolicy.LOCAL_ROUND_ROBIN)
    group(s, m.GroupOp.CREATE, "lbq", QueueGroupPolicy.LOCAL_BEST_QUEUE)
    for name in "abcd":
        group(s, m.GroupOp.INSERT, "lrr", queue=name)
        group(s, m.GroupOp.INSERT, "lbq", queue=name)

    def pick(sender: int, dest: str, data: bytes = b"x") -> str:
        return s.queues[of(s.apply_send(sender, send_msg(dest, data)), st.Store)[0].qid].name

    assert [pick(2, "lrr") for _ in range(4)] == ["b", "c", "b", "c"]
    assert [pick(3, "lrr") for _ in range(2)] == ["d", "d"]
    assert [pick(4, "lrr") for _ in range(3)] == ["a", "b", "c"]  # no local member: group round robin
    s2 = st.MsgState()
    for n, name in ((1, "a"), (2, "b"), (2, "c")):
        s2.apply_open(n, open_msg(name, conn=ord(name)))
    group(s2, m.GroupOp.CREATE, "lbq", QueueGroupPolicy.LOCAL_BEST_QUEUE)
    for name in "abc":
        group(s2, m.GroupOp.INSERT, "lbq", queue=name)

    def pick2(sender: int, data: bytes = b"x") -> str:
        effects = s2.apply_send(sender, send_msg("lbq", data))
        stores = of(effects, st.Store)
        return s2.queues[stores[0].qid].name if stores else result(effects).name

    assert pick2(2) == "b"  # tie: first inserted
    assert pick2(2) == "c"  # b has less room now
    assert pick2(2, b"y" * 100) == "b"
    assert pick2(2, b"z" * 900) == "QUEUE_FULL"  # the best local queue has no room: QueueFull


def test_broadcast_and_no_eligible_member() -> None:
    s = st.MsgState()
    group(s, m.GroupOp.CREATE, "bc", QueueGroupPolicy.BROADCAST)
    assert result(s.apply_send(1, send_msg("bc"))) == SaAisError.QUEUE_NOT_AVAILABLE
    s.apply_open(1, open_msg("a", conn=1, size=(1000,) * 4))
    s.apply_open(2, open_msg("b", conn=2, size=(100,) * 4))
    group(s, m.GroupOp.INSERT, "bc", queue="a")
    group(s, m.GroupOp.INSERT, "bc", queue="b")
    assert len(of(s.apply_send(3, send_msg("bc", b"x" * 20)), st.Store)) == 2
    assert len(of(s.apply_send(3, send_msg("bc", b"x" * 20)), st.Store)) == 1  # b is full: a copy to a only
    assert result(s.apply_send(3, send_msg("bc", kind=SendKind.SEND_RECEIVE, sender_id=5))) == \
        SaAisError.INVALID_PARAM


def test_reply_once_and_timeouts() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q"))
    effects = s.apply_send(2, send_msg("q", kind=SendKind.SEND_RECEIVE, sender_id=77, conn=4))
    assert of(effects, st.Store)[0].sender_id == 77 and not of(effects, st.SendResult)
    body = msg.encode_body(msg.Message(data=b"r"))
    effects = s.apply_reply(3, m.Reply(3, 8, 1, False, 0, 0, 77, 3, body))
    delivered = of(effects, st.ReplyDelivered)[0]
    assert (delivered.node, delivered.conn, delivered.error) == (2, 4, OK)
    assert of(s.apply_reply(3, m.Reply(3, 8, 2, False, 0, 0, 77, 3, body)), st.ReplyResult)[0].error == \
        SaAisError.NOT_EXIST
    s.apply_send(2, send_msg("q", kind=SendKind.SEND_RECEIVE, sender_id=78, conn=4))
    assert s.apply_wait_timeout(3, m.WaitTimeout(4, 78)) == []  # only the origin node times it out
    assert of(s.apply_wait_timeout(2, m.WaitTimeout(4, 78)), st.ReplyDelivered)[0].error == SaAisError.TIMEOUT
    s.apply_send(2, send_msg("q", kind=SendKind.SEND_RECEIVE, sender_id=79, conn=4))
    lost = of(s.nodes_left([1]), st.ReplyDelivered)
    assert [(e.error, e.conn) for e in lost] == [(SaAisError.QUEUE_NOT_AVAILABLE, 4)]


def test_node_loss_retention_and_reopen() -> None:
    s = st.MsgState()
    s.apply_open(3, open_msg("keep", retention=-1, cflags=msg.QUEUE_PERSISTENT))
    s.apply_open(3, open_msg("temp", conn=2, retention=5_000_000_000))
    s.apply_send(1, send_msg("keep"))
    group(s, m.GroupOp.CREATE, "g", QueueGroupPolicy.ROUND_ROBIN)
    group(s, m.GroupOp.INSERT, "g", queue="keep")
    s.now = 1_000
    effects = s.nodes_left([3])
    keep, temp = s.queue("keep"), s.queue("temp")
    assert keep is not None and temp is not None
    assert keep.status is st.Status.UNAVAILABLE and keep.close_time == 1_000 and keep.used(3) == 0
    assert [e.deadline for e in of(effects, st.Timer)] == [1_000 + 5_000_000_000]
    changes = of(effects, st.GroupChanged)
    assert changes[0].changes == {"keep": QueueGroupChange.STATE_CHANGED}
    assert result(s.apply_send(1, send_msg("keep"))) == SaAisError.QUEUE_NOT_AVAILABLE
    assert s.apply_expire(1, m.Expire(2, *temp.qid, 99)) == []  # wrong deadline: ignored
    s.apply_expire(1, m.Expire(2, *temp.qid, temp.deadline))
    assert s.queue("temp") is None
    assert result(s.apply_open(2, open_msg("keep", create=False, conn=7))) == OK
    assert keep.status is st.Status.OPEN and keep.home == 2 and not keep.holders


def test_reopen_elsewhere_moves_then_answers() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q", retention=-1))
    q = s.queue("q")
    assert q is not None
    s.apply_send(2, send_msg("q", b"a"))
    s.apply_send(2, send_msg("q", b"b", priority=0))
    s.apply_close(1, m.Close(3, 1, 0, *q.qid))
    effects = s.apply_open(3, open_msg("q", create=False, conn=4, handle=40))
    assert of(effects, st.MoveOut) == [st.MoveOut(q.qid, 3)] and not of(effects, st.OpenResult)
    assert of(s.apply_send(2, send_msg("q", b"c")), st.Store)[0].node == 3
    items = [m.Stored(0, 1, 0, msg.encode_body(msg.Message(data=b"b", priority=0))),
             m.Stored(3, 1, 0, msg.encode_body(msg.Message(data=b"a")))]
    s.apply_move(1, m.Move(4, *q.qid, 3, items))
    assert q.holders[1] == [[0, 0]] * 4 and q.count(3) == 2
    done = s.apply_move_done(1, m.MoveDone(5, *q.qid, 3))
    opened = of(done, st.OpenResult)
    assert [(o.node, o.conn, o.handle, o.error) for o in opened] == [(3, 4, 40, OK)]


def test_unlink_frees_the_name_at_once() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q"))
    old = s.queue("q")
    assert result(s.apply_unlink(2, m.Unlink(2, 1, 1, "q"))) == OK
    assert s.queue("q") is None and old is not None and old.qid in s.queues
    assert result(s.apply_open(2, open_msg("q", conn=3))) == OK
    assert s.queue("q").qid != old.qid  # type: ignore[union-attr]
    s.apply_close(1, m.Close(3, 1, 0, *old.qid))
    assert old.qid not in s.queues
    assert result(s.apply_unlink(2, m.Unlink(2, 1, 1, "nope"))) == SaAisError.NOT_EXIST


def test_thresholds_cross_both_ways() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q", size=(1000,) * 4))
    q = s.queue("q")
    assert q is not None
    t = s.apply_thresholds(1, m.Thresholds(2, 1, 1, *q.qid, [200, 1000, 1000, 1000], [100, 0, 0, 0]))
    assert result(t) == OK
    bad = s.apply_thresholds(1, m.Thresholds(2, 1, 1, *q.qid, [2000, 0, 0, 0], [0, 0, 0, 0]))
    assert result(bad) == SaAisError.INVALID_PARAM
    crossings = []
    for _ in range(3):
        crossings += of(s.apply_send(2, send_msg("q", b"x" * 36, priority=0)), st.Capacity)
    assert [(c.priority, c.reached) for c in crossings] == [(0, True)]
    for _ in range(2):
        crossings = of(s.apply_consumed(1, m.Consumed(3, *q.qid, [0], [100])), st.Capacity)
    assert [(c.priority, c.reached) for c in crossings] == [(0, False)]


def _random_history(seed: int) -> list[tuple[str, int, object]]:
    rng = random.Random(seed)
    ops: list[tuple[str, int, object]] = []
    for _ in range(300):
        node = rng.randint(1, 3)
        kind = rng.random()
        name = f"q{rng.randint(0, 5)}"
        if kind < 0.2:
            ops.append(("open", node, open_msg(name, conn=rng.randint(1, 4), retention=-1)))
        elif kind < 0.3:
            ops.append(("group", node, m.Group(1, 1, 1, rng.randint(1, 4), f"g{rng.randint(0, 2)}",
                                              rng.randint(1, 4), name)))
        elif kind < 0.9:
            dest = name if rng.random() < 0.6 else f"g{rng.randint(0, 2)}"
            ops.append(("send", node, send_msg(dest, b"d" * rng.randint(0, 300), rng.randint(0, 3))))
        else:
            ops.append(("conn_gone", node, m.ConnGone(3, rng.randint(1, 4))))
    return ops


@pytest.mark.parametrize("seed", range(5))
def test_same_history_same_state(seed: int) -> None:
    """Two nodes applying the same delivered history agree on everything (and on every effect)."""
    replicas = [st.MsgState(), st.MsgState()]
    for op, node, message in _random_history(seed):
        outs = [getattr(r, f"apply_{op}")(node, message) for r in replicas]
        assert outs[0] == outs[1]
    a, b = replicas
    assert a.records(1, {}) == b.records(1, {})
    for q in a.queues.values():
        assert all(q.used(p) <= q.size[p] for p in range(4))


def test_merge_keeps_lowest_open_copy_and_unites_groups() -> None:
    left, right = st.MsgState(), st.MsgState()
    for s in (left, right):
        s.apply_open(1, open_msg("shared", retention=-1))
        s.apply_close(1, m.Close(2, 1, 0, *s.queue("shared").qid))  # type: ignore[union-attr]
        group(s, m.GroupOp.CREATE, "g", QueueGroupPolicy.ROUND_ROBIN)
    left.members, right.members = (1,), (2, 3)
    left.apply_open(1, open_msg("shared", create=False, conn=11, handle=5))
    right.apply_open(3, open_msg("shared", create=False, conn=33, handle=6))
    right.apply_open(2, open_msg("only-right", conn=22))
    group(left, m.GroupOp.INSERT, "g", queue="shared")
    group(right, m.GroupOp.INSERT, "g", queue="only-right")
    group(right, m.GroupOp.INSERT, "g", queue="shared")
    shares = {1: left.records(1, {}), 2: right.records(2, {}), 3: right.records(3, {})}
    merged = st.MsgState()
    merged.merge(shares, (1, 2, 3))
    shared = merged.queue("shared")
    assert shared is not None and shared.opener == (1, 11) and shared.opener_handle == 5
    assert merged.groups["g"].members == ["shared", "only-right"]
    assert merged.queue("only-right") is not None


def test_queue_empty_discards_held_messages() -> None:
    s = st.MsgState()
    s.apply_open(1, open_msg("q", retention=-1))
    q = s.queue("q")
    assert q is not None
    s.apply_send(2, send_msg("q", b"old"))
    s.apply_close(1, m.Close(3, 1, 0, *q.qid))
    effects = s.apply_open(2, open_msg("q", create=False, conn=5, flags=msg.QUEUE_EMPTY))
    assert of(effects, st.Drop) == [st.Drop(q.qid)] and not of(effects, st.MoveOut)
    assert result(effects) == OK and q.count(3) == 0 and q.home == 2


@pytest.mark.parametrize("seed", range(3))
def test_body_meta_agrees_with_the_strict_decoder(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        name = None if rng.random() < 0.5 else "s" * rng.randint(0, 256)
        raw = msg.encode_body(msg.Message(rng.randint(0, 9), 1, b"d" * rng.randint(0, 500), rng.randint(0, 3), name))
        body = msg.Body.decode(raw)
        assert st.body_meta(raw) == (body.priority, len(body.data))
        cut = raw[: rng.randint(0, len(raw) - 1)]
        with pytest.raises(ValueError):
            st.body_meta(cut)
        with pytest.raises(ValueError):
            st.body_meta(raw + b"x")
