"""The EVT library over the engine, row by row of the contract's error tables (``api/evt.md`` §1).

The handle's transport is replaced by a bridge into an in-process
ServiceCluster, so requests reach the real engine and callbacks come back
through ``_on_dispatch`` exactly as ``dispatch`` runs them.
"""

from __future__ import annotations

import collections
import threading

import pytest

import openais
from aisexec.testing import ServiceCluster
from openais import evt
from openais.errors import AisError, SaAisError
from openais.evt import EventFilter
from plugins.evt.engine import EventEngine

ALL = evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER


class Bridged(evt.EvtHandle):
    """An EvtHandle whose requests go to one node of a ServiceCluster (the cluster runs after each)."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, channel_open=None, event_deliver=None,
                 version=("B", 3, 1)) -> None:  # no socket
        evt._check_version(version)
        self.version = ("B", 3, 1)
        self._open_fn = channel_open
        self._deliver_fn = event_deliver
        self._channels = {}
        self._pending_opens = {}
        self._backlog = collections.deque()
        self._dispatch_mode = openais.DISPATCH_ALL
        self._finalized = False
        self._dead = False
        self._publish_lock = threading.Lock()
        self._ids_next = self._ids_end = 0
        self._deferred = None
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, evt.SERVICE_ID)

    def _exchange(self, msg_id, payload):
        """Send a request, run the cluster, return (error, answer); a kept error is raised first."""
        self._check()
        self._raise_kept()
        rid = self.cluster.request(self.conn, msg_id, payload)
        self.cluster.run()
        return self.conn.response(rid)

    def _call(self, msg_id, payload, timeout=None):
        error, answer = self._exchange(msg_id, payload)
        if error != SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def _send_pipelined(self, msg_id, payload, timeout=None, room_wait=0.0, window_bytes=0):
        """As the socket handle: the answer is not awaited; its error is kept for the next call."""
        error, _answer = self._exchange(msg_id, payload)
        if error != SaAisError.OK:
            self._deferred = AisError.from_code(error)

    def _raise_kept(self):
        error, self._deferred = self._deferred, None
        if error is not None:
            raise error

    def _send_oneway(self, msg_id, payload):
        self._check()
        self.cluster.request(self.conn, msg_id, payload)  # no answer comes (ACK)
        self.cluster.run()

    def fileno(self) -> int:
        self._check()
        return -1

    def dispatch(self, flags=openais.DISPATCH_ALL):
        self._check()
        if flags not in (openais.DISPATCH_ONE, openais.DISPATCH_ALL, openais.DISPATCH_BLOCKING):
            raise openais.InvalidParam("bad flags")
        self._dispatch_mode = flags
        if self._backlog and self._deliver_items([]) and flags == openais.DISPATCH_ONE:
            return
        try:
            while self.conn.dispatched:
                msg_id, payload = self.conn.dispatched.pop(0)
                self._on_dispatch(msg_id, payload)
                if flags == openais.DISPATCH_ONE:
                    return
                if not self.conn.dispatched and self._ack_due:
                    self._ack()  # as dispatch does at its end: the window opens, more may be pushed
        finally:
            if self._ack_due:
                self._ack()

    def finalize(self) -> None:
        if self._finalized:
            raise openais.BadHandle("already finalized")
        self._finalized = True
        self._channels.clear()
        self.cluster.disconnect(self.conn)
        self.cluster.run()


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([EventEngine], nodes=[1, 2, 3])
    c.run()
    return c


@pytest.fixture
def got():
    return []


@pytest.fixture
def h(cluster, got):
    def deliver(sid, event, size):
        got.append((sid, event.attributes_get(), event.data_get(), size))

    return Bridged(cluster, 1, channel_open=lambda *a: got.append(("open", *a)), event_deliver=deliver)


def test_initialize_version_rows(cluster):
    for version in [("B", 1, 1), ("B", 2, 0), ("B", 3, 1), ("B", 3, 9)]:
        assert Bridged(cluster, 1, version=version).version == ("B", 3, 1)
    for version in [("A", 1, 1), ("B", 4, 1), ("B", 0, 1), ("C", 3, 1), None, "B.03.01"]:
        with pytest.raises(openais.Version):
            Bridged(cluster, 1, version=version)


def test_initialize_without_executive_is_library(tmp_path):
    with pytest.raises(openais.Library):
        evt.initialize(path=str(tmp_path / "nothing.sock"))


def test_dispatch_and_finalize_rows(h):
    with pytest.raises(openais.InvalidParam):
        h.dispatch(7)
    h.finalize()
    with pytest.raises(openais.BadHandle):
        h.finalize()
    with pytest.raises(openais.BadHandle):
        h.dispatch()
    with pytest.raises(openais.BadHandle):
        h.fileno()
    with pytest.raises(openais.BadHandle):
        h.channel_open("x", ALL, 1.0)


def test_channel_open_rows(h):
    for flags in (0, 0x8, 0x1 | 0x10):
        with pytest.raises(openais.BadFlags):
            h.channel_open("c", flags, timeout=1.0)
    with pytest.raises(openais.InvalidParam):
        h.channel_open("", ALL, timeout=1.0)
    with pytest.raises(openais.InvalidParam):
        h.channel_open(None, ALL, timeout=1.0)
    with pytest.raises(openais.NameTooLong):
        h.channel_open("x" * 257, ALL, timeout=1.0)
    with pytest.raises(openais.InvalidParam):
        h.channel_open("c", ALL, timeout=-1.0)
    with pytest.raises(openais.Timeout):
        h.channel_open("c", ALL, timeout=0)
    with pytest.raises(openais.NotExist):
        h.channel_open("nope", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    ch = h.channel_open("é" * 128, ALL, timeout=1.0)  # 256 bytes of UTF-8
    again = h.channel_open("é" * 128, evt.CHANNEL_PUBLISHER)  # exists now: no CREATE needed
    assert ch.object_id != again.object_id


def test_channel_open_no_resources_past_max_channels(h, cluster):
    h.channel_open("exists", ALL, timeout=1.0)
    for n in range(1, 4):  # the replicated state of every node holds MAX_NUM_CHANNELS channels

        state = cluster.engine(n, evt.SERVICE_ID).state
        state.channels = {10**12 + i: _fake_channel(10**12 + i) for i in range(evt.MAX_NUM_CHANNELS)}
        state.names = {c.name: c.id for c in state.channels.values()}
    with pytest.raises(openais.NoResources):
        h.channel_open("one-too-many", ALL, timeout=1.0)
    with pytest.raises(openais.NotExist):
        h.channel_open("exists", evt.CHANNEL_SUBSCRIBER, timeout=1.0)  # the fake table replaced it


def _fake_channel(cid):
    from plugins.evt.state import ChannelState

    return ChannelState(cid, f"fake{cid}")


def test_channel_open_async_rows(cluster, got, h):
    plain = Bridged(cluster, 1)
    with pytest.raises(openais.Init):
        plain.channel_open_async(1, "c", ALL)
    with pytest.raises(openais.InvalidParam):
        h.channel_open_async(-1, "c", ALL)
    with pytest.raises(openais.BadFlags):
        h.channel_open_async(1, "c", 0)
    with pytest.raises(openais.NameTooLong):
        h.channel_open_async(1, "x" * 300, ALL)
    h.channel_open_async(5, "c", ALL)
    h.channel_open_async(6, "missing", evt.CHANNEL_PUBLISHER)
    h.dispatch()
    assert got[0][:2] == ("open", 5) and isinstance(got[0][2], evt.Channel) and got[0][3] == SaAisError.OK
    assert got[1] == ("open", 6, None, SaAisError.NOT_EXIST)
    got[0][2].close()


def test_channel_close_and_unlink_rows(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    e = ch.event_allocate()
    ch.close()
    with pytest.raises(openais.BadHandle):
        ch.close()
    with pytest.raises(openais.BadHandle):
        e.attributes_get()  # closing a channel frees its events
    with pytest.raises(openais.BadHandle):
        ch.event_allocate()
    with ch:  # leaving `with` after an explicit close raises nothing
        pass
    with pytest.raises(openais.InvalidParam):
        h.channel_unlink("")
    with pytest.raises(openais.NameTooLong):
        h.channel_unlink("y" * 257)
    with pytest.raises(openais.NotExist):
        h.channel_unlink("never")
    h.channel_unlink("c")
    with pytest.raises(openais.NotExist):
        h.channel_unlink("c")
    with pytest.raises(openais.NotExist):
        h.channel_open("c", evt.CHANNEL_PUBLISHER, timeout=1.0)


def test_event_allocate_defaults_and_free_rows(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    e = ch.event_allocate()
    assert e.attributes_get() == evt.EventAttributes([], evt.LOWEST_PRIORITY, 0.0, "", openais.TIME_UNKNOWN,
                                                     evt.EVENTID_NONE)
    e.pattern_free([b"x"])
    e.free()
    with pytest.raises(openais.BadHandle):
        e.free()
    with pytest.raises(openais.BadHandle):
        e.pattern_free()
    with e:
        pass


def test_attributes_set_rows(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    e = ch.event_allocate()
    for args in [
        (b"abc", 0, 0.0, "p"), (None, 0, 0.0, "p"), (["str"], 0, 0.0, "p"),
        ([b"a"], 4, 0.0, "p"), ([b"a"], -1, 0.0, "p"), ([b"a"], "0", 0.0, "p"),
        ([b"a"], 0, None, "p"), ([b"a"], 0, -1.0, "p"), ([b"a"], 0, evt.MAX_RETENTION_DURATION + 1, "p"),
        ([b"a"], 0, 0.0, ""), ([b"a"], 0, 0.0, None),
    ]:
        with pytest.raises(openais.InvalidParam):
            e.attributes_set(*args)
    with pytest.raises(openais.TooBig):
        e.attributes_set([b"x" * 257], 0, 0.0, "p")
    with pytest.raises(openais.TooBig):
        e.attributes_set([b"x"] * 65, 0, 0.0, "p")
    with pytest.raises(openais.NameTooLong):
        e.attributes_set([b"x"], 0, 0.0, "p" * 257)
    e.attributes_set([b"x" * 256] * 64, 2, evt.MAX_RETENTION_DURATION, "p" * 256)
    sub_only = h.channel_open("c", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    with pytest.raises(openais.Access):
        sub_only.event_allocate().attributes_set([b"x"], 0, 0.0, "p")


def test_delivered_events_are_read_only(cluster, got, h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    ch.event_subscribe([], 1)
    e = ch.event_allocate()
    e.attributes_set([b"a", b"b"], 1, 0.0, "pub")
    event_id = e.publish(b"payload")
    assert event_id > evt.MAX_RESERVED_EVENT_ID
    attrs = e.attributes_get()
    assert attrs.event_id == event_id and attrs.publish_time != openais.TIME_UNKNOWN
    with pytest.raises(openais.BadHandle):
        e.data_get()  # allocated here, not delivered
    delivered: list = []
    h._deliver_fn = lambda sid, ev, size: delivered.append((sid, ev, size))
    h.dispatch()
    (sid, ev, size), = delivered
    assert (sid, size, ev.data_get()) == (1, 7, b"payload")
    assert ev.attributes_get() == evt.EventAttributes([b"a", b"b"], 1, 0.0, "pub", attrs.publish_time, event_id)
    with pytest.raises(openais.Access):
        ev.attributes_set([b"x"], 0, 0.0, "p")
    with pytest.raises(openais.Access):
        ev.publish(b"")
    assert e.publish(b"again") != event_id  # each publish gets a new id


def test_publish_rows(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    e = ch.event_allocate()
    with pytest.raises(openais.TooBig):
        e.publish(b"x" * (evt.MAX_EVT_SIZE + 1))
    with pytest.raises(openais.InvalidParam):
        e.publish("text")
    assert e.publish(b"x" * evt.MAX_EVT_SIZE) > 1000
    sub_only = h.channel_open("c", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    with pytest.raises(openais.Access):
        sub_only.event_allocate().publish(b"")
    e.free()
    with pytest.raises(openais.BadHandle):
        e.publish(b"")


def test_subscribe_rows(cluster, h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    plain = Bridged(cluster, 2)
    with pytest.raises(openais.Init):
        plain.channel_open("c", ALL, timeout=1.0).event_subscribe([], 1)
    for filters in (None, b"abc", [b"x"], [EventFilter(9, b"")], [EventFilter("PREFIX", b"")],
                    [EventFilter(evt.PREFIX_FILTER, "str")]):
        with pytest.raises(openais.InvalidParam):
            ch.event_subscribe(filters, 1)
    for sid in (-1, 1 << 32, "1"):
        with pytest.raises(openais.InvalidParam):
            ch.event_subscribe([], sid)
    with pytest.raises(openais.TooBig):
        ch.event_subscribe([EventFilter(evt.EXACT_FILTER, b"x" * 257)], 1)
    with pytest.raises(openais.TooBig):
        ch.event_subscribe([EventFilter(evt.PASS_ALL_FILTER)] * 65, 1)
    pub_only = h.channel_open("c", evt.CHANNEL_PUBLISHER, timeout=1.0)
    with pytest.raises(openais.Access):
        pub_only.event_subscribe([], 1)
    ch.event_subscribe([EventFilter(evt.PASS_ALL_FILTER)] * 64, 1)
    with pytest.raises(openais.Exist):
        ch.event_subscribe([], 1)
    other = h.channel_open("c", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    other.event_subscribe([], 1)  # ids are per channel handle


def test_unsubscribe_and_clear_rows(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    with pytest.raises(openais.NotExist):
        ch.event_unsubscribe(3)
    with pytest.raises(openais.InvalidParam):
        ch.event_unsubscribe(-3)
    ch.event_subscribe([], 3)
    ch.event_unsubscribe(3)
    with pytest.raises(openais.NotExist):
        ch.event_unsubscribe(3)
    for reserved in (0, 1, 1000):
        with pytest.raises(openais.InvalidParam):
            ch.event_retention_time_clear(reserved)
    with pytest.raises(openais.InvalidParam):
        ch.event_retention_time_clear(-5)
    with pytest.raises(openais.NotExist):
        ch.event_retention_time_clear(123456789)
    e = ch.event_allocate()
    e.attributes_set([b"r"], 0, 100.0, "p")
    kept = e.publish(b"")
    e.attributes_set([b"r"], 0, 0.0, "p")
    not_kept = e.publish(b"")
    with pytest.raises(openais.NotExist):
        ch.event_retention_time_clear(not_kept)
    ch.event_retention_time_clear(kept)
    with pytest.raises(openais.NotExist):
        ch.event_retention_time_clear(kept)


def test_limit_get_rows(h):
    assert h.limit_get(evt.LimitId.MAX_NUM_CHANNELS) == 1024
    assert h.limit_get(evt.LimitId.MAX_EVT_SIZE) == 65536
    assert h.limit_get(evt.LimitId.MAX_PATTERN_SIZE) == 256
    assert h.limit_get(evt.LimitId.MAX_NUM_PATTERNS) == 64
    assert h.limit_get(evt.LimitId.MAX_RETENTION_DURATION) == 604800.0
    assert h.limit_get(3) == 256
    for bad in (0, 6, "1", None, 1.0):
        with pytest.raises(openais.InvalidParam):
            h.limit_get(bad)


def test_finalize_closes_channels_and_events(h):
    ch = h.channel_open("c", ALL, timeout=1.0)
    e = ch.event_allocate()
    h.finalize()
    for call in (ch.close, ch.event_allocate, e.free, e.attributes_get, lambda: e.publish(b"")):
        with pytest.raises(openais.BadHandle):
            call()
    with ch, e:
        pass


def test_try_again_while_sync_runs(cluster, h):
    cluster.crash(3)  # a sync round starts; nothing has run yet
    with pytest.raises(openais.TryAgain):
        rid = cluster.request(h.conn, evt.Request.OPEN, evt.OpenRequest.pack("c", ALL, openais.TIME_END, None))
        error, _ = h.conn.response(rid)
        raise AisError.from_code(error)
    cluster.run()
    h.channel_open("c", ALL, timeout=1.0)


def test_error_precedence_bad_handle_then_init_then_args_then_access(cluster, h):
    plain = Bridged(cluster, 1)
    ch = plain.channel_open("c", evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER, timeout=1.0)
    with pytest.raises(openais.Init):
        ch.event_subscribe(None, -1)  # Init before the argument errors
    ch2 = h.channel_open("c", evt.CHANNEL_PUBLISHER, timeout=1.0)
    with pytest.raises(openais.InvalidParam):
        ch2.event_subscribe(None, 1)  # argument error before Access
    ch2.close()
    with pytest.raises(openais.BadHandle):
        ch2.event_subscribe(None, 1)  # BadHandle first
    sub = h.channel_open("c", evt.CHANNEL_SUBSCRIBER, timeout=1.0)
    e = sub.event_allocate()
    with pytest.raises(openais.TooBig):
        e.publish(b"x" * 70000)  # TooBig before Access
