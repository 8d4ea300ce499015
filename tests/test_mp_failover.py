"""The headline, run briefly: ``openais-demo failover`` keeps its promise over a component and a node kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess


def test_the_failover_demo_loses_no_state_and_leaves_no_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "aisexec.demo", "failover", "--rounds", "2", "--interval", "2.5",
                             "--json", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == 2
    assert summary["state_lost"] == 0 and summary["answered_twice"] == 0 and summary["errors"] == []
    assert summary["served"] > 10
    assert [k["kind"] for k in summary["kills"]] == ["component", "node"]
    assert all(k["interruption_ms"] > 0 for k in summary["kills"])
    # every server the demo's AMF started is gone
    for pidfile in (tmp_path / "pids").glob("counter-*.pid"):
        pid = int(pidfile.read_text())
        assert not running(pid), f"server {pid} survived the demo"


def running(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (an orphan the init process has not reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
