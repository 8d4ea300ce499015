"""IPC limits and file ownership in-process: the budget's choices, rate-limited logs, accept back-off,
socket and pid files left alone when not ours, library ``path=``/``timeout=``, the CFG dump."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field

import gevent
import pytest

import openais
from aisexec import lockfile
from aisexec.ipc.limits import IpcLimits, MemoryBudget, RateLimitedLog, release_memory
from aisexec.ipc.server import IpcServer
from aisexec.service import LibHandler, ServiceEngine
from aisexec.testing import ServiceCluster
from openais import cfg, clm, cpg, evs
from openais.errors import SaAisError
from plugins.cfg.engine import CfgEngine
from tests.ipcfixture import ServerThread
from tests.ipcfixture import TestRouter as Router


@dataclass(eq=False)
class FakeConn:
    """A connection as the budget sees it."""

    uid: int = 1000
    pid: int = 1
    held_in: int = 0
    held_out: int = 0
    failed: list = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failed.append(why)
        self.held_out = self.held_in = 0


def budget_with(conns: list[FakeConn], limit: int = 8000) -> MemoryBudget:
    budget = MemoryBudget(limit, lambda: [c for c in conns if not c.failed], logging.getLogger("test"), {})
    budget.used = sum(c.held_in + c.held_out for c in conns)
    return budget


def test_the_slowest_reader_over_its_share_is_dropped_first_and_only_it():
    hog, busy, quiet = FakeConn(held_out=5000), FakeConn(held_out=1500), FakeConn(held_out=100)
    conns = [hog, busy, quiet]
    budget = budget_with(conns)  # level for uid 1000: 7000; share 7000 / 3 = 2333
    budget.used = 6600
    assert budget.admit_output(quiet, 1000, len(conns))  # 7600 > 7000: the hog goes, quiet gets its room
    assert hog.failed and "slowest reader" in hog.failed[0] and "over its share of 2333" in hog.failed[0]
    assert not busy.failed and not quiet.failed
    assert budget._counters["dropped_slow"] == 1


def test_nobody_is_dropped_while_within_their_share_and_root_has_a_reserve():
    conns = [FakeConn(held_out=2000) for _ in range(4)]
    budget = budget_with(conns)  # 8000 used, share 1750... each holds 2000 > share: one is dropped
    assert budget.admit_output(conns[0], 10, 4) or conns[0].failed
    assert sum(1 for c in conns if c.failed) >= 1
    even = [FakeConn(held_out=1000) for _ in range(6)]
    budget = budget_with(even)
    budget.used = 7500  # over the ordinary level, but each within its share (7000 / 6 = 1166)
    assert budget.admit_output(even[0], 10, 6) and not any(c.failed for c in even)
    root = FakeConn(uid=0, held_out=10)
    assert budget.level(0) == 8000 > budget.level(1000) == 7000
    assert not budget.must_pause(root, 7)  # 7500 < root's level
    assert budget.must_pause(even[1], 7)  # over the ordinary level and holding its share (7000 / 7 = 1000)
    assert not budget.must_pause(FakeConn(held_in=10), 7)  # holds less than its share


def test_reads_are_bounded_by_what_is_left_of_the_level_then_of_the_share():
    budget = budget_with([], limit=8000)  # ordinary level 7000
    budget.used = 1000
    assert budget.read_room(FakeConn(), 10, 4096) == 4096  # far below the level: a whole chunk
    budget.used = 6000
    assert budget.read_room(FakeConn(), 10, 4096) == 1000  # what is left of the level
    budget.used = 7500  # over it: only what is left of the share (7000 / 7 = 1000)
    assert budget.read_room(FakeConn(held_in=600), 7, 4096) == 400
    assert budget.read_room(FakeConn(held_in=1000), 7, 4096) == 0
    assert budget.read_room(FakeConn(uid=0, held_in=1000), 7, 4096) == 500  # root: 8000 - 7500


def test_a_paused_reader_is_woken_when_room_comes_back():
    budget = budget_with([], limit=8000)
    budget.used = 7500
    woke = []
    waiter = gevent.spawn(lambda: (budget.wait_for_room(5), woke.append(time.monotonic())))
    gevent.sleep(0.01)
    start = time.monotonic()
    budget.add(-3000)  # below 7/8 of the ordinary level
    waiter.join(2)
    assert woke and woke[0] - start < 1


def test_rate_limited_log_says_how_many_it_left_out(caplog):
    log = RateLimitedLog(logging.getLogger("aisexec.ipc.test"), interval=0.2)
    with caplog.at_level("WARNING", logger="aisexec.ipc.test"):
        assert log.warning("k", "refused %d", 1)
        assert not any(log.warning("k", "refused %d", i) for i in range(50))
        assert log.warning("other", "another kind")
        time.sleep(0.25)
        assert log.warning("k", "refused %d", 99)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused 1", "another kind", "refused 99 (50 more like it in the last 0.2 s not logged)"]


def test_limits_come_from_the_configuration():
    class Config:
        aisexec = {"ipc_memory_budget": 2 * 1024 * 1024, "ipc_frame_timeout": 1500, "ipc_max_connections_per_uid": 9}

    limits = IpcLimits.from_config(Config())
    assert limits == IpcLimits(2 * 1024 * 1024, 1.5, 9, 2 * 1024 * 1024)
    assert IpcLimits.from_config(None) == IpcLimits()
    assert release_memory() in (True, False)


class _FailingListener:
    """A listener whose accept always fails with EMFILE."""

    def __init__(self) -> None:
        self.calls = 0

    def accept(self):
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def close(self) -> None:
        pass


def test_accept_without_descriptors_backs_off_and_logs_once(tmp_path, caplog):
    server = IpcServer(str(tmp_path / "x.sock"), Router([]), authorizer=None)  # type: ignore[arg-type]
    server._listener = _FailingListener()
    with caplog.at_level("WARNING", logger="aisexec.ipc"):
        loop = gevent.spawn(server._accept_loop)
        gevent.sleep(1.5)
        loop.kill()
    assert 3 <= server._listener.calls <= 8, server._listener.calls  # 0.05, 0.1, 0.2, 0.4, 0.8 s: no spinning
    lines = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0] and "not accepting for" in lines[0]
    assert server.counters["accept_backoffs"] == server._listener.calls


class SilentEngine(ServiceEngine):
    """Takes every request of ``id`` and never answers (a hung executive, as the library sees it)."""

    name = "SILENT"

    def __init__(self, service_id: int) -> None:
        self.id = service_id
        self.lib_handlers = {i: LibHandler(lambda conn, rid, payload: None) for i in range(8)}


def test_the_server_removes_only_the_socket_it_bound(tmp_path):
    srv = ServerThread(tmp_path / "own.sock", [SilentEngine(cpg.SERVICE_ID)])
    os.unlink(srv.path)  # somebody else takes the path over while we run
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.bind(srv.path)
    theirs.listen(1)
    try:
        srv.stop()
        assert os.path.exists(srv.path)  # theirs: left alone
    finally:
        theirs.close()
    srv = ServerThread(tmp_path / "own2.sock", [SilentEngine(cpg.SERVICE_ID)])
    srv.stop()
    assert not os.path.exists(srv.path)  # ours: removed


def test_a_live_or_foreign_path_is_refused_and_left_alone(tmp_path):
    live = ServerThread(tmp_path / "live.sock", [SilentEngine(cpg.SERVICE_ID)])
    try:
        before = os.lstat(live.path).st_ino
        hub_result = {}

        def second() -> None:
            server = IpcServer(live.path, Router([]), authorizer=None)  # type: ignore[arg-type]
            try:
                server.start()
            except OSError as exc:
                hub_result["errno"] = exc.errno
            server.stop()

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(10)
        assert hub_result == {"errno": errno.EADDRINUSE}
        assert os.lstat(live.path).st_ino == before
        with cpg.initialize(path=live.path) as h:
            assert h.fileno() >= 0
    finally:
        live.stop()
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    server = IpcServer(str(plain), Router([]), authorizer=None)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        server.start()
    assert info.value.errno == errno.EADDRINUSE and plain.read_text() == "keep me"


def test_a_pid_file_another_process_replaced_is_kept(tmp_path):
    path = str(tmp_path / "aisexec.pid")
    lockfile.write_pidfile(path)
    os.unlink(path)
    with open(path, "w") as f:  # a new file, same content (say, our pid reused in a container)
        f.write(f"{os.getpid()}\n")
    assert not lockfile.remove_pidfile(path)
    assert os.path.exists(path)
    lockfile.write_pidfile(path)
    assert lockfile.remove_pidfile(path) and not os.path.exists(path)


def test_initialize_and_calls_take_path_and_timeout(tmp_path):
    missing = str(tmp_path / "nobody.sock")
    for make in (lambda: cpg.initialize(path=missing), lambda: evs.initialize(path=missing),
                 lambda: clm.initialize(path=missing), lambda: cfg.initialize(path=missing)):
        with pytest.raises(openais.Library, match=r"nobody\.sock"):
            make()
    with pytest.raises(openais.InvalidParam):
        cpg.initialize(path=missing, timeout=-1)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # listens, never accepts: a hung executive
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(8)
    try:
        start = time.monotonic()
        with pytest.raises(openais.Library):
            evs.initialize(path=str(tmp_path / "mute.sock"), timeout=0.3)
        assert time.monotonic() - start < 2
    finally:
        mute.close()
    srv = ServerThread(tmp_path / "silent.sock", [SilentEngine(cpg.SERVICE_ID), SilentEngine(evs.SERVICE_ID),
                                                  SilentEngine(cfg.SERVICE_ID), SilentEngine(clm.SERVICE_ID)])
    try:
        calls = [
            lambda: cpg.initialize(path=srv.path).join("g", timeout=0.2),
            lambda: cpg.initialize(path=srv.path).membership("g", timeout=0.2),
            lambda: evs.initialize(path=srv.path).join(["g"], timeout=0.2),
            lambda: cfg.initialize(path=srv.path).dump(timeout=0.2),
            lambda: clm.initialize(path=srv.path).track_stop(timeout=0.2),
        ]
        for call in calls:
            start = time.monotonic()
            with pytest.raises(openais.Timeout):
                call()
            assert time.monotonic() - start < 3
        with pytest.raises(openais.InvalidParam):
            cpg.initialize(path=srv.path).local_nodeid(timeout=-0.5)
        # one handle, successive deadlines: each call waits its own (the kernel's timeout follows the value)
        h = cpg.initialize(path=srv.path)
        for wait in (0.2, 1.0, 0.3):
            start = time.monotonic()
            with pytest.raises(openais.Timeout):
                h.membership("g", timeout=wait)
            assert wait * 0.9 <= time.monotonic() - start < wait + 2
    finally:
        srv.stop()


def test_a_refused_uid_learns_why_although_it_was_closed_at_accept(tmp_path):
    from aisexec.ipc.auth import Authorizer

    public = tempfile.mkdtemp(prefix="ais-refused-")
    os.chmod(public, 0o755)  # the unprivileged child must reach the socket
    srv = ServerThread(os.path.join(public, "a.sock"), [SilentEngine(cpg.SERVICE_ID)], authorizer=Authorizer())
    try:
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.setgid(65534)
                os.setgroups([])
                os.setuid(65534)
                cpg.initialize(path=srv.path)
                code = 0
            except openais.Access:
                code = 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 1
        assert srv.server.stats()["refused"] == 1 and srv.server.stats()["accepted"] == 0
    finally:
        srv.stop()
        shutil.rmtree(public, ignore_errors=True)


class _Config:
    def to_dict(self) -> dict:
        return {"totem": {"token": 1000, "keyfile": "/etc/ais/authkey", "crypto_key": "s3cret"},
                "aisexec": {"ipc_memory_budget": 67108864}, "uidgid": [{"password": "x", "uid": "7"}]}


def test_the_cfg_dump_carries_the_configuration_without_secrets_and_the_status():
    cluster = ServiceCluster([CfgEngine], nodes=[1, 2], config=_Config())
    cluster.run()
    conn = cluster.connect(1, cfg.SERVICE_ID)
    error, payload = conn.response(cluster.request(conn, cfg.Request.DUMP))
    assert error == SaAisError.OK
    dump = cfg.Dump.decode(payload)
    assert dump.config["totem"] == {"token": 1000, "keyfile": "/etc/ais/authkey", "crypto_key": cfg.REDACTED}
    assert dump.config["uidgid"] == [{"password": cfg.REDACTED, "uid": "7"}]
    assert dump.config["aisexec"]["ipc_memory_budget"] == 67108864
    assert dump.status["nodeid"] == 1 and dump.status["members"] == [1, 2] and dump.status["synced"]
