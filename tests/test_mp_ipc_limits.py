"""IPC limits for all connections together, against a real executive, as an operator sees them.

One executive runs with a low descriptor limit (``RLIMIT_NOFILE`` 256), a
16 MiB ``ipc_memory_budget``, a 2 s ``ipc_frame_timeout``, at most 70
sockets per uid and ``uidgid { uid: 65533 }``.  Clients that misbehave run as
other uids (a root helper drops its privileges after its imports), and while
they do, root's ``openais-cfgtool`` must keep answering; afterwards the
executive's resident memory (``/proc/<pid>/status``) must come back near
where it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess

ADMITTED_UID = 65533
REFUSED_UID = 65534
BUDGET = 16 * 1024 * 1024
NOFILE = 256
PER_UID = 70

#: A root helper that drops to ``uid`` after its imports, then misbehaves in one of several ways.
HELPER = textwrap.dedent("""
    import collections, contextlib, json, os, select, socket, sys, time
    from openais import _wire, cpg
    from openais._client import Handle
    from openais.errors import SaAisError, TryAgain
    mode, path, uid, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if uid:
        os.setgid(65534)
        os.setgroups([])
        os.setuid(uid)
    held = []
    report = {}
    if mode == "idle":  # connect and say nothing
        failed = 0
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect(path)
            except OSError:
                failed += 1
                s.close()
                continue
            held.append(s)
        time.sleep(1.0)
        answers = collections.Counter()
        for s in held:
            if select.select([s], [], [], 0)[0]:
                data = s.recv(64)
                answers[SaAisError(_wire.RESPONSE.unpack_from(data)[4]).name if data else "eof"] += 1
            else:
                answers["open"] += 1
        report = {"connect_failed": failed, "answers": dict(answers)}
    elif mode == "partial":  # complete handles, each with a big request frame begun and never finished
        header = _wire.REQUEST.pack(_wire.REQUEST.size + 1_000_000, cpg.SERVICE_ID, 2, 1)
        body = header + b"x" * 700_000
        for _ in range(count):
            h = Handle(cpg.SERVICE_ID, path=path)
            h._response.setblocking(False)
            held.append([h, 0])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and any(off < len(body) for _h, off in held):
            for item in held:
                try:
                    item[1] += item[0]._response.send(body[item[1]:item[1] + 65536])
                except (BlockingIOError, OSError):
                    pass
            time.sleep(0.01)
        report = {"handles": len(held), "sent": sum(off for _h, off in held)}
    elif mode == "slow":  # ``count`` processes (a CPG member is a process) join a group and never read
        r, w = os.pipe()
        for _ in range(count - 1):
            if os.fork() == 0:
                os.close(r)
                h = cpg.initialize(path=path)
                h.join("slow")
                os.write(w, b"j")
                sys.stdin.read()
                os._exit(0)
        os.close(w)
        h = cpg.initialize(path=path)
        h.join("slow")
        held.append(h)
        joined = 1
        while joined < count:
            chunk = os.read(r, 16)
            if not chunk:
                break
            joined += len(chunk)
        report = {"handles": joined}
    elif mode == "send":  # root: multicast ``count`` MiB to the group, reading its own deliveries
        got = [0]
        h = cpg.initialize(deliver=lambda g, n, p, d: got.__setitem__(0, got[0] + 1), path=path)
        h.join("slow")
        data, sent, deadline = b"s" * 65536, 0, time.monotonic() + 60
        while sent < count * 16 and time.monotonic() < deadline:
            try:
                h.mcast(data)
                sent += 1
            except TryAgain:
                time.sleep(0.002)
            h.dispatch(2)
        h.flush()
        report = {"sent": sent}
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # hold everything until the test lets go
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()
""")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settle_rss(pid: int, below_kib: int, timeout: float = 20.0) -> int:
    """Wait until the RSS of ``pid`` falls below ``below_kib`` (or the timeout); return the last value."""
    deadline = time.monotonic() + timeout
    value = rss_kib(pid)
    while value >= below_kib and time.monotonic() < deadline:
        time.sleep(0.25)
        value = rss_kib(pid)
    return value


class PeakRss:
    """Samples the RSS of ``pid`` every 50 ms while the ``with`` block runs; ``peak`` in KiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Helper:
    """One misbehaving client process (see HELPER), held until :meth:`release`."""

    def __init__(self, cluster: LocalCluster, mode: str, uid: int, count: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HELPER, mode, str(cluster.nodes[0].socket), str(uid),
                                      str(count)], env=cluster.environ(1), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"helper {mode} failed: {self.proc.stderr.read()[-2000:]}")
        self.report = json.loads(line)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def cfgtool(cluster: LocalCluster, *args: str, timeout: float = 20.0) -> tuple[int, float, str]:
    """Run ``openais-cfgtool ARGS`` as root; (exit status, seconds it took, stdout)."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", *args], env=cluster.environ(1),
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, time.monotonic() - start, out.stdout


def dump(cluster: LocalCluster) -> dict:
    code, _took, out = cfgtool(cluster, "--dump", "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def node():
    root = tempfile.mkdtemp(prefix="ais-ipclimits-")
    os.chmod(root, 0o755)  # the unprivileged helpers must reach the socket
    sections = {"aisexec": {"ipc_memory_budget": BUDGET, "ipc_frame_timeout": 2000,
                            "ipc_max_connections_per_uid": PER_UID},
                "uidgid": {"uid": ADMITTED_UID}}
    cluster = LocalCluster(Path(root), 1, transport="udpu", secauth=False, sections=sections)
    try:
        environ = cluster.environ(1)
        out = open(cluster.nodes[0].root / "stdout.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "aisexec.main", "-f"], env=environ, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))
        out.close()
        cluster.procs[1] = proc
        cluster.wait_members([1], [1], timeout=60)
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def test_dump_shows_the_limits_and_the_counters(node):
    doc = dump(node)
    assert doc["version"] == 1
    assert doc["config"]["aisexec"]["ipc_memory_budget"] == BUDGET
    assert doc["config"]["aisexec"]["ipc_max_connections_per_uid"] == PER_UID
    assert doc["status"]["ipc"]["accepted"] >= 1 and "dropped_slow" in doc["status"]["ipc"]
    code, _took, plain = cfgtool(node, "--dump")
    assert code == 0 and "config.aisexec.ipc_frame_timeout = 2000" in plain.splitlines()


def test_refused_uids_and_idle_floods_never_lock_root_out(node):
    pid = node.procs[1].pid
    refused = Helper(node, "idle", REFUSED_UID, 100)
    admitted = Helper(node, "idle", ADMITTED_UID, 100)
    try:
        # refused uid: every one answered SA_AIS_ERR_ACCESS and closed at once
        assert refused.report["answers"] == {"ACCESS": 100}, refused.report
        # admitted uid: PER_UID kept (in their handshake), the rest refused SA_AIS_ERR_NO_RESOURCES at once
        answers = admitted.report["answers"]
        assert answers.get("open", 0) <= PER_UID and answers.get("NO_RESOURCES", 0) >= 100 - PER_UID, admitted.report
        code, took, _out = cfgtool(node, "--ping")
        assert code == 0 and took < 10, took
    finally:
        refused.release()
        admitted.release()
    log = node.log(1)
    assert log.count("denied connection from pid") <= 2  # rate-limited: one line per 10 s
    assert "Too many open files" not in log
    counters = dump(node)["status"]["ipc"]
    assert counters["refused"] >= 100 and counters["refused_uid_limit"] >= 100 - PER_UID
    assert os.path.exists(f"/proc/{pid}")


def test_partial_frames_are_bounded_and_timed_out_and_memory_comes_back(node):
    pid = node.procs[1].pid
    time.sleep(0.5)
    baseline = rss_kib(pid)
    with PeakRss(pid) as sampler:
        partial = Helper(node, "partial", ADMITTED_UID, 30)
        time.sleep(0.5)
    peak = sampler.peak
    try:
        assert partial.report["handles"] == 30
        code, took, _out = cfgtool(node, "--ping")
        assert code == 0 and took < 10
        deadline = time.monotonic() + 30
        while "still incomplete" not in node.log(1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "still incomplete" in node.log(1)
    finally:
        partial.release()
    after = settle_rss(pid, baseline + 12 * 1024)
    print(f"partial frames: RSS baseline {baseline} KiB, with 30 x 700 KiB begun {peak} KiB, after {after} KiB, "
          f"sent {partial.report['sent']} bytes")
    assert peak < baseline + (BUDGET + 16 * 1024 * 1024) // 1024, (baseline, peak)
    assert after < baseline + 12 * 1024, (baseline, peak, after)
    counters = dump(node)["status"]["ipc"]
    assert counters["frame_timeouts"] >= 1


def test_slow_readers_are_dropped_at_the_budget_and_memory_comes_back(node):
    pid = node.procs[1].pid
    time.sleep(0.5)
    baseline = rss_kib(pid)
    slow = Helper(node, "slow", ADMITTED_UID, 6)
    try:
        assert slow.report["handles"] == 6
        with PeakRss(pid) as sampler:
            sender = Helper(node, "send", 0, 48)  # 48 MiB in 64 KiB messages, delivered to 7 handles
            sender.release()
        peak = sampler.peak
        counters = dump(node)["status"]["ipc"]
        assert counters["dropped_slow"] >= 1, counters
        code, took, _out = cfgtool(node, "--ping")
        assert code == 0 and took < 10
    finally:
        slow.release()
    after = settle_rss(pid, baseline + 12 * 1024)
    print(f"slow readers: RSS baseline {baseline} KiB, after 48 MiB to 6 readers that never read {peak} KiB, "
          f"after {after} KiB; dropped {counters['dropped_slow']}")
    assert "slowest reader" in node.log(1)
    assert peak < baseline + (BUDGET + 16 * 1024 * 1024) // 1024, (baseline, peak)
    assert after < baseline + 12 * 1024, (baseline, peak, after)
