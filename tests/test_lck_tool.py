"""openais-lcktool: the plain listing and the exit status without an executive."""

from __future__ import annotations

import io

from openais.tools import lcktool

DOC = {
    "nodeid": 1, "locks": 3, "max_locks": 65536, "resource_count": 2, "truncated": True,
    "resources": [{
        "name": "accounts", "openers": 2,
        "holders": [{"lock_id": 4294967297, "node": 1, "owner_node": 1, "pid": 4242, "mode": "EX", "flags": 0,
                     "orphan": False, "since": 1_700_000_000_123_000_000},
                    {"lock_id": 4294967299, "node": 1, "owner_node": None, "pid": 4242, "mode": "PR", "flags": 2,
                     "orphan": True, "since": 1_700_000_000_000_000_000}],
        "waiters": [{"lock_id": 12884901889, "node": 3, "owner_node": 3, "pid": 5151, "mode": "PR", "flags": 0,
                     "orphan": False, "since": 1_700_000_001_456_000_000}],
    }],
}


def test_plain_listing_shows_holders_then_waiters():
    out = io.StringIO()
    lcktool.write_plain(DOC, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "accounts  (2 open)"
    assert lines[1].split()[:7] == ["held", "node", "1", "pid", "4242", "EX", "lock"]
    assert "orphan" in lines[2] and "PR" in lines[2]
    assert lines[3].split()[:6] == ["waits", "node", "3", "pid", "5151", "PR"]
    assert ".123" in lines[1]
    assert lines[-1].startswith("... 1 more resources")


def test_no_executive_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", str(tmp_path / "none.sock"))
    assert lcktool.main(["--json"]) == 2
    assert "cannot reach the executive" in capsys.readouterr().err
