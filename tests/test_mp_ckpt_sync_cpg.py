"""A joining node receives a multi-MB checkpoint while CPG keeps delivering on the others (real executives).

CKPT declares its sync state bulk (``aisexec.sync.PRIORITY_BULK``): it is
synchronised after every other service, which the routers release as soon as
their tier is active, so a CPG client keeps multicasting and receiving while
the checkpoint streams to the new node.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import subprocess
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess

MEGABYTES = 16
SECTION = 4 << 20

PRELUDE = """
import json, sys, time
import openais
from openais import ckpt
def retry(fn, *a, **k):
    for _ in range(400):
        try:
            return fn(*a, **k)
        except openais.TryAgain:
            time.sleep(0.05)
    raise RuntimeError("TryAgain for 20 s")
"""

FILL = PRELUDE + f"""
import hashlib
total, section = {MEGABYTES} << 20, {SECTION}
attrs = ckpt.CreationAttributes(checkpoint_size=total, max_sections=total // section, max_section_size=section,
                                max_section_id_size=4)
rwc = ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE | ckpt.CHECKPOINT_CREATE
with ckpt.initialize() as h:
    k = retry(h.checkpoint_open, "bulk", attrs, rwc, timeout=30)
    for s in range(total // section):
        sid = str(s).encode()
        retry(k.section_create, ckpt.SectionCreationAttributes(sid))
        for off in range(0, section, 1 << 20):
            retry(k.write, [ckpt.IOVector(sid, hashlib.sha256(b"%d-%d" % (s, off)).digest() * 32768, offset=off)])
print("filled", flush=True)
"""

#: Multicasts 1 KiB messages until SIGTERM; prints the monotonic time of every own delivery (JSON).
CPG = """
import json, select, signal, time
import openais
from openais import cpg
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
times = []
me = __import__("os").getpid()
def deliver(group, nodeid, pid, data):
    if pid == me:
        times.append(time.monotonic())
with cpg.initialize(deliver=deliver) as h:
    h.join("during-sync")
    print("sending", flush=True)
    while not stop:
        try:
            h.mcast(b"c" * 1024)
        except openais.TryAgain:
            select.select([h], [], [], 0.005)
        try:
            h.dispatch(openais.DISPATCH_ALL)
        except openais.TryAgain:
            pass
        time.sleep(0.0005)  # a steady stream (~1,500/s), not a flood
print(json.dumps(times), flush=True)
"""

#: On the joining node: when it is in a ring of 3, and when its replica of "bulk" is complete.
WATCH = PRELUDE + f"""
from openais import cfg
joined = None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with cfg.initialize() as c, ckpt.initialize() as h:
            while time.monotonic() < deadline:
                if joined is None and len(c.ring_status().members) >= 3:
                    joined = time.monotonic()
                if any(k["name"] == "bulk" and k["size"] == {MEGABYTES} << 20 for k in h.listing()["checkpoints"]):
                    print(json.dumps({{"joined": joined, "done": time.monotonic()}}), flush=True)
                    sys.exit(0)
                time.sleep(0.01)
    except openais.AisError:
        time.sleep(0.02)  # the executive is not up yet
sys.exit("the replica never completed")
"""

READ = PRELUDE + f"""
import hashlib
sha = hashlib.sha256()
with ckpt.initialize() as h:
    k = retry(h.checkpoint_open, "bulk", None, ckpt.CHECKPOINT_READ, timeout=30)
    for s in range(({MEGABYTES} << 20) // {SECTION}):
        for off in range(0, {SECTION}, 1 << 20):
            sha.update(retry(k.read, [ckpt.IOVector(str(s).encode(), offset=off, size=1 << 20)])[0])
print(sha.hexdigest(), flush=True)
"""


def expected_digest() -> str:
    sha = hashlib.sha256()
    for s in range((MEGABYTES << 20) // SECTION):
        for off in range(0, SECTION, 1 << 20):
            sha.update(hashlib.sha256(b"%d-%d" % (s, off)).digest() * 32768)
    return sha.hexdigest()


def run(cluster: LocalCluster, index: int, code: str, timeout: float = 60) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=cluster.environ(index), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_joining_node_gets_the_checkpoint_while_cpg_keeps_delivering(tmp_path):
    with LocalCluster(tmp_path, 3, transport="udpu", secauth=True) as cluster:
        cluster.start(1)
        cluster.start(2)
        cluster.wait_members([1, 2], [1, 2], timeout=40)
        assert run(cluster, 1, FILL, timeout=120) == "filled"
        sender = subprocess.Popen([sys.executable, "-c", CPG], env=cluster.environ(2), stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert sender.stdout.readline().strip() == "sending"
            time.sleep(0.5)
            cluster.start(3)
            window = json.loads(run(cluster, 3, WATCH, timeout=90))
            time.sleep(0.3)
        finally:
            sender.send_signal(signal.SIGTERM)
            out, _ = sender.communicate(timeout=30)
        times = json.loads(out.strip().splitlines()[-1])
        assert window["joined"] is not None
        start, end = window["joined"], window["done"]
        during = [t for t in times if start <= t <= end]
        assert [t for t in times if t < start], "CPG delivered nothing before the join"
        assert during, f"no CPG delivery during the {end - start:.2f} s the checkpoint took to reach node 3"
        # and no long silence inside the window either: holding CPG for the whole round (as before CKPT was
        # bulk) would leave the window silent until its very end
        edges = [start, *during, end]
        longest = max(b - a for a, b in itertools.pairwise(edges))
        assert longest < max(0.5, (end - start) / 2), f"CPG silent for {longest:.2f} s of {end - start:.2f} s"
        print(f"sync of {MEGABYTES} MB: {end - start:.2f} s from the join, {len(during)} CPG deliveries meanwhile "
              f"({len(during) / max(end - start, 1e-9):.0f}/s), longest gap {longest:.2f} s")
        assert run(cluster, 3, READ) == expected_digest()
