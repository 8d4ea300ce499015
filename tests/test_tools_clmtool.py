"""openais-clmtool: JSON schema, table and exit statuses (library monkeypatched)."""

from __future__ import annotations

import json

from openais.clm import ClusterChange, ClusterNode, Notification, NotificationBuffer
from openais.tools import clmtool

BOOT = 1_795_000_000_000_000_000
BUFFER = NotificationBuffer(3, [
    Notification(ClusterNode(2, "127.0.0.2", "b", True, BOOT, 3), ClusterChange.NO_CHANGE),
    Notification(ClusterNode(1, "127.0.0.1", "a", True, BOOT, 1), ClusterChange.NO_CHANGE),
])


def test_json_schema(monkeypatch, capsys):
    monkeypatch.setattr(clmtool.clm, "cluster_nodes", lambda: BUFFER)
    assert clmtool.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": 1, "view_number": 3, "nodes": [
        {"node_id": 1, "address": "127.0.0.1", "name": "a", "member": True, "boot_timestamp": BOOT,
         "initial_view_number": 1},
        {"node_id": 2, "address": "127.0.0.2", "name": "b", "member": True, "boot_timestamp": BOOT,
         "initial_view_number": 3},
    ]}


def test_table(monkeypatch, capsys):
    monkeypatch.setattr(clmtool.clm, "cluster_nodes", lambda: BUFFER)
    assert clmtool.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "View 3"
    assert lines[1].split() == ["Nodeid", "Address", "Name", "Initial", "view", "Boot", "time"]
    assert lines[2].split() == ["1", "127.0.0.1", "a", "1", "2026-11-18T11:06:40Z"]
    assert lines[3].split()[0] == "2"


def test_unreachable_executive_exits_2(monkeypatch, tmp_path, capsys):
    socket_path = str(tmp_path / "no-such-socket")
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", socket_path)
    assert clmtool.main(["--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("openais-clmtool: executive unreachable: ") and socket_path in captured.err
    assert captured.err.count("\n") == 1
