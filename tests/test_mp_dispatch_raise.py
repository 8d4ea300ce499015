"""A callback that raises loses nothing: the callbacks read with it run at the next dispatch."""

from __future__ import annotations

import time

import pytest

import openais
from openais import cpg

pytestmark = pytest.mark.multiprocess


@pytest.mark.parametrize("flags", [openais.DISPATCH_ALL, openais.DISPATCH_ONE])
def test_callbacks_after_one_that_raised_are_delivered_by_the_next_dispatch(openais_cluster, monkeypatch, flags):
    cluster = openais_cluster(1, secauth=False)
    for key, value in cluster.environ(1).items():
        monkeypatch.setenv(key, value)
    got: list[bytes] = []

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        got.append(data)
        if data == b"0":
            raise RuntimeError("the application's callback failed")

    with cpg.initialize(deliver=deliver) as h:
        h.join("raise")
        h.dispatch(openais.DISPATCH_ALL)  # the join's confchg
        for i in range(5):
            h.mcast(str(i).encode())
        h.flush()
        time.sleep(0.5)  # all five are in the dispatch socket: one read takes them together
        with pytest.raises(RuntimeError):
            h.dispatch(openais.DISPATCH_ALL)
        assert got == [b"0"]
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            h.dispatch(flags)
        assert got == [str(i).encode() for i in range(5)]


def test_the_selection_object_stays_readable_while_kept_callbacks_wait(openais_cluster, monkeypatch):
    """A select() loop, the usual way to drive dispatch, still runs the callbacks a raising one left."""
    import select

    cluster = openais_cluster(1, secauth=False)
    for key, value in cluster.environ(1).items():
        monkeypatch.setenv(key, value)
    got: list[bytes] = []

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        got.append(data)
        if data in (b"0", b"2"):
            raise RuntimeError("the application's callback failed")

    with cpg.initialize(deliver=deliver) as h:
        h.join("raise-select")
        assert select.select([h], [], [], 10)[0] == [h]
        h.dispatch(openais.DISPATCH_ALL)  # the join's confchg
        assert select.select([h], [], [], 0.2)[0] == []  # nothing pending: not readable
        for i in range(4):
            h.mcast(str(i).encode())
        h.flush()
        time.sleep(0.5)  # all four in the socket: one read takes them together
        raised = 0
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            if select.select([h], [], [], 1)[0]:  # nothing new arrives: readable only for the kept ones
                try:
                    h.dispatch(openais.DISPATCH_ALL)
                except RuntimeError:
                    raised += 1
        assert got == [b"0", b"1", b"2", b"3"] and raised == 2
        assert select.select([h], [], [], 0.2)[0] == []  # all run: the selection object is quiet again
        h.mcast(b"later")
        assert select.select([h], [], [], 10)[0] == [h]  # and the socket still wakes it
        h.dispatch(openais.DISPATCH_ALL)
        assert got[-1] == b"later"


def test_evt_events_left_by_a_raising_callback_keep_the_selection_object_readable(openais_cluster, monkeypatch):
    """EVT keeps read events in its own backlog: they too make fileno() readable until delivered."""
    import select

    from openais import evt

    cluster = openais_cluster(1, secauth=False)
    for key, value in cluster.environ(1).items():
        monkeypatch.setenv(key, value)
    got: list[bytes] = []

    def deliver(sid: int, event: evt.Event, size: int) -> None:
        data = event.data_get()
        got.append(data)
        if data == b"0":
            raise RuntimeError("the application's callback failed")

    with evt.initialize(event_deliver=deliver) as h:
        flags = evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER
        ch = h.channel_open("raise-select", flags, timeout=30)
        ch.event_subscribe([evt.EventFilter(evt.PASS_ALL_FILTER, b"")], 1)
        e = ch.event_allocate()
        e.attributes_set([b"p"], evt.LOWEST_PRIORITY, 0.0, "test")
        assert select.select([h], [], [], 0.2)[0] == []
        for i in range(3):
            e.publish(str(i).encode())
        deadline = time.monotonic() + 10
        raised = 0
        while len(got) < 3 and time.monotonic() < deadline:
            if select.select([h], [], [], 1)[0]:
                try:
                    h.dispatch(openais.DISPATCH_ALL)
                except RuntimeError:
                    raised += 1
        assert got == [b"0", b"1", b"2"] and raised == 1
        assert select.select([h], [], [], 0.2)[0] == []
