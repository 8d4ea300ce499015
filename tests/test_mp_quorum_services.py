"""LCK and CKPT honour quorum across real executives: a minority grants no lock and writes no checkpoint."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster
from tests.mp_helpers import heal, partition, start_node
from tests.test_mp_quorum import wait_quorum

pytestmark = pytest.mark.multiprocess

LOCK = """
import sys, openais
from openais import lck
mode = sys.argv[1]
with lck.initialize() as h:
    res = h.resource_open("safLckResource=q", lck.RESOURCE_CREATE, timeout=20)
    flags = lck.LOCK_NO_QUEUE if mode == "noqueue" else 0
    print("asking", flush=True)
    try:
        lock = res.lock(lck.LockMode.EX, flags=flags, timeout=float(sys.argv[2]))
    except openais.Timeout:
        print("Timeout", flush=True)
        sys.exit(0)
    print(lock.status.name, flush=True)
    if lock.status == lck.LockStatus.GRANTED:
        lock.unlock()
"""

CKPT = """
import openais
from openais import ckpt
attrs = ckpt.CreationAttributes(checkpoint_size=1024, max_section_size=1024)
flags = ckpt.CHECKPOINT_CREATE | ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE
with ckpt.initialize() as h:
    try:
        with h.checkpoint_open("safCkpt=q", attrs, flags, timeout=20) as c:
            c.section_overwrite(ckpt.DEFAULT_SECTION_ID, b"written")
            print("written", flush=True)
    except openais.TryAgain:
        print("TryAgain", flush=True)
"""


def client(cluster: LocalCluster, index: int, code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], env=cluster.environ(index), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_a_minority_grants_no_lock_and_writes_no_checkpoint_then_serves_after_the_heal(tmp_path):
    with LocalCluster(tmp_path, 3, transport="udpu", secauth=True, sections={"quorum": {}}) as cluster:
        start_node(cluster, 1, 2, 3)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=40)
        wait_quorum(cluster, 3, True, total_votes=3)
        partition(cluster, [1, 2], [3])
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        cluster.wait_members([3], [3], timeout=30)
        wait_quorum(cluster, 3, False)
        wait_quorum(cluster, 1, True)
        # the single node: no lock, no checkpoint write
        assert client(cluster, 3, LOCK, "noqueue", "5") == "NOT_QUEUED"
        assert client(cluster, 3, LOCK, "wait", "1.5") == "Timeout"
        assert client(cluster, 3, CKPT) == "TryAgain"
        # the pair carries on
        assert client(cluster, 1, LOCK, "noqueue", "5") == "GRANTED"
        assert client(cluster, 2, CKPT) == "written"
        # a request queued in the minority is granted once the partition heals and quorum is back
        waiter = subprocess.Popen([sys.executable, "-c", LOCK, "wait", "60"], env=cluster.environ(3),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert waiter.stdout.readline().strip() == "asking"
            time.sleep(1.0)
            heal(cluster)
            cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=30)
            wait_quorum(cluster, 3, True, total_votes=3)
            assert waiter.stdout.readline().strip() == "GRANTED"
            assert waiter.wait(30) == 0
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait(10)
        assert client(cluster, 3, CKPT) == "written"
