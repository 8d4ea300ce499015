"""Parked pipelined requests: woken when the ring reports room, in arrival order, with a bounded fallback.

A pipelined request that needs the ring while its send queue is full parks its connection's reader
(``IpcServer._park``).  The ring link's room notification (``IpcServer.room_available``, the
executive's ``on_room``) wakes it; without one it looks again after ``PARK_FALLBACK``; after
``PARK_LIMIT`` it is answered TRY_AGAIN; closing the connection ends the wait at once.
"""

from __future__ import annotations

import contextlib
import time

import pytest

import openais
from aisexec.ipc import server as server_module
from aisexec.service import LibHandler
from tests.test_ipc import EchoHandle, serve_echo, wait_until


@pytest.fixture
def server(tmp_path):
    srv = serve_echo(tmp_path)
    yield srv
    srv.stop()


def _parked(server, count: int, waiting: int | None = None) -> bool:
    """True once ``count`` requests were parked in all and ``waiting`` (default: all) still are."""
    waiting = count if waiting is None else waiting
    return wait_until(lambda: server.server.counters["parked"] == count and len(server.server._parked) == waiting)


def test_a_room_report_wakes_a_parked_request_without_the_fallback_delay(server, monkeypatch):
    monkeypatch.setattr(server_module, "PARK_FALLBACK", 5.0)  # only the wake can answer quickly
    h = EchoHandle(server.path)
    server.router.room = False
    h._send_pipelined(10, b"waits")
    assert _parked(server, 1)
    server.router.room = True
    started = time.monotonic()
    server.room_available()
    h.flush(timeout=10)
    assert time.monotonic() - started < 1.0  # not the 5 s fallback
    assert server.engine.taken_payloads == [b"waits"]
    h.finalize()


def test_without_a_report_the_fallback_still_finds_the_room(server, monkeypatch):
    monkeypatch.setattr(server_module, "PARK_FALLBACK", 0.05)
    h = EchoHandle(server.path)
    server.router.room = False
    h._send_pipelined(10, b"waits")
    assert _parked(server, 1)
    server.router.room = True  # no room_available(): the bounded fallback notices
    h.flush(timeout=5)
    assert server.engine.taken_payloads == [b"waits"]
    h.finalize()


def test_parked_connections_go_in_arrival_order_and_newcomers_queue_behind(server, monkeypatch):
    """Room for one request at a time: A, B, C parked in that order go in that order; D, sent while
    room is there but C still parked, goes after C."""
    monkeypatch.setattr(server_module, "PARK_FALLBACK", 5.0)
    budget = [0]
    engine = server.engine
    real_taken = engine.taken

    def taken(conn, rid, payload):
        budget[0] -= 1
        real_taken(conn, rid, payload)

    engine.lib_handlers[10] = LibHandler(taken, needs_cluster=True, pipelined=True)
    server.router.has_room = lambda size: budget[0] > 0
    handles = {name: EchoHandle(server.path) for name in "ABCD"}
    try:
        for count, name in enumerate("ABC", 1):
            handles[name]._send_pipelined(10, name.encode())
            assert _parked(server, count)
        for expected in (["A"], ["A", "B"]):
            budget[0] = 1
            server.room_available()
            assert wait_until(lambda expected=expected: engine.taken_payloads == [e.encode() for e in expected])
        budget[0] = 1  # room for one, but C waits: D parks behind it
        handles["D"]._send_pipelined(10, b"D")
        assert _parked(server, 4, 2)
        assert engine.taken_payloads == [b"A", b"B"]
        server.room_available()
        assert wait_until(lambda: engine.taken_payloads == [b"A", b"B", b"C"])
        budget[0] = 1
        server.room_available()
        assert wait_until(lambda: engine.taken_payloads == [b"A", b"B", b"C", b"D"])
        for h in handles.values():
            h.flush(timeout=5)
    finally:
        server.router.has_room = lambda size: True
        for h in handles.values():
            with contextlib.suppress(openais.AisError):
                h.finalize()


def test_a_connection_closed_while_parked_leaves_the_wait_at_once(server, monkeypatch):
    monkeypatch.setattr(server_module, "PARK_FALLBACK", 5.0)
    kicker, victim = EchoHandle(server.path), EchoHandle(server.path)
    server.router.room = False
    victim._send_pipelined(10, b"parked")
    assert _parked(server, 1)
    started = time.monotonic()
    kicker._call(11, str(victim.conn_id).encode())  # the executive closes the victim's connection
    assert wait_until(lambda: not server.server._parked and server.engine.exits == [victim.conn_id], timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert server.engine.taken_payloads == []
    with pytest.raises(openais.Library):
        victim.flush(timeout=5)
    server.router.room = True
    kicker.finalize()
    victim.finalize()


def test_the_park_limit_still_answers_try_again(server, monkeypatch):
    monkeypatch.setattr(server_module, "PARK_LIMIT", 0.3)
    h = EchoHandle(server.path)
    server.router.room = False
    h._send_pipelined(10, b"never room")
    with pytest.raises(openais.TryAgain):
        h.flush(timeout=5)
    assert server.engine.taken_payloads == [] and server.server.counters["try_again"] == 1
    assert not server.server._parked
    server.router.room = True
    h.finalize()
