"""openais-cfgtool: JSON schemas, plain output and exit statuses (library monkeypatched)."""

from __future__ import annotations

import json

import pytest

from openais.cfg import Dump, Member, Membership, Ring, RingStatus
from openais.errors import AisError, SaAisError
from openais.tools import cfgtool

ACTIVE = RingStatus(1, [Ring(0, "1.8", "127.0.0.1", "active")], "OPERATIONAL", [1, 2], True, {})


class FakeHandle:
    """Stands in for openais.cfg.CfgHandle."""

    def __init__(self, status: RingStatus = ACTIVE, ready: bool = True) -> None:
        self.status = status
        self.ready = ready
        self.shutdown_calls = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def ring_status(self):
        return self.status

    def members(self):
        return Membership(1, 8, [Member(1, "127.0.0.1"), Member(2, "127.0.0.2")])

    def state(self):
        return self.status.nodeid, self.ready

    def shutdown(self):
        self.shutdown_calls += 1

    def dump(self):
        return Dump(config={"totem": {"token": 1000}, "interfaces": [{"ringnumber": 0, "members": []}]},
                    status={"nodeid": 1, "members": [1, 2], "ipc": {"accepted": 3, "dropped_slow": 0}})


@pytest.fixture
def fake(monkeypatch):
    handle = FakeHandle()
    monkeypatch.setattr(cfgtool.cfg, "initialize", lambda: handle)
    return handle


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    status = cfgtool.main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_status_schema_and_fault_exit(fake, capsys):
    assert run_json(capsys, "-s") == (0, {
        "version": 1, "nodeid": 1, "faulty": False, "state": "OPERATIONAL", "synced": True,
        "rings": [{"ringnumber": 0, "ring_id": "1.8", "address": "127.0.0.1", "status": "active"}],
    })
    fake.status = ACTIVE._replace(rings=[Ring(0, "1.8", "127.0.0.1", "faulty")])
    status, doc = run_json(capsys, "-s")
    assert status == 1 and doc["faulty"] is True
    assert cfgtool.main([]) == 1
    out = capsys.readouterr().out
    assert "Local node ID 1" in out and "ring 0 faulty" in out


def test_plain_status_layout(fake, capsys):
    assert cfgtool.main(["-s"]) == 0
    assert capsys.readouterr().out == (
        "Printing ring status.\nLocal node ID 1\nRING ID 0\n\tid\t= 127.0.0.1\n\tring\t= 1.8\n"
        "\tstatus\t= ring 0 active with no faults\n"
    )


def test_members_schema(fake, capsys):
    assert run_json(capsys, "-m") == (0, {"version": 1, "ring_id": "1.8", "members": [
        {"nodeid": 1, "address": "127.0.0.1"}, {"nodeid": 2, "address": "127.0.0.2"}]})
    assert cfgtool.main(["-m"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Ring ID 1.8"


def test_ping_ready_shutdown(fake, capsys):
    assert run_json(capsys, "--ping") == (0, {"version": 1, "alive": True, "nodeid": 1})
    assert run_json(capsys, "--ready") == (0, {"version": 1, "ready": True, "nodeid": 1})
    fake.ready = False
    assert run_json(capsys, "--ready") == (1, {"version": 1, "ready": False, "nodeid": 1})
    assert cfgtool.main(["--ping"]) == 0  # alive even when not ready
    capsys.readouterr()
    assert run_json(capsys, "-H") == (0, {"version": 1, "shutdown": "requested"})
    assert fake.shutdown_calls == 1


def test_dump_json_and_plain(fake, capsys):
    status, doc = run_json(capsys, "--dump")
    assert status == 0 and doc["version"] == 1
    assert doc["config"]["totem"] == {"token": 1000} and doc["status"]["ipc"]["accepted"] == 3
    assert cfgtool.main(["--dump"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "config.totem.token = 1000", "config.interfaces.0.ringnumber = 0", "config.interfaces.0.members = []",
        "status.nodeid = 1", "status.members = [1, 2]", "status.ipc.accepted = 3", "status.ipc.dropped_slow = 0",
    ]


def test_options_are_exclusive():
    with pytest.raises(SystemExit):
        cfgtool.main(["-s", "-m"])


def test_error_answer_exits_2(monkeypatch, capsys):
    def refuse():
        raise AisError.from_code(SaAisError.ACCESS)

    monkeypatch.setattr(cfgtool.cfg, "initialize", refuse)
    assert cfgtool.main(["-H"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1


def test_unreachable_executive_exits_2(monkeypatch, tmp_path, capsys):
    socket_path = str(tmp_path / "no-such-socket")
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", socket_path)
    for argv in (["-s"], ["--ping", "--json"], ["--ready"], ["-m"], ["-H"], ["--dump"]):
        assert cfgtool.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("openais-cfgtool: executive unreachable: ") and socket_path in captured.err
        assert captured.err.count("\n") == 1
