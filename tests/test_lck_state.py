"""The LCK lock table alone: grant rule, FIFO service, orphans, deadlock detection, node loss, merges."""

from __future__ import annotations

import random

import pytest

from openais.errors import SaAisError
from openais.lck import LOCK_NO_QUEUE, LOCK_ORPHAN, LockMode, LockStatus
from plugins.lck.state import Answer, GrantedOver, LockState, Queued, Waiter

PR, EX = LockMode.PR, LockMode.EX
OK = SaAisError.OK


class Table:
    """A LockState with helpers naming openers as (node, conn, res_handle)."""

    def __init__(self, max_locks: int = 65536) -> None:
        self.state = LockState(max_locks)
        self.tokens = iter(range(1, 10**9))
        self.ids = iter(range(1, 10**9))

    def open(self, node: int, conn: int, res: int, name: str = "r", create: bool = True) -> list:
        return self.state.open(node, next(self.tokens), res, conn, 100 + conn, name, create)

    def lock(self, node: int, res: int, mode: int, flags: int = 0, signal: int = 0,
             lock_id: int | None = None) -> tuple[int, list]:
        lid = lock_id if lock_id is not None else (node << 32) | next(self.ids)
        effects = self.state.lock(node, next(self.tokens), res, lid, mode, flags, signal, 0)
        self.state.check_invariants()
        return lid, effects

    def status(self, node: int, res: int, mode: int, flags: int = 0, signal: int = 0) -> tuple[int, int | None]:
        """Lock and return (lock id, status); None when queued."""
        lid, effects = self.lock(node, res, mode, flags, signal)
        answers = [e for e in effects if isinstance(e, Answer) and e.lock_id == lid]
        return lid, (answers[0].status if answers else None)

    def unlock(self, node: int, res: int, lid: int) -> list:
        effects = self.state.unlock(node, next(self.tokens), res, lid)
        self.state.check_invariants()
        return effects


def granted(effects: list) -> list[int]:
    return [e.lock_id for e in effects if isinstance(e, Answer) and e.status == LockStatus.GRANTED]


@pytest.fixture
def t() -> Table:
    table = Table()
    for node in (1, 2, 3):
        assert table.open(node, conn=node, res=1)[0].error == OK
    return table


def test_open_without_create_needs_an_existing_resource():
    table = Table()
    assert table.open(1, 1, 1, create=False)[0].error == SaAisError.NOT_EXIST
    assert table.open(1, 1, 1)[0].error == OK
    assert table.open(2, 2, 1, create=False)[0].error == OK
    table.state.close(1, 9, 1)
    table.state.close(2, 9, 1)
    assert "r" not in table.state.resources  # the last close ends the resource
    assert table.open(1, 1, 2, create=False)[0].error == SaAisError.NOT_EXIST


def test_pr_shares_ex_excludes(t: Table):
    _a, s1 = t.status(1, 1, PR)
    _b, s2 = t.status(2, 1, PR)
    _c, s3 = t.status(3, 1, EX)
    assert (s1, s2, s3) == (LockStatus.GRANTED, LockStatus.GRANTED, None)


def test_fifo_pr_waits_behind_queued_ex_and_runs_of_pr_are_granted_together(t: Table):
    t.open(1, 4, 2)
    ex1, _ = t.status(1, 1, EX)
    ex2, s = t.status(2, 1, EX)
    assert s is None
    pr3, s = t.status(3, 1, PR)
    assert s is None  # behind the queued EX: writers do not starve
    pr4, s = t.status(1, 2, PR)  # another handle of node 1
    assert s is None
    assert granted(t.unlock(1, 1, ex1)) == [ex2]
    assert granted(t.unlock(2, 1, ex2)) == [pr3, pr4]


def test_no_queue_and_duplicate_ex(t: Table):
    t.status(1, 1, EX)
    assert t.status(2, 1, PR, LOCK_NO_QUEUE)[1] == LockStatus.NOT_QUEUED
    assert t.status(1, 1, EX)[1] == LockStatus.DUPLICATE_EX
    assert not t.state.resources["r"].queue


def test_no_queue_never_overtakes_a_queued_request(t: Table):
    t.status(1, 1, PR)
    t.status(2, 1, EX)  # queued
    assert t.status(3, 1, PR, LOCK_NO_QUEUE)[1] == LockStatus.NOT_QUEUED


def test_no_more_beyond_the_limit():
    table = Table(max_locks=2)
    table.open(1, 1, 1)
    assert table.status(1, 1, PR)[1] == LockStatus.GRANTED
    assert table.status(1, 1, PR)[1] == LockStatus.GRANTED
    assert table.status(1, 1, PR)[1] == LockStatus.NO_MORE


def waiters(t: Table, effects: list, node: int | None = None) -> list:
    return [w for e in effects if isinstance(e, (Queued, GrantedOver)) for w in t.state.waiters_of(e, node)]


def test_waiter_callbacks_on_queue_and_on_grant(t: Table):
    held, _ = t.lock(1, 1, PR)
    _, effects = t.lock(2, 1, EX, signal=77)
    assert waiters(t, effects) == [Waiter((1, 1), 77, held, PR, EX)]
    assert waiters(t, effects, node=2) == []  # only the holder's node builds the callback
    _, effects = t.lock(3, 1, PR, signal=5)  # queued behind the EX: no conflict with the PR held
    assert waiters(t, effects) == []
    effects = t.unlock(1, 1, held)
    ex = granted(effects)[0]
    assert waiters(t, effects) == [Waiter((2, 2), 5, ex, EX, PR)]
    assert waiters(t, effects, node=1) == []


def test_orphan_lock_survives_its_owner_and_purge_serves_the_queue(t: Table):
    orphan, _ = t.lock(1, 1, EX, LOCK_ORPHAN)
    t.state.conn_exit(1, 1)
    t.state.check_invariants()
    rec = t.state.locks[orphan]
    assert rec.orphan and rec.granted
    assert t.status(2, 1, PR, LOCK_ORPHAN)[1] == LockStatus.ORPHANED
    waiting, s = t.status(3, 1, PR)
    assert s is None  # queued behind the orphan, no waiter callback to anybody
    effects = t.state.purge(2, 99, 1)
    assert granted(effects) == [waiting]
    assert orphan not in t.state.locks


def test_orphan_keeps_the_resource_alive():
    table = Table()
    table.open(1, 1, 1)
    table.lock(1, 1, EX, LOCK_ORPHAN)
    table.state.close(1, 5, 1)
    assert "r" in table.state.resources
    assert table.open(2, 2, 1, create=False)[0].error == OK


def test_self_deadlock_through_a_second_resource_of_the_same_handle():
    table = Table()
    table.open(1, 1, 1)
    table.open(1, 1, 2)
    table.status(1, 1, EX)
    assert table.status(1, 2, EX)[1] == LockStatus.DEADLOCK
    assert table.status(1, 1, PR)[1] == LockStatus.DEADLOCK  # PR while the same handle holds EX


def test_two_owner_two_resource_deadlock_second_request_refused():
    table = Table()
    for node in (1, 2):
        table.open(node, node, 1, "a")
        table.open(node, node, 2, "b")
    table.status(1, 1, EX)  # X holds a
    table.status(2, 2, EX)  # Y holds b
    assert table.status(1, 2, EX)[1] is None  # X waits for b
    assert table.status(2, 1, EX)[1] == LockStatus.DEADLOCK  # Y would close the cycle


def test_three_owner_cycle_and_queue_order_edges():
    table = Table()
    for node in (1, 2, 3):
        for res, name in ((1, "a"), (2, "b"), (3, "c")):
            table.open(node, node, res, name)
    table.status(1, 1, EX)  # 1 holds a
    table.status(2, 2, EX)  # 2 holds b
    table.status(3, 3, PR)  # 3 holds c (PR)
    assert table.status(1, 2, EX)[1] is None  # 1 -> 2
    assert table.status(2, 3, EX)[1] is None  # 2 -> 3
    assert table.status(3, 1, PR)[1] == LockStatus.DEADLOCK  # 3 -> 1 closes it


def test_deadlock_is_not_reported_without_a_cycle():
    table = Table()
    for node in (1, 2, 3):
        table.open(node, node, 1, "a")
        table.open(node, node, 2, "b")
    table.status(3, 1, PR)  # 3 holds a
    table.status(2, 1, EX)  # 2 waits on a for 3
    table.status(2, 2, EX)  # 2 holds b
    assert table.status(1, 2, PR)[1] is None  # 1 waits for 2
    assert table.status(3, 2, PR)[1] == LockStatus.DEADLOCK  # 3 -> 2 -> 3
    assert table.status(1, 1, PR)[1] is None  # 1 -> 2 (queued ahead) -> 3: no path back to 1


def test_orphan_locks_close_no_cycle(t: Table):
    t.lock(1, 1, EX, LOCK_ORPHAN)
    t.state.conn_exit(1, 1)
    assert t.status(2, 1, EX)[1] is None  # waits for the orphan, no deadlock


def test_node_loss_releases_and_grants_waiters_in_order(t: Table):
    t.lock(1, 1, EX)
    w2, _ = t.lock(2, 1, PR)
    w3, _ = t.lock(3, 1, PR)
    effects = t.state.nodes_lost([1])
    t.state.check_invariants()
    assert granted(effects) == [w2, w3]


def test_withdraw_only_a_queued_request(t: Table):
    held, _ = t.lock(1, 1, EX)
    waiting, _ = t.lock(2, 1, EX)
    assert t.state.withdraw(1, held) == []  # granted: nothing to withdraw
    effects = t.state.withdraw(2, waiting)
    assert [(e.error, e.lock_id) for e in effects] == [(SaAisError.TIMEOUT, waiting)]
    assert waiting not in t.state.locks


def test_unlock_of_unknown_or_released_lock_is_not_exist(t: Table):
    held, _ = t.lock(1, 1, EX)
    assert t.unlock(1, 1, held)[-1].error == OK
    assert t.unlock(1, 1, held)[-1].error == SaAisError.NOT_EXIST
    assert t.unlock(2, 1, 12345)[-1].error == SaAisError.NOT_EXIST


def test_unlock_of_a_pending_request_withdraws_it(t: Table):
    t.lock(1, 1, EX)
    pending, _ = t.lock(2, 1, PR)
    effects = t.unlock(2, 1, pending)
    assert [e.error for e in effects] == [SaAisError.NOT_EXIST, OK]


def _sides(tables: dict[int, LockState]) -> dict[int, list]:
    return {sender: list(state.export()) for sender, state in tables.items()}


def test_merge_keeps_every_granted_lock_and_orders_queues_side_by_side():
    a, b = Table(), Table()
    for table, node in ((a, 1), (b, 2)):
        table.open(node, node, 1)
        table.open(node, node + 10, 2)
    a.status(1, 1, EX)
    b.status(2, 2, EX)
    qa, _ = a.lock(1, 2, EX)  # side A queue
    qb, _ = b.lock(2, 1, EX)  # side B queue (owner conn 2 ≠ 12)
    effects = a.state.install(_sides({1: a.state, 2: b.state}), {1: 1, 2: 2}, [1, 2])
    state = a.state
    state.check_invariants()
    res = state.resources["r"]
    assert len(res.granted) == 2  # conflicting EX locks of both sides are both kept
    assert [r.lock_id for r in res.queue] == [qa, qb]
    assert not granted(effects)


def test_merge_refuses_a_cycle_made_by_uniting_the_tables():
    c, d = Table(), Table()
    for table, node in ((c, 1), (d, 2)):
        table.open(node, node, 1, "x")
        table.open(node, node, 2, "y")
        table.open(node + 4, node + 4, 3, "x")
        table.open(node + 4, node + 4, 4, "y")
    c.status(1, 1, EX)  # 1 holds x
    c.status(5, 4, EX)  # 5 holds y on side C
    c_wait, _ = c.lock(1, 2, EX)  # 1 waits for 5 on y
    d.status(2, 2, EX)  # 2 holds y on side D
    d.status(6, 3, EX)  # 6 holds x on side D
    d_wait, _ = d.lock(2, 1, EX)  # 2 waits for 6 on x
    # united: 1 waits on y for 5 and 2; 2 waits on x for 6 and 1 -> cycle 1 -> 2 -> 1
    effects = c.state.install(_sides({1: c.state, 2: d.state}), {1: 1, 2: 2, 5: 5, 6: 6}, [1, 2, 5, 6])
    c.state.check_invariants()
    refused = [e.lock_id for e in effects if isinstance(e, Answer) and e.status == LockStatus.DEADLOCK]
    assert refused == [d_wait]  # the later one in the united order
    assert c_wait in c.state.locks


def test_restarted_node_owners_are_finalized_at_sync():
    t = Table()
    t.open(1, 1, 1)
    t.open(2, 2, 1)
    t.state.install({}, {1: 10, 2: 20}, [1, 2])
    t.status(2, 1, EX)
    w, _ = t.lock(1, 1, EX)
    effects = t.state.install({}, {1: 10, 2: 21}, [1, 2])  # node 2 came back as a new executive
    assert granted(effects) == [w]
    assert (2, 1) not in t.state.openers


def test_random_operations_keep_invariants_and_replicas_identical():
    """Two replicas fed the same random history stay identical; the table never breaks its invariants."""
    rng = random.Random(7)
    replicas = [LockState(), LockState()]
    ids = iter(range(1, 10**9))
    openers: list[tuple[int, int, int]] = []
    names = ["a", "b", "c"]
    for step in range(3000):
        op = rng.random()
        if op < 0.15 or not openers:
            node, conn, res = rng.randint(1, 3), rng.randint(1, 4), next(ids)
            calls = [("open", node, step, res, conn, 1, rng.choice(names), True)]
            openers.append((node, conn, res))
        elif op < 0.6:
            node, _conn, res = rng.choice(openers)
            calls = [("lock", node, step, res, next(ids), rng.choice([PR, EX]),
                      rng.choice([0, 0, 0, LOCK_NO_QUEUE, LOCK_ORPHAN]), 0, 0)]
        elif op < 0.85:
            state = replicas[0]
            mine = [r for r in state.locks.values() if r.opener is not None]
            if not mine:
                continue
            rec = rng.choice(mine)
            calls = [("unlock", rec.opener[0], step, rec.opener[1], rec.lock_id)]
        elif op < 0.92:
            node, conn, res = rng.choice(openers)
            openers.remove((node, conn, res))
            calls = [("close", node, 0, res)]
        elif op < 0.96:
            node, _conn, res = rng.choice(openers)
            calls = [("purge", node, step, res)]
        else:
            lost = rng.randint(1, 3)
            openers = [o for o in openers if o[0] != lost]
            calls = [("nodes_lost", [lost])]
        outs = []
        for state in replicas:
            effects = []
            for name, *args in calls:
                effects.extend(getattr(state, name)(*args))
            state.check_invariants()
            for res in state.resources.values():
                modes = [r.mode for r in res.granted.values()]
                assert modes.count(EX) == 0 or len(modes) == 1, "EX shared"
            outs.append(effects)
        assert outs[0] == outs[1]
    assert sorted(replicas[0].locks) == sorted(replicas[1].locks)


def test_history_checker_catches_lost_updates_and_overlaps():
    from tests.lck_history import check_history

    ops = [{"pid": 1, "i": 0, "granted": 0.0, "written": 1.0}, {"pid": 2, "i": 0, "granted": 2.0, "written": 3.0}]
    check_history([(1, 1, 0), (2, 2, 0)], ops)
    with pytest.raises(AssertionError, match="lost or duplicated"):
        check_history([(1, 1, 0), (1, 2, 0)], ops)
    with pytest.raises(AssertionError, match="two EX holders"):
        check_history([(1, 1, 0), (2, 2, 0)], [ops[0], {**ops[1], "granted": 0.5}])
    with pytest.raises(AssertionError, match="not in the log"):
        check_history([(1, 1, 0)], ops)


def test_a_partition_that_may_not_grant_queues_and_grants_later(t: Table, monkeypatch):
    monkeypatch.setattr(LockState, "partition_may_grant", lambda self: False)
    lid, status = t.status(1, 1, EX)
    assert status is None  # queued, not granted (the QUORUM hook)
    monkeypatch.setattr(LockState, "partition_may_grant", lambda self: True)
    assert granted(t.state.serve_all()) == [lid]


def _brute_force_deadlock(state: LockState, res, rec) -> bool:
    """The contract's definition, computed naively: does queueing ``rec`` at the tail let its owner reach itself?"""
    edges: dict = {}

    def add_edges(owner, target, mode, ahead):
        out = edges.setdefault(owner, set())
        for held in target.granted.values():
            if held.owner is not None and (mode == EX or held.mode == EX):
                out.add(held.owner)
        for other in ahead:
            out.add(other.owner)

    for target in state.resources.values():
        for i, q in enumerate(target.queue):
            add_edges(q.owner, target, q.mode, target.queue[:i])
    me = rec.owner
    start: set = set()
    for held in res.granted.values():
        if held.owner is not None and (rec.mode == EX or held.mode == EX):
            start.add(held.owner)
    start |= {q.owner for q in res.queue}
    todo, seen = list(start), set(start)
    while todo:
        owner = todo.pop()
        if owner == me:
            return True
        for nxt in edges.get(owner, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.mark.parametrize("seed", range(8))
def test_deadlock_detection_matches_the_definition(seed):
    """The indexed search agrees with a naive search of the contract's wait-for graph on random tables."""
    from plugins.lck.state import LockRec as Rec
    from plugins.lck.waitfor import would_deadlock

    rng = random.Random(seed)
    state = LockState()
    owners = [(n, c) for n in (1, 2) for c in (1, 2, 3)]
    names = ["a", "b", "c", "d"]
    handle = iter(range(1, 10**6))
    openers = {}
    for owner in owners:
        for name in names:
            key = next(handle)
            state.open(owner[0], 0, key, owner[1], 1, name, True)
            openers[(owner, name)] = key
    ids = iter(range(1, 10**6))
    checked = 0
    for _ in range(600):
        owner, name = rng.choice(owners), rng.choice(names)
        key = openers[(owner, name)]
        res = state.resources[name]
        mode = rng.choice([PR, EX])
        if res.queue or not res.compatible(mode):
            probe = Rec(0, name, (owner[0], key), owner, 1, mode, 0, 0, 0, 0)
            assert would_deadlock(state, res, probe) == _brute_force_deadlock(state, res, probe)
            checked += 1
        roll = rng.random()
        if roll < 0.55:
            state.lock(owner[0], 0, key, next(ids), mode, 0, 0, 0)
        elif roll < 0.9 and state.locks:
            rec = rng.choice(sorted(state.locks.values(), key=lambda r: r.lock_id))
            if rec.opener is not None:
                state.unlock(rec.opener[0], 0, rec.opener[1], rec.lock_id)
        state.check_invariants()
    assert checked > 100
