"""The shared call layer (openais._calls.Calls) against a fake executive on a socketpair.

The fake executive is a thread that answers each request with its payload reversed, after a delay
the payload chooses (so answers come out of order), or with a scripted error; the handle is a stand-in
with what the layer needs of one.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable

import pytest

import openais
from openais import _calls, _wire
from openais._calls import Calls
from openais.errors import SaAisError

OK = int(SaAisError.OK)
SERVICE = 9


class _Handle:
    """What :class:`Calls` needs of a library handle."""

    _max_frame = _wire.MAX_FRAME

    def __init__(self, sock: socket.socket) -> None:
        self._response = sock
        self._finalized = False
        self._dead = False

    def _check(self) -> None:
        if self._finalized:
            raise openais.BadHandle("finalized")
        if self._dead:
            raise openais.Library("dead")

    def finalize(self, calls: Calls) -> None:
        """What a handle's finalize does to the layer: mark, shut the socket down, wake the waiters."""
        self._finalized = True
        with contextlib.suppress(OSError):
            self._response.shutdown(socket.SHUT_RDWR)
        calls.wake()


class _Executive:
    """Answers every request in a thread: payload reversed after ``delay(payload)`` s; ``hold`` keeps answers."""

    def __init__(self, sock: socket.socket, delay: Callable[[bytes], float] = lambda p: 0.0) -> None:
        self.sock = sock
        self.delay = delay
        self.lock = threading.Lock()
        self.requests: list[tuple[int, int, int, bytes]] = []
        self.held: list[tuple[int, int, int, bytes]] = []
        self.hold = False
        self.errors: dict[bytes, SaAisError] = {b"fail": SaAisError.NOT_EXIST}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        buf = bytearray()
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            frames, used = _wire.split_requests(buf, _wire.MAX_FRAME)
            del buf[:used]
            for frame in frames:
                self.requests.append(frame)
                if self.hold:
                    self.held.append(frame)
                    continue
                delay = self.delay(frame[3])
                if delay:
                    threading.Timer(delay, self.answer, frame).start()
                else:
                    self.answer(*frame)

    def answer(self, service: int, msg_id: int, rid: int, payload: bytes) -> None:
        """Send the answer to one request."""
        error = int(self.errors.get(payload, SaAisError.OK))
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(_wire.encode_response(service, msg_id, rid, error, payload[::-1]))

    def release(self) -> None:
        """Answer every held request, in one write (from a thread)."""
        self.hold = False
        frames, self.held = self.held, []
        data = b"".join(_wire.encode_response(s, m, rid, int(self.errors.get(p, SaAisError.OK)), p[::-1])
                        for s, m, rid, p in frames)

        def send() -> None:  # from a thread: a big answer fills the socket until the caller reads it
            with self.lock, contextlib.suppress(OSError):
                self.sock.sendall(data)

        threading.Thread(target=send, daemon=True).start()


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield _Handle(a), b
    a.close()
    b.close()


def _idle(calls: Calls) -> bool:
    return not calls._waiting and not calls._answers and not calls._reading and not calls._sleepers


def test_many_threads_on_one_handle_each_get_their_own_answer(pair) -> None:
    """16 threads call at once (half with deadlines), answers out of order: each gets its own."""
    handle, peer = pair
    rng = random.Random(7)
    executive = _Executive(peer, lambda p: rng.random() * 0.01 if rng.random() < 0.5 else 0.0)
    calls = Calls(handle, SERVICE)
    errors: list[BaseException] = []
    done = [0] * 16

    def worker(n: int) -> None:
        try:
            for i in range(60):
                payload = f"{n}:{i}".encode()
                timeout = 10.0 if (n + i) % 2 else None
                assert calls.call(3, payload, timeout) == payload[::-1]
                done[n] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert done == [60] * 16
    assert _idle(calls)
    assert all(s == SERVICE and m == 3 for s, m, _r, _p in executive.requests)
    assert len({rid for _s, _m, rid, _p in executive.requests}) == 16 * 60  # every request its own id


def test_an_answer_read_by_another_thread_is_handed_to_its_caller(pair) -> None:
    """A blocked caller reads for everybody: a second thread's answer reaches it through that reader."""
    handle, peer = pair
    _Executive(peer, lambda p: 1.0 if p == b"slow" else 0.0)
    calls = Calls(handle, SERVICE)
    slow: list[bytes] = []
    t = threading.Thread(target=lambda: slow.append(calls.call(1, b"slow")))
    t.start()
    time.sleep(0.1)
    assert calls._reading  # the slow call (no deadline) holds the reading role
    started = time.monotonic()
    for i in range(5):
        assert calls.call(1, b"fast%d" % i) == (b"fast%d" % i)[::-1]
    assert time.monotonic() - started < 0.5  # not delayed by the slow one
    t.join(5)
    assert slow == [b"wols"]
    assert _idle(calls)


def test_an_error_answer_raises_its_error(pair) -> None:
    handle, peer = pair
    _Executive(peer)
    calls = Calls(handle, SERVICE)
    with pytest.raises(openais.NotExist):
        calls.call(1, b"fail")
    with pytest.raises(openais.NotExist):
        calls.call(1, b"fail", 5.0)
    assert calls.call(1, b"ok") == b"ko"


def test_a_deadline_raises_timeout_and_the_late_answer_is_dropped(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda p: 0.3 if p == b"late" else 0.0)
    calls = Calls(handle, SERVICE)
    started = time.monotonic()
    with pytest.raises(openais.Timeout):
        calls.call(1, b"late", 0.1)
    assert 0.09 < time.monotonic() - started < 0.3
    time.sleep(0.35)  # the late answer is on the socket now
    assert calls.call(1, b"next") == b"txen"  # read past and dropped
    assert _idle(calls)


def _blocked_calls(calls: Calls, payload: bytes, timeouts: tuple[float | None, ...]
                   ) -> tuple[list[threading.Thread], list[BaseException]]:
    """One thread per timeout, each blocked in ``calls.call(1, payload, timeout)``; what they raise."""
    outcome: list[BaseException] = []

    def blocked(timeout: float | None) -> None:
        try:
            calls.call(1, payload, timeout)
        except BaseException as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=blocked, args=(t,)) for t in timeouts]
    for t in threads:
        t.start()
    time.sleep(0.2)
    return threads, outcome


def test_finalize_while_threads_wait_raises_bad_handle_in_each(pair) -> None:
    """Threads with and without deadlines wait (one of them reading): finalize ends every wait."""
    handle, peer = pair
    _Executive(peer, lambda p: 60.0)
    calls = Calls(handle, SERVICE)
    threads, outcome = _blocked_calls(calls, b"never", (None, None, 30.0, 30.0))
    started = time.monotonic()
    handle.finalize(calls)
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 1.0
    assert len(outcome) == 4 and all(isinstance(e, openais.BadHandle) for e in outcome), outcome
    with pytest.raises(openais.BadHandle):
        calls.call(1, b"after")


def test_connection_lost_raises_library_in_every_waiting_call(pair) -> None:
    handle, peer = pair
    executive = _Executive(peer)
    executive.hold = True
    calls = Calls(handle, SERVICE)
    threads, outcome = _blocked_calls(calls, b"x", (None, 10.0, None))
    peer.shutdown(socket.SHUT_RDWR)  # the executive goes away
    for t in threads:
        t.join(5)
    assert len(outcome) == 3 and all(isinstance(e, openais.Library) for e in outcome), outcome
    assert handle._dead
    with pytest.raises(openais.Library):
        calls.call(1, b"after")


@pytest.mark.parametrize("frame", [
    _wire.RESPONSE.pack(4, SERVICE, 1, 1, OK),  # size smaller than the header
    _wire.RESPONSE.pack(_wire.MAX_FRAME + 1, SERVICE, 1, 1, OK),  # size above the limit
])
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_malformed_answer_raises_library(pair, frame: bytes, timeout: float | None) -> None:
    handle, peer = pair
    calls = Calls(handle, SERVICE)

    def answer() -> None:
        peer.recv(4096)
        peer.sendall(frame)

    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(openais.Library, match="malformed"):
        calls.call(1, b"x", timeout)
    t.join(5)
    assert handle._dead


def test_posted_requests_fill_the_window_then_try_again(pair) -> None:
    """The executive holds the answers: WINDOW posts go out, the next raises TryAgain; answers make room."""
    handle, peer = pair
    executive = _Executive(peer)
    executive.hold = True
    calls = Calls(handle, SERVICE)
    for i in range(_calls.WINDOW):
        calls.post(2, b"p%d" % i)
    started = time.monotonic()
    with pytest.raises(openais.TryAgain):
        calls.post(2, b"over")  # room_wait 0: at once
    with pytest.raises(openais.TryAgain):
        calls.post(2, b"over", room_wait=0.2)  # waits for answers that long first
    assert 0.2 <= time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    while len(executive.held) < _calls.WINDOW:  # every posted request reached the executive
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(executive.held) == _calls.WINDOW  # the refused ones were not sent
    threading.Timer(0.2, executive.release).start()
    calls.post(2, b"room came", room_wait=5.0)  # answers arrive while it waits: sent
    calls.drain(5.0)
    assert not calls._posted and calls._posted_bytes == 0
    assert executive.requests[-1][3] == b"room came"


def test_the_window_counts_bytes_too(pair) -> None:
    handle, peer = pair
    executive = _Executive(peer)
    executive.hold = True
    calls = Calls(handle, SERVICE)
    big = b"b" * (_calls.WINDOW_BYTES // 2)
    calls.post(2, big)
    with pytest.raises(openais.TryAgain):
        calls.post(2, big)  # two of them are above WINDOW_BYTES
    calls.post(2, b"small")  # one that fits goes
    with pytest.raises(openais.TryAgain):
        calls.post(2, b"c" * 600, window_bytes=1000)  # a window of the caller's bytes
    executive.release()
    calls.drain(5.0)
    calls.drain(5.0)
    calls.post(2, big + big)  # alone in the window: a request above the window still goes


def test_a_posted_requests_error_is_raised_by_a_later_call_once(pair) -> None:
    handle, peer = pair
    executive = _Executive(peer)
    calls = Calls(handle, SERVICE, "message_send_async")
    calls.post(2, b"fail")
    calls.post(2, b"fine")
    calls.drain(5.0)
    assert isinstance(calls.deferred, openais.NotExist)
    with pytest.raises(openais.NotExist, match="earlier message_send_async failed"):
        calls.post(2, b"next")  # a later post raises it (and is not sent)
    calls.raise_deferred()  # raised once only
    calls.post(2, b"fail")
    calls.post(2, b"fail")
    time.sleep(0.1)
    sent = len(executive.requests)
    with pytest.raises(openais.NotExist, match=r"1 more pipelined requests failed after it"):
        calls.call(1, b"sync")  # a call reads the answers waiting, raises the kept error, is not sent
    assert len(executive.requests) == sent
    assert calls.call(1, b"sync") == b"cnys"
    calls.raise_deferred()  # nothing left


def test_a_refusal_told_on_the_dispatch_channel_is_raised_once(pair) -> None:
    """``refused`` (the dispatch channel's PIPELINE_ERROR) keeps the error; its answer later adds nothing."""
    handle, peer = pair
    executive = _Executive(peer)
    executive.hold = True
    calls = Calls(handle, SERVICE)
    calls.post(2, b"fail")
    rid = next(iter(calls._posted))
    calls.refused(rid, int(SaAisError.NOT_EXIST))
    calls.refused(rid, int(SaAisError.NOT_EXIST))  # told twice: kept once
    calls.refused(rid + 99, int(SaAisError.NOT_EXIST))  # not a posted request: ignored
    with pytest.raises(openais.NotExist) as info:
        calls.raise_deferred()
    assert "more" not in str(info.value)
    executive.release()
    calls.drain(5.0)
    calls.raise_deferred()  # the answer itself is not raised again


def test_posts_and_calls_from_many_threads_share_one_window(pair) -> None:
    """Thread safety: posts of several threads and calls between them; every answer settles the window."""
    handle, peer = pair
    _Executive(peer, delay=lambda p: 0.002 if p.startswith(b"s") else 0.0)
    calls = Calls(handle, SERVICE)
    errors: list[BaseException] = []

    def poster(n: int) -> None:
        try:
            for i in range(200):
                while True:
                    try:
                        calls.post(2, b"p%d-%d" % (n, i), room_wait=1.0)
                        break
                    except openais.TryAgain:
                        continue
                if i % 50 == 0:
                    assert calls.call(1, b"s%d" % i) == (b"s%d" % i)[::-1]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    calls.drain(5.0)
    assert not calls._posted and calls._posted_bytes == 0 and _idle(calls)
    assert calls.deferred is None


def test_a_lost_executive_gives_library_to_posts_drain_and_calls(pair) -> None:
    handle, peer = pair
    executive = _Executive(peer)
    executive.hold = True
    calls = Calls(handle, SERVICE)
    calls.post(2, b"unanswered")
    peer.shutdown(socket.SHUT_RDWR)  # the executive is gone
    with pytest.raises(openais.Library):
        calls.drain(5.0)
    assert handle._dead
    for attempt in (lambda: calls.post(2, b"x"), lambda: calls.call(1, b"x")):
        with pytest.raises(openais.Library):
            attempt()


def test_a_send_the_executive_does_not_take_times_out_and_gives_up_the_connection(pair) -> None:
    handle, _peer = pair
    handle._response.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    calls = Calls(handle, SERVICE)  # nobody reads ``peer``
    started = time.monotonic()
    with pytest.raises(openais.Timeout):
        for _ in range(1000):
            calls.post(2, b"z" * 60000, timeout=0.2, window_bytes=1 << 30)
    assert time.monotonic() - started < 3 and handle._dead
    with pytest.raises(openais.Library):
        calls.post(2, b"x")


def test_a_single_thread_call_sends_one_frame_and_reads_once(pair, monkeypatch) -> None:
    """The fast path: a call without deadline, nobody else reading, makes no select and files nothing."""
    import select as select_module

    handle, peer = pair
    _Executive(peer)
    calls = Calls(handle, SERVICE)
    selects: list[object] = []
    real = select_module.select
    monkeypatch.setattr(select_module, "select", lambda *a: selects.append(a) or real(*a))
    for i in range(20):
        assert calls.call(1, b"%d" % i) == (b"%d" % i)[::-1]
    assert selects == [] and _idle(calls) and not calls._buf


# -- calls with deadlines, answered after a delay (formerly MSG's own tests) ---------------------------


def test_concurrent_calls_get_their_own_answers_in_any_order(pair) -> None:
    handle, peer = pair
    rng = random.Random(3)
    _Executive(peer, lambda payload: rng.random() * 0.02)
    mux = Calls(handle, SERVICE)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                payload = f"{n}-{i}".encode()
                assert mux.call(1, payload, 10.0) == payload[::-1]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not mux._waiting and not mux._answers and not mux._reading and not mux._sleepers


def test_a_slow_answer_does_not_hold_up_a_fast_one(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda payload: 1.0 if payload == b"slow" else 0.0)
    mux = Calls(handle, SERVICE)
    slow: list[bytes] = []
    reader = threading.Thread(target=lambda: slow.append(mux.call(1, b"slow", 10.0)))
    reader.start()
    time.sleep(0.1)  # the slow caller is the reader now
    started = time.monotonic()
    assert mux.call(1, b"fast", 10.0) == b"tsaf"
    assert time.monotonic() - started < 0.5
    reader.join(10)
    assert slow == [b"wols"]


def test_timeout_error_and_late_answer(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda payload: 0.3 if payload == b"late" else 0.0)
    mux = Calls(handle, SERVICE)
    with pytest.raises(openais.Timeout):
        mux.call(1, b"late", 0.05)
    with pytest.raises(openais.NotExist):
        mux.call(1, b"fail", 5.0)
    time.sleep(0.4)
    assert mux.call(1, b"next", 5.0) == b"txen"  # the late answer was read and dropped
    assert not mux._waiting and not mux._answers


def test_each_call_waits_its_own_deadline(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda payload: 0.3 if payload.startswith(b"slow") else 0.0)
    mux = Calls(handle, SERVICE)
    started = time.monotonic()
    with pytest.raises(openais.Timeout):
        mux.call(1, b"slow-1", 0.05)  # the reader's kernel timeout is set to what is left: 50 ms
    assert time.monotonic() - started < 0.25
    assert mux.call(1, b"slow-2", 5.0) == b"2-wols"  # a longer wait is not cut short by the earlier one
    started = time.monotonic()
    with pytest.raises(openais.Timeout):
        mux.call(1, b"slow-3", 0.1)
    assert 0.09 < time.monotonic() - started < 0.3


def test_finalize_wakes_a_blocked_call(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda payload: 60.0)
    mux = Calls(handle, SERVICE)
    outcome: list[BaseException] = []

    def blocked() -> None:
        try:
            mux.call(1, b"never", None)
        except BaseException as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=blocked) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    handle._finalized = True
    with mux._cv:
        mux._cv.notify_all()
    for t in threads:
        t.join(5)
    assert len(outcome) == 2 and all(isinstance(e, openais.BadHandle) for e in outcome)


def test_wake_ends_a_waiting_call_at_once_not_at_the_end_of_its_slice(pair) -> None:
    handle, peer = pair
    _Executive(peer, lambda payload: 60.0)
    mux = Calls(handle, SERVICE)
    mux.SLICE = 3.0  # without wake, a waiter would notice the finalize only after a slice
    ended: list[tuple[float, BaseException]] = []

    def blocked() -> None:
        try:
            mux.call(1, b"never", None)
        except BaseException as exc:
            ended.append((time.monotonic(), exc))

    threads = [threading.Thread(target=blocked) for _ in range(2)]  # a reader and a sleeper
    for t in threads:
        t.start()
    time.sleep(0.2)
    handle._finalized = True  # no socket shutdown: only wake() can end the sleeper's wait
    woken = time.monotonic()
    mux.wake()
    for t in threads:
        t.join(10)
    assert len(ended) == 2 and all(isinstance(e, openais.BadHandle) for _, e in ended)
    assert min(at for at, _ in ended) - woken < 1.0  # the sleeper, woken at once
