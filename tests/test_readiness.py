"""ReadWaiter: a reader parked on one long-lived watcher wakes for data, and never spins while busy."""

from __future__ import annotations

import socket

import gevent
import pytest

from aisexec.readiness import ReadWaiter


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_a_parked_reader_wakes_for_each_datagram_in_order(pair) -> None:
    ours, theirs = pair
    waiter = ReadWaiter(ours.fileno())
    got: list[bytes] = []

    def reader() -> None:
        while len(got) < 3:
            waiter.wait()
            while True:
                try:
                    got.append(ours.recv(100))
                except BlockingIOError:
                    break

    greenlet = gevent.spawn(reader)
    try:
        for payload in (b"one", b"two", b"three"):
            gevent.sleep(0.01)
            assert got == [b"one", b"two", b"three"][: len(got)]
            theirs.send(payload)
        greenlet.join(timeout=5)
        assert greenlet.dead
        assert got == [b"one", b"two", b"three"]
    finally:
        greenlet.kill()
        waiter.close()


def test_data_that_arrives_while_the_reader_is_busy_stops_the_watcher_until_it_waits_again(pair) -> None:
    ours, theirs = pair
    waiter = ReadWaiter(ours.fileno())
    calls = {"ready": 0}
    original = waiter._ready

    def counting_ready() -> None:
        calls["ready"] += 1
        original()

    waiter._ready = counting_ready  # type: ignore[method-assign]
    got: list[bytes] = []

    def reader() -> None:
        waiter.wait()
        got.append(ours.recv(100))
        gevent.sleep(0.05)  # busy elsewhere while more data is readable
        waiter.wait()
        got.append(ours.recv(100))

    greenlet = gevent.spawn(reader)
    try:
        gevent.sleep(0.01)
        theirs.send(b"first")
        gevent.sleep(0.01)
        theirs.send(b"second")  # readable while the reader sleeps: the level-triggered watcher must not spin
        greenlet.join(timeout=5)
        assert got == [b"first", b"second"]
        assert calls["ready"] <= 4, calls
    finally:
        greenlet.kill()
        waiter.close()


def test_a_killed_reader_leaves_the_waiter_reusable(pair) -> None:
    ours, theirs = pair
    waiter = ReadWaiter(ours.fileno())
    parked = gevent.spawn(waiter.wait)
    gevent.sleep(0.01)
    parked.kill()
    assert parked.dead
    follower = gevent.spawn(waiter.wait)
    theirs.send(b"x")
    follower.join(timeout=5)
    assert follower.dead and follower.successful()
    waiter.close()


def test_cancel_wakes_the_parked_reader_with_the_error_and_fails_later_waits(pair) -> None:
    ours, _theirs = pair
    waiter = ReadWaiter(ours.fileno())
    raised: list[BaseException] = []

    def reader() -> None:
        try:
            waiter.wait()
        except OSError as exc:
            raised.append(exc)

    greenlet = gevent.spawn(reader)
    try:
        gevent.sleep(0.01)
        assert not greenlet.dead  # parked: nothing to read
        error = OSError(9, "closed under the reader")
        waiter.cancel(error)
        assert not raised  # woken from the hub, not from the caller
        greenlet.join(timeout=5)
        assert raised == [error]
        with pytest.raises(OSError, match="closed under the reader"):
            waiter.wait()  # and every later wait fails at once
        waiter.cancel(OSError(9, "again"))  # a second cancel changes nothing
        with pytest.raises(OSError, match="closed under the reader"):
            waiter.wait()
    finally:
        greenlet.kill()
