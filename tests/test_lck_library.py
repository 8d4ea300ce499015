"""The LCK library contract, row by row: every call's errors, callbacks and object life cycle.

Most rows run over a bridge into the in-process cluster (requests reach the
real engine, callbacks come back through ``_on_dispatch`` as ``dispatch``
runs them); the concurrency and dead-executive rows run over a real socket
against an IPC server with the engine (tests/ipcfixture.py).
"""

from __future__ import annotations

import threading
import time

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import lck
from openais.errors import AisError
from openais.lck import LckOptions, LimitId, LockMode, LockStatus
from plugins.lck.engine import LockEngine

PR, EX = LockMode.PR, LockMode.EX


class BridgedHandle(lck.LckHandle):
    """An LckHandle whose requests go to one node of a ServiceCluster (the cluster runs after each)."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, pid: int = 1000, *, version=lck.VERSION,
                 **callbacks) -> None:  # no socket
        self._callbacks = {k: callbacks.get(k) for k in ("resource_open", "lock_grant", "lock_waiter",
                                                           "resource_unlock")}
        self.version = lck.VERSION
        self._requested_version = version
        self._finalized = False
        self._dead = False
        self._async_locks = {}
        self._early = {}
        self._seen = 0
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, lck.SERVICE_ID, pid=pid)

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self._check()
        rid = self.cluster.request(self.conn, msg_id, payload)
        self.cluster.run()
        try:
            error, answer = self.conn.response(rid)
        except KeyError:
            raise TimeoutError("unanswered in the bridge (queued)") from None
        if error != openais.SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def dispatch(self, flags: int = openais.DISPATCH_ALL) -> None:
        self._check()
        if flags not in (1, 2, 3):
            raise openais.InvalidParam("bad flags")
        frames = self.conn.dispatched[self._seen:]
        self._seen = len(self.conn.dispatched)
        for msg_id, payload in frames:
            self._on_dispatch(msg_id, payload)

    def finalize(self) -> None:
        if self._finalized:
            raise openais.BadHandle("finalized already")
        self._finalized = True
        self.cluster.disconnect(self.conn)
        for child in list(getattr(self, "_object_handles", {}).values()):
            child._forget()


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([LockEngine], nodes=[1, 2, 3])
    c.run()
    return c


@pytest.fixture
def h(cluster) -> BridgedHandle:
    return BridgedHandle(cluster, 1)


def test_constants_match_the_contract():
    assert lck.SERVICE_ID == 5 and lck.VERSION == ("B", 3, 1)
    assert (lck.RESOURCE_CREATE, lck.LOCK_NO_QUEUE, lck.LOCK_ORPHAN) == (1, 1, 2)
    assert (lck.OPT_ORPHAN_LOCKS, lck.OPT_DEADLOCK_DETECTION) == (1, 2)
    assert [int(s) for s in LockStatus] == [1, 2, 3, 4, 5, 6]
    assert (int(PR), int(EX), int(LimitId.MAX_NUM_LOCKS)) == (1, 2, 1)
    assert lck.LockFlags.NO_QUEUE == 1 and lck.LockFlags.ORPHAN == 2


@pytest.mark.parametrize("version", [("A", 3, 1), ("B", 4, 1), ("B", 0, 1), ("B", 3), "B.03.01", (b"B", 3, 1),
                                     ("B", "3", 1)])
def test_initialize_version_row(version):
    with pytest.raises(openais.Version):
        lck.initialize(version=version)


def test_initialize_without_an_executive_is_library(tmp_path):
    with pytest.raises(openais.Library):
        lck.initialize(path=str(tmp_path / "none.sock"))


def test_option_check_and_limit_get(cluster, h):
    assert h.option_check() == LckOptions.ORPHAN_LOCKS | LckOptions.DEADLOCK_DETECTION
    assert h.limit_get(LimitId.MAX_NUM_LOCKS) == 65536
    with pytest.raises(openais.InvalidParam):
        h.limit_get(2)
    old = BridgedHandle(cluster, 1, version=("B", 1, 1))
    with pytest.raises(openais.Version):
        old.limit_get(LimitId.MAX_NUM_LOCKS)


def test_dispatch_and_finalize_rows(h):
    with pytest.raises(openais.InvalidParam):
        h.dispatch(4)
    h.finalize()
    with pytest.raises(openais.BadHandle):
        h.finalize()
    for call in (h.dispatch, h.option_check, lambda: h.resource_open("r", lck.RESOURCE_CREATE)):
        with pytest.raises(openais.BadHandle):
            call()


def test_resource_open_rows(h):
    with pytest.raises(openais.BadFlags):
        h.resource_open("r", 2)
    with pytest.raises(openais.NotExist):
        h.resource_open("r")
    with pytest.raises(openais.NameTooLong):
        h.resource_open("x" * 257, lck.RESOURCE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.resource_open("", lck.RESOURCE_CREATE)
    with pytest.raises(openais.InvalidParam):
        h.resource_open("r", lck.RESOURCE_CREATE, timeout=-1)
    with pytest.raises(openais.Timeout):
        h.resource_open("r", lck.RESOURCE_CREATE, timeout=0)
    res = h.resource_open("é" * 128, lck.RESOURCE_CREATE)  # 256 bytes of UTF-8
    assert res.name == "é" * 128 and res.handle is h
    again = h.resource_open("é" * 128)  # exists now: opens without CREATE, a second independent object
    assert again is not res and again.object_id != res.object_id


def test_resource_open_async_rows(cluster):
    events = []
    plain = BridgedHandle(cluster, 2)
    with pytest.raises(openais.Init):
        plain.resource_open_async(1, "r")
    h = BridgedHandle(cluster, 2, resource_open=lambda *a: events.append(a))
    with pytest.raises(openais.BadFlags):
        h.resource_open_async(1, "r", 4)
    with pytest.raises(openais.NameTooLong):
        h.resource_open_async(1, "x" * 300)
    with pytest.raises(openais.InvalidParam):
        h.resource_open_async(-1, "r")
    h.resource_open_async(5, "r")
    h.resource_open_async(6, "r", lck.RESOURCE_CREATE)
    h.dispatch()
    assert [(inv, err) for inv, _res, err in events] == [(5, openais.SaAisError.NOT_EXIST),
                                                          (6, openais.SaAisError.OK)]
    assert events[0][1] is None and isinstance(events[1][1], lck.Resource)
    events[1][1].lock(EX)


def test_resource_close_rows(h):
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    res.close()
    with pytest.raises(openais.BadHandle):
        res.close()
    other = h.resource_open("r", lck.RESOURCE_CREATE)
    h.finalize()
    with pytest.raises(openais.BadHandle):
        other.close()


def test_lock_rows(h):
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    for bad in (3, 0, "EX"):
        with pytest.raises(openais.InvalidParam):
            res.lock(bad)
    with pytest.raises(openais.InvalidParam):
        res.lock(EX, waiter_signal=-1)
    with pytest.raises(openais.InvalidParam):
        res.lock(EX, waiter_signal=1 << 64)
    with pytest.raises(openais.InvalidParam):
        res.lock(EX, timeout=-0.5)
    with pytest.raises(openais.BadFlags):
        res.lock(EX, flags=4)
    with pytest.raises(openais.Timeout):
        res.lock(EX, timeout=0)
    lock = res.lock(EX, waiter_signal=(1 << 64) - 1)
    assert lock.status == LockStatus.GRANTED and lock.mode == EX and lock.resource is res
    assert res.lock(EX).status == LockStatus.DUPLICATE_EX
    res.close()
    with pytest.raises(openais.BadHandle):
        res.lock(EX)


def test_lock_statuses_not_queued_orphaned_deadlock(cluster, h):
    other = BridgedHandle(cluster, 2)
    mine = h.resource_open("r", lck.RESOURCE_CREATE)
    theirs = other.resource_open("r")
    theirs.lock(EX, lck.LOCK_ORPHAN)
    other.finalize()  # the lock becomes an orphan
    assert mine.lock(PR, lck.LOCK_NO_QUEUE).status == LockStatus.NOT_QUEUED
    assert mine.lock(PR, lck.LOCK_ORPHAN).status == LockStatus.ORPHANED
    mine.lock_purge()
    held = mine.lock(EX)
    second = h.resource_open("r")
    assert second.lock(PR).status == LockStatus.DEADLOCK  # the same handle holds EX
    held.unlock()


def test_lock_no_more_beyond_the_limit(cluster, h):
    for node in (1, 2, 3):
        cluster.engine(node, lck.SERVICE_ID).state.max_locks = 2
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    res.lock(PR)
    res.lock(PR)
    assert res.lock(PR).status == LockStatus.NO_MORE


def test_lock_async_rows_and_grant_callback(cluster):
    grants = []
    plain = BridgedHandle(cluster, 1)
    r = plain.resource_open("r", lck.RESOURCE_CREATE)
    with pytest.raises(openais.Init):
        r.lock_async(1, EX)
    h = BridgedHandle(cluster, 2, lock_grant=lambda *a: grants.append(a))
    res = h.resource_open("r")
    with pytest.raises(openais.InvalidParam):
        res.lock_async(1, 7)
    with pytest.raises(openais.BadFlags):
        res.lock_async(1, EX, flags=8)
    held = r.lock(EX)
    lock = res.lock_async(11, PR)
    assert lock.status is None
    h.dispatch()
    assert grants == []
    held.unlock()
    h.dispatch()
    assert grants == [(11, LockStatus.GRANTED, openais.SaAisError.OK)] and lock.status == LockStatus.GRANTED
    res.close()
    with pytest.raises(openais.BadHandle):
        res.lock_async(1, EX)


def test_withdrawing_a_pending_async_request(cluster):
    grants = []
    holder = BridgedHandle(cluster, 1)
    held = holder.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
    h = BridgedHandle(cluster, 3, lock_grant=lambda *a: grants.append(a))
    res = h.resource_open("r")
    pending = res.lock_async(1, EX)
    pending.unlock()  # withdrawn before any grant
    h.dispatch()
    assert grants == [(1, None, openais.SaAisError.NOT_EXIST)] and pending.status is None
    closing = res.lock_async(2, EX)
    res.close()  # closing withdraws too
    h.dispatch()
    assert grants[-1] == (2, None, openais.SaAisError.NOT_EXIST)
    assert closing.status is None
    held.unlock()


def test_unlock_rows(cluster, h):
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    lock = res.lock(EX)
    with pytest.raises(openais.Timeout):
        lock.unlock(timeout=0)  # nothing sent: still held
    assert lock.held
    lock.unlock()
    with pytest.raises(openais.NotExist):
        lock.unlock()
    other = BridgedHandle(cluster, 2).resource_open("r")
    blocker = other.lock(EX)
    refused = res.lock(PR, lck.LOCK_NO_QUEUE)
    assert refused.status == LockStatus.NOT_QUEUED
    with pytest.raises(openais.NotExist):
        refused.unlock()
    blocker.unlock()
    lock = res.lock(EX)
    res.close()
    with pytest.raises(openais.BadHandle):
        lock.unlock()


def test_unlock_async_rows(cluster):
    unlocked = []
    plain = BridgedHandle(cluster, 1)
    lock = plain.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
    with pytest.raises(openais.Init):
        lock.unlock_async(1)
    h = BridgedHandle(cluster, 1, resource_unlock=lambda *a: unlocked.append(a))
    res = h.resource_open("q", lck.RESOURCE_CREATE)
    mine = res.lock(EX)
    mine.unlock_async(9)
    h.dispatch()
    assert unlocked == [(9, openais.SaAisError.OK)]
    with pytest.raises(openais.NotExist):
        mine.unlock_async(10)
    again = res.lock(EX)
    h.finalize()
    with pytest.raises(openais.BadHandle):
        again.unlock_async(11)


def test_purge_rows(h):
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    res.lock_purge()  # no orphan: not an error
    res.close()
    with pytest.raises(openais.BadHandle):
        res.lock_purge()


def test_waiter_callback(cluster):
    told = []
    holder = BridgedHandle(cluster, 1, lock_waiter=lambda *a: told.append(a))
    lock = holder.resource_open("r", lck.RESOURCE_CREATE).lock(PR)
    asker = BridgedHandle(cluster, 2, lock_grant=lambda *a: None)
    asker.resource_open("r").lock_async(1, EX, waiter_signal=1234)
    holder.dispatch()
    assert told == [(1234, lock.lock_id, PR, EX)]


def test_objects_are_context_managers(cluster, h):
    with h.resource_open("r", lck.RESOURCE_CREATE) as res:
        with res.lock(EX) as lock:
            assert lock.held
        assert not lock.held
    assert res.closed
    with BridgedHandle(cluster, 2) as other:
        pass
    with pytest.raises(openais.BadHandle):
        other.option_check()


# -- over a real socket ---------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    from tests.ipcfixture import ServerThread

    engine = LockEngine()

    class Api:
        nodeid = 1
        config = None

        def __init__(self) -> None:
            self.queue: list = []

        def mcast(self, service, msg_id, payload, safe=False):
            import gevent

            gevent.spawn(engine.exec_handlers[msg_id].fn, 1, bytes(payload))

        def members(self):
            return (1,)

        def ready(self):
            return True

        def call_later(self, seconds, fn):
            import gevent

            g = gevent.spawn_later(seconds, fn)
            return g.kill

    engine.exec_init(Api())
    server = ServerThread(tmp_path / "lck.sock", [engine])
    yield str(tmp_path / "lck.sock")
    server.stop()


def test_blocking_lock_does_not_delay_another_threads_unlock(served):
    with lck.initialize(path=served) as h:
        res = h.resource_open("r", lck.RESOURCE_CREATE)
        first = res.lock(PR)
        results = []
        with lck.initialize(path=served) as h2:
            res2 = h2.resource_open("r")
            t = threading.Thread(target=lambda: results.append(res2.lock(EX, timeout=10.0)))
            t.start()
            time.sleep(0.2)
            second = res.lock(PR, lck.LOCK_NO_QUEUE)  # the other handle's lock() is blocked meanwhile
            assert second.status == LockStatus.NOT_QUEUED
            first.unlock()  # from this thread, while h2's thread waits
            t.join(5)
            assert results and results[0].status == LockStatus.GRANTED


def test_same_handle_threads_are_concurrent(served):
    with lck.initialize(path=served) as h, lck.initialize(path=served) as holder:
        held = holder.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
        res = h.resource_open("r")
        results = []
        t = threading.Thread(target=lambda: results.append(res.lock(PR, timeout=10.0)))
        t.start()
        time.sleep(0.2)
        assert h.option_check()
        other = h.resource_open("other", lck.RESOURCE_CREATE)  # a call on the same handle while lock() waits
        assert other.lock(EX).status == LockStatus.GRANTED
        held.unlock()
        t.join(5)
        assert results[0].status == LockStatus.GRANTED


def test_lock_timeout_over_the_socket(served):
    with lck.initialize(path=served) as h, lck.initialize(path=served) as holder:
        holder.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
        res = h.resource_open("r")
        t0 = time.monotonic()
        with pytest.raises(openais.Timeout):
            res.lock(EX, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 5


def test_finalize_wakes_a_blocked_lock_with_bad_handle(served):
    with lck.initialize(path=served) as holder:
        holder.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
        h = lck.initialize(path=served)
        res = h.resource_open("r")
        errors = []

        def blocked():
            try:
                res.lock(EX)
            except AisError as exc:
                errors.append(exc)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)
        h.finalize()
        t.join(5)
        assert errors and isinstance(errors[0], openais.BadHandle)


def test_huge_and_infinite_timeouts_mean_forever(h):
    res = h.resource_open("r", lck.RESOURCE_CREATE, timeout=float("inf"))
    assert res.lock(EX, timeout=1e300).status == LockStatus.GRANTED
    with pytest.raises(openais.InvalidParam):
        res.lock(PR, timeout=float("nan"))


def test_a_call_reads_once_without_select_with_or_without_deadline(served, monkeypatch):
    """lock()/unlock() block in one read (the kernel's timeout ends it), with or without a deadline."""
    import select as select_module

    calls = []
    real = select_module.select

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    with lck.initialize(path=served) as h:
        res = h.resource_open("r", lck.RESOURCE_CREATE)
        monkeypatch.setattr(select_module, "select", counting)
        for _ in range(5):
            res.lock(EX).unlock()
        assert calls == []
        res.lock(EX).unlock(timeout=5.0)
        assert calls == []


def test_unlocked_locks_are_not_kept_by_their_resource(h):
    """lock()/unlock() in a loop keeps nothing behind: the Resource forgets every lock it unlocked."""
    res = h.resource_open("r", lck.RESOURCE_CREATE)
    for _ in range(50):
        res.lock(EX).unlock()
        with res.lock(PR):
            pass
    held = res.lock(EX, lck.LOCK_NO_QUEUE)
    assert held.status == LockStatus.GRANTED
    assert res.lock(EX, lck.LOCK_NO_QUEUE).status == LockStatus.DUPLICATE_EX  # held nothing: not kept either
    assert res._locks == {held.lock_id: held}
    held.unlock()
    assert res._locks == {}


def test_many_threads_on_one_handle_each_get_their_own_answers(served):
    """Threads of one handle call at once, with and without deadlines: every call gets its own answer."""
    with lck.initialize(path=served) as h:
        resources = [h.resource_open(f"t{i}", lck.RESOURCE_CREATE) for i in range(6)]
        errors: list[BaseException] = []
        counts = [0] * len(resources)

        def work(index: int) -> None:
            res = resources[index]
            try:
                for n in range(40):
                    lock = res.lock(EX if n % 2 else PR)
                    assert lock.status == LockStatus.GRANTED and lock.resource is res
                    assert res._locks == {lock.lock_id: lock}
                    lock.unlock(timeout=5.0 if n % 3 == 0 else None)  # a deadline: the polling path
                    counts[index] += 1
            except BaseException as exc:  # reported below, from the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(resources))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert counts == [40] * len(resources)
        assert not h._calls._waiting and not h._calls._reading


def test_a_call_waiting_behind_a_blocked_reader_is_answered_and_takes_over(served):
    """A thread blocked in lock() reads the socket; another thread's calls are answered through it, and
    once the blocked lock is granted and returns, the other thread reads for itself."""
    with lck.initialize(path=served) as holder, lck.initialize(path=served) as h:
        held = holder.resource_open("r", lck.RESOURCE_CREATE).lock(EX)
        res = h.resource_open("r")
        free = h.resource_open("free", lck.RESOURCE_CREATE)
        results = []
        t = threading.Thread(target=lambda: results.append(res.lock(EX)))
        t.start()
        time.sleep(0.2)
        assert h._calls._reading  # the blocked lock() holds the reading role
        for _ in range(5):
            free.lock(PR).unlock()  # answered through the blocked reader
        held.unlock()
        t.join(5)
        assert results and results[0].status == LockStatus.GRANTED
        assert not h._calls._reading
        free.lock(EX).unlock()  # and now this thread reads for itself
        results[0].unlock()
