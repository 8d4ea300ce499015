"""No executive removes a socket, lock or pid file it does not own: real executives as processes.

A second executive on the same ``OPENAIS_IPC_SOCKET`` (its own state
directory) exits 19 and the first keeps serving the tools, with its socket
file untouched, also when the first is stopped with a full backlog (the
probe can neither connect nor be refused); a socket file nobody listens on
(its executive was SIGKILLed) is taken over by the next start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from aisexec.exitcodes import ExitCode
from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess


def ping(cluster: LocalCluster, index: int = 1) -> int:
    """``openais-cfgtool --ping`` against node ``index``; its exit status."""
    return subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "--ping"], env=cluster.environ(index),
                          capture_output=True, text=True, timeout=30).returncode


def identity(path: os.PathLike) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_dev, info.st_ino


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two node layouts; only node 1 runs (the tests below run in order on it; the last restarts it).

    Node 2 is started by the tests on node 1's socket.
    """
    with LocalCluster(tmp_path_factory.mktemp("owner"), 2, transport="udpu", secauth=False) as cluster:
        cluster.start(1)
        cluster.wait_members([1], [1], timeout=60)
        yield cluster


def start_intruder(cluster: LocalCluster) -> subprocess.CompletedProcess:
    """Node 2's executive (own state dir, own address) told to use node 1's socket; wait for its exit."""
    env = cluster.environ(2)
    env["OPENAIS_IPC_SOCKET"] = str(cluster.nodes[0].socket)
    return subprocess.run([sys.executable, "-m", "aisexec.main", "-f"], env=env, capture_output=True, text=True,
                          timeout=90)


def test_a_second_executive_on_the_same_socket_exits_19_and_the_first_keeps_serving(pair):
    sock = pair.nodes[0].socket
    before = identity(sock)
    second = start_intruder(pair)
    assert second.returncode == ExitCode.RESOURCE_BUSY == 19, second.stderr
    assert str(sock) in second.stderr
    assert identity(sock) == before
    assert ping(pair) == 0
    assert pair.procs[1].poll() is None


def test_a_stopped_executive_with_a_full_backlog_keeps_its_socket(pair):
    """The probe times out (neither connected nor refused): not stale, so not removed; exit 19."""
    sock = pair.nodes[0].socket
    before = identity(sock)
    first = pair.procs[1]
    fillers: list[socket.socket] = []
    os.kill(first.pid, signal.SIGSTOP)
    try:
        for _ in range(1000):  # fill the listen backlog of the stopped executive
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(sock))
            except (BlockingIOError, OSError):
                s.close()
                break
            fillers.append(s)
        second = start_intruder(pair)
    finally:
        for s in fillers:
            s.close()
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == ExitCode.RESOURCE_BUSY, second.stderr
    print(second.stderr.strip().splitlines()[-1])
    assert "not replacing it" in second.stderr or "is listening on" in second.stderr, second.stderr
    assert identity(sock) == before
    deadline = time.monotonic() + 30
    while ping(pair) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ping(pair) == 0
    assert first.poll() is None


def test_a_stale_socket_is_taken_over_and_removed_at_a_clean_stop(pair):
    sock = pair.nodes[0].socket
    pair.kill(1)  # SIGKILL: the socket file stays, nobody listens on it
    assert sock.exists()
    stale = os.lstat(sock).st_ctime_ns
    pair.start(1)
    pair.wait_members([1], [1], timeout=60)
    assert ping(pair) == 0
    assert os.lstat(sock).st_ctime_ns != stale  # a new socket file (the inode number may be reused)
    pair.kill(1, signal.SIGTERM)
    assert not sock.exists()  # its own socket: removed at a clean stop
