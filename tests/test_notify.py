"""sd_notify against a real Unix datagram socket (path and abstract), and the no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

import pytest

from aisexec import notify


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False


def test_ready_status_stopping_watchdog(listener, monkeypatch):
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.ready("node 1 ready")
    assert sock.recv(4096) == b"READY=1\nSTATUS=node 1 ready"
    assert notify.status("syncing")
    assert sock.recv(4096) == b"STATUS=syncing"
    assert notify.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert notify.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket_name():
    name = f"openais-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_send_error_is_logged_at_debug_not_raised(tmp_path, caplog):
    caplog.set_level("DEBUG", logger="aisexec.main")
    assert notify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False
    assert any("sd_notify" in r.getMessage() and r.levelname == "DEBUG" for r in caplog.records)
