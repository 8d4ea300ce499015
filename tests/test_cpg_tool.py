"""openais-cpgtool: output formats and the unreachable-executive exit status."""

from __future__ import annotations

import io
import json

from openais.cpg import Member, Reason
from openais.tools import cpgtool


def test_listing_is_sorted_and_stable():
    groups = {"zeta": [Member(2, 20), Member(1, 10, Reason.NODEUP)], "alpha": []}
    assert cpgtool.listing(groups) == {"version": 1, "groups": [
        {"name": "alpha", "members": []},
        {"name": "zeta", "members": [{"nodeid": 1, "pid": 10}, {"nodeid": 2, "pid": 20}]},
    ]}
    out = io.StringIO()
    cpgtool.write_plain(cpgtool.listing(groups), out)
    assert out.getvalue() == "alpha\nzeta\n    1 10\n    2 20\n"


def test_main_prints_json(monkeypatch, capsys):
    monkeypatch.setattr(cpgtool.cpg, "groups", lambda: {"g": [Member(3, 33)]})
    assert cpgtool.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": 1,
                                                   "groups": [{"name": "g", "members": [{"nodeid": 3, "pid": 33}]}]}
    assert cpgtool.main([]) == 0
    assert capsys.readouterr().out == "g\n    3 33\n"
    assert cpgtool.main(["-d", ","]) == 0
    assert capsys.readouterr().out == "g,3,33\n"
    assert cpgtool.main(["-n"]) == 0
    assert capsys.readouterr().out == "g\n"


def test_unreachable_executive_exits_1(monkeypatch, tmp_path, capsys):
    socket_path = str(tmp_path / "no-such-socket")
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", socket_path)
    assert cpgtool.main(["--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot reach the executive" in captured.err
    assert socket_path in captured.err
