"""The IPC server and the library's Handle over a real Unix socket."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

import openais
from aisexec.ipc.auth import Authorizer
from aisexec.service import LibHandler, ServiceEngine
from aisexec.totem.api import QueueFull
from openais import _wire
from openais._client import Handle
from tests.ipcfixture import ServerThread

SERVICE = 120


class EchoEngine(ServiceEngine):
    """ECHO answers at once, LATER answers with a callback first, FLOOD sends many callbacks."""

    id = SERVICE
    name = "ECHO"

    def __init__(self) -> None:
        self.inits = []
        self.exits = []
        self.lib_handlers = {
            1: LibHandler(self.echo),
            2: LibHandler(self.later),
            3: LibHandler(self.flood),
            4: LibHandler(self.cluster, needs_cluster=True, max_size=100),
            5: LibHandler(self.boom),
            6: LibHandler(self.full),
            10: LibHandler(self.taken, needs_cluster=True, pipelined=True),
            11: LibHandler(self.kick),
        }
        self.taken_payloads = []
        self.conns = {}

    def lib_init(self, conn):
        self.inits.append(conn.id)
        self.conns[conn.id] = conn

    def lib_exit(self, conn):
        self.exits.append(conn.id)

    def echo(self, conn, rid, payload):
        conn.respond(self.id, 1, rid, 1, payload)

    def later(self, conn, rid, payload):
        conn.dispatch(self.id, 7, b"callback:" + payload)
        conn.respond(self.id, 2, rid, 1, b"")

    def flood(self, conn, rid, payload):
        count = int(payload)
        for i in range(count):
            conn.dispatch(self.id, 8, b"x" * 60000 + str(i).encode())
        conn.respond(self.id, 3, rid, 1, b"")

    def cluster(self, conn, rid, payload):
        conn.respond(self.id, 4, rid, 1, b"ok")

    def taken(self, conn, rid, payload):
        self.taken_payloads.append(payload)
        conn.respond(self.id, 10, rid, 1 if payload != b"bad" else 12)

    def kick(self, conn, rid, payload):
        self.conns[int(payload)].fail("kicked by the test")
        conn.respond(self.id, 11, rid, 1)

    def boom(self, conn, rid, payload):
        raise RuntimeError("handler bug")

    def full(self, conn, rid, payload):
        raise QueueFull()


class EchoHandle(Handle):
    """A library handle for the echo engine."""

    def __init__(self, path):
        super().__init__(SERVICE, path=path)
        self.callbacks = []

    def _on_dispatch(self, msg_id, payload):
        self.callbacks.append((msg_id, payload))


def serve_echo(tmp_path, **options) -> ServerThread:
    """An IPC server thread with one :class:`EchoEngine` (as ``.engine``); the caller stops it."""
    engine = EchoEngine()
    srv = ServerThread(tmp_path / "ipc.sock", [engine], **options)
    srv.engine = engine
    return srv


@pytest.fixture
def server(tmp_path):
    srv = serve_echo(tmp_path, max_queued_bytes=2 * 1024 * 1024)
    yield srv
    srv.stop()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_request_response_and_callbacks(server):
    with EchoHandle(server.path) as h:
        assert h._call(1, b"hello") == b"hello"
        assert h._call(1, b"x" * 500_000) == b"x" * 500_000
        h._call(2, b"abc")
        readable, _, _ = select.select([h], [], [], 2)
        assert readable == [h]
        h.dispatch(openais.DISPATCH_ONE)
        assert h.callbacks == [(7, b"callback:abc")]
        assert select.select([h], [], [], 0)[0] == []
    assert wait_until(lambda: len(server.engine.exits) == 1)
    assert server.engine.inits == server.engine.exits


def test_error_paths_answer_with_codes_and_keep_the_connection(server):
    with EchoHandle(server.path) as h:
        with pytest.raises(openais.NotSupported):
            h._call(99, b"")
        with pytest.raises(openais.TooBig):
            h._call(4, b"y" * 101)
        with pytest.raises(openais.Library):
            h._call(5, b"")
        with pytest.raises(openais.TryAgain):
            h._call(6, b"")
        server.router.ready = False
        with pytest.raises(openais.TryAgain):
            h._call(4, b"z")
        server.router.ready = True
        server.router.room = False
        with pytest.raises(openais.TryAgain):
            h._call(4, b"z")
        server.router.room = True
        assert h._call(4, b"z") == b"ok"
        assert h._call(1, b"still alive") == b"still alive"


def test_dispatch_all_and_one_and_blocking(server):
    h = EchoHandle(server.path)
    for i in range(3):
        h._call(2, str(i).encode())
    h.dispatch(openais.DISPATCH_ONE)
    assert len(h.callbacks) == 1
    h.dispatch(openais.DISPATCH_ALL)
    assert [p for _, p in h.callbacks] == [b"callback:0", b"callback:1", b"callback:2"]
    h._call(2, b"b")
    threading.Timer(0.3, h.finalize).start()
    h.dispatch(openais.DISPATCH_BLOCKING)  # returns once finalize runs in another thread
    assert h.callbacks[-1] == (7, b"callback:b")
    with pytest.raises(openais.BadHandle):
        h._call(1, b"")
    with pytest.raises(openais.BadHandle):
        h.dispatch(openais.DISPATCH_ALL)


def test_many_frames_in_one_write_are_all_answered(server):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.path)
    sock.sendall(_wire.encode_request(SERVICE, _wire.HELLO_RESPONSE, 0, _wire.HELLO_VERSION.pack(1)))
    time.sleep(0.1)
    sock.recv(4096)
    batch = b"".join(_wire.encode_request(SERVICE, 1, i, str(i).encode()) for i in range(1, 501))
    sock.sendall(batch)
    buf = bytearray()
    deadline = time.monotonic() + 5
    answers = []
    while len(answers) < 500 and time.monotonic() < deadline:
        buf += sock.recv(65536)
        frames, used = _wire.split_responses(buf)
        del buf[:used]
        answers += frames
    assert [a[2] for a in answers] == list(range(1, 501))
    assert [a[4] for a in answers] == [str(i).encode() for i in range(1, 501)]
    sock.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x02" + b"\x00" * 8,  # size smaller than the header
    b"\xff\xff\xff\xff" + b"\x00" * 20,  # size over the cap
    b"GET / HTTP/1.0\r\n\r\n",
])
def test_malformed_frames_close_only_that_connection(server, garbage):
    good = EchoHandle(server.path)
    bad = EchoHandle(server.path)
    bad._response.sendall(garbage)
    assert wait_until(lambda: len(server.engine.exits) == 1)
    with pytest.raises(openais.Library):
        bad._call(1, b"x")
    assert good._call(1, b"fine") == b"fine"
    good.finalize()


def test_unknown_service_and_bad_hello_are_refused(server):
    with pytest.raises(openais.NotExist):
        Handle(77, path=server.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.path)
    sock.sendall(_wire.encode_request(SERVICE, 5, 0, b""))
    data = sock.recv(100)
    assert _wire.RESPONSE.unpack_from(data)[4] == openais.SaAisError.INVALID_PARAM
    sock.close()


def test_a_client_that_stops_reading_is_disconnected(server):
    h = EchoHandle(server.path)
    with pytest.raises(openais.Library):  # ~6 MB of callbacks against a 2 MiB cap, never read
        h._call(3, b"100")
    assert wait_until(lambda: len(server.engine.exits) == 1)
    assert server.server.stats()["queued_bytes"] < 3 * 1024 * 1024
    h.finalize()


def test_closing_a_connection_whose_reader_is_parked_ends_its_greenlets(server):
    kicker, victim = EchoHandle(server.path), EchoHandle(server.path)
    try:
        assert wait_until(lambda: len(server.server._greenlets) == 4)  # a reader and a dispatch per handle
        kicker._call(11, str(victim.conn_id).encode())  # the victim's reader is parked, waiting for requests
        assert wait_until(lambda: server.engine.exits == [victim.conn_id])
        assert wait_until(lambda: len(server.server._greenlets) == 2), server.server._greenlets
        with pytest.raises(openais.Library):
            victim._call(1, b"anyone there?")
        assert kicker._call(1, b"still served") == b"still served"
    finally:
        kicker.finalize()
        victim.finalize()


def test_client_killed_mid_call_runs_lib_exit_once(server, tmp_path):
    code = "\n".join([
        f"import sys; sys.path.insert(0, {os.getcwd()!r})",
        "from openais import _wire",
        "from tests.test_ipc import EchoHandle",
        f"h = EchoHandle({server.path!r})",
        "h._response.sendall(_wire.encode_request(120, 1, 1, b'x' * 300000)[:1000])",
        "print('ready', flush=True)",
        "import time; time.sleep(60)",
    ])
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert wait_until(lambda: len(server.engine.inits) == 1)
    proc.kill()
    proc.wait()
    assert wait_until(lambda: len(server.engine.exits) == 1)
    time.sleep(0.2)
    assert server.engine.exits == server.engine.inits


def test_absent_executive_raises_library_promptly(tmp_path):
    start = time.monotonic()
    with pytest.raises(openais.Library):
        Handle(SERVICE, path=str(tmp_path / "nobody.sock"))
    assert time.monotonic() - start < 1.0


def test_executive_death_during_a_call_raises_library(tmp_path):
    engine = EchoEngine()
    engine.lib_handlers[9] = LibHandler(lambda conn, rid, payload: None)  # never answers
    srv = ServerThread(tmp_path / "d.sock", [engine])
    h = EchoHandle(srv.path)
    threading.Timer(0.3, srv.stop).start()
    start = time.monotonic()
    with pytest.raises(openais.Library):
        h._call(9, b"")
    assert time.monotonic() - start < 5


def test_unprivileged_uid_is_refused_and_a_configured_uid_admitted():
    import shutil
    import tempfile

    public = tempfile.mkdtemp(prefix="ais-ipc-")
    os.chmod(public, 0o755)  # the unprivileged child must reach the socket
    engine = EchoEngine()
    srv = ServerThread(os.path.join(public, "a.sock"), [engine], authorizer=Authorizer(allowed_uids={65533}))
    try:
        results = {}
        for uid in (65534, 65533):
            pid = os.fork()
            if pid == 0:  # child: drop privileges, then try to connect
                code = 3
                try:
                    os.setgid(65534)
                    os.setgroups([])
                    os.setuid(uid)
                    EchoHandle(srv.path).finalize()
                    code = 0
                except openais.Access:
                    code = 1
                except BaseException:
                    code = 2
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            results[uid] = os.waitstatus_to_exitcode(status)
        assert results == {65534: 1, 65533: 0}
        assert srv.server.stats()["refused"] == 1
    finally:
        srv.stop()
        shutil.rmtree(public, ignore_errors=True)


def test_the_executive_logs_a_refused_pipelined_request_once_per_connection(server, caplog):
    h = EchoHandle(server.path)
    with caplog.at_level("WARNING", logger="aisexec.ipc"):
        for _ in range(3):
            h._send_pipelined(10, b"bad")
        with pytest.raises(openais.NotExist):
            h.flush(timeout=5)
    refusals = [r for r in caplog.records if "refusing pipelined request 10" in r.getMessage()]
    assert len(refusals) == 1 and "SA_AIS_ERR_NOT_EXIST" in refusals[0].getMessage()
    assert server.server.counters["refused_pipelined"] == 3
    with pytest.raises(openais.Library):
        h._call(5, b"")  # an error answer to a request that is not pipelined is not counted
    assert server.server.counters["refused_pipelined"] == 3
    h.finalize()


def test_an_ok_answer_to_a_pipelined_request_is_not_a_refusal(server, caplog):
    h = EchoHandle(server.path)
    with caplog.at_level("WARNING", logger="aisexec.ipc"):
        for _ in range(5):
            h._send_pipelined(10, b"fine")  # answered SA_AIS_OK (1)
        h.flush(timeout=5)
    time.sleep(0.1)
    assert select.select([h], [], [], 0)[0] == []  # no PIPELINE_ERROR frame on the dispatch channel
    assert server.server.counters["refused_pipelined"] == 0
    assert not [r for r in caplog.records if "refusing pipelined" in r.getMessage()]
    h.finalize()


def test_the_frame_deadline_closes_a_stalled_frame_but_not_one_we_are_slow_to_read(tmp_path):
    from aisexec.ipc.limits import IpcLimits

    engine = EchoEngine()
    srv = ServerThread(tmp_path / "deadline.sock", [engine], limits=IpcLimits(frame_timeout=0.3))
    try:
        parked = EchoHandle(srv.path)
        srv.router.room = False  # the first request parks (the ring has no room) with the next frame begun
        second = _wire.encode_request(SERVICE, 1, 99, b"z" * 1000)
        parked._response.sendall(_wire.encode_request(SERVICE, 10, 98, b"p") + second[:500])
        time.sleep(1.0)  # three deadlines while parked: not the client's delay
        srv.router.room = True
        parked._response.sendall(second[500:])
        assert wait_until(lambda: engine.taken_payloads == [b"p"])
        time.sleep(0.2)
        assert srv.server.counters["frame_timeouts"] == 0 and not engine.exits
        stalled = EchoHandle(srv.path)
        stalled._response.sendall(_wire.encode_request(SERVICE, 1, 5, b"y" * 1000)[:600])  # and nothing more
        assert wait_until(lambda: engine.exits == [stalled.conn_id], timeout=5)
        assert srv.server.counters["frame_timeouts"] == 1
        assert srv.server.budget.used < 4096  # what it held is given back
        parked.finalize()
        stalled.finalize()
    finally:
        srv.stop()
