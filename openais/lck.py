"""LCK — distributed locks (SA Forum LCK B.03.01): the library and its IPC messages.

::

    from openais import lck

    with lck.initialize() as h:
        res = h.resource_open("safLckResource=accounts", lck.RESOURCE_CREATE, timeout=5.0)
        with res.lock(lck.LockMode.EX, timeout=10.0) as lock:
            if lock.status == lck.LockStatus.GRANTED:
                ...                               # exclusive, cluster-wide
        res.close()

The executives keep one lock table, replicated on every node and changed only
in agreed order (see ``docs/services-lck.md``).  A handle may be used from
several threads at once: blocking calls wait for their own answer only, so a
thread blocked in ``lock()`` does not delay another thread's ``unlock()``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any

from openais import _common
from openais._client import DISPATCH_ALL, Handle
from openais._objects import ObjectHandle
from openais.errors import (
    BadFlags,
    Init,
    InvalidParam,
    Library,
    NotExist,
    SaAisError,
    Timeout,
    Version,
)
from openais.message import I64, U8, U32, U64, Message, Optional, Str, Tail

SERVICE_ID = 5
VERSION = ("B", 3, 1)
#: Longest resource name, in bytes of UTF-8.
MAX_NAME = 256
#: Locks and queued requests, cluster-wide.
MAX_NUM_LOCKS = 65536
#: Resource open flag.
RESOURCE_CREATE = 0x1
#: Lock flags.
LOCK_NO_QUEUE = 0x1
LOCK_ORPHAN = 0x2
#: Options reported by ``option_check``.
OPT_ORPHAN_LOCKS = 0x1
OPT_DEADLOCK_DETECTION = 0x2
#: ``timeout_ns`` on the wire meaning "no timeout".
NO_TIMEOUT = -1


class LockMode(enum.IntEnum):
    """SaLckLockModeT."""

    PR = 1
    EX = 2


class LockStatus(enum.IntEnum):
    """SaLckLockStatusT."""

    GRANTED = 1
    DEADLOCK = 2
    NOT_QUEUED = 3
    ORPHANED = 4
    NO_MORE = 5
    DUPLICATE_EX = 6


class LockFlags(enum.IntFlag):
    """SaLckLockFlagsT."""

    NO_QUEUE = LOCK_NO_QUEUE
    ORPHAN = LOCK_ORPHAN


class LckOptions(enum.IntFlag):
    """SaLckOptionsT."""

    ORPHAN_LOCKS = OPT_ORPHAN_LOCKS
    DEADLOCK_DETECTION = OPT_DEADLOCK_DETECTION


class LimitId(enum.IntEnum):
    """SaLckLimitIdT."""

    MAX_NUM_LOCKS = 1


# -- IPC messages -------------------------------------------------------------------------------------


class Request(enum.IntEnum):
    """Library request message ids."""

    RESOURCE_OPEN = 0  #: OpenRequest -> OpenAnswer (async: empty, then the RESOURCE_OPEN callback)
    RESOURCE_CLOSE = 1  #: HandleRequest -> empty
    LOCK = 2  #: LockRequest -> LockAnswer (async: lock id at once, status by LOCK_GRANT)
    UNLOCK = 3  #: UnlockRequest -> empty (async: at once, then RESOURCE_UNLOCK)
    PURGE = 4  #: HandleRequest -> empty
    DUMP = 5  #: empty -> DumpAnswer (the lock table as JSON, for openais-lcktool)


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    RESOURCE_OPEN = 0
    LOCK_GRANT = 1
    LOCK_WAITER = 2
    RESOURCE_UNLOCK = 3


class OpenRequest(Message):
    """Open ``name``; ``invocation`` present for resource_open_async."""

    flags = U32()
    timeout_ns = I64()
    invocation = Optional(U64())
    name = Str(max_len=MAX_NAME, min_len=1)


class OpenAnswer(Message):
    """The executive's handle of the opened Resource."""

    res_handle = U64()


class HandleRequest(Message):
    """A request naming one Resource (close, purge)."""

    res_handle = U64()


class LockRequest(Message):
    """A lock request; ``invocation`` present for lock_async (then no timeout)."""

    res_handle = U64()
    mode = U8()
    flags = U32()
    waiter_signal = U64()
    timeout_ns = I64()
    invocation = Optional(U64())


class LockAnswer(Message):
    """The lock id, and the status (0 while an async request is undecided)."""

    lock_id = U64()
    status = U8()


class UnlockRequest(Message):
    """Unlock (or withdraw) ``lock_id``; ``invocation`` present for unlock_async."""

    res_handle = U64()
    lock_id = U64()
    invocation = Optional(U64())


class DumpRequest(Message):
    """Ask for the lock table: at most ``limit`` resources (by name), those starting with ``prefix``."""

    limit = U32()
    prefix = Str(max_len=MAX_NAME)


class DumpAnswer(Message):
    """The lock table as UTF-8 JSON."""

    data = Tail(max_len=1 << 20)


class OpenCallback(Message):
    """Answer to resource_open_async."""

    invocation = U64()
    res_handle = U64()
    error = U32()
    name = Str(max_len=MAX_NAME)


class GrantCallback(Message):
    """Answer to lock_async (status 0 when error is not OK)."""

    invocation = U64()
    lock_id = U64()
    status = U8()
    error = U32()


class WaiterCallback(Message):
    """A request waits for the lock ``lock_id`` this handle holds."""

    waiter_signal = U64()
    lock_id = U64()
    mode_held = U8()
    mode_requested = U8()


class UnlockCallback(Message):
    """Answer to unlock_async."""

    invocation = U64()
    error = U32()


#: The fixed layout of :class:`LockAnswer` (the blocking ``lock()`` decodes it with one struct call).
_LOCK_ANSWER = LockAnswer.fixed
_STATUS = {int(s): s for s in LockStatus}
_GRANTED = int(LockStatus.GRANTED)
#: :class:`LockRequest` and :class:`UnlockRequest` without an invocation (the last byte, 0, says it is
#: absent): the synchronous ``lock()`` and ``unlock()`` pack them, and the executive unpacks them, with
#: one struct call each (tests/test_lck_hotpath.py checks they agree with the messages).
SYNC_LOCK_REQUEST = struct.Struct("!QBIQqB")
SYNC_UNLOCK_REQUEST = struct.Struct("!QQB")
_LOCK_REQUEST, _UNLOCK_REQUEST = SYNC_LOCK_REQUEST, SYNC_UNLOCK_REQUEST
_REQ_LOCK = int(Request.LOCK)
_REQ_UNLOCK = int(Request.UNLOCK)
_EX_MODE, _PR_MODE = LockMode.EX, LockMode.PR


# -- validation ---------------------------------------------------------------------------------------


def _name(name: object) -> str:
    return _common.check_name(name, "resource name", MAX_NAME)


def _timeout_ns(timeout: object) -> int:
    """Nanoseconds, NO_TIMEOUT for None or longer than SaTimeT can say; Timeout for 0 (nothing is sent)."""
    return _common.timeout_ns(timeout, NO_TIMEOUT)


def _mode(mode: object) -> LockMode:
    if mode is LockMode.EX or mode is LockMode.PR:  # the usual argument: nothing to convert
        return mode  # type: ignore[return-value]
    if isinstance(mode, bool) or not isinstance(mode, int) or mode not in (1, 2):
        raise InvalidParam(f"lock mode must be LockMode.PR or LockMode.EX, not {mode!r}")
    return LockMode(mode)


def _lock_flags(flags: object) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise InvalidParam(f"lock flags must be an int, not {flags!r}")
    if flags & ~(LOCK_NO_QUEUE | LOCK_ORPHAN) or flags < 0:
        raise BadFlags(f"lock flags {flags:#x} have bits other than LOCK_NO_QUEUE and LOCK_ORPHAN")
    return int(flags)


def _open_flags(flags: object) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise InvalidParam(f"open flags must be an int, not {flags!r}")
    if flags & ~RESOURCE_CREATE or flags < 0:
        raise BadFlags(f"open flags {flags:#x} have bits other than RESOURCE_CREATE")
    return int(flags)


def _check_version(version: object) -> tuple[str, int, int]:
    return _common.check_version(version, "LCK", (1, 2, 3), str(VERSION))


# -- objects ------------------------------------------------------------------------------------------


class Lock:
    """A lock (or lock request) taken through a :class:`Resource`."""

    def __init__(self, resource: Resource, lock_id: int, mode: LockMode, flags: int,
                 status: LockStatus | None) -> None:
        self.resource = resource
        self.lock_id = lock_id
        self.mode = mode
        self.flags = flags
        self.status = status
        self._released = False

    @property
    def held(self) -> bool:
        """True while GRANTED and not unlocked, its resource open and its handle alive."""
        return self.status == LockStatus.GRANTED and not self._released and not self.resource.closed

    def _check_unlockable(self) -> None:
        self.resource._check()
        if self._released or (self.status is not None and self.status != LockStatus.GRANTED):
            raise NotExist(f"lock {self.lock_id} is neither held nor pending")

    def unlock(self, timeout: float | None = None) -> None:
        """Release the lock (or withdraw the pending request); NotExist when there is nothing to unlock."""
        resource = self.resource
        status = self.status
        if self._released or resource._closed or resource.handle._finalized or (
                status is not LockStatus.GRANTED and status is not None):
            self._check_unlockable()
        if timeout is not None:
            _timeout_ns(timeout)  # checked (InvalidParam, Timeout for 0); the answer waits as long
        try:
            resource.handle._call(_REQ_UNLOCK, _UNLOCK_REQUEST.pack(resource.object_id, self.lock_id, 0),
                                  timeout=timeout)
        except (NotExist, Timeout):  # Timeout: it was sent, the executive releases it all the same
            self._forget()
            raise
        self._forget()

    def _forget(self) -> None:
        """Unlocked (or its request withdrawn): nothing of it is held any more."""
        self._released = True
        self.resource._locks.pop(self.lock_id, None)

    def unlock_async(self, invocation: int) -> None:
        """Release (or withdraw) in the background; ``resource_unlock(invocation, error)`` answers."""
        handle = self.resource.handle
        if handle._callbacks.get("resource_unlock") is None:
            self.resource._check()
            raise Init("unlock_async needs a resource_unlock callback")
        _common.check_invocation(invocation)
        self._check_unlockable()
        handle._call(Request.UNLOCK, UnlockRequest.pack(self.resource.object_id, self.lock_id, invocation))
        self._forget()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.unlock()

    def __repr__(self) -> str:
        status = None if self.status is None else self.status.name
        return f"<Lock {self.lock_id} {self.mode.name} {status} on {self.resource.name!r}>"


class Resource(ObjectHandle):
    """An open lock resource of a :class:`LckHandle`."""

    def __init__(self, handle: LckHandle, res_handle: int, name: str) -> None:
        super().__init__(handle, res_handle)
        self.handle = handle
        self.name = name
        self._locks: dict[int, Lock] = {}

    def _close(self) -> None:
        try:
            self.handle._call(Request.RESOURCE_CLOSE, HandleRequest.pack(self.object_id))
        finally:
            for lock in self._locks.values():
                lock._released = True
            self._locks.clear()

    def lock(self, mode: LockMode, flags: int = 0, waiter_signal: int = 0, timeout: float | None = None) -> Lock:
        """Ask for a lock and wait for the decision; the returned Lock's ``status`` says what it was."""
        if self._closed or self.handle._finalized:
            self._check()
        if (mode is _EX_MODE or mode is _PR_MODE) and timeout is None and type(flags) is int and flags == 0 \
                and type(waiter_signal) is int and waiter_signal == 0:  # the usual call: nothing to check
            wait = NO_TIMEOUT
        else:
            mode = _mode(mode)
            flags = _lock_flags(flags)
            _common.check_u64(waiter_signal, "waiter_signal")
            wait = _timeout_ns(timeout)
        payload = _LOCK_REQUEST.pack(self.object_id, mode, flags, waiter_signal, wait, 0)
        try:
            lock_id, status = _LOCK_ANSWER.unpack(self.handle._call(_REQ_LOCK, payload))
            lock = Lock(self, lock_id, mode, flags, _STATUS[status])
        except (struct.error, KeyError):
            raise Library("malformed answer to a lock request") from None
        if status == _GRANTED:
            self._locks[lock_id] = lock
        return lock

    def lock_async(self, invocation: int, mode: LockMode, flags: int = 0, waiter_signal: int = 0) -> Lock:
        """Ask for a lock; ``lock_grant(invocation, lock_status, error)`` answers (status None until then)."""
        self._check()
        if self.handle._callbacks.get("lock_grant") is None:
            raise Init("lock_async needs a lock_grant callback")
        _common.check_invocation(invocation)
        mode = _mode(mode)
        flags = _lock_flags(flags)
        _common.check_u64(waiter_signal, "waiter_signal")
        payload = LockRequest.pack(self.object_id, mode, flags, waiter_signal, NO_TIMEOUT, invocation)
        answer = LockAnswer.decode(self.handle._call(Request.LOCK, payload))
        lock = Lock(self, answer.lock_id, mode, flags, None)
        self._locks[lock.lock_id] = lock
        self.handle._register_async(lock)
        return lock

    def lock_purge(self) -> None:
        """Remove every orphan lock of this resource, cluster-wide (none is not an error)."""
        self._check()
        self.handle._call(Request.PURGE, HandleRequest.pack(self.object_id))

    def __repr__(self) -> str:
        return f"<Resource {self.name!r} handle={self.object_id}{' closed' if self.closed else ''}>"


# -- the handle ---------------------------------------------------------------------------------------


class LckHandle(Handle):
    """An LCK library handle (``saLckInitialize``); calls from several threads run concurrently."""

    #: A call waits while the executive lives (a lock request waits as long as it is queued).
    _call_wait = None

    def __init__(self, callbacks: dict[str, Callable[..., Any] | None], version: tuple[str, int, int],
                 path: str | None = None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self.version = VERSION
        self._requested_version = version
        self._callbacks = callbacks
        self._async_locks: dict[int, Lock] = {}
        self._early: dict[int, tuple[int, int]] = {}

    # -- library calls ----------------------------------------------------------------------------

    def option_check(self) -> LckOptions:
        """The optional features this implementation has: orphan locks and deadlock detection."""
        self._check()
        return LckOptions.ORPHAN_LOCKS | LckOptions.DEADLOCK_DETECTION

    def limit_get(self, limit_id: LimitId) -> int:
        """The value of an implementation limit (MAX_NUM_LOCKS: locks and requests cluster-wide)."""
        self._check()
        if self._requested_version[1] < 3:
            raise Version("limit_get needs version B.03")
        if isinstance(limit_id, bool) or limit_id != LimitId.MAX_NUM_LOCKS:
            raise InvalidParam(f"unknown limit id {limit_id!r}")
        return MAX_NUM_LOCKS

    def resource_open(self, name: str, flags: int = 0, timeout: float | None = None) -> Resource:
        """Open (with RESOURCE_CREATE: create if needed) the resource ``name``."""
        self._check()
        flags = _open_flags(flags)
        name = _name(name)
        wait = _timeout_ns(timeout)
        answer = OpenAnswer.decode(self._call(Request.RESOURCE_OPEN, OpenRequest.pack(flags, wait, None, name)))
        return Resource(self, answer.res_handle, name)

    def resource_open_async(self, invocation: int, name: str, flags: int = 0) -> None:
        """Open in the background; ``resource_open(invocation, resource, error)`` answers."""
        self._check()
        if self._callbacks.get("resource_open") is None:
            raise Init("resource_open_async needs a resource_open callback")
        _common.check_invocation(invocation)
        flags = _open_flags(flags)
        name = _name(name)
        self._call(Request.RESOURCE_OPEN, OpenRequest.pack(flags, NO_TIMEOUT, invocation, name))

    def dump(self, limit: int = 1000, prefix: str = "") -> dict:
        """The cluster's lock table as this node's executive holds it (operator tools; not in the AIS API)."""
        import json

        payload = DumpRequest.pack(limit, prefix)
        return json.loads(DumpAnswer.decode(self._call(Request.DUMP, payload, timeout=30.0)).data)

    # -- callbacks --------------------------------------------------------------------------------

    def _register_async(self, lock: Lock) -> None:
        early = self._early.pop(lock.lock_id, None)
        if early is None:
            self._async_locks[lock.lock_id] = lock
        else:
            status, error = early
            lock.status = LockStatus(status) if error == SaAisError.OK and status else None

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        """Decode one callback and run the user's function."""
        cbs = self._callbacks
        if msg_id == Callback.LOCK_GRANT:
            msg = GrantCallback.decode(payload)
            error = SaAisError(msg.error)
            status = LockStatus(msg.status) if error == SaAisError.OK and msg.status else None
            lock = self._async_locks.pop(msg.lock_id, None)
            if lock is None:
                self._early[msg.lock_id] = (msg.status, msg.error)
            else:
                lock.status = status
                if status != LockStatus.GRANTED:
                    lock.resource._locks.pop(lock.lock_id, None)
            fn = cbs.get("lock_grant")
            if fn is not None:
                fn(msg.invocation, status, error)
        elif msg_id == Callback.LOCK_WAITER:
            msg = WaiterCallback.decode(payload)
            fn = cbs.get("lock_waiter")
            if fn is not None:
                fn(msg.waiter_signal, msg.lock_id, LockMode(msg.mode_held), LockMode(msg.mode_requested))
        elif msg_id == Callback.RESOURCE_UNLOCK:
            msg = UnlockCallback.decode(payload)
            fn = cbs.get("resource_unlock")
            if fn is not None:
                fn(msg.invocation, SaAisError(msg.error))
        elif msg_id == Callback.RESOURCE_OPEN:
            msg = OpenCallback.decode(payload)
            error = SaAisError(msg.error)
            resource = Resource(self, msg.res_handle, msg.name) if error == SaAisError.OK else None
            fn = cbs.get("resource_open")
            if fn is not None:
                fn(msg.invocation, resource, error)

    def dispatch(self, flags: int = DISPATCH_ALL) -> None:
        """Run pending callbacks: DISPATCH_ONE, DISPATCH_ALL or DISPATCH_BLOCKING (until finalize)."""
        super().dispatch(flags)

    def finalize(self) -> None:
        """Close the handle: every Resource and Lock of it is gone; later calls raise BadHandle."""
        super().finalize()
        for child in list(getattr(self, "_object_handles", {}).values()):
            child._forget()


def initialize(resource_open: Callable[..., Any] | None = None, lock_grant: Callable[..., Any] | None = None,
               lock_waiter: Callable[..., Any] | None = None, resource_unlock: Callable[..., Any] | None = None,
               *, version: tuple[str, int, int] = VERSION, path: str | None = None) -> LckHandle:
    """Connect to the local executive's LCK service (``saLckInitialize``)."""
    version = _check_version(version)
    callbacks = {"resource_open": resource_open, "lock_grant": lock_grant, "lock_waiter": lock_waiter,
                 "resource_unlock": resource_unlock}
    return LckHandle(callbacks, version, path=path)


__all__ = [
    "LOCK_NO_QUEUE", "LOCK_ORPHAN", "MAX_NUM_LOCKS", "OPT_DEADLOCK_DETECTION", "OPT_ORPHAN_LOCKS",
    "RESOURCE_CREATE", "SERVICE_ID", "VERSION", "LckHandle", "LckOptions", "LimitId", "Lock", "LockFlags",
    "LockMode", "LockStatus", "Resource", "initialize",
]
