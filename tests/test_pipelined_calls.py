"""Pipelined requests through a real library handle and IPC server: the one mechanism every service uses.

CPG and EVS multicasts, EVT ``publish(wait=False)`` and MSG ``message_send_async`` all go through
``Handle._send_pipelined`` (``openais._calls.Calls.post``); these tests hold its promises (issue #11):
the window bounds unanswered requests by count and bytes, a full window raises TryAgain (after
``room_wait``), and an error the executive finds later for a pipelined request reaches the caller
once, at the latest at the next call, dispatch, flush or finalize; finalize never drops it; a dead
executive gives Library.  ``tests/test_client_calls.py`` holds the layer alone, on a socketpair.
"""

from __future__ import annotations

import select
import threading
import time

import pytest

import openais
from openais import _client, cpg, evs, evt, lck, msg
from openais._calls import Calls
from tests.test_ipc import EchoHandle, serve_echo, wait_until


@pytest.fixture
def server(tmp_path):
    srv = serve_echo(tmp_path, max_queued_bytes=2 * 1024 * 1024)
    yield srv
    srv.stop()


def test_every_service_handle_pipelines_through_the_one_call_layer():
    """One mechanism, one place: no service keeps a layer of its own."""
    for handle_class in (cpg.CpgHandle, evs.EvsHandle, evt.EvtHandle, lck.LckHandle, msg.MsgHandle):
        assert handle_class._send_pipelined is _client.Handle._send_pipelined
        assert handle_class._call is _client.Handle._call
        assert handle_class.flush is _client.Handle.flush
    assert _client.PIPELINE_WINDOW == 64


def test_pipelined_requests_are_parked_not_refused_and_the_window_bounds_them(server):
    from openais import _client

    h = EchoHandle(server.path)
    server.router.room = False
    for i in range(_client.PIPELINE_WINDOW):
        h._send_pipelined(10, str(i).encode())
    with pytest.raises(openais.TryAgain):
        h._send_pipelined(10, b"one too many")
    time.sleep(0.2)
    assert server.engine.taken_payloads == []  # parked while the ring has no room
    server.router.room = True
    h.flush(timeout=5)
    assert server.engine.taken_payloads == [str(i).encode() for i in range(_client.PIPELINE_WINDOW)]
    h._send_pipelined(10, b"bad")
    with pytest.raises(openais.NotExist):  # the executive's error for an earlier message surfaces later
        h.flush(timeout=5)
    assert h._call(1, b"ok") == b"ok"
    h.finalize()


def test_a_full_window_waits_room_wait_for_answers_then_raises_try_again(server):
    import threading

    from openais import _client

    h = EchoHandle(server.path)
    server.router.room = False
    for i in range(_client.PIPELINE_WINDOW):
        h._send_pipelined(10, str(i).encode())
    started = time.monotonic()
    with pytest.raises(openais.TryAgain):
        h._send_pipelined(10, b"no room", room_wait=0.3)
    assert time.monotonic() - started >= 0.3  # it waited for answers before giving up
    threading.Timer(0.2, setattr, (server.router, "room", True)).start()
    h._send_pipelined(10, b"room came", room_wait=5.0)  # answers arrive while it waits: sent
    h.flush(timeout=5)
    assert server.engine.taken_payloads[-1] == b"room came" and len(server.engine.taken_payloads) == 65
    server.router.room = False  # the bytes of the window bound it too, per call
    h._send_pipelined(10, b"a" * 600, window_bytes=1000)
    with pytest.raises(openais.TryAgain):
        h._send_pipelined(10, b"b" * 600, window_bytes=1000)
    h._send_pipelined(10, b"c" * 600)  # the default window takes it
    server.router.room = True
    h.flush(timeout=5)
    assert server.engine.taken_payloads[-2:] == [b"a" * 600, b"c" * 600]
    h.finalize()


def test_finalize_raises_the_error_of_the_last_pipelined_request_after_closing(server):
    h = EchoHandle(server.path)
    h._send_pipelined(10, b"fine")
    h._send_pipelined(10, b"bad")
    with pytest.raises(openais.NotExist):
        h.finalize()
    assert h._finalized
    with pytest.raises(openais.BadHandle):
        h._call(1, b"x")
    assert wait_until(lambda: len(server.engine.exits) == 1)


def test_a_call_and_dispatch_raise_a_kept_error_once(server):
    h = EchoHandle(server.path)
    h._send_pipelined(10, b"bad")
    time.sleep(0.2)
    with pytest.raises(openais.NotExist):
        h._call(1, b"not sent")
    assert h._call(1, b"ok") == b"ok"
    h._send_pipelined(10, b"bad")
    time.sleep(0.2)
    with pytest.raises(openais.NotExist):
        h.dispatch(openais.DISPATCH_ALL)
    h.dispatch(openais.DISPATCH_ALL)
    h.finalize()


def test_finalize_with_unanswered_requests_closes_and_raises_timeout(server):
    h = EchoHandle(server.path)
    server.router.room = False  # the executive parks the request: no answer comes
    h._send_pipelined(10, b"parked")
    started = time.monotonic()
    with pytest.raises(openais.Timeout, match="1 pipelined requests still unanswered"):
        h.finalize(timeout=0.3)
    assert h._finalized and time.monotonic() - started < 3
    server.router.room = True


def test_leaving_a_with_block_by_an_exception_keeps_that_exception(server):
    with pytest.raises(KeyError), EchoHandle(server.path) as h:
        h._send_pipelined(10, b"bad")
        raise KeyError("the block's own error")
    assert h._finalized


def test_dispatch_hears_of_a_refusal_on_its_own_channel_and_nothing_is_raised_twice(server):
    h = EchoHandle(server.path)
    h._send_pipelined(10, b"fine")
    h._send_pipelined(10, b"bad")
    h._send_pipelined(10, b"bad")
    assert wait_until(lambda: select.select([h], [], [], 0)[0])
    time.sleep(0.1)
    with pytest.raises(openais.NotExist, match="1 more pipelined requests failed after it"):
        h.dispatch(openais.DISPATCH_ALL)  # the response channel was not read: the dispatch channel told
    assert h.callbacks == []  # PIPELINE_ERROR frames are the handle's, not callbacks
    h.dispatch(openais.DISPATCH_ALL)
    h.flush(timeout=5)  # the answers themselves come later: not raised again
    h.finalize()


def test_flush_raises_a_kept_error_once(server):
    h = EchoHandle(server.path)
    h._send_pipelined(10, b"bad")
    h._send_pipelined(10, b"fine")
    with pytest.raises(openais.NotExist, match="an earlier pipelined request failed"):
        h.flush(timeout=5)
    h.flush(timeout=5)  # once
    assert h._call(1, b"ok") == b"ok"
    h.finalize()


def test_finalize_never_drops_an_error_even_with_requests_unanswered(server):
    """An error already answered comes before the Timeout of the requests still parked."""
    h = EchoHandle(server.path)
    h._send_pipelined(10, b"bad")
    assert wait_until(lambda: h._calls.deferred is not None or select.select([h._response], [], [], 0)[0])
    server.router.room = False
    h._send_pipelined(10, b"parked")
    with pytest.raises(openais.NotExist):
        h.finalize(timeout=0.3)
    assert h._finalized
    server.router.room = True


def test_a_dead_executive_gives_library_not_a_hang(server):
    h = EchoHandle(server.path)
    server.router.room = False
    h._send_pipelined(10, b"parked")
    server.stop()
    started = time.monotonic()
    with pytest.raises(openais.Library):
        h.flush(timeout=10)
    with pytest.raises(openais.Library):
        h._send_pipelined(10, b"more")
    with pytest.raises(openais.Library):
        h._call(1, b"x")
    assert time.monotonic() - started < 5
    h.finalize()  # closes without raising: nothing was answered, the executive is gone


def test_pipelined_sends_and_calls_from_several_threads(server):
    """Thread safety: posts of four threads and calls among them on one handle; nothing lost, nothing raised."""
    h = EchoHandle(server.path)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(100):
                while True:
                    try:
                        h._send_pipelined(10, b"%d-%d" % (n, i), room_wait=1.0)
                        break
                    except openais.TryAgain:
                        continue
                if i % 25 == 0:
                    assert h._call(1, b"c%d" % n) == b"c%d" % n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    h.flush(timeout=10)
    assert len(server.engine.taken_payloads) == 400
    for n in range(4):  # each thread's requests in its own order
        mine = [p for p in server.engine.taken_payloads if p.startswith(b"%d-" % n)]
        assert mine == [b"%d-%d" % (n, i) for i in range(100)]
    h.finalize()


def test_the_calls_layer_is_the_handles(server):
    h = EchoHandle(server.path)
    assert isinstance(h._calls, Calls)
    h.finalize()
