"""The CLM and CFG libraries and tools over a real IPC socket (engines served in-process, no ring)."""

from __future__ import annotations

import json
import select
import time

import pytest

import openais
from aisexec.totem.api import RingId
from openais import cfg, clm
from openais.tools import cfgtool, clmtool
from plugins.cfg.engine import CfgEngine
from plugins.clm.engine import ClmEngine
from tests.ipcfixture import ServerThread

BOOT = 1_795_000_000_000_000_000


class StubApi:
    """The executive api as a single synced node 1 of a two-node ring would offer it."""

    nodeid = 1
    config = None

    def __init__(self) -> None:
        self.timers: list = []
        self.synced = True

    def ring_id(self):
        return RingId(1, 8)

    def members(self):
        return (1, 2)

    def node_address(self, nodeid):
        return {1: "127.0.0.1", 2: "127.0.0.2"}.get(nodeid)

    def ready(self):
        return self.synced

    def ring_status(self):
        return {"nodeid": 1, "state": "OPERATIONAL", "members": [1, 2], "synced": self.synced,
                "rings": [{"ringnumber": 0, "address": "127.0.0.1", "status": "active", "ring_id": "1.8"}]}

    def shutdown(self):
        self.stopped = True

    def call_later(self, seconds, fn):
        self.timers.append((seconds, fn))
        return lambda: None


@pytest.fixture
def served(tmp_path, monkeypatch):
    api = StubApi()
    clm_engine, cfg_engine = ClmEngine(), CfgEngine()
    clm_engine.exec_init(api)
    cfg_engine.exec_init(api)
    clm_engine.nodes = {n: clm.ClusterNode(n, f"127.0.0.{n}", f"node{n}", True, BOOT, 1) for n in (1, 2)}
    clm_engine.view_number, clm_engine.activated = 4, True
    path = tmp_path / "ipc.sock"
    server = ServerThread(path, [clm_engine, cfg_engine])
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", str(path))
    try:
        yield api
    finally:
        server.stop()


def test_cfgtool_over_ipc(served, capsys):
    assert cfgtool.main(["-s", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nodeid"] == 1 and doc["rings"][0]["ring_id"] == "1.8" and doc["faulty"] is False
    assert cfgtool.main(["-m", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == [
        {"nodeid": 1, "address": "127.0.0.1"}, {"nodeid": 2, "address": "127.0.0.2"}]
    assert cfgtool.main(["--ping"]) == 0
    served.synced = False
    assert cfgtool.main(["--ready"]) == 1
    capsys.readouterr()
    assert cfgtool.main(["-H", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": 1, "shutdown": "requested"}
    [(delay, fn)] = served.timers
    fn()
    assert delay > 0 and served.stopped


def test_clmtool_and_library_over_ipc(served, capsys):
    assert clmtool.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["view_number"] == 4 and [n["node_id"] for n in doc["nodes"]] == [1, 2]
    seen, answers = [], []
    with clm.initialize(track=lambda *a: seen.append(a), node_get=lambda *a: answers.append(a)) as h:
        assert h.node_get(2, timeout=5.0).node_name == "node2"
        assert h.node_get().node_id == 1
        with pytest.raises(openais.NotExist):
            h.node_get(7)
        with pytest.raises(openais.NotExist):
            h.track_stop()
        assert h.track(clm.TRACK_CURRENT | clm.TRACK_CHANGES) is None
        h.node_get_async(5, 2)
        deadline = time.monotonic() + 5
        while (not seen or not answers) and time.monotonic() < deadline:
            select.select([h.fileno()], [], [], 0.5)
            h.dispatch(openais.DISPATCH_ALL)
        assert seen[0][1:] == (2, openais.SaAisError.OK) and seen[0][0].view_number == 4
        assert answers[0][0] == 5 and answers[0][1].node_id == 2
        h.track_stop()
    with cfg.initialize() as c:
        assert c.members().ring_id == "1.8"
