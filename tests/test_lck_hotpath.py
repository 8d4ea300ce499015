"""The LCK hot paths: one-struct decoding of LOCK and UNLOCK, another node's requests, answers in order.

The delivery path decodes LOCK and UNLOCK with one struct call and skips the effects loop on the
nodes an uncontended request does not concern; these tests pin down that it stays as strict as the
messages' own decoders and that every replica still decides the same, in agreed order.
"""

from __future__ import annotations

import random

import pytest

from openais import lck
from openais.errors import SaAisError
from openais.lck import LockMode, LockStatus, Request
from plugins.lck import messages as m
from plugins.lck.messages import Exec
from plugins.lck.records import Answer
from tests.test_lck_engine import LCK, OK, Client, assert_replicas_equal, make_cluster

PR, EX = LockMode.PR, LockMode.EX
GRANTED = int(LockStatus.GRANTED)


@pytest.fixture
def cluster():
    return make_cluster()


@pytest.mark.parametrize("exec_id, payload", [
    (Exec.LOCK, m.LockMsg.pack(1, 1, 1 << 32 | 7, int(EX), 0, 0, 0)[:-1]),  # one byte short
    (Exec.LOCK, m.LockMsg.pack(1, 1, 1 << 32 | 7, int(EX), 0, 0, 0) + b"\x00"),  # one byte over
    (Exec.LOCK, m.LockMsg.pack(1, 1, 1 << 32 | 7, 0, 0, 0, 0)),  # mode 0
    (Exec.LOCK, m.LockMsg.pack(1, 1, 1 << 32 | 7, 3, 0, 0, 0)),  # mode 3
    (Exec.LOCK, b""),
    (Exec.UNLOCK, m.UnlockMsg.pack(1, 1, 1 << 32 | 7)[:-1]),
    (Exec.UNLOCK, m.UnlockMsg.pack(1, 1, 1 << 32 | 7) + b"\x00"),
    (Exec.UNLOCK, b""),
])
def test_a_malformed_lock_or_unlock_is_dropped_everywhere_and_changes_nothing(cluster, exec_id, payload):
    a = Client(cluster, 1)
    res = a.open()
    before = [cluster.engine(n, LCK).malformed for n in (1, 2, 3)]
    held = a.lock(res, EX)
    assert held[1] == GRANTED
    locks = {n: dict(cluster.engine(n, LCK).state.locks) for n in (1, 2, 3)}
    cluster.engine(1, LCK).api.mcast(LCK, exec_id, payload)
    cluster.run()
    for n in (1, 2, 3):
        engine = cluster.engine(n, LCK)
        assert engine.malformed == before[n - 1] + 1
        assert engine.state.locks == locks[n]  # nothing applied, not even in part
    assert_replicas_equal(cluster, [1, 2, 3])
    assert a.unlock(res, held[0]) == OK  # the table still works
    assert a.lock(res, EX)[1] == GRANTED


def test_another_nodes_uncontended_requests_are_answered_only_on_their_node(cluster):
    a, b = Client(cluster, 1), Client(cluster, 2)
    ra, rb = a.open("x"), b.open("y")
    lock_id, status = a.lock(ra, EX)
    assert status == GRANTED
    assert b.lock(rb, EX)[1] == GRANTED
    assert a.unlock(ra, lock_id) == OK
    for n in (1, 2, 3):
        assert not cluster.engine(n, LCK).pending, f"node {n} kept a pending request"
    assert not b.conn.dispatched and not a.conn.dispatched
    assert len([r for r in a.conn.responses if r[0] == Request.LOCK]) == 1
    assert_replicas_equal(cluster, [1, 2, 3])


def test_state_answers_are_tuples_that_name_their_fields():
    answer = Answer(2, 9, SaAisError.OK, GRANTED, 5)
    assert (answer.node, answer.token, answer.error, answer.status, answer.lock_id) == (2, 9, SaAisError.OK, GRANTED, 5)
    assert Answer(1, 2, SaAisError.NOT_EXIST) == Answer(1, 2, SaAisError.NOT_EXIST, 0, 0)
    assert isinstance(answer, Answer)


def test_interleaved_requests_of_three_nodes_are_decided_alike_in_agreed_order():
    """Many requests queued on every node before any is delivered: FIFO per resource in delivery order."""
    rng = random.Random(18)
    cluster = make_cluster()
    clients = [Client(cluster, 1 + i % 3, pid=2000 + i) for i in range(9)]
    handles = [c.open(f"r{i % 3}") for i, c in enumerate(clients)]
    held: dict[int, int] = {}  # client index -> lock id it holds
    for _round in range(60):
        sent = []
        for i in rng.sample(range(len(clients)), 5):
            c, res = clients[i], handles[i]
            if i in held:
                sent.append(("unlock", i, c.send(Request.UNLOCK, lck.UnlockRequest.pack(res, held.pop(i), None))))
            else:
                mode = rng.choice((PR, EX))
                sent.append(("lock", i, c.lock_send(res, mode, lck.LOCK_NO_QUEUE)))
        cluster.run()  # every request of the round delivered in one agreed order
        for kind, i, rid in sent:
            answer = clients[i].answer(rid)
            assert answer is not None, f"{kind} of client {i} unanswered"
            if kind == "lock" and answer[0] == OK:
                lock_id, status = lck.LockAnswer.decode(answer[1])
                if status == GRANTED:
                    held[i] = lock_id
        assert_replicas_equal(cluster, [1, 2, 3])
        # what the table says each resource holds: EX alone, or any number of PR
        state = cluster.engine(1, LCK).state
        for res in state.resources.values():
            modes = [r.mode for r in res.granted.values()]
            assert modes.count(EX) == 0 or len(modes) == 1, modes


def test_the_sync_request_structs_agree_with_the_messages():
    """lock()/unlock() pack, and the executive unpacks, the invocation-less requests with one struct."""
    rng = random.Random(5)
    for _ in range(200):
        res, lock_id = rng.getrandbits(64), rng.getrandbits(64)
        mode, flags, signal = rng.choice((1, 2)), rng.getrandbits(32), rng.getrandbits(64)
        timeout = rng.choice((-1, 0, rng.getrandbits(63)))
        packed = lck.SYNC_LOCK_REQUEST.pack(res, mode, flags, signal, timeout, 0)
        assert packed == lck.LockRequest.pack(res, mode, flags, signal, timeout, None)
        assert lck.LockRequest.unpack(packed) == (res, mode, flags, signal, timeout, None)
        packed = lck.SYNC_UNLOCK_REQUEST.pack(res, lock_id, 0)
        assert packed == lck.UnlockRequest.pack(res, lock_id, None)
        assert lck.UnlockRequest.unpack(packed) == (res, lock_id, None)


@pytest.mark.parametrize("payload", [
    lck.SYNC_LOCK_REQUEST.pack(1, int(EX), 0, 0, -1, 0)[:-1] + b"\x01",  # says an invocation follows: none does
    lck.SYNC_LOCK_REQUEST.pack(1, int(EX), 0, 0, -1, 0)[:-1] + b"\x02",
    lck.SYNC_LOCK_REQUEST.pack(1, int(EX), 0, 0, -1, 0)[:-2],
    b"",
])
def test_a_malformed_lock_request_is_invalid_param_on_either_decoder(cluster, payload):
    a = Client(cluster, 1)
    a.open()
    rid = a.send(Request.LOCK, payload)
    cluster.run()
    assert a.answer(rid) == (int(SaAisError.INVALID_PARAM), b"")
    assert not cluster.engine(1, LCK).pending


@pytest.mark.parametrize("payload", [
    lck.SYNC_UNLOCK_REQUEST.pack(1, 1 << 32 | 1, 0)[:-1] + b"\x01",
    lck.SYNC_UNLOCK_REQUEST.pack(1, 1 << 32 | 1, 0)[:-1],
    b"",
])
def test_a_malformed_unlock_request_is_invalid_param_on_either_decoder(cluster, payload):
    a = Client(cluster, 1)
    a.open()
    rid = a.send(Request.UNLOCK, payload)
    cluster.run()
    assert a.answer(rid) == (int(SaAisError.INVALID_PARAM), b"")


def test_the_sync_and_the_general_decoder_give_the_same_grant(cluster):
    """The same lock asked with the sync layout and with an invocation-bearing one decide alike."""
    a = Client(cluster, 1)
    res = a.open()
    rid = a.send(Request.LOCK, lck.SYNC_LOCK_REQUEST.pack(res, int(PR), lck.LOCK_NO_QUEUE, 77, -1, 0))
    cluster.run()
    lock_id, status = a.lock_result(rid)
    assert status == GRANTED
    rec = cluster.engine(2, LCK).state.locks[lock_id]
    assert (rec.mode, rec.flags, rec.waiter_signal) == (int(PR), lck.LOCK_NO_QUEUE, 77)
    assert a.unlock(res, lock_id) == OK
    assert_replicas_equal(cluster, [1, 2, 3])
