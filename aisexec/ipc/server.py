"""The executive's IPC server: a gevent Unix-socket server for library handles.

Each library handle is one :class:`IpcConnection` over two sockets (see
:mod:`openais._wire`): requests and their answers on the response channel,
callbacks on the dispatch channel.  Requests are read in large chunks and
parsed many per ``recv``; answers and callbacks are queued and written many
per ``send``.  A malformed frame closes that one connection; a client that
stops reading is disconnected once its queue passes ``max_queued_bytes``.

The server asks a :class:`Router` (the service layer) for engines and for
whether cluster requests can be taken now; requests whose handler
``needs_cluster`` are answered ``SA_AIS_ERR_TRY_AGAIN`` by the server itself
while sync runs or while the ring has no room.  Unknown message ids are
answered ``SA_AIS_ERR_NOT_SUPPORTED``, payloads over a handler's
``max_size`` ``SA_AIS_ERR_TOO_BIG``, and a handler that raises
``SA_AIS_ERR_LIBRARY`` (logged with its traceback; the connection stays).
An error answer to a ``pipelined`` request (the library raises it at its
next call) is also told on the dispatch channel (``PIPELINE_ERROR``), counted
(``refused_pipelined``) and logged once per connection.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import socket as pysocket
import time
from typing import Any, Protocol

import gevent
import gevent.event
from gevent import socket

from aisexec.ipc.auth import Authorizer, PeerCred, peer_credentials
from aisexec.readiness import ReadWaiter
from aisexec.service import EngineHost, ServiceEngine
from aisexec.totem.api import MessageTooBig, QueueFull
from openais import _wire
from openais.errors import SaAisError

READ_CHUNK = 256 * 1024
#: Room asked for beyond a request's payload (the service's own headers).
PIPELINE_SLACK = 1024
#: How often a parked connection checks for room, and for how long at most (then TRY_AGAIN).
PARK_POLL = 0.002
PARK_LIMIT = 30.0
WRITE_CHUNK = 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0


class Router(Protocol):
    """What the IPC server needs from the service layer."""

    def engine_for(self, service_id: int) -> tuple[ServiceEngine, EngineHost] | None:
        """The engine serving ``service_id`` and its host, or None."""

    def cluster_ready(self) -> bool:
        """False while a sync round runs."""

    def has_room(self, size: int) -> bool:
        """True when the ring can queue ``size`` more bytes."""


class _Channel:
    """One socket's outgoing queue: flushed at the end of the hub turn, a greenlet waits out a full socket.

    Everything queued during one turn of the hub leaves in one non-blocking
    ``write`` from a loop callback (no greenlet switch on the common path);
    what the kernel does not take is handed to the writer greenlet, which
    waits for room.
    """

    def __init__(self, sock: Any, limit: int, on_failure: Any) -> None:
        self.sock = sock
        self.limit = limit
        self.buffer = bytearray()
        self._fd = sock.fileno()
        self._sending = 0  # bytes taken from ``buffer`` and not yet accepted by the kernel
        self._closed = False
        self._flush_scheduled = False
        self._loop = gevent.get_hub().loop
        self._wake = gevent.event.Event()
        self._on_failure = on_failure
        self._writer = gevent.spawn(self._write_loop)

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection is failed) past the limit."""
        if len(self.buffer) + self._sending + len(data) > self.limit:
            self._on_failure(f"client is not reading: more than {self.limit} bytes queued")
            return False
        self.buffer += data
        if not self._flush_scheduled and not self._sending:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)
        return True

    def _flush(self) -> None:
        """Loop callback (never blocks): write what was queued this turn; the writer takes any rest."""
        self._flush_scheduled = False
        if self._closed or self._sending or not self.buffer:
            return
        try:
            sent = os.write(self._fd, self.buffer)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._wake.set()  # the writer meets the error again and fails the connection (not from the hub)
            return
        if sent == len(self.buffer):
            self.buffer.clear()
            return
        del self.buffer[:sent]
        self._wake.set()

    def _write_loop(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while self.buffer:
                    # Take the whole buffer: a send that waits for the client keeps no view on the
                    # buffer other greenlets append to (a bytearray with a live view cannot grow).
                    data, self.buffer = self.buffer, bytearray()
                    self._sending = len(data)
                    with memoryview(data) as view:
                        offset = 0
                        while offset < len(data):
                            sent = self.sock.send(view[offset : offset + WRITE_CHUNK])
                            offset += sent
                            self._sending -= sent
                    self._sending = 0
        except OSError as exc:
            self._on_failure(f"write failed: {exc}")

    def close(self) -> None:
        self._closed = True
        self._writer.kill(block=False)
        with contextlib.suppress(OSError):
            self.sock.close()


class IpcConnection:
    """One library handle as the engines see it (the Connection protocol of aisexec.service)."""

    def __init__(self, server: IpcServer, conn_id: int, cred: PeerCred, service: int,
                 engine: ServiceEngine, host: EngineHost, sock: Any) -> None:
        self.id = conn_id
        self.pid = cred.pid
        self.uid = cred.uid
        self.gid = cred.gid
        self.service = service
        self.engine = engine
        self.host = host
        self.private: dict = {}
        self.cookie = secrets.token_bytes(_wire.COOKIE_SIZE)
        self._server = server
        self._closed = False
        self._response = _Channel(sock, server.max_queued_bytes, self.fail)
        self._dispatch: _Channel | None = None
        self._early_dispatch = bytearray()
        self._refusal_logged = False
        self.request_waiter: ReadWaiter | None = None  # the request reader's watcher, cancelled by close()

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._closed

    def respond(self, service: int, msg_id: int, request_id: int, error: int, payload: bytes = b"") -> None:
        """Queue the answer to ``request_id`` (dropped if the connection is gone)."""
        if not self._closed:
            self._response.write(_wire.encode_response(service, msg_id, request_id, int(error), payload))
            if error:
                self._refused(service, msg_id, request_id, int(error))

    def _refused(self, service: int, msg_id: int, request_id: int, error: int) -> None:
        """A pipelined request's error: tell the dispatch channel too, count it, log the first of the connection."""
        handler = self.engine.lib_handlers.get(msg_id)
        if handler is None or not handler.pipelined:
            return
        self._queue_dispatch(_wire.encode_response(service, _wire.PIPELINE_ERROR, request_id, error))
        self._server.counters["refused_pipelined"] += 1
        if self._refusal_logged:
            return
        self._refusal_logged = True
        try:
            name = f"SA_AIS_ERR_{SaAisError(error).name}"
        except ValueError:
            name = str(error)
        self._server.log.warning(
            "refusing pipelined request %d on IPC connection %d (pid %d, service %s): %s; the library raises it "
            "at its next call (later refusals on this connection are counted, not logged)",
            msg_id, self.id, self.pid, self.engine.name, name)

    def dispatch(self, service: int, msg_id: int, payload: bytes) -> None:
        """Queue a callback on the dispatch channel (dropped if the connection is gone)."""
        if self._closed:
            return
        frame = _wire.encode_response(service, msg_id, 0, SaAisError.OK, payload)
        if self._dispatch is not None:  # the hot path: one callback frame onto the channel
            self._dispatch.write(frame)
        else:
            self._queue_early(frame)

    def _queue_dispatch(self, frame: bytes) -> None:
        """Queue a frame of the executive's own on the dispatch channel."""
        if self._closed:
            return
        if self._dispatch is not None:
            self._dispatch.write(frame)
        else:
            self._queue_early(frame)

    def _queue_early(self, frame: bytes) -> None:
        """Hold a dispatch frame until the handle's dispatch socket connects."""
        if len(self._early_dispatch) + len(frame) > self._server.max_queued_bytes:
            self.fail("client is not reading its dispatch channel")
            return
        self._early_dispatch += frame

    def attach_dispatch(self, sock: Any) -> None:
        """The handle's second socket arrived."""
        self._dispatch = _Channel(sock, self._server.max_queued_bytes, self.fail)
        if self._early_dispatch:
            self._dispatch.write(bytes(self._early_dispatch))
            self._early_dispatch = bytearray()

    def fail(self, why: str) -> None:
        """Close the connection because of ``why`` (logged)."""
        if not self._closed:
            self._server.log.warning("closing IPC connection %d (pid %d, service %d): %s",
                                     self.id, self.pid, self.service, why)
            self.close()

    def close(self) -> None:
        """Close both sockets and run the engine's lib_exit once."""
        if self._closed:
            return
        self._closed = True
        if self.request_waiter is not None:
            self.request_waiter.cancel(OSError(errno.EBADF, "the connection was closed"))
        self._response.close()
        if self._dispatch is not None:
            self._dispatch.close()
        self._server._forget(self)
        try:
            self.host.hook.lib_exit(conn=self)
        except Exception:
            self._server.log.exception("service %s failed in lib_exit", self.engine.name)


class IpcServer:
    """Accepts library connections on a Unix socket and routes their requests."""

    def __init__(self, path: str, router: Router, authorizer: Authorizer, *, max_frame: int = _wire.MAX_FRAME,
                 max_queued_bytes: int = 32 * 1024 * 1024, logger: logging.Logger | None = None) -> None:
        self.path = path
        self.router = router
        self.authorizer = authorizer
        self.max_frame = max_frame
        self.max_queued_bytes = max_queued_bytes
        # One read buffer for every connection: reads land here and are copied out before any switch
        # (a fresh 256 KiB object per read cost an mmap; one per connection would cost 256 KiB each).
        self._scratch = memoryview(bytearray(READ_CHUNK))
        self.log = logger or logging.getLogger("aisexec.ipc")
        self._ids = itertools.count(1)
        self._connections: dict[int, IpcConnection] = {}
        self._listener: Any = None
        self._acceptor: gevent.Greenlet | None = None
        self._greenlets: set[gevent.Greenlet] = set()
        self.counters = {"accepted": 0, "refused": 0, "malformed": 0, "requests": 0, "try_again": 0,
                         "handler_errors": 0, "overflows": 0, "parked": 0, "refused_pipelined": 0}

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start accepting."""
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(self.path):
            probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # stale: nobody listens
            else:
                raise OSError(errno.EADDRINUSE, f"another executive is listening on {self.path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o666)
        listener.listen(128)
        self._listener = listener
        self._acceptor = gevent.spawn(self._accept_loop)

    def stop(self) -> None:
        """Stop accepting, close every connection (lib_exit each), remove the socket file."""
        if self._acceptor is not None:
            self._acceptor.kill(block=False)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        for conn in list(self._connections.values()):
            conn.close()
        for greenlet in list(self._greenlets):
            greenlet.kill(block=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def stats(self) -> dict:
        """Counters and gauges for tools."""
        queued = sum(len(c._response.buffer) + (len(c._dispatch.buffer) if c._dispatch else 0)
                     for c in self._connections.values())
        return {"connections": len(self._connections), "queued_bytes": queued, **self.counters}

    def connections(self) -> list[IpcConnection]:
        """Open connections."""
        return list(self._connections.values())

    # -- accepting ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError as exc:
                if self._listener is None:
                    return
                self.log.warning("accept failed: %s", exc)
                gevent.sleep(0.1)
                continue
            greenlet = gevent.spawn(self._serve, sock)
            self._greenlets.add(greenlet)
            greenlet.link(self._greenlets.discard)

    def _forget(self, conn: IpcConnection) -> None:
        self._connections.pop(conn.id, None)

    def _serve(self, sock: Any) -> None:
        try:
            cred = peer_credentials(sock)
            hello = self._read_hello(sock)
        except (OSError, _wire.FrameError, TimeoutError) as exc:
            self.counters["malformed"] += 1
            self.log.warning("dropping IPC client during handshake: %s", exc)
            sock.close()
            return
        if hello is None:
            sock.close()
            return
        service, msg_id, payload = hello
        if msg_id == _wire.HELLO_DISPATCH:
            self._attach(sock, payload)
            return
        if msg_id != _wire.HELLO_RESPONSE:
            self._refuse(sock, service, SaAisError.INVALID_PARAM, f"first frame has message id {msg_id:#x}")
            return
        if not self.authorizer.admits(cred):
            self.counters["refused"] += 1
            self._refuse(sock, service, SaAisError.ACCESS,
                         f"denied connection from pid {cred.pid} uid {cred.uid} gid {cred.gid}")
            return
        if len(payload) != _wire.HELLO_VERSION.size or _wire.HELLO_VERSION.unpack(payload)[0] != \
                _wire.PROTOCOL_VERSION:
            self._refuse(sock, service, SaAisError.VERSION, "library speaks another IPC protocol version")
            return
        found = self.router.engine_for(service)
        if found is None:
            self._refuse(sock, service, SaAisError.NOT_EXIST, f"no service with id {service}")
            return
        engine, host = found
        conn = IpcConnection(self, next(self._ids), cred, service, engine, host, sock)
        self._connections[conn.id] = conn
        self.counters["accepted"] += 1
        try:
            host.hook.lib_init(conn=conn)
        except Exception:
            self.log.exception("service %s failed in lib_init", engine.name)
            conn.respond(service, _wire.HELLO_RESPONSE, 0, SaAisError.LIBRARY)
            gevent.sleep(0)
            conn.close()
            return
        conn.respond(service, _wire.HELLO_RESPONSE, 0, SaAisError.OK, _wire.HELLO_ANSWER.pack(conn.id, conn.cookie))
        gevent.spawn_later(HANDSHAKE_TIMEOUT * 2, self._expect_dispatch, conn)
        self._read_requests(conn, sock)

    def _read_hello(self, sock: Any) -> tuple[int, int, bytes] | None:
        buf = bytearray()
        with gevent.Timeout(HANDSHAKE_TIMEOUT, TimeoutError("no hello within the handshake timeout")):
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                buf += chunk
                frames, used = _wire.split_requests(buf, 4096)
                if frames:
                    if used != len(buf):
                        raise _wire.FrameError("data after the hello frame")
                    service, msg_id, _rid, payload = frames[0]
                    return service, msg_id, payload

    def _refuse(self, sock: Any, service: int, error: SaAisError, why: str) -> None:
        self.log.warning("IPC: %s", why)
        with contextlib.suppress(OSError):
            sock.sendall(_wire.encode_response(service, _wire.HELLO_RESPONSE, 0, error))
        sock.close()

    def _attach(self, sock: Any, payload: bytes) -> None:
        try:
            conn_id, cookie = _wire.HELLO_ANSWER.unpack(payload)
        except Exception:
            self._refuse(sock, 0, SaAisError.INVALID_PARAM, "malformed dispatch hello")
            return
        conn = self._connections.get(conn_id)
        if conn is None or conn._dispatch is not None or not secrets.compare_digest(conn.cookie, cookie):
            self._refuse(sock, 0, SaAisError.BAD_HANDLE, f"dispatch channel for unknown connection {conn_id}")
            return
        sock.sendall(_wire.encode_response(conn.service, _wire.HELLO_DISPATCH, 0, SaAisError.OK))
        conn.attach_dispatch(sock)
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                conn.fail("unexpected data on the dispatch channel")
                return
        except OSError:
            pass
        conn.close()

    def _expect_dispatch(self, conn: IpcConnection) -> None:
        if not conn.closed and conn._dispatch is None:
            conn.fail("dispatch channel never connected")

    # -- requests --------------------------------------------------------------

    def _read_requests(self, conn: IpcConnection, sock: Any) -> None:
        # One long-lived watcher (conn.close cancels it) and reads straight from the non-blocking fd:
        # a read shorter than the scratch buffer drained the socket, so the next step is to wait, not
        # to read again for an EAGAIN.
        buf = bytearray()
        scratch = self._scratch
        fd = sock.fileno()
        readable = conn.request_waiter = ReadWaiter(fd)
        try:
            while not conn.closed:
                try:
                    count = os.readv(fd, (scratch,))  # no switch between the read and the copy below
                except BlockingIOError:
                    readable.wait()
                    continue
                if not count:
                    break
                buf += scratch[:count]
                frames, used = _wire.split_requests(buf, self.max_frame)
                if used:
                    del buf[:used]
                for service, msg_id, request_id, payload in frames:
                    if conn.closed:
                        return
                    self._request(conn, service, msg_id, request_id, payload)
                if count < len(scratch) and not conn.closed:
                    readable.wait()
        except _wire.FrameError as exc:
            self.counters["malformed"] += 1
            conn.fail(f"malformed frame: {exc}")
            return
        except OSError:
            pass
        conn.close()

    def _cluster_can_take(self, size: int) -> bool:
        return self.router.cluster_ready() and self.router.has_room(size + PIPELINE_SLACK)

    def _park(self, conn: IpcConnection, size: int) -> bool:
        """Hold this connection's reader until the ring can take ``size`` bytes; False on timeout."""
        self.counters["parked"] += 1
        deadline = time.monotonic() + PARK_LIMIT
        while not conn.closed and time.monotonic() < deadline:
            gevent.sleep(PARK_POLL)
            if self._cluster_can_take(size):
                return True
        return False

    def _request(self, conn: IpcConnection, service: int, msg_id: int, request_id: int, payload: bytes) -> None:
        self.counters["requests"] += 1
        if service != conn.service:
            self.counters["malformed"] += 1
            conn.fail(f"request for service {service} on a connection to service {conn.service}")
            return
        handler = conn.engine.lib_handlers.get(msg_id)
        if handler is None:
            conn.respond(service, msg_id, request_id, SaAisError.NOT_SUPPORTED)
            return
        if len(payload) > handler.max_size:
            conn.respond(service, msg_id, request_id, SaAisError.TOO_BIG)
            return
        if handler.needs_cluster and not self._cluster_can_take(len(payload)):
            if not (handler.pipelined and self._park(conn, len(payload))):
                self.counters["try_again"] += 1
                conn.respond(service, msg_id, request_id, SaAisError.TRY_AGAIN)
                return
        try:
            handler.fn(conn, request_id, payload)
        except QueueFull:
            self.counters["try_again"] += 1
            conn.respond(service, msg_id, request_id, SaAisError.TRY_AGAIN)
        except MessageTooBig:
            conn.respond(service, msg_id, request_id, SaAisError.TOO_BIG)
        except Exception:
            self.counters["handler_errors"] += 1
            self.log.exception("service %s failed on request %d from pid %d", conn.engine.name, msg_id, conn.pid)
            conn.respond(service, msg_id, request_id, SaAisError.LIBRARY)
