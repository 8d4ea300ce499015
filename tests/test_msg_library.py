"""The contract page's error table, row by row, through the real library against one real executive."""

from __future__ import annotations

import itertools
import select
import threading
import time

import pytest

import openais
from aisexec.localcluster import LocalCluster
from openais import msg

pytestmark = pytest.mark.multiprocess

ATTRS = msg.QueueCreationAttributes(size=(4096, 4096, 4096, 4096), retention_time=0.0)
_names = itertools.count(1)


def fresh(prefix: str = "q") -> str:
    """A name no other test uses."""
    return f"{prefix}{next(_names)}"


@pytest.fixture(scope="module")
def executive(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("msglib"), 1) as c:
        c.start_all()
        try:
            c.wait_members([1], [1], timeout=120)  # generous: the machine may be shared
        except TimeoutError as exc:
            raise RuntimeError(f"the executive did not start: {exc}\n{c.log(1)[-3000:]}") from None
        yield c.environ(1)["OPENAIS_IPC_SOCKET"]


@pytest.fixture
def events() -> list:
    return []


@pytest.fixture
def h(executive, events):
    handle = msg.initialize(
        queue_open=lambda inv, q, err: events.append(("open", inv, q, err)),
        queue_group_track=lambda g, buf, n, err: events.append(("track", g, buf, n, err)),
        message_delivered=lambda inv, err: events.append(("delivered", inv, err)),
        message_received=lambda q: events.append(("received", q.name)),
        queue_capacity_reached=lambda q, p: events.append(("reached", q.name, p)),
        queue_capacity_available=lambda q, p: events.append(("available", q.name, p)),
        path=executive)
    yield handle
    if not handle._finalized:
        handle.finalize()


@pytest.fixture
def bare(executive):
    handle = msg.initialize(path=executive)
    yield handle
    if not handle._finalized:
        handle.finalize()


def pump(handle, events: list, predicate, timeout: float = 10.0):
    """Dispatch until an event satisfies ``predicate``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in events:
            if predicate(e):
                events.remove(e)
                return e
        select.select([handle], [], [], 0.1)
        handle.dispatch(openais.DISPATCH_ALL)
    raise AssertionError(f"no matching callback; got {events}")


def test_initialize_version_rows(executive) -> None:
    for bad in (("A", 3, 1), ("B", 4, 1), ("B", 0, 1), ["B", 3, 1], ("B", "3", 1), ("B", 3)):
        with pytest.raises(openais.Version):
            msg.initialize(version=bad, path=executive)  # type: ignore[arg-type]
    with msg.initialize(version=("B", 1, 1), path=executive) as old:
        assert old.version == ("B", 3, 1)


def test_life_cycle_rows(executive) -> None:
    handle = msg.initialize(path=executive)
    assert isinstance(handle.fileno(), int)
    for flags in (0, 4):
        with pytest.raises(openais.InvalidParam):
            handle.dispatch(flags)
    handle.dispatch(openais.DISPATCH_ALL)
    handle.finalize()
    with pytest.raises(openais.BadHandle):
        handle.finalize()
    with pytest.raises(openais.BadHandle):
        handle.fileno()
    with pytest.raises(openais.BadHandle):
        handle.dispatch()
    with pytest.raises(openais.BadHandle):
        handle.queue_status_get("x")


def test_queue_open_rows(h, bare) -> None:
    name = fresh()
    with pytest.raises(openais.BadFlags):
        h.queue_open(name, ATTRS, msg.QUEUE_CREATE | 0x8)
    with pytest.raises(openais.BadFlags):
        h.queue_open(name, ATTRS._replace(creation_flags=2), msg.QUEUE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.queue_open(name, ATTRS, 0)
    with pytest.raises(openais.InvalidParam):
        h.queue_open(name, None, msg.QUEUE_CREATE)
    for size in ((1, 2, 3), (1, 2, 3, -4), (1, 2, 3, 4.0)):
        with pytest.raises(openais.InvalidParam):
            h.queue_open(name, ATTRS._replace(size=size), msg.QUEUE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.queue_open(name, ATTRS._replace(retention_time=-1.0), msg.QUEUE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.queue_open("", ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.queue_open(name, ATTRS, msg.QUEUE_CREATE, timeout=-1.0)
    with pytest.raises(openais.Init):
        bare.queue_open(name, ATTRS, msg.QUEUE_CREATE | msg.QUEUE_RECEIVE_CALLBACK)
    with pytest.raises(openais.NotExist):
        h.queue_open(name)
    with pytest.raises(openais.TooBig):
        h.queue_open(name, ATTRS._replace(size=(msg.MAX_PRIORITY_AREA_SIZE + 1, 0, 0, 0)), msg.QUEUE_CREATE)
    with pytest.raises(openais.TooBig):
        h.queue_open(name, ATTRS._replace(size=(16 << 20, 16 << 20, 1, 0)), msg.QUEUE_CREATE)
    with pytest.raises(openais.NameTooLong):
        h.queue_open("n" * 257, ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.Timeout):
        h.queue_open(name, ATTRS, msg.QUEUE_CREATE, timeout=0)
    q = h.queue_open(name, ATTRS, msg.QUEUE_CREATE, timeout=5.0)
    assert q.name == name and q.handle is h
    with pytest.raises(openais.Busy):
        bare.queue_open(name)
    with pytest.raises(openais.Exist):
        bare.queue_open(name, ATTRS._replace(size=(1, 2, 3, 4)), msg.QUEUE_CREATE)
    group = fresh("g")
    h.queue_group_create(group, msg.QueueGroupPolicy.ROUND_ROBIN)
    with pytest.raises(openais.Exist):
        h.queue_open(group, ATTRS, msg.QUEUE_CREATE)
    q.close()
    with pytest.raises(openais.BadHandle):
        q.close()
    again = bare.queue_open(name, ATTRS, msg.QUEUE_CREATE)  # same attributes: opens the existing queue
    bare.finalize()
    with pytest.raises(openais.BadHandle):
        again.message_get(timeout=0)


def test_queue_open_async_rows(h, bare, events) -> None:
    with pytest.raises(openais.Init):
        bare.queue_open_async(1, fresh(), ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.BadFlags):
        h.queue_open_async(1, fresh(), ATTRS, msg.QUEUE_CREATE | 0x10)
    with pytest.raises(openais.NameTooLong):
        h.queue_open_async(1, "x" * 300, ATTRS, msg.QUEUE_CREATE)
    name = fresh()
    h.queue_open_async(7, name)
    assert pump(h, events, lambda e: e[0] == "open")[1:] == (7, None, openais.SaAisError.NOT_EXIST)
    h.queue_open_async(8, name, ATTRS, msg.QUEUE_CREATE)
    _, inv, q, err = pump(h, events, lambda e: e[0] == "open")
    assert (inv, err) == (8, openais.SaAisError.OK) and isinstance(q, msg.Queue)
    h.queue_open_async(9, name)
    assert pump(h, events, lambda e: e[0] == "open")[1:] == (9, None, openais.SaAisError.BUSY)
    h.queue_open_async(10, name, ATTRS._replace(retention_time=5.0), msg.QUEUE_CREATE)
    assert pump(h, events, lambda e: e[0] == "open")[1:] == (10, None, openais.SaAisError.EXIST)


def test_status_retention_unlink_rows(h) -> None:
    with pytest.raises(openais.NotExist):
        h.queue_status_get(fresh())
    with pytest.raises(openais.NotExist):
        h.queue_unlink(fresh())
    name = fresh()
    pq = h.queue_open(name, ATTRS._replace(creation_flags=msg.QUEUE_PERSISTENT), msg.QUEUE_CREATE)
    with pytest.raises(openais.BadOperation):
        pq.retention_time_set(1.0)
    other = fresh()
    q = h.queue_open(other, ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.InvalidParam):
        q.retention_time_set(-1.0)
    q.retention_time_set(30.0)
    status = h.queue_status_get(other)
    assert status.retention_time == 30.0 and status.close_time == 0
    assert [u.queue_size for u in status.queue_usage] == [4096] * 4
    h.queue_unlink(name)  # open: stays usable, name free at once
    with pytest.raises(openais.NotExist):
        h.queue_status_get(name)
    h.message_send(other, msg.Message(data=b"x"))
    pq.close()
    q.close()
    assert h.queue_status_get(other).close_time > 0  # retention 30 s: still there


def test_group_rows(h, bare) -> None:
    group, queue = fresh("g"), fresh()
    h.queue_group_create(group, msg.QueueGroupPolicy.LOCAL_BEST_QUEUE)
    with pytest.raises(openais.Exist):
        h.queue_group_create(group, msg.QueueGroupPolicy.ROUND_ROBIN)
    for bad in (0, 5, "1"):
        with pytest.raises(openais.InvalidParam):
            h.queue_group_create(fresh("g"), bad)  # type: ignore[arg-type]
    with pytest.raises(openais.NotExist):
        h.queue_group_insert(fresh("g"), queue)
    with pytest.raises(openais.NotExist):
        h.queue_group_insert(group, queue)
    q = h.queue_open(queue, ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.Exist):
        h.queue_group_create(queue, msg.QueueGroupPolicy.ROUND_ROBIN)
    h.queue_group_insert(group, queue)
    with pytest.raises(openais.Exist):
        h.queue_group_insert(group, queue)
    with pytest.raises(openais.NotExist):
        h.queue_group_remove(group, fresh())
    with pytest.raises(openais.NotExist):
        h.queue_group_remove(fresh("g"), queue)
    for flags in (0, 0x8, msg.TRACK_CHANGES | msg.TRACK_CHANGES_ONLY):
        with pytest.raises(openais.BadFlags):
            h.queue_group_track(group, flags)
    with pytest.raises(openais.Init):
        bare.queue_group_track(group, msg.TRACK_CHANGES)
    with pytest.raises(openais.NotExist):
        h.queue_group_track(fresh("g"), msg.TRACK_CURRENT, buffer=True)
    buf = bare.queue_group_track(group, msg.TRACK_CURRENT)
    assert buf == msg.NotificationBuffer([msg.Notification(queue, msg.QueueGroupChange.NO_CHANGE)],
                                         msg.QueueGroupPolicy.LOCAL_BEST_QUEUE)
    with pytest.raises(openais.NotExist):
        h.queue_group_track_stop(group)
    h.queue_group_track(group, msg.TRACK_CHANGES_ONLY)
    h.queue_group_track_stop(group)
    h.queue_group_remove(group, queue)
    h.queue_group_delete(group)
    with pytest.raises(openais.NotExist):
        h.queue_group_delete(group)
    q.close()


def test_send_rows(h, bare, events) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS._replace(size=(200, 0, 0, 4096)), msg.QUEUE_CREATE)
    for bad in (b"raw", msg.Message(priority=4), msg.Message(type=-1), msg.Message(version=1 << 32)):
        with pytest.raises(openais.InvalidParam):
            h.message_send(name, bad)  # type: ignore[arg-type]
    with pytest.raises(openais.NameTooLong):
        h.message_send(name, msg.Message(sender_name="s" * 257))
    with pytest.raises(openais.TooBig):
        h.message_send(name, msg.Message(data=b"x" * (msg.MAX_MESSAGE_SIZE + 1)))
    with pytest.raises(openais.NotExist):
        h.message_send(fresh(), msg.Message())
    with pytest.raises(openais.Timeout):
        h.message_send(name, msg.Message(), timeout=0)
    h.message_send(name, msg.Message(data=b"a" * 100, priority=0))
    with pytest.raises(openais.QueueFull):
        h.message_send(name, msg.Message(data=b"b" * 100, priority=0))
    with pytest.raises(openais.QueueFull):
        h.message_send(name, msg.Message(priority=1))  # an area of size 0 takes nothing
    empty = fresh("g")
    h.queue_group_create(empty, msg.QueueGroupPolicy.ROUND_ROBIN)
    with pytest.raises(openais.QueueNotAvailable):
        h.message_send(empty, msg.Message())
    # async
    with pytest.raises(openais.BadFlags):
        h.message_send_async(1, name, msg.Message(), ack_flags=2)
    with pytest.raises(openais.Init):
        bare.message_send_async(1, name, msg.Message(), ack_flags=msg.MESSAGE_DELIVERED_ACK)
    with pytest.raises(openais.NotExist):
        h.message_send_async(1, fresh(), msg.Message())
    with pytest.raises(openais.QueueNotAvailable):
        h.message_send_async(1, empty, msg.Message())
    h.message_send_async(21, name, msg.Message(data=b"c" * 100, priority=0), msg.MESSAGE_DELIVERED_ACK)
    assert pump(h, events, lambda e: e[0] == "delivered") == ("delivered", 21, openais.SaAisError.QUEUE_FULL)
    h.message_send_async(22, name, msg.Message(data=b"ok"), msg.MESSAGE_DELIVERED_ACK)
    assert pump(h, events, lambda e: e[0] == "delivered") == ("delivered", 22, openais.SaAisError.OK)
    bare.message_send_async(23, name, msg.Message(data=b"quiet"))  # no ack: no callback
    got = [q.message_get(timeout=5.0).message.data for _ in range(3)]
    assert got == [b"a" * 100, b"ok", b"quiet"]
    q.close()


def test_get_cancel_rows(h) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS, msg.QUEUE_CREATE)
    with pytest.raises(openais.Timeout):
        q.message_get(timeout=0)
    started = time.monotonic()
    with pytest.raises(openais.Timeout):
        q.message_get(timeout=0.3)
    assert time.monotonic() - started >= 0.25
    with pytest.raises(openais.InvalidParam):
        q.message_get(timeout=-1)
    with pytest.raises(openais.NotExist):
        q.message_cancel()
    outcome: list = []

    def blocked() -> None:
        try:
            q.message_get(timeout=None)
        except openais.AisError as exc:
            outcome.append(type(exc))

    threads = [threading.Thread(target=blocked) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    h.queue_status_get(name)  # another call on the same handle is not delayed by the blocked gets
    q.message_cancel()
    for t in threads:
        t.join(10)
    assert outcome == [openais.Interrupt, openais.Interrupt]
    sent = msg.Message(type=7, version=2, data=b"\x00\xff" * 10, priority=1, sender_name="me")
    h.message_send(name, sent)
    got = q.message_get(timeout=5.0)
    assert got.message == sent and got.sender_id == 0 and abs(got.send_time - time.time_ns()) < 60e9
    closer = threading.Thread(target=blocked)
    outcome.clear()
    closer.start()
    time.sleep(0.3)
    q.close()
    closer.join(10)
    assert outcome == [openais.BadHandle]
    with pytest.raises(openais.BadHandle):
        q.message_get(timeout=0)


def test_send_receive_and_reply_rows(h, bare, events) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS, msg.QUEUE_CREATE)
    bc = fresh("g")
    h.queue_group_create(bc, msg.QueueGroupPolicy.BROADCAST)
    h.queue_group_insert(bc, name)
    with pytest.raises(openais.InvalidParam):
        h.message_send_receive(bc, msg.Message())
    with pytest.raises(openais.Timeout):
        h.message_send_receive(name, msg.Message(), timeout=0)
    with pytest.raises(openais.Timeout):
        h.message_send_receive(name, msg.Message(data=b"late"), timeout=0.3)
    late = q.message_get(timeout=5.0)
    assert late.sender_id != 0
    with pytest.raises(openais.NotExist):
        h.message_reply(msg.Message(), late.sender_id)  # the sender timed out
    with pytest.raises(openais.InvalidParam):
        h.message_reply(msg.Message(), 0)
    with pytest.raises(openais.NotExist):
        h.message_reply(msg.Message(), 12345)
    with pytest.raises(openais.TooBig):
        h.message_reply(msg.Message(data=b"x" * (msg.MAX_REPLY_SIZE + 1)), 12345)
    with pytest.raises(openais.Timeout):
        h.message_reply(msg.Message(), 12345, timeout=0)
    with pytest.raises(openais.BadFlags):
        h.message_reply_async(1, msg.Message(), 12345, ack_flags=4)
    with pytest.raises(openais.Init):
        bare.message_reply_async(1, msg.Message(), 12345, ack_flags=msg.MESSAGE_DELIVERED_ACK)
    with pytest.raises(openais.NotExist):
        h.message_reply_async(1, msg.Message(), 12345)
    answers: list = []
    asker = threading.Thread(target=lambda: answers.append(bare.message_send_receive(name, msg.Message(data=b"q"),
                                                                                     timeout=10.0)))
    asker.start()
    req = q.message_get(timeout=5.0)
    h.message_reply_async(31, msg.Message(data=b"answer", type=3), req.sender_id, msg.MESSAGE_DELIVERED_ACK)
    assert pump(h, events, lambda e: e[0] == "delivered") == ("delivered", 31, openais.SaAisError.OK)
    asker.join(10)
    assert answers[0].message.data == b"answer" and answers[0].message.type == 3 and answers[0].sender_id == 0
    q.close()


def test_thresholds_metadata_limits_rows(h, executive, events) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS._replace(size=(1000, 1000, 1000, 1000)), msg.QUEUE_CREATE)
    assert q.capacity_thresholds_get() == msg.QueueThresholds((1000,) * 4, (0,) * 4)
    for bad in ((1, 2), msg.QueueThresholds((10,) * 4, (20,) * 4), msg.QueueThresholds((2000,) * 4, (0,) * 4)):
        with pytest.raises(openais.InvalidParam):
            q.capacity_thresholds_set(bad)  # type: ignore[arg-type]
    q.capacity_thresholds_set(msg.QueueThresholds((300, 1000, 1000, 1000), (100, 0, 0, 0)))
    assert q.capacity_thresholds_get().capacity_reached == (300, 1000, 1000, 1000)
    for _ in range(3):
        h.message_send(name, msg.Message(data=b"x" * 60, priority=0))  # 124 bytes each
    assert h.dump()["queues"][name]["areas"][0]["reached"], h.dump()["queues"][name]
    assert pump(h, events, lambda e: e[0] == "reached") == ("reached", name, 0)
    for _ in range(2):
        q.message_get(timeout=5.0)
    assert not [e for e in events if e[0] == "available"]  # 124 bytes left: above 100
    q.message_get(timeout=5.0)
    assert pump(h, events, lambda e: e[0] == "available") == ("available", name, 0)
    assert h.metadata_size_get() == msg.METADATA_SIZE == 64
    assert [h.limit_get(i) for i in msg.LimitId] == [16 << 20, 32 << 20, 1024, 256, 64, 1 << 20, 1 << 20]
    for bad in (0, 8, "1"):
        with pytest.raises(openais.InvalidParam):
            h.limit_get(bad)  # type: ignore[arg-type]
    with msg.initialize(version=("B", 2, 1), path=executive) as old:
        with pytest.raises(openais.Version):
            old.metadata_size_get()
        with pytest.raises(openais.Version):
            old.limit_get(msg.LimitId.MAX_QUEUE_SIZE)
        oq = old.queue_open(fresh(), ATTRS, msg.QUEUE_CREATE)
        with pytest.raises(openais.Version):
            oq.capacity_thresholds_get()
        with pytest.raises(openais.Version):
            oq.capacity_thresholds_set(msg.QueueThresholds((0,) * 4, (0,) * 4))
    q.close()


def test_received_callback_and_finalize_closes(h, executive, events) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS._replace(retention_time=60.0), msg.QUEUE_CREATE | msg.QUEUE_RECEIVE_CALLBACK)
    h.message_send(name, msg.Message(data=b"1"))
    assert pump(h, events, lambda e: e[0] == "received") == ("received", name)
    with msg.initialize(path=executive) as other:
        with pytest.raises(openais.Busy):
            other.queue_open(name)
        h.finalize()
        with pytest.raises(openais.BadHandle):
            q.message_get(timeout=0)
        deadline = time.monotonic() + 10
        while True:  # the executive closes the queue once it sees the handle go
            try:
                reopened = other.queue_open(name, timeout=5.0)
                break
            except openais.Busy:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert reopened.message_get(timeout=1.0).message.data == b"1"


def test_async_window_and_deferred_error(h) -> None:
    name = fresh()
    q = h.queue_open(name, ATTRS._replace(size=(0, 0, 0, 1 << 20), retention_time=60.0), msg.QUEUE_CREATE)
    sent = 0
    for i in range(200):
        try:
            h.message_send_async(i, name, msg.Message(data=b"%d" % i))
            sent += 1
        except openais.TryAgain:
            time.sleep(0.01)
    got = [q.message_get(timeout=5.0).message.data for _ in range(sent)]
    assert got == sorted(got, key=int) and len(got) == sent  # order kept through the pipeline
    q.close()
    h.queue_unlink(name)  # the destination goes: a pipelined send learns it later
    errors = []
    for i in range(50):
        try:
            h.message_send_async(i, name, msg.Message())
        except openais.NotExist:
            errors.append(i)
            break
        time.sleep(0.01)
    assert errors
    with pytest.raises(openais.NotExist):
        h.message_send_async(99, name, msg.Message())  # checked at once again
