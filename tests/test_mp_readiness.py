"""Readiness during a membership change: not ready from the token loss until the next sync completes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess

POLLER = """
import sys, time
from openais import cfg
seen = []
deadline = time.monotonic() + float(sys.argv[1])
with cfg.initialize() as h:
    last = None
    print("started", flush=True)
    while time.monotonic() < deadline:
        _nodeid, ready = h.state()
        status = h.ring_status()
        if ready != last:
            print(f"{ready} {status.state} {sorted(status.members)}", flush=True)
            last = ready
        time.sleep(0.005)
"""


def test_ready_is_false_while_the_ring_reforms_and_systemd_hears_each_membership(tmp_path):
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    with notify, LocalCluster(tmp_path / "c", 2, transport="udpu", secauth=False) as cluster:
        cluster.start(1, env={"NOTIFY_SOCKET": notify_path})
        cluster.start(2)
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        poller = subprocess.Popen([sys.executable, "-c", POLLER, "12"], env=cluster.environ(1),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert poller.stdout.readline().strip() == "started"
            first = poller.stdout.readline().split()
            assert first[0] == "True"
            cluster.kill(2)
            lines = []
            for _ in range(2):
                lines.append(poller.stdout.readline().split())
        finally:
            poller.kill()
            poller.wait(10)
        assert lines[0][0] == "False", lines  # not ready while gathering / recovering
        assert lines[0][1] != "OPERATIONAL" or "2" in "".join(lines[0][2:]), lines
        assert lines[1][0] == "True" and lines[1][2:] == ["[1]"], lines
        seen = ""
        deadline = time.monotonic() + 5
        while "1 member(s) [1]" not in seen.partition("2 member(s) [1,2]")[2] and time.monotonic() < deadline:
            try:
                seen += notify.recv(4096).decode() + "\n"
            except TimeoutError:
                pass
        after_join = seen.partition("2 member(s) [1,2]")[2]
        assert "STATUS=ring" in after_join and "1 member(s) [1]" in after_join, seen
