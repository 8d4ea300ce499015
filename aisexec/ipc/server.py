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

Limits for all connections together (:mod:`aisexec.ipc.limits`): the peer's
credentials are checked at ``accept``, before any buffer is given (a refused
uid is answered ``SA_AIS_ERR_ACCESS`` and closed at once, logged at most once
per interval); connections per uid and descriptors are capped, with room kept
for root; every byte held for clients counts against one memory budget
(back-pressure on the biggest holders, then the slowest reader is dropped); a
request frame must arrive completely within ``frame_timeout`` of its first
byte; an ``accept`` that fails for lack of descriptors backs off instead of
spinning.  The server removes at stop only the socket file it bound itself
(same device, inode and change time).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import socket as pysocket
import stat
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

import gevent
import gevent.event
from gevent import socket

from aisexec.ipc.auth import Authorizer, PeerCred, peer_credentials
from aisexec.ipc.limits import (
    FD_MARGIN,
    ROOT_FD_RESERVE,
    IpcLimits,
    MemoryBudget,
    RateLimitedLog,
    descriptor_limit,
    open_descriptors,
    privileged,
    release_memory,
)
from aisexec.readiness import ReadWaiter
from aisexec.service import EngineHost, ServiceEngine
from aisexec.totem.api import MessageTooBig, QueueFull
from openais import _wire
from openais.errors import SaAisError

READ_CHUNK = 256 * 1024
_OK = int(SaAisError.OK)
#: Room asked for beyond a request's payload (the service's own headers).
PIPELINE_SLACK = 1024
#: A parked connection is woken when the ring has room (:meth:`IpcServer.room_available`); without
#: a wake it looks again after PARK_FALLBACK seconds, and it answers TRY_AGAIN after PARK_LIMIT.
PARK_FALLBACK = 0.1
PARK_LIMIT = 30.0
WRITE_CHUNK = 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0
#: Seconds a paused reader waits for room before it looks again.
PAUSE_POLL = 0.5
#: An accept that fails for lack of descriptors waits this long at first, doubling up to the max.
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 1.0
#: A connection dropped while holding this many bytes gets the heap trimmed after TRIM_DELAYS (s, cumulative).
TRIM_THRESHOLD = 256 * 1024
TRIM_DELAYS = (0.3, 2.7)
#: Seconds a start waits for another start on the same socket directory.
DIRECTORY_LOCK_TIMEOUT = 10.0


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    """A file's identity: device and inode, and its change time (an inode number is reused at once)."""
    return info.st_dev, info.st_ino, info.st_ctime_ns


@contextlib.contextmanager
def _directory_lock(directory: str) -> Iterator[None]:
    """Hold ``flock`` on ``directory`` (serialises the probe-unlink-bind of two starts); no-op where unsupported."""
    import fcntl

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + DIRECTORY_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EADDRINUSE, f"another start holds {directory}") from None
                gevent.sleep(0.05)
            except OSError:
                break  # a file system without flock: go on unserialised
        yield
    finally:
        os.close(fd)


class Router(Protocol):
    """What the IPC server needs from the service layer."""

    def engine_for(self, service_id: int) -> tuple[ServiceEngine, EngineHost] | None:
        """The engine serving ``service_id`` and its host, or None."""

    def cluster_ready(self, service_id: int | None = None) -> bool:
        """False while a sync round holds ``service_id`` (without one: while any sync round runs)."""

    def has_room(self, size: int) -> bool:
        """True when the ring can queue ``size`` more bytes."""


class _Channel:
    """One socket's outgoing queue: flushed at the end of the hub turn, a greenlet waits out a full socket.

    Everything queued during one turn of the hub leaves in one non-blocking
    ``write`` from a loop callback (no greenlet switch on the common path);
    what the kernel does not take is handed to the writer greenlet, which
    waits for room.  ``owner`` (when given) is charged for every byte queued
    and credited as the kernel takes it (its ``held_out`` and the server's
    memory budget).
    """

    def __init__(self, sock: Any, limit: int, on_failure: Any, owner: Any = None) -> None:
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
        self._owner = owner
        self._budget = owner._server.budget if owner is not None else None
        self._writer = gevent.spawn(self._write_loop)

    @property
    def queued(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return len(self.buffer) + self._sending

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection is failed) past the limit or the memory budget."""
        if self._closed:
            return False
        size = len(data)
        if len(self.buffer) + self._sending + size > self.limit:
            self._on_failure(f"client is not reading: more than {self.limit} bytes queued")
            return False
        owner = self._owner
        if owner is not None:
            # owner.admit_output + owner.charge_out, inlined: this runs for every frame to a client.
            budget = self._budget
            used = budget.used + size
            if used > budget.ordinary:
                if not owner.admit_output(size) or self._closed:
                    return False
                used = budget.used + size
            budget.used = used
            if used > budget.peak:
                budget.peak = used
            owner.held_out += size
        self.buffer += data
        if not self._flush_scheduled and not self._sending:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)
        return True

    def _credit(self, size: int) -> None:
        if self._owner is not None and not self._closed and size:
            self._owner.charge_out(-size)

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
        self._credit(sent)
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
                            self._credit(sent)
                    self._sending = 0
                    del data
        except OSError as exc:
            self._on_failure(f"write failed: {exc}")

    def close(self) -> None:
        """Stop writing, release what is queued (credited to the owner) and close the socket."""
        if self._closed:
            return
        left = len(self.buffer) + self._sending
        self._credit(left)
        self._closed = True
        self.buffer = bytearray()
        self._sending = 0
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
        #: bytes held for this connection: read and not yet handled, queued and not yet sent
        self.held_in = 0
        self.held_out = 0
        #: monotonic time the first byte of a still incomplete request frame arrived, or None
        self.partial_since: float | None = None
        self._response = _Channel(sock, server.max_queued_bytes, self.fail, self)
        self._dispatch: _Channel | None = None
        self._early_dispatch = bytearray()
        self._refusal_logged = False
        self.request_waiter: ReadWaiter | None = None  # the request reader's watcher, cancelled by close()
        self.parked: _Parked | None = None  # while its reader waits for room in the ring (woken by close())

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._closed

    def charge_in(self, delta: int) -> None:
        """Account request bytes read (positive) or handled (negative) against the memory budget."""
        self.held_in += delta
        self._server.budget.add(delta)

    def charge_out(self, delta: int) -> None:
        """Account output bytes queued (positive) or sent (negative) against the memory budget."""
        self.held_out += delta
        self._server.budget.add(delta)

    def admit_output(self, size: int) -> bool:
        """Room in the memory budget for ``size`` more output bytes (slower readers may be dropped for it)."""
        budget = self._server.budget
        if budget.used + size <= budget.ordinary:  # the common case, without a call
            return True
        return budget.admit_output(self, size, len(self._server._connections))

    def respond(self, service: int, msg_id: int, request_id: int, error: int, payload: bytes = b"") -> None:
        """Queue the answer to ``request_id`` (dropped if the connection is gone)."""
        if not self._closed:
            self._response.write(_wire.encode_response(service, msg_id, request_id, int(error), payload))
            if error and error != _OK:  # SA_AIS_OK is 1: only a real error is told on the dispatch channel
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
        if not self.admit_output(len(frame)) or self._closed:
            return
        self.charge_out(len(frame))
        self._early_dispatch += frame

    def attach_dispatch(self, sock: Any) -> None:
        """The handle's second socket arrived."""
        self._dispatch = _Channel(sock, self._server.max_queued_bytes, self.fail, self)
        if self._early_dispatch:
            early, self._early_dispatch = bytes(self._early_dispatch), bytearray()
            self.charge_out(-len(early))
            self._dispatch.write(early)

    def fail(self, why: str) -> None:
        """Close the connection because of ``why`` (logged)."""
        if not self._closed:
            self._server.log.warning("closing IPC connection %d (pid %d, uid %d, service %d): %s",
                                     self.id, self.pid, self.uid, self.service, why)
            self.close()

    def close(self) -> None:
        """Close both sockets and run the engine's lib_exit once."""
        if self._closed:
            return
        self._closed = True
        held = self.held_in + self.held_out
        if self.request_waiter is not None:
            self.request_waiter.cancel(OSError(errno.EBADF, "the connection was closed"))
        if self.parked is not None:
            self.parked.event.set()  # the parked reader leaves at once
        self._response.close()
        if self._dispatch is not None:
            self._dispatch.close()
        if self._early_dispatch:
            self.charge_out(-len(self._early_dispatch))
            self._early_dispatch = bytearray()
        self._server._forget(self, held)
        try:
            self.host.hook.lib_exit(conn=self)
        except Exception:
            self._server.log.exception("service %s failed in lib_exit", self.engine.name)


class _Parked:
    """A connection whose reader waits for room in the ring for one request of ``size`` bytes."""

    __slots__ = ("conn", "event", "size")

    def __init__(self, conn: IpcConnection, size: int) -> None:
        self.conn = conn
        self.size = size
        self.event = gevent.event.Event()


class IpcServer:
    """Accepts library connections on a Unix socket and routes their requests."""

    def __init__(self, path: str, router: Router, authorizer: Authorizer, *, max_frame: int = _wire.MAX_FRAME,
                 max_queued_bytes: int | None = None, limits: IpcLimits | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.path = path
        self.router = router
        self.authorizer = authorizer
        self.max_frame = max_frame
        self.limits = limits or IpcLimits()
        self.max_queued_bytes = self.limits.max_queued_bytes if max_queued_bytes is None else max_queued_bytes
        # One read buffer for every connection: reads land here and are copied out before any switch
        # (a fresh 256 KiB object per read cost an mmap; one per connection would cost 256 KiB each).
        self._scratch = memoryview(bytearray(READ_CHUNK))
        self.log = logger or logging.getLogger("aisexec.ipc")
        self._rate_log = RateLimitedLog(self.log)
        self._ids = itertools.count(1)
        self._connections: dict[int, IpcConnection] = {}
        self._listener: Any = None
        self._acceptor: gevent.Greenlet | None = None
        self._sweeper: gevent.Greenlet | None = None
        self._greenlets: set[gevent.Greenlet] = set()
        self._bound: tuple[int, int, int] | None = None  # (st_dev, st_ino, st_ctime_ns) of the socket it bound
        self._sockets = 0  # accepted sockets still open (handshaking, response and dispatch channels)
        self._per_uid: dict[int, int] = {}
        self._parked: deque[_Parked] = deque()  # parked connections, oldest first
        self._fd_baseline = 0
        self._trim_pending = False
        self.counters = {"accepted": 0, "refused": 0, "malformed": 0, "requests": 0, "try_again": 0,
                         "handler_errors": 0, "overflows": 0, "parked": 0, "refused_pipelined": 0,
                         "refused_uid_limit": 0, "refused_fd_limit": 0, "frame_timeouts": 0,
                         "dropped_slow": 0, "paused": 0, "accept_backoffs": 0, "memory_trims": 0}
        self.budget = MemoryBudget(self.limits.memory_budget, lambda: self._connections.values(), self.log,
                                   self.counters)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one nobody listens on) and start accepting.

        Raises OSError ``EADDRINUSE`` when an executive listens on the path, or when one may (the
        probe neither connected nor was refused: a full backlog, a stopped process); the file is
        then left alone.  Starts on one directory are serialised with ``flock`` on the directory.
        """
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        with _directory_lock(directory):
            self._take_over_stale()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(self.path)
                os.chmod(self.path, 0o666)
                self._bound = _identity(os.lstat(self.path))
                listener.listen(128)
            except BaseException:
                listener.close()
                self._unlink_own()
                raise
        self._listener = listener
        self._fd_baseline = open_descriptors()
        self._acceptor = gevent.spawn(self._accept_loop)
        self._sweeper = gevent.spawn(self._sweep_loop)

    def _take_over_stale(self) -> None:
        """Remove the socket file at our path when nobody listens on it (connect refused); else EADDRINUSE."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(errno.EADDRINUSE, f"{self.path} exists and is not a socket; not replacing it")
        probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            pass  # stale: nobody listens
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OSError(errno.EADDRINUSE, f"{self.path} may belong to a running executive (probe: "
                                            f"{exc.strerror or exc}); not replacing it") from None
        else:
            raise OSError(errno.EADDRINUSE, f"another executive is listening on {self.path}")
        finally:
            probe.close()
        with contextlib.suppress(FileNotFoundError):
            again = os.lstat(self.path)
            if (again.st_dev, again.st_ino) == (info.st_dev, info.st_ino):
                os.unlink(self.path)
        self.log.info("replaced the stale socket file %s (nobody listened on it)", self.path)

    def _unlink_own(self) -> None:
        """Remove the socket file only if it is still the one this server bound."""
        if self._bound is None:
            return
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if _identity(info) == self._bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            self.log.warning("not removing %s: it is no longer the socket this executive created", self.path)
        self._bound = None

    def stop(self) -> None:
        """Stop accepting, close every connection (lib_exit each), remove the socket file if it is ours."""
        for greenlet in (self._acceptor, self._sweeper):
            if greenlet is not None:
                greenlet.kill(block=False)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        for conn in list(self._connections.values()):
            conn.close()
        for greenlet in list(self._greenlets):
            greenlet.kill(block=False)
        self._unlink_own()

    def stats(self) -> dict:
        """Counters and gauges for tools."""
        queued = sum(c.held_out for c in self._connections.values())
        return {"connections": len(self._connections), "queued_bytes": queued, **self.counters}

    def budget_status(self) -> dict:
        """The memory budget and descriptor caps now (levels, not counters: kept out of :meth:`stats`)."""
        return {"held_bytes": self.budget.used, "peak_held_bytes": self.budget.peak,
                "memory_budget": self.budget.limit, "root_reserve": self.budget.reserve,
                "sockets": self._sockets, "socket_cap": self._socket_cap(1), "root_socket_cap": self._socket_cap(0),
                "frame_timeout": self.limits.frame_timeout,
                "max_connections_per_uid": self.limits.max_connections_per_uid}

    def connections(self) -> list[IpcConnection]:
        """Open connections."""
        return list(self._connections.values())

    # -- accepting ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        backoff = 0.0
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError as exc:
                if self._listener is None:
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    backoff = min(max(backoff * 2, ACCEPT_BACKOFF_MIN), ACCEPT_BACKOFF_MAX)
                    self.counters["accept_backoffs"] += 1
                    self._rate_log.warning("accept", "accept failed: %s; not accepting for %.2f s (%d sockets "
                                           "open, descriptor limit %d)", exc.strerror or exc, backoff,
                                           self._sockets, descriptor_limit())
                else:
                    backoff = ACCEPT_BACKOFF_MIN
                    self._rate_log.warning("accept-other", "accept failed: %s", exc)
                gevent.sleep(backoff)
                continue
            backoff = 0.0
            self._admit(sock)

    def _socket_cap(self, uid: int) -> int:
        """Sockets library clients may hold (root gets ROOT_FD_RESERVE more than anybody else)."""
        cap = max(descriptor_limit() - self._fd_baseline - FD_MARGIN, 2 * ROOT_FD_RESERVE)
        return cap if privileged(uid) else cap - ROOT_FD_RESERVE

    def _admit(self, sock: Any) -> None:
        """Credentials first: refuse before any buffer or greenlet is given; else serve the socket."""
        try:
            cred = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        if not self.authorizer.admits(cred):
            self.counters["refused"] += 1
            self._rate_log.warning("refused-uid", "IPC: denied connection from pid %d uid %d gid %d",
                                   cred.pid, cred.uid, cred.gid)
            self._refuse_now(sock, SaAisError.ACCESS)
            return
        if not privileged(cred.uid) and self._per_uid.get(cred.uid, 0) >= self.limits.max_connections_per_uid:
            self.counters["refused_uid_limit"] += 1
            self._rate_log.warning("uid-limit", "IPC: refusing a connection from pid %d uid %d: the uid holds %d "
                                   "connections (ipc_max_connections_per_uid)", cred.pid, cred.uid,
                                   self._per_uid.get(cred.uid, 0))
            self._refuse_now(sock, SaAisError.NO_RESOURCES)
            return
        if self._sockets >= self._socket_cap(cred.uid):
            self.counters["refused_fd_limit"] += 1
            self._rate_log.warning("fd-limit", "IPC: refusing a connection from pid %d uid %d: %d sockets open, "
                                   "near the descriptor limit %d (%d kept for root)", cred.pid, cred.uid,
                                   self._sockets, descriptor_limit(), ROOT_FD_RESERVE)
            self._refuse_now(sock, SaAisError.NO_RESOURCES)
            return
        self._sockets += 1
        self._per_uid[cred.uid] = self._per_uid.get(cred.uid, 0) + 1
        greenlet = gevent.spawn(self._serve, sock, cred)
        self._greenlets.add(greenlet)
        greenlet.link(lambda g, uid=cred.uid: self._served(g, uid))

    def _served(self, greenlet: gevent.Greenlet, uid: int) -> None:
        self._greenlets.discard(greenlet)
        self._sockets -= 1
        left = self._per_uid.get(uid, 1) - 1
        if left > 0:
            self._per_uid[uid] = left
        else:
            self._per_uid.pop(uid, None)

    def _refuse_now(self, sock: Any, error: SaAisError) -> None:
        """Answer the (unread) hello with ``error`` without waiting, and close."""
        with contextlib.suppress(OSError):
            os.write(sock.fileno(), _wire.encode_response(0, _wire.HELLO_RESPONSE, 0, error))
        sock.close()

    def _forget(self, conn: IpcConnection, held: int = 0) -> None:
        self._connections.pop(conn.id, None)
        if held >= TRIM_THRESHOLD:
            self.schedule_trim()

    def schedule_trim(self) -> None:
        """Give the memory of dropped connections back to the kernel soon, and once more after a while
        (their greenlets and buffers go in the next turns of the hub, a burst of closes over seconds)."""
        if self._trim_pending:
            return
        self._trim_pending = True

        def trim() -> None:
            try:
                for delay in TRIM_DELAYS:
                    gevent.sleep(delay)
                    if release_memory():
                        self.counters["memory_trims"] += 1
            finally:
                self._trim_pending = False

        gevent.spawn(trim)

    def _sweep_loop(self) -> None:
        """Close connections whose request frame is not complete within ``frame_timeout`` of its first byte."""
        timeout = self.limits.frame_timeout
        while True:
            gevent.sleep(min(max(timeout / 4, 0.05), 1.0))
            count = len(self._connections)
            self.budget.relieve(self.budget.level(-1), count)  # slow readers hold it even when nobody writes
            now = time.monotonic()
            late = [c for c in list(self._connections.values())
                    if c.partial_since is not None and now - c.partial_since > timeout and not c.closed]
            if not late:
                continue
            self.counters["frame_timeouts"] += len(late)
            first = late[0]
            more = ""
            if len(late) > 1:
                uids = sorted({c.uid for c in late})
                more = f"; {len(late) - 1} more closed for the same reason (uids {', '.join(map(str, uids[:8]))})"
            self.log.warning("closing IPC connection %d (pid %d, uid %d, service %d): a request frame begun %.1f s "
                             "ago is still incomplete (%d bytes held; frame timeout %g s)%s", first.id, first.pid,
                             first.uid, first.service, now - first.partial_since, first.held_in, timeout, more)
            for conn in late:
                conn.close()

    def _serve(self, sock: Any, cred: PeerCred) -> None:
        try:
            hello = self._read_hello(sock)
        except (OSError, _wire.FrameError, TimeoutError) as exc:
            self.counters["malformed"] += 1
            self._rate_log.warning("handshake", "dropping IPC client pid %d uid %d during handshake: %s",
                                   cred.pid, cred.uid, exc)
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
        # to read again for an EAGAIN.  Every byte read is charged to the connection (held_in) until
        # its frame has been handled; a reader holding its share while the budget is spent waits.
        buf = bytearray()
        scratch = self._scratch
        fd = sock.fileno()
        budget = self.budget
        readable = conn.request_waiter = ReadWaiter(fd)
        try:
            while not conn.closed:
                room = budget.read_room(conn, len(self._connections), READ_CHUNK)
                if not room:
                    budget.wait_for_room(PAUSE_POLL)
                    continue
                view = scratch if room == READ_CHUNK else scratch[:room]
                try:
                    count = os.readv(fd, (view,))  # no switch between the read and the copy below
                except BlockingIOError:
                    readable.wait()
                    continue
                if not count:
                    break
                buf += scratch[:count]
                conn.charge_in(count)
                frames, used = _wire.split_requests(buf, self.max_frame)
                if used:
                    del buf[:used]
                    # While the requests are handled (a parked one may wait for the ring) the rest of a
                    # begun frame is not the client's delay: its deadline starts when reading resumes.
                    conn.partial_since = None
                    for service, msg_id, request_id, payload in frames:
                        if conn.closed:
                            return
                        self._request(conn, service, msg_id, request_id, payload)
                    conn.charge_in(-used)
                    if buf:
                        conn.partial_since = time.monotonic()
                elif conn.partial_since is None:
                    conn.partial_since = time.monotonic()
                if count < len(view) and not conn.closed:
                    readable.wait()
        except _wire.FrameError as exc:
            self.counters["malformed"] += 1
            conn.fail(f"malformed frame: {exc}")
            return
        except OSError:
            pass
        finally:
            if conn.held_in:
                conn.charge_in(-conn.held_in)
            conn.partial_since = None
            del buf
        conn.close()

    def _cluster_can_take(self, size: int, service: int | None = None) -> bool:
        return self.router.cluster_ready(service) and self.router.has_room(size + PIPELINE_SLACK)

    def _park(self, conn: IpcConnection, size: int) -> bool:
        """Hold this connection's reader until the ring can take ``size`` bytes; False on timeout or close.

        Parked connections go in arrival order: each is woken by :meth:`room_available` (or
        after ``PARK_FALLBACK`` without one), and goes only when no older one waits that could.
        """
        self.counters["parked"] += 1
        waiter = _Parked(conn, size)
        parked = self._parked
        parked.append(waiter)
        conn.parked = waiter
        deadline = time.monotonic() + PARK_LIMIT
        try:
            while not conn.closed:
                if self._may_go(waiter):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                waiter.event.wait(left if left < PARK_FALLBACK else PARK_FALLBACK)
                waiter.event.clear()
            return False
        finally:
            parked.remove(waiter)
            conn.parked = None
            if parked:
                self.room_available()  # the next one may fit in what is left

    def _may_go(self, waiter: _Parked) -> bool:
        """True when the ring takes ``waiter``'s request and no older parked connection could go first."""
        for other in self._parked:
            if other is waiter:
                break
            if not other.conn.closed and self.router.cluster_ready(other.conn.service):
                return False  # an older one waits for ring room too: it goes first
        return self._cluster_can_take(waiter.size, waiter.conn.service)

    def room_available(self) -> None:
        """The ring took frames or a sync round ended: wake the parked connections the room takes, oldest first.

        Costs nothing while none is parked.  A connection whose service syncs does not hold up
        those behind it; one that does not fit does (fair: a big request is not overtaken).
        """
        if not self._parked:
            return
        claimed = 0
        for waiter in self._parked:
            conn = waiter.conn
            if conn.closed:
                waiter.event.set()
                continue
            if not self.router.cluster_ready(conn.service):
                continue
            if not self.router.has_room(claimed + waiter.size + PIPELINE_SLACK):
                break
            claimed += waiter.size + PIPELINE_SLACK
            waiter.event.set()

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
        # (while connections are parked, a pipelined request parks behind them: fair order)
        if handler.needs_cluster and ((self._parked and handler.pipelined)
                                      or not self._cluster_can_take(len(payload), service)):
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
