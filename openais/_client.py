"""The handle every service module builds on: connection, calls, dispatch, finalize.

Works from plain threads and under gevent (with or without monkey-patching).
Every call goes through one call layer (:class:`openais._calls.Calls`, the
same for every service): responses are matched by request id, calls from
several threads on one handle proceed at once, and a dead executive turns
into :class:`Library` errors instead of hangs.

Pipelined requests (CPG and EVS multicasts, EVT ``publish(wait=False)``, MSG
``message_send_async``) are sent without waiting for their answers, at most
``PIPELINE_WINDOW`` requests and a window of bytes unanswered (then
TryAgain).  An error the executive answers for one of them is never lost: it
is kept and raised once, by the handle's next pipelined send or call, and at
the latest by ``dispatch``, ``flush`` or ``finalize``.  (``dispatch`` learns
of it without reading the response channel: the executive also sends a
``PIPELINE_ERROR`` frame on the dispatch channel.)  ``finalize`` first waits
(at most ``FINALIZE_TIMEOUT`` seconds) for every pipelined request to be
answered, then closes the handle and raises the first error one of them
carried, or :class:`Timeout` if some were still unanswered (they may yet be
delivered); the handle is closed either way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading

from openais import _calls, _wire
from openais._calls import Calls
from openais.errors import AisError, BadHandle, Library, SaAisError, Timeout

#: Seconds allowed to connect and complete the handshake.
CONNECT_TIMEOUT = 2.0
#: Seconds a call waits for its answer unless told otherwise.
CALL_TIMEOUT = 30.0
#: Pipelined requests a handle may have unanswered at once (then TryAgain), and their bytes:
#: small enough that the socket buffer always takes them, so a send never blocks on a parked executive.
PIPELINE_WINDOW = _calls.WINDOW
PIPELINE_BYTES = _calls.WINDOW_BYTES
#: Seconds ``finalize`` waits for the answers to pipelined requests before it closes the handle.
FINALIZE_TIMEOUT = 5.0
#: Bytes read from the dispatch socket per call (a buffer of this size is kept per handle).
DISPATCH_READ = 64 * 1024

DISPATCH_ONE = 1
DISPATCH_ALL = 2
DISPATCH_BLOCKING = 3


def checked_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is None or a non-negative number of seconds; InvalidParam otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        from openais.errors import InvalidParam

        raise InvalidParam(f"timeout must be None or a non-negative number of seconds, not {timeout!r}")
    return float(timeout)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the executive closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_response(sock: socket.socket, max_frame: int) -> tuple[int, int, int, int, bytes]:
    header = _recv_exact(sock, _wire.RESPONSE.size)
    size, service, msg_id, request_id, error = _wire.RESPONSE.unpack(header)
    _wire.check_size(size, _wire.RESPONSE.size, max_frame)
    payload = _recv_exact(sock, size - _wire.RESPONSE.size) if size > _wire.RESPONSE.size else b""
    return service, msg_id, request_id, error, payload


class Handle:
    """A library handle: two connections to the local executive for one service.

    ``path``: the executive's socket (default ``$OPENAIS_IPC_SOCKET``);
    ``timeout``: seconds allowed to connect and complete the handshake
    (default :data:`CONNECT_TIMEOUT`).
    """

    def __init__(self, service_id: int, *, path: str | None = None, max_frame: int = _wire.MAX_FRAME,
                 timeout: float | None = None) -> None:
        self._service = service_id
        self._path = path or _wire.socket_path()
        self._max_frame = max_frame
        timeout = checked_timeout(timeout)
        self._connect_timeout = CONNECT_TIMEOUT if timeout is None else max(timeout, 0.001)
        self._call_lock = threading.Lock()
        self._dispatch_lock = threading.Lock()
        self._scratch = memoryview(bytearray(DISPATCH_READ))  # dispatch reads land here (used under the lock)
        self._finalized = False
        self._dead = False
        self._response = self._connect()
        try:
            self._send_hello(self._response, _wire.encode_request(
                service_id, _wire.HELLO_RESPONSE, 0, _wire.HELLO_VERSION.pack(_wire.PROTOCOL_VERSION)))
            *_, payload = self._handshake_answer(self._response)
            self.conn_id, _cookie = _wire.HELLO_ANSWER.unpack(payload)
            self._dispatch = self._connect()
            self._send_hello(self._dispatch, _wire.encode_request(service_id, _wire.HELLO_DISPATCH, 0, payload))
            self._handshake_answer(self._dispatch)
        except BaseException:
            self._close_sockets()
            raise
        self._dispatch.settimeout(None)
        self._calls = Calls(self, service_id, self._posted_what)

    # -- connection -------------------------------------------------------------

    def _send_hello(self, sock: socket.socket, frame: bytes) -> None:
        """Send a hello; a send the executive cut short is fine if it left its answer (a refusal) to read."""
        try:
            sock.sendall(frame)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise Library(f"handshake with the executive at {self._path} failed: {exc}") from None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._connect_timeout)
        try:
            sock.connect(self._path)
        except OSError as exc:
            sock.close()
            raise Library(f"cannot connect to the executive at {self._path}: {exc.strerror or exc} "
                          "(is aisexec running? is OPENAIS_IPC_SOCKET right?)") from None
        return sock

    def _handshake_answer(self, sock: socket.socket) -> tuple[int, int, int, int, bytes]:
        try:
            answer = _read_response(sock, self._max_frame)
        except (OSError, ConnectionError, _wire.FrameError) as exc:
            raise Library(f"handshake with the executive at {self._path} failed: {exc}") from None
        if answer[3] != SaAisError.OK:
            raise AisError.from_code(answer[3], f"the executive refused the connection: "
                                                f"SA_AIS_ERR_{SaAisError(answer[3]).name}")
        return answer

    def _close_sockets(self) -> None:
        for name in ("_response", "_dispatch"):
            sock = getattr(self, name, None)
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        poller = self.__dict__.pop("_poller", None)
        if poller is not None:
            poller.close()
            os.close(self.__dict__.pop("_kick"))

    def _check(self) -> None:
        if self._finalized:
            raise BadHandle("the handle was finalized")
        if self._dead:
            raise Library("the connection to the executive is lost")

    # -- calls ----------------------------------------------------------------
    # One call layer for every service (openais._calls.Calls): concurrent calls, posted requests.

    #: Seconds a call waits for its answer when not told (None: while the executive lives).
    _call_wait: float | None = CALL_TIMEOUT
    #: What a pipelined request is called in the text of its deferred error.
    _posted_what = "pipelined request"

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        """Send one request and wait for its answer; raise the AisError it carries.

        An error kept from an earlier pipelined request is raised first (and this request not sent).
        """
        return self._calls.call(msg_id, payload, self._call_wait if timeout is None else timeout)

    def _send_pipelined(self, msg_id: int, payload: bytes, timeout: float | None = None,
                        room_wait: float = 0.0, window_bytes: int = PIPELINE_BYTES) -> None:
        """Send a request without waiting for its answer (at most PIPELINE_WINDOW outstanding).

        Raises TryAgain when the window is full (the executive is backed up) and stays so
        ``room_wait`` seconds (answers are read meanwhile; 0: at once), and raises the error
        of an earlier pipelined request that failed; ``timeout``: seconds a send may wait
        for room in a full socket (default CALL_TIMEOUT); ``window_bytes``: the window's bytes
        for this request (at most the socket's buffer, so that a send never blocks on a parked
        executive).
        """
        self._calls.post(msg_id, payload, timeout, room_wait, window_bytes)

    def _send_oneway(self, msg_id: int, payload: bytes) -> None:
        """Send a request the executive does not answer (on the response socket, in turn with the calls)."""
        self._calls.send_oneway(msg_id, payload)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the executive has answered every pipelined request; raise a deferred error."""
        self._check()
        calls = self._calls
        try:
            calls.drain(CALL_TIMEOUT if timeout is None else timeout)
        except Timeout:
            calls.raise_deferred()  # the error an answer carried comes before the Timeout
            raise
        calls.raise_deferred()

    # -- dispatch ---------------------------------------------------------------

    def fileno(self) -> int:
        """The selection object: readable when callbacks are pending, in the socket or already read.

        An epoll set (made at the first call) of the dispatch socket and an eventfd that the
        library raises while callbacks it has read wait to run (a callback raised before them).
        """
        self._check()
        poller = self.__dict__.get("_poller")
        if poller is None:
            poller = self._make_poller()
        return poller.fileno()

    def _make_poller(self) -> select.epoll:
        kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        poller = select.epoll()
        try:
            poller.register(self._dispatch.fileno(), select.EPOLLIN)
            poller.register(kick, select.EPOLLIN)
        except BaseException:
            poller.close()
            os.close(kick)
            raise
        self.__dict__["_kick"] = kick
        self.__dict__["_poller"] = poller
        self.__dict__["_kicked"] = False
        self._selection_pending(self._callbacks_kept())
        return poller

    def _callbacks_kept(self) -> bool:
        """True while callbacks already read wait to run (a service that keeps its own adds to this)."""
        return bool(self.__dict__.get("_unrun"))

    def _selection_pending(self, pending: bool) -> None:
        """Raise or clear the selection object's own readiness (callbacks read but not run).

        Costs a system call only when the state changes, and nothing before ``fileno()`` was asked for.
        """
        kick = self.__dict__.get("_kick")
        if kick is None or pending == self.__dict__["_kicked"]:
            return
        self.__dict__["_kicked"] = pending
        if pending:
            os.eventfd_write(kick, 1)
        else:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(kick)

    def _keep_unrun(self, frames: list) -> None:
        """Keep read callbacks for the next dispatch; the selection object stays readable meanwhile."""
        self.__dict__["_unrun"] = frames
        self._selection_pending(True)

    def _take_unrun(self) -> list | None:
        """The kept callbacks, if any (the selection object's own readiness cleared with them)."""
        left = self.__dict__.pop("_unrun", None)
        if left:
            self._selection_pending(self._callbacks_kept())
        return left

    def dispatch(self, flags: int = DISPATCH_ALL) -> None:
        """Run pending callbacks: one, all, or (BLOCKING) until finalize."""
        self._check()
        if flags not in (DISPATCH_ONE, DISPATCH_ALL, DISPATCH_BLOCKING):
            from openais.errors import InvalidParam

            raise InvalidParam(f"dispatch flags must be DISPATCH_ONE, DISPATCH_ALL or DISPATCH_BLOCKING, not {flags}")
        # A pipelined request's error reaches dispatch through the dispatch channel (the executive
        # sends a PIPELINE_ERROR frame with the answer): raised before and after the callbacks run.
        if self._calls.deferred is not None:
            self._calls.raise_deferred()
        with self._dispatch_lock:
            if flags == DISPATCH_BLOCKING:
                while not self._finalized:
                    try:
                        self._dispatch_frame(block=True)
                    except Library:
                        if self._finalized:
                            return
                        raise
                    self._calls.raise_deferred()
                return
            if flags == DISPATCH_ONE:
                self._dispatch_frame(block=False)
            else:
                self._dispatch_all()
        if self._calls.deferred is not None:
            self._calls.raise_deferred()

    def _dispatch_all(self) -> None:
        """Read every pending callback in large chunks, then run them (no bytes are left in user space).

        Callbacks read but not yet run when an earlier one raised run first, at the next dispatch.
        """
        left = self._take_unrun()
        if left:
            self._run_frames(left)
            return
        sock = self._dispatch
        buf = bytearray()
        scratch = self._scratch
        try:
            while True:
                try:
                    # into a buffer kept with the handle: a fresh 1 MiB object per call costs an mmap
                    count = sock.recv_into(scratch, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if not count:
                    raise ConnectionError("the executive closed the connection")
                buf += scratch[:count]  # a view: one copy
                if count < len(scratch):
                    break  # a short read of a stream socket emptied it: no second read to hear EAGAIN
            frames, used = _wire.split_responses(buf, self._max_frame)
            rest = buf[used:]
            if rest:  # complete the frame the executive is still writing
                need = _wire.RESPONSE.unpack_from(rest)[0] if len(rest) >= _wire.RESPONSE.size else None
                if need is None:
                    rest += _recv_exact(sock, _wire.RESPONSE.size - len(rest))
                    need = _wire.RESPONSE.unpack_from(rest)[0]
                _wire.check_size(need, _wire.RESPONSE.size, self._max_frame)
                rest += _recv_exact(sock, need - len(rest))
                frames += _wire.split_responses(rest, self._max_frame)[0]
        except (OSError, ConnectionError, _wire.FrameError) as exc:
            if self._finalized:
                return
            self._dead = True
            raise Library(f"lost the dispatch connection to the executive: {exc}") from None
        self._run_frames(frames)

    def _run_frames(self, frames: list) -> None:
        """Run read callback frames in order; those after a callback that raised are kept for the next dispatch."""
        for index, (_service, msg_id, rid, error, payload) in enumerate(frames):
            if self._finalized:  # a callback finalized the handle
                return
            try:
                if msg_id == _wire.PIPELINE_ERROR:
                    self._calls.refused(rid, error)
                    continue
                self._on_dispatch(msg_id, payload)
            except BaseException:
                if index + 1 < len(frames):
                    self._keep_unrun(frames[index + 1 :])
                raise

    def _dispatch_frame(self, block: bool) -> bool:
        """Read and run one callback frame; False when none is pending (non-blocking)."""
        left = self._take_unrun()
        if left:  # callbacks read by an earlier dispatch that a raising callback cut short
            if len(left) > 1:
                self._keep_unrun(left[1:])
            self._run_frames(left[:1])
            return True
        sock = self._dispatch
        try:
            if not block:
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    return False
            frame = _read_response(sock, self._max_frame)
        except (OSError, ConnectionError, ValueError, _wire.FrameError) as exc:
            if self._finalized:
                return False
            if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return False
            self._dead = True
            raise Library(f"lost the dispatch connection to the executive: {exc}") from None
        _service, msg_id, rid, error, payload = frame
        if msg_id == _wire.PIPELINE_ERROR:
            self._calls.refused(rid, error)
        else:
            self._on_dispatch(msg_id, payload)
        return True

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        """Decode one callback message and call the user's callback (services override this)."""
        raise NotImplementedError(f"{type(self).__name__} does not handle callback {msg_id}")

    # -- life cycle --------------------------------------------------------------

    def finalize(self, timeout: float = FINALIZE_TIMEOUT) -> None:
        """Close the handle; every later call raises BadHandle.

        First waits, at most ``timeout`` seconds, for the answers to pipelined requests; after
        closing, raises the first error one of them carried (an earlier request's kept error
        included), or :class:`Timeout` when some were still unanswered.
        """
        if self._finalized:
            raise BadHandle("the handle was already finalized")
        error: AisError | None = None
        calls = self.__dict__.get("_calls")  # (none in a handle a test builds without a socket)
        if calls is not None:
            if not self._dead:
                try:  # concurrent calls of other threads go on reading meanwhile: their answers are filed
                    calls.drain(timeout)
                except AisError as exc:  # Timeout, or Library: the executive is gone with them
                    error = exc
            kept = calls.take_deferred()  # the error an answer carried comes before a Timeout
            if kept is not None:
                error = kept
        self._finalized = True
        self._close_sockets()
        if calls is not None:
            calls.wake()
        if error is not None:
            raise error

    def __enter__(self):
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._finalized:
            return
        if exc_type is None:
            self.finalize()
            return
        with contextlib.suppress(AisError):  # the exception leaving the block wins
            self.finalize()
