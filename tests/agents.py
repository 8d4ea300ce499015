"""Drive tests/cpg_agent.py processes: send commands, collect their JSON events."""

from __future__ import annotations

import sys
from pathlib import Path

from aisexec.localcluster import LocalCluster
from tests.mp_helpers import Agent

AGENT = str(Path(__file__).resolve().parent / "cpg_agent.py")


class CpgAgent(Agent):
    """One CPG client process attached to one node of a LocalCluster."""

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        super().__init__(cluster, index, [sys.executable, AGENT])
        init = self.wait_for(lambda e: e.get("ok") == "init", timeout=20)
        self.nodeid = init["nodeid"]

    def deliveries(self) -> list[str]:
        """Data of every delivered message so far, in order."""
        self.drain()
        return [e["data"] for e in self.events if e.get("ev") == "deliver"]
