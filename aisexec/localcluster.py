"""Real executives as separate processes on 127.0.0.x: tests, benchmarks and openais-demo use it.

:class:`LocalCluster` lays out N nodes with :func:`aisexec.embedded.local_cluster`,
starts ``aisexec -f`` for each as its own process (own socket, state dir and
log), and kills every process it started when closed.  Nodes are addressed by
index (1..N).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aisexec.embedded import NodeLayout, local_cluster

_STATUS_PROBE = """
import json
from openais import cfg
with cfg.initialize() as h:
    s = h.ring_status()
    print(json.dumps({"nodeid": s.nodeid, "state": s.state, "synced": s.synced, "members": list(s.members),
                      "ring_id": s.rings[0].ring_id if s.rings else None}))
"""


def free_port_pair() -> int:
    """An even UDP port p such that p and p-1 look free on 127.0.0.1 (udp uses both)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 == 0 and port > 1100:
            return port
    raise RuntimeError("no free UDP port pair")


class LocalCluster:
    """N executives on 127.0.0.<first>.. under ``root``; a context manager that cleans up."""

    def __init__(
        self,
        root: Path,
        count: int = 3,
        *,
        first_address: int = 1,
        env: dict[str, str] | None = None,
        realtime: bool = False,
        **options: object,
    ) -> None:
        self.root = Path(root)
        self.realtime = realtime  # True: executives run with -r (SCHED_RR)
        options.setdefault("port", free_port_pair())
        self.options = options
        self.nodes: list[NodeLayout] = local_cluster(self.root, count, first_address, **options)
        self.extra_env = env or {}
        self.procs: dict[int, subprocess.Popen] = {}

    # -- processes -------------------------------------------------------------

    def environ(self, index: int) -> dict[str, str]:
        """Environment for an executive or a client of node ``index``."""
        env = dict(os.environ)
        env.update(self.nodes[index - 1].environ())
        env.update(self.extra_env)
        return env

    def start(self, index: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start node ``index`` (``aisexec -f``); its output goes to ``<node>/stdout.log``."""
        node = self.nodes[index - 1]
        environ = self.environ(index)
        environ.update(env or {})
        out = open(node.root / "stdout.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "aisexec.main", "-f", *(("-r",) if self.realtime else ()), *args],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.procs[index] = proc
        return proc

    def start_all(self) -> None:
        """Start every node."""
        for i in range(1, len(self.nodes) + 1):
            self.start(i)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``index`` and reap it."""
        proc = self.procs.pop(index, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        """SIGTERM every node, SIGKILL what does not stop."""
        for index in list(self.procs):
            self.kill(index, signal.SIGTERM)

    def close(self) -> None:
        """Kill every process this cluster started."""
        for index in list(self.procs):
            self.kill(index, signal.SIGKILL)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, index: int) -> str:
        """Everything node ``index`` wrote to stdout/stderr."""
        path = self.nodes[index - 1].root / "stdout.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- clients ---------------------------------------------------------------

    def client(self, index: int, code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a Python snippet as a client of node ``index``."""
        return subprocess.run([sys.executable, "-c", code], env=self.environ(index), capture_output=True,
                              text=True, timeout=timeout)

    def status(self, index: int) -> dict | None:
        """Node ``index``'s view through the CFG library: nodeid, state, synced, ring_id, members (None if down)."""
        out = subprocess.run([sys.executable, "-c", _STATUS_PROBE], env=self.environ(index), capture_output=True,
                             text=True, timeout=15)
        if out.returncode != 0 or not out.stdout.strip().startswith("{"):
            return None
        return json.loads(out.stdout)

    def wait_members(self, indexes: list[int], members: list[int], timeout: float = 20.0) -> dict[int, dict]:
        """Wait until every node in ``indexes`` is synced with exactly ``members``; return their status."""
        deadline = time.monotonic() + timeout
        last: dict[int, dict | None] = {}
        while time.monotonic() < deadline:
            last = {i: self.status(i) for i in indexes}
            if all(s is not None and s.get("synced") and sorted(s.get("members", [])) == sorted(members)
                   for s in last.values()):
                return last  # type: ignore[return-value]
            time.sleep(0.2)
        raise TimeoutError(f"nodes {indexes} did not agree on members {members}: {last}")
