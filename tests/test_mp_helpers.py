"""The multi-process test helpers themselves (tests.mp_helpers), without executives."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from tests.mp_helpers import Agent, JsonLinesProcess, block, fault_env, fault_file, heal, partition


def fake_cluster(tmp_path, nodes: int = 4):
    roots = []
    for i in range(1, nodes + 1):
        (tmp_path / str(i)).mkdir()
        roots.append(SimpleNamespace(root=tmp_path / str(i)))
    return SimpleNamespace(nodes=roots, environ=lambda index: {"PATH": ""})


def test_partition_writes_block_lines_and_heal_clears_them(tmp_path):
    cluster = fake_cluster(tmp_path)
    assert fault_env(cluster, 2) == {"OPENAIS_FAULTS_FILE": str(tmp_path / "2" / "faults")}
    partition(cluster, [1, 2], [3])
    assert [fault_file(cluster, i).read_text() for i in (1, 2, 3)] == ["block=3", "block=3", "block=1+2"]
    assert not fault_file(cluster, 4).exists()
    partition(cluster, [1, 2], [3, 4])
    assert fault_file(cluster, 4).read_text() == "block=1+2"
    block(cluster, 4, [])
    heal(cluster)
    assert [fault_file(cluster, i).read_text() for i in (1, 2, 3, 4)] == ["", "", "", ""]


SCRIPT = r"""
import json, sys
print(json.dumps({"ok": "init"}), flush=True)
print("not json", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
    print(json.dumps({"echo": line.strip()}), flush=True)
"""


def test_agent_takes_each_event_once_and_quits(tmp_path):
    agent = Agent(fake_cluster(tmp_path), 1, [sys.executable, "-c", SCRIPT], env=None)
    try:
        assert agent.wait_for(lambda e: e.get("ok") == "init", timeout=20) == {"ok": "init", "_taken": True}
        agent.command("a")
        agent.command("b")
        assert agent.wait_for(lambda e: "echo" in e, timeout=20)["echo"] == "a"
        assert agent.wait_for(lambda e: "echo" in e, timeout=20)["echo"] == "b"
        assert not agent.has(lambda e: "echo" in e, wait=0.1)
    finally:
        agent.close()
    assert agent.proc.returncode == 0


def test_an_exited_process_raises_with_its_stderr():
    proc = JsonLinesProcess([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], {},
                            name="the client")
    assert proc.lines.get(timeout=20) is None
    with pytest.raises(RuntimeError, match="the client exited: boom"):
        raise proc.exited()
    proc.kill()
