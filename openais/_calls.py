"""Concurrent synchronous calls on one library handle: each waits for its own answer only.

Several threads may call on one handle at once.  Every request carries a
request id; one thread at a time *reads* the response socket (it holds the
reading role) and files every answer that is not its own for the thread
waiting for it, then, once its own answer is in, leaves the role to a waiting
thread.  A call without a deadline that finds nobody reading (the usual case:
one thread per handle) takes the role at once: it sends, then blocks in one
``recv`` for its answer, with no table, condition or ``select`` on the way.

Requests may also be *posted* (sent without waiting): at most :attr:`Calls.WINDOW`
requests and :attr:`Calls.WINDOW_BYTES` unanswered, then ``post`` raises
TryAgain; the first error the executive answers to a posted request is kept
(:attr:`Calls.deferred`) and raised by :meth:`Calls.raise_deferred`, once.

Reads wait in the kernel (SO_RCVTIMEO, set only when the value changes) at
most :attr:`Calls.SLICE` seconds at a time, so a reader notices ``finalize``
(the handle's ``finalize`` also shuts the socket down, which ends a read at
once) and the end of its deadline.  The handle calls :meth:`Calls.wake` when it
is finalized, so that threads waiting for a reader notice it too.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from openais import _wire
from openais.errors import AisError, BadHandle, Library, SaAisError, Timeout, TryAgain

_REQUEST_HEAD = _wire.REQUEST.pack
_REQUEST_SIZE = _wire.REQUEST.size
_RESPONSE = _wire.RESPONSE
_HEADER = _wire.RESPONSE.size
_OK = int(SaAisError.OK)
#: ``struct timeval`` for SO_RCVTIMEO.
_TIMEVAL = struct.Struct("@ll")
#: Bytes asked of one read of the response socket.
_READ = 1 << 16

#: An answer: (SaAisError code, payload).
Answer = tuple[int, bytes]


class Calls:
    """The call layer of one handle: ``call`` (wait for its own answer), ``post`` (windowed, errors deferred).

    ``handle`` gives ``_response`` (the response socket), ``_finalized``, ``_dead``, ``_check()`` and
    ``_max_frame``; ``service_id`` goes into every request header; ``posted`` names a posted request
    in the text of a deferred error.
    """

    #: Longest single wait in the kernel (seconds) before looking at finalize and the deadline again.
    SLICE = 0.25
    #: Seconds ``post`` waits for room in the window before TryAgain.
    ROOM_WAIT = 0.05
    #: Posted requests unanswered at most, and their bytes.
    WINDOW = 64
    WINDOW_BYTES = 2 << 20
    #: Past half the window, ``post`` looks for answers once per this many posts (one recv for several).
    POLL_EVERY = 8

    def __init__(self, handle: Any, service_id: int, posted: str = "posted request") -> None:
        self._h = handle
        self._service = service_id
        self._posted_what = posted
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  #: guards the tables below; ``with self._lock`` costs no Python call
        self._cv = threading.Condition(self._lock)
        self._sleepers = 0  #: threads waiting in ``_cv`` (told when answers are filed or the reader leaves)
        self._answers: dict[int, Answer] = {}  #: answers filed for waiting threads
        self._waiting: set[int] = set()  #: request ids of calls that wait for a reader to file their answer
        self._posted: dict[int, int] = {}  #: request id -> frame bytes, of posted requests unanswered
        self._posted_bytes = 0
        self.deferred: AisError | None = None
        self._reading = False
        self._kernel_wait: float | None = None  #: the SO_RCVTIMEO this layer last set on the socket
        self._buf = bytearray()  #: bytes read and not yet split (only the reader touches it)
        self._ids = itertools.count(1)
        self._posts = 0
        handle._response.settimeout(None)  # blocking: reads wait in the kernel (SO_RCVTIMEO)

    def _next_id(self) -> int:
        rid = next(self._ids) & 0xFFFFFFFF
        return rid or next(self._ids) & 0xFFFFFFFF

    # -- calls ------------------------------------------------------------------------------------

    def call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        """Send one request and wait ``timeout`` seconds (None: while the executive lives) for its answer."""
        h = self._h
        if h._finalized or h._dead:
            h._check()
        rid = next(self._ids) & 0xFFFFFFFF or self._next_id()
        frame = _REQUEST_HEAD(_REQUEST_SIZE + len(payload), self._service, msg_id, rid) + payload
        lock = self._lock
        if timeout is None:
            lock.acquire()
            if not self._reading:  # the fast path: this thread reads, for its own answer
                self._reading = True
                lock.release()
                try:
                    self._sendall(frame)
                    found = None if self._buf else self._read_once(self.SLICE, rid, True)  # usually the answer
                    error, answer = found or self._read_until(rid, None)  # type: ignore[misc]
                finally:
                    lock.acquire()
                    self._reading = False
                    if self._sleepers:  # somebody waits: one of them reads from now on
                        self._cv.notify_all()
                    lock.release()
                if error != _OK:
                    raise AisError.from_code(error)
                return answer
            lock.release()
        with lock:
            self._waiting.add(rid)
        try:
            self._sendall(frame)
            error, answer = self._wait_answer(rid, timeout)
        finally:
            with lock:
                self._waiting.discard(rid)
                self._answers.pop(rid, None)
        if error != _OK:
            raise AisError.from_code(error)
        return answer

    def _wait_answer(self, rid: int, timeout: float | None) -> Answer:
        """The answer to ``rid``: filed by another reader, or read by this thread once the role is free."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        answers = self._answers
        while True:
            with lock:
                while True:
                    found = answers.pop(rid, None)
                    if found is not None:
                        return found
                    left = self._left(deadline, timeout)
                    if not self._reading:
                        self._reading = True
                        break
                    self._sleep(left)
            try:
                found = self._read_until(rid, deadline)
            finally:
                self._leave()
            if found is not None:
                return found

    def _left(self, deadline: float | None, timeout: float | None = None) -> float | None:
        """Seconds left before ``deadline`` (None: no deadline); raise when the wait is over (lock held)."""
        h = self._h
        if h._finalized:
            raise BadHandle("the handle was finalized")
        if h._dead:
            raise Library("the connection to the executive is lost")
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"no answer from the executive within {timeout} s" if timeout is not None
                          else "no answer from the executive in time")
        return left

    def _sleep(self, left: float | None) -> None:
        """Wait (lock held) until the reader files answers or leaves the role, or a slice passed."""
        self._sleepers += 1
        try:
            self._cv.wait(self.SLICE if left is None else min(left, self.SLICE))
        finally:
            self._sleepers -= 1

    def _leave(self) -> None:
        """Give up the reading role; a waiting thread takes it over."""
        with self._lock:
            self._reading = False
            if self._sleepers:
                self._cv.notify_all()

    def wake(self) -> None:
        """Wake every thread waiting for a reader (the handle was finalized)."""
        with self._cv:
            self._cv.notify_all()

    # -- posted requests --------------------------------------------------------------------------

    def post(self, msg_id: int, payload: bytes) -> None:
        """Send one request without waiting for its answer (waits for room in the window, then TryAgain)."""
        self._h._check()
        self._posts += 1
        if len(self._posted) >= self.WINDOW // 2 and not self._posts % self.POLL_EVERY:  # answers in batches
            self._poll()
        if self.deferred is not None:
            self.raise_deferred()
        size = _REQUEST_SIZE + len(payload)

        def room() -> bool:
            return not self._posted or (len(self._posted) < self.WINDOW
                                        and self._posted_bytes + size <= self.WINDOW_BYTES)

        rid = self._next_id()
        with self._lock:
            fits = room()
            if fits:
                self._posted[rid] = size
                self._posted_bytes += size
        if not fits:
            try:
                self._wait_until(room, time.monotonic() + self.ROOM_WAIT)
            except Timeout:
                raise TryAgain("too many of this handle's asynchronous sends are unconfirmed") from None
            with self._lock:
                self._posted[rid] = size
                self._posted_bytes += size
        self._sendall(_REQUEST_HEAD(size, self._service, msg_id, rid) + payload)

    def _poll(self) -> None:
        """Take the answers already waiting on the socket, without blocking (unless another thread reads)."""
        with self._lock:
            if self._reading:
                return
            self._reading = True
        try:
            self._read_once(0.0, 0)
        finally:
            self._leave()

    def drain(self, timeout: float) -> None:
        """Wait until every posted request is answered."""
        if self._posted:
            self._wait_until(lambda: not self._posted, time.monotonic() + timeout)

    def raise_deferred(self) -> None:
        """Raise the error the executive answered to an earlier posted request, once."""
        with self._lock:
            error, self.deferred = self.deferred, None
        if error is not None:
            raise error

    def _wait_until(self, ready: Callable[[], bool], deadline: float | None) -> None:
        """Wait until ``ready()`` (checked with the lock held), reading for every caller when nobody else does."""
        while True:
            with self._lock:
                while True:
                    if ready():
                        return
                    left = self._left(deadline)
                    if not self._reading:
                        self._reading = True
                        break
                    self._sleep(left)
            try:
                self._read_once(self.SLICE if left is None else min(left, self.SLICE), 0)
            finally:
                self._leave()

    # -- the socket -------------------------------------------------------------------------------

    def _sendall(self, frame: bytes) -> None:
        with self._send_lock:
            h = self._h
            if h._finalized or h._dead:
                h._check()
            try:
                h._response.sendall(frame)
            except OSError as exc:
                raise self._lost(exc) from None

    def _lost(self, exc: Exception) -> AisError:
        if self._h._finalized:
            return BadHandle("the handle was finalized")
        self._h._dead = True
        return Library(f"lost the connection to the executive: {exc}")

    def _read_until(self, rid: int, deadline: float | None) -> Answer | None:
        """Read (reading role held) until the answer to ``rid`` is in; None once ``deadline`` passed."""
        h = self._h
        slice_ = self.SLICE
        while True:
            if self._buf:
                found = self._file(rid)
                if found is not None:
                    return found
            if h._finalized:
                raise BadHandle("the handle was finalized")
            if h._dead:
                raise Library("the connection to the executive is lost")
            if deadline is None:  # one blocking read, ended by the kernel after a slice (finalize, below)
                found = self._read_once(slice_, rid, True)
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
                found = self._read_once(wait if wait < slice_ else slice_, rid)
            if found is not None:
                return found

    def _read_once(self, wait: float, rid: int, blocking: bool = False) -> Answer | None:
        """One read, waiting up to ``wait`` s (0: only what is there); file the complete frames, return ``rid``'s.

        ``rid`` 0: no call of this thread waits (request ids are never 0).  ``blocking``: a call without
        deadline, one ``recv`` that the kernel ends after ``wait`` (SO_RCVTIMEO, set when it changes);
        otherwise ``select`` waits, then ``recv`` takes what is there.
        """
        sock = self._h._response
        try:
            if blocking:
                if self._kernel_wait != wait:
                    self._set_kernel_wait(sock, wait)
                chunk = sock.recv(_READ)
            elif wait <= 0:
                chunk = sock.recv(_READ, socket.MSG_DONTWAIT)
            else:
                if not select.select([sock], [], [], wait)[0]:
                    return None
                chunk = sock.recv(_READ, socket.MSG_DONTWAIT)
        except BlockingIOError:  # nothing there (EAGAIN: the kernel's timeout expired)
            return None
        except (OSError, ValueError) as exc:
            raise self._lost(OSError(str(exc))) from None
        if not chunk:
            raise self._lost(ConnectionError("the executive closed the connection"))
        buf = self._buf
        if not buf and len(chunk) >= _HEADER:  # the usual read: exactly the answer this thread waits for
            size, _service, _msg, frid, error = _RESPONSE.unpack_from(chunk)
            if frid == rid and size == len(chunk):
                return error, chunk[_HEADER:]
        buf += chunk
        return self._file(rid)

    def _set_kernel_wait(self, sock: socket.socket, wait: float) -> None:
        """Make a blocking read of ``sock`` end after ``wait`` seconds (SO_RCVTIMEO)."""
        whole = int(wait)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        _TIMEVAL.pack(whole, max(int((wait - whole) * 1e6), 0 if whole else 1)))
        self._kernel_wait = wait
        if hasattr(self._h, "_kernel_wait"):
            self._h._kernel_wait = None  # the shared client's own cache of the option is stale

    def _file(self, rid: int) -> Answer | None:
        """Split the complete frames read so far: file the others' answers, settle posted requests, return ``rid``'s."""
        try:
            frames, used = _wire.split_responses(self._buf, self._h._max_frame)
        except _wire.FrameError as exc:
            raise self._lost(Library(f"malformed answer from the executive: {exc}")) from None
        del self._buf[:used]
        mine = None
        if frames:
            with self._lock:
                waiting, posted, answers = self._waiting, self._posted, self._answers
                for _s, _m, frid, error, answer in frames:
                    if frid == rid and mine is None:
                        mine = (error, answer)
                    elif frid in waiting:
                        answers[frid] = (error, answer)
                    elif frid in posted:
                        self._posted_bytes -= posted.pop(frid)
                        if error != _OK and self.deferred is None:
                            self.deferred = AisError.from_code(error, f"an earlier {self._posted_what} failed: "
                                                                      f"SA_AIS_ERR_{SaAisError(error).name}")
                    # else: the late answer of a call that gave up waiting: dropped
                if self._sleepers:
                    self._cv.notify_all()
        return mine
