"""Drive tests/cpg_agent.py processes: send commands, collect their JSON events."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from aisexec.localcluster import LocalCluster

AGENT = str(Path(__file__).resolve().parent / "cpg_agent.py")


class CpgAgent:
    """One CPG client process attached to one node of a LocalCluster."""

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        self.index = index
        self.proc = subprocess.Popen([sys.executable, AGENT], env=cluster.environ(index), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.events: list[dict] = []
        self._lines: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        init = self.wait_for(lambda e: e.get("ok") == "init", timeout=20)
        self.nodeid = init["nodeid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                continue
        self._lines.put(None)

    def command(self, text: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        """Collect events until one satisfies ``predicate``; return it."""
        for event in self.events:
            if predicate(event) and not event.get("_taken"):
                event["_taken"] = True
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"agent on node {self.index} exited: {err[-2000:]}")
            self.events.append(event)
            if predicate(event):
                event["_taken"] = True
                return event
        raise TimeoutError(f"agent on node {self.index}: no matching event; last: {self.events[-5:]}")

    def deliveries(self) -> list[str]:
        """Data of every delivered message so far, in order."""
        self.drain()
        return [e["data"] for e in self.events if e.get("ev") == "deliver"]

    def drain(self, seconds: float = 0.0) -> None:
        """Move already-printed events into ``events`` (waiting up to ``seconds``)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                event = self._lines.get(timeout=max(0.0, deadline - time.monotonic()) or 0.001)
            except queue.Empty:
                return
            if event is None:
                return
            self.events.append(event)

    def kill(self) -> None:
        """SIGKILL the agent process."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Ask it to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
