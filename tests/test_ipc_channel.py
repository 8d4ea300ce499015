"""The IPC server's outgoing queue: a client that reads slowly loses nothing and reorders nothing."""

from __future__ import annotations

import gevent
from gevent import socket

from aisexec.ipc.server import _Channel


def test_writes_while_the_client_is_not_reading_are_kept_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    failures: list[str] = []
    channel = _Channel(ours, 64 * 1024 * 1024, failures.append)
    chunks = [bytes([i % 256]) * 50_000 for i in range(60)]
    try:
        for chunk in chunks:
            assert channel.write(chunk)
            gevent.sleep(0)  # the writer is blocked in send with part of the queue taken
        received = bytearray()
        expected = sum(map(len, chunks))
        with gevent.Timeout(20):
            while len(received) < expected:
                received += theirs.recv(1 << 20)
        assert failures == []
        assert bytes(received) == b"".join(chunks)
    finally:
        channel.close()
        theirs.close()


def test_a_client_that_never_reads_is_failed_at_the_limit_counting_bytes_in_flight() -> None:
    ours, theirs = socket.socketpair()
    failures: list[str] = []
    channel = _Channel(ours, 1_000_000, failures.append)
    try:
        accepted = 0
        for _ in range(100):
            if not channel.write(b"x" * 100_000):
                break
            accepted += 1
            gevent.sleep(0)
        assert failures and "not reading" in failures[0]
        assert accepted * 100_000 <= 1_000_000 + 512 * 1024  # socket buffers hold the rest
    finally:
        channel.close()
        theirs.close()
