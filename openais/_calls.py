"""The call layer of every library handle: calls, pipelined (posted) requests, deferred errors.

One mechanism for every service.  Several threads may call on one handle at once.  Every
request carries a request id; one thread at a time *reads* the response socket (it holds the
reading role) and files every answer that is not its own for the thread waiting for it, then,
once its own answer is in, leaves the role to a waiting thread.  A call that finds nobody
reading (the usual case: one thread per handle) takes the role at once: it sends, then blocks
in one ``recv`` for its answer, with no table, condition or ``select`` on the way.

Requests may also be *posted* (sent without waiting for their answers: CPG and EVS multicasts,
EVT ``publish(wait=False)``, MSG ``message_send_async``).  At most :data:`WINDOW` requests and
``window_bytes`` bytes are unanswered at once; a post that finds the window full reads the
answers already there, waits ``room_wait`` seconds for more, then raises TryAgain (nothing
sent).  The first error the executive answers to a posted request is kept (later ones are
counted with it) and raised once: by the next post or call (a call looks for waiting answers
first, and is then not sent), or by the handle's ``dispatch`` (the executive also tells of it
on the dispatch channel: :meth:`Calls.refused`), ``flush`` (:meth:`Calls.drain` first) or
``finalize``, which never drops it.

Reads wait in the kernel (SO_RCVTIMEO, set only when the value changes) at most
:attr:`Calls.SLICE` seconds at a time, so a reader notices ``finalize`` (the handle's
``finalize`` also shuts the socket down, which ends a read at once) and the end of its deadline;
sends wait at most their timeout (SO_SNDTIMEO, likewise), then raise Timeout and the connection
is given up (part of a frame may be in the socket).  The handle calls :meth:`Calls.wake` when it
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
#: ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO.
_TIMEVAL = struct.Struct("@ll")
#: Bytes asked of one read of the response socket.
_READ = 1 << 16

#: Posted requests a handle may have unanswered at once (then TryAgain).
WINDOW = 64
#: Their bytes, unless a service asks otherwise: small enough that the socket buffer always takes
#: them, so a post never blocks on a parked executive.
WINDOW_BYTES = 96 * 1024
#: Seconds a send may wait while the executive takes no data, unless the caller says otherwise.
SEND_WAIT = 30.0
#: Past this many unanswered, ``post`` looks for answers (every POLL_EVERY posts).
_HALF = WINDOW // 2

#: An answer: (SaAisError code, payload).
Answer = tuple[int, bytes]


def _code_name(code: int) -> str:
    try:
        return SaAisError(code).name
    except ValueError:
        return str(code)


def _timeval(seconds: float) -> bytes:
    """``seconds`` as a ``struct timeval`` that is never zero (zero means: wait forever)."""
    whole = int(seconds)
    return _TIMEVAL.pack(whole, max(int((seconds - whole) * 1e6), 0 if whole else 1))


class Calls:
    """The call layer of one handle: ``call`` (wait for its own answer), ``post`` (windowed, errors deferred).

    ``handle`` gives ``_response`` (the response socket), ``_finalized``, ``_dead``, ``_check()`` and
    ``_max_frame``; ``service_id`` goes into every request header; ``posted`` names a posted request
    in the text of a deferred error.
    """

    #: Longest single wait in the kernel (seconds) before looking at finalize and the deadline again.
    SLICE = 0.25
    #: Past half the window, ``post`` looks for answers once per this many posts (one recv for several).
    POLL_EVERY = 8

    def __init__(self, handle: Any, service_id: int, posted: str = "pipelined request") -> None:
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
        self._refusals: set[int] = set()  #: posted requests whose error the dispatch channel told already
        self.deferred: AisError | None = None  #: the first error of a posted request, not yet raised
        self._more = 0  #: posted requests that failed after the one ``deferred`` tells of
        self._reading = False
        self._kernel_wait: float | None = None  #: the SO_RCVTIMEO this layer last set on the socket
        self._send_wait: float | None = None  #: the SO_SNDTIMEO likewise
        self._buf = bytearray()  #: bytes read and not yet split (only the reader touches it)
        self._ids = itertools.count(1)
        self._posts = 0
        handle._response.settimeout(None)  # blocking: reads and sends wait in the kernel

    def _next_id(self) -> int:
        rid = next(self._ids) & 0xFFFFFFFF
        return rid or next(self._ids) & 0xFFFFFFFF

    # -- calls ------------------------------------------------------------------------------------

    def call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        """Send one request and wait ``timeout`` seconds (None: while the executive lives) for its answer.

        An error kept from a posted request is raised first (answers already waiting are read
        for it), and this request is then not sent.
        """
        h = self._h
        if h._finalized or h._dead:
            h._check()
        if self._posted or self.deferred is not None:
            self._poll()
            self.raise_deferred()
        rid = next(self._ids) & 0xFFFFFFFF or self._next_id()
        frame = _REQUEST_HEAD(_REQUEST_SIZE + len(payload), self._service, msg_id, rid) + payload
        lock = self._lock
        lock.acquire()
        if not self._reading:  # the fast path: this thread reads, for its own answer
            self._reading = True
            lock.release()
            try:
                found = self._call_reading(frame, rid, timeout)
            finally:
                lock.acquire()
                self._reading = False
                if self._sleepers:  # somebody waits: one of them reads from now on
                    self._cv.notify_all()
                lock.release()
        else:
            self._waiting.add(rid)
            lock.release()
            try:
                self._sendall(frame, SEND_WAIT if timeout is None else max(timeout, 0.001))
                found = self._wait_answer(rid, timeout)
            finally:
                with lock:
                    self._waiting.discard(rid)
                    self._answers.pop(rid, None)
        error, answer = found
        if error != _OK:
            raise AisError.from_code(error)
        return answer

    def _call_reading(self, frame: bytes, rid: int, timeout: float | None) -> Answer:
        """Send ``frame`` and read (reading role held) until its answer is in; Timeout after ``timeout``."""
        if timeout is None:
            self._sendall(frame, SEND_WAIT)
            found = None if self._buf else self._read_once(self.SLICE, rid, True)  # usually the answer
            return found or self._read_until(rid, None)  # type: ignore[return-value]
        timeout = max(timeout, 0.001)
        deadline = time.monotonic() + timeout
        self._sendall(frame, timeout)
        found = None if self._buf else self._read_once(timeout if timeout < self.SLICE else self.SLICE, rid, True)
        found = found or self._read_until(rid, deadline)
        if found is None:  # the answer may still come: it is dropped by request id
            raise Timeout(f"no answer from the executive within {timeout} s")
        return found

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

    def send_oneway(self, msg_id: int, payload: bytes) -> None:
        """Send a request the executive does not answer (in turn with the others on the response socket)."""
        h = self._h
        if h._finalized or h._dead:
            h._check()
        self._sendall(_REQUEST_HEAD(_REQUEST_SIZE + len(payload), self._service, msg_id, self._next_id()) + payload,
                      SEND_WAIT)

    # -- posted requests --------------------------------------------------------------------------

    def post(self, msg_id: int, payload: bytes, timeout: float | None = None, room_wait: float = 0.0,
             window_bytes: int = WINDOW_BYTES) -> None:
        """Send one request without waiting for its answer.

        Raises the kept error of an earlier posted request (this one is then not sent); TryAgain
        when the window (:data:`WINDOW` requests, ``window_bytes`` bytes) is full and stays so
        ``room_wait`` seconds (answers are read meanwhile; 0: only those already there);
        ``timeout``: seconds the send may wait while the executive takes no data (default
        :data:`SEND_WAIT`; then Timeout, and the connection is given up).
        """
        h = self._h
        if h._finalized or h._dead:
            h._check()
        posted = self._posted
        self._posts += 1
        if len(posted) >= _HALF and not self._posts % self.POLL_EVERY:  # answers in batches
            self._poll()
        if self.deferred is not None:
            self.raise_deferred()
        size = _REQUEST_SIZE + len(payload)
        rid = next(self._ids) & 0xFFFFFFFF or self._next_id()
        with self._lock:
            fits = not posted or (len(posted) < WINDOW and self._posted_bytes + size <= window_bytes)
            if fits:
                posted[rid] = size
                self._posted_bytes += size
        if not fits:
            self._make_room(rid, size, room_wait, window_bytes)
        self._sendall(_REQUEST_HEAD(size, self._service, msg_id, rid) + payload,
                      SEND_WAIT if timeout is None else max(timeout, 0.001))

    def _make_room(self, rid: int, size: int, room_wait: float, window_bytes: int) -> None:
        """Read answers until the window takes ``size`` more bytes, then enter ``rid``; TryAgain after ``room_wait``."""
        posted = self._posted

        def fits() -> bool:
            return not posted or (len(posted) < WINDOW and self._posted_bytes + size <= window_bytes)

        self._poll()
        deadline = time.monotonic() + room_wait
        while True:
            with self._lock:
                if fits():
                    posted[rid] = size
                    self._posted_bytes += size
                    break
            if room_wait <= 0:
                raise TryAgain("the executive has not yet taken this handle's earlier requests")
            try:
                self._wait_until(fits, deadline)
            except Timeout:
                raise TryAgain("the executive has not yet taken this handle's earlier requests") from None
        if self.deferred is not None:  # an answer read while waiting for room refused an earlier request
            self._forget_posted(rid)
            self.raise_deferred()

    def _forget_posted(self, rid: int) -> None:
        with self._lock:
            size = self._posted.pop(rid, None)
            if size is not None:
                self._posted_bytes -= size

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
        """Wait until every posted request is answered; Timeout (telling how many are not) after ``timeout``."""
        if not self._posted:
            return
        try:
            self._wait_until(lambda: not self._posted, time.monotonic() + max(timeout, 0.0))
        except Timeout:
            raise Timeout(f"{len(self._posted)} pipelined requests still unanswered after {timeout} s") from None

    def refused(self, rid: int, error: int) -> None:
        """The dispatch channel told of a posted request's error (its answer itself comes later)."""
        with self._lock:
            if rid in self._posted and error != _OK and rid not in self._refusals:
                self._refusals.add(rid)
                self._keep(error)

    def _keep(self, error: int) -> None:
        """Keep a posted request's error (lock held): the first one, and a count of those after it."""
        if self.deferred is None:
            self.deferred = AisError.from_code(error, f"an earlier {self._posted_what} failed: "
                                                      f"SA_AIS_ERR_{_code_name(error)}")
        else:
            self._more += 1

    def take_deferred(self) -> AisError | None:
        """The kept error (once, and then None), telling how many more posted requests failed after it."""
        with self._lock:
            error, self.deferred = self.deferred, None
            more, self._more = self._more, 0
        if error is not None and more:
            error = AisError.from_code(int(error.code), f"{error} ({more} more pipelined requests failed after it)")
        return error

    def raise_deferred(self) -> None:
        """Raise the error the executive answered to an earlier posted request, once."""
        error = self.take_deferred()
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

    def _sendall(self, frame: bytes, wait: float) -> None:
        """Send ``frame`` whole, waiting at most ``wait`` s while the executive takes no data."""
        with self._send_lock:
            h = self._h
            if h._finalized or h._dead:
                h._check()
            sock = h._response
            try:
                if wait != self._send_wait:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(wait))
                    self._send_wait = wait
                sock.sendall(frame)
            except BlockingIOError:  # the kernel's timeout (EAGAIN): part of the frame may be in the socket
                h._dead = True
                raise Timeout(f"the executive took no data within {wait} s") from None
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

        ``rid`` 0: no call of this thread waits (request ids are never 0).  ``blocking``: one
        ``recv`` that the kernel ends after ``wait`` (SO_RCVTIMEO, set when it changes);
        otherwise ``select`` waits, then ``recv`` takes what is there.
        """
        sock = self._h._response
        try:
            if blocking:
                if self._kernel_wait != wait:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(wait))
                    self._kernel_wait = wait
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
                        if error != _OK:
                            if frid in self._refusals:
                                self._refusals.discard(frid)  # kept already, when the dispatch channel told
                            else:
                                self._keep(error)
                    # else: the late answer of a call that gave up waiting: dropped
                if self._sleepers:
                    self._cv.notify_all()
        return mine
