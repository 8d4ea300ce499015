"""Limits for all IPC connections together: one memory budget, frame deadlines, per-uid and descriptor caps.

:class:`IpcLimits` holds the numbers (``aisexec { ipc_* }`` in openais.conf);
:class:`MemoryBudget` accounts every byte the server holds for its clients
(partial request frames, queued answers and callbacks) and decides, at the
budget, whom to stop reading from and whom to drop; :class:`RateLimitedLog`
keeps a refusal storm to one line per interval; :func:`release_memory` gives
freed heap back to the kernel (glibc ``malloc_trim``).

The policy at the budget ``B`` (root's connections may use ``B``; everybody
else ``B - B/8``, the last eighth is root's reserve):

- below its level a reader may read what is left of the level; at the level
  only what is left of its share (``B / connections``), and a connection
  holding its share is not read from until the total falls below ``7/8`` of
  the level (back-pressure: its requests wait in the kernel, then in the
  client), so that all connections together stay within the budget whatever
  their number;
- before a write that would pass the level, the connection with the most
  queued output (the slowest reader) is dropped if that output exceeds its
  share, and so on until the write fits or nobody is over their share;
- a connection's own output is capped at ``max_queued_bytes`` regardless.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.event

#: Defaults, documented in docs/configuration.md (``aisexec { }``).
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024
DEFAULT_FRAME_TIMEOUT_MS = 10_000
DEFAULT_MAX_CONNECTIONS_PER_UID = 512
DEFAULT_MAX_QUEUED_BYTES = 32 * 1024 * 1024
#: Descriptors kept free for everything that is not a library connection (ring sockets, log files, services).
FD_MARGIN = 64
#: Of the descriptors library connections may use, this many are kept for root's connections.
ROOT_FD_RESERVE = 16
#: Seconds between two log lines of one rate-limited kind.
LOG_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class IpcLimits:
    """The IPC server's limits (see the module docstring for what happens at each)."""

    memory_budget: int = DEFAULT_MEMORY_BUDGET
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT_MS / 1000.0
    max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES

    @classmethod
    def from_config(cls, config: Any) -> IpcLimits:
        """The ``aisexec { ipc_memory_budget, ipc_frame_timeout, ipc_max_connections_per_uid }`` values."""
        section = (getattr(config, "aisexec", None) or {}) if config is not None else {}

        def value(key: str, default: int) -> int:
            raw = section.get(key)
            return default if raw in (None, "") else int(raw)

        budget = value("ipc_memory_budget", DEFAULT_MEMORY_BUDGET)
        return cls(memory_budget=budget,
                   frame_timeout=value("ipc_frame_timeout", DEFAULT_FRAME_TIMEOUT_MS) / 1000.0,
                   max_connections_per_uid=value("ipc_max_connections_per_uid", DEFAULT_MAX_CONNECTIONS_PER_UID),
                   max_queued_bytes=min(DEFAULT_MAX_QUEUED_BYTES, budget))


class Holder(Protocol):
    """What the budget needs of a connection."""

    pid: int
    uid: int
    held_in: int
    held_out: int

    def fail(self, why: str) -> None:
        """Close the connection because of ``why`` (logged)."""


def privileged(uid: int) -> bool:
    """Root's connections get the reserve."""
    return uid == 0


class MemoryBudget:
    """Every byte held for IPC clients, against one budget."""

    def __init__(self, limit: int, holders: Callable[[], Iterable[Holder]], log: logging.Logger,
                 counters: dict[str, int]) -> None:
        self.limit = max(int(limit), 1)
        self.reserve = self.limit // 8
        #: the level of everybody but root
        self.ordinary = self.limit - self.reserve
        self.used = 0
        self.peak = 0
        self._holders = holders
        self._log = log
        self._counters = counters
        self._room: gevent.event.Event | None = None
        self._relieving = False

    def level(self, uid: int) -> int:
        """The total up to which connections of ``uid`` are served freely."""
        return self.limit if privileged(uid) else self.ordinary

    def share(self, count: int) -> int:
        """One connection's share of the ordinary level when ``count`` connections are open."""
        return self.ordinary // max(count, 1)

    def add(self, delta: int) -> None:
        """Account ``delta`` bytes (negative: released); wakes paused readers when room returns."""
        used = self.used = self.used + delta
        if delta > 0:
            if used > self.peak:
                self.peak = used
        elif self._room is not None and used < self.ordinary * 7 // 8:
            room, self._room = self._room, None
            room.set()

    # -- input ------------------------------------------------------------------

    def read_room(self, conn: Holder, count: int, chunk: int) -> int:
        """Bytes ``conn``'s reader may read now, at most ``chunk``; 0: wait for room.

        Below the level, what is left of it; at or over it, what is left of the connection's share
        (so that all connections together stay within the level, whatever their number).
        """
        room = max(self.level(conn.uid) - self.used, self.share(count) - conn.held_in - conn.held_out)
        return chunk if room >= chunk else max(room, 0)

    def must_pause(self, conn: Holder, count: int) -> bool:
        """True when ``conn``'s reader should wait before reading more (over the level, and it holds its share)."""
        return self.read_room(conn, count, 1) == 0

    def wait_for_room(self, timeout: float) -> None:
        """Park the calling reader until the total has fallen (or ``timeout``)."""
        if self._room is None:
            self._room = gevent.event.Event()
        self._counters["paused"] = self._counters.get("paused", 0) + 1
        self._room.wait(timeout)

    # -- output -----------------------------------------------------------------

    def admit_output(self, conn: Holder, size: int, count: int) -> bool:
        """Room for ``size`` more output bytes of ``conn``; drops slowest readers over their share to make it.

        False when ``conn`` itself was dropped.
        """
        level = self.level(conn.uid)
        if self.used + size <= level or self._relieving:
            return True
        return conn not in self.relieve(level - size, count)

    def relieve(self, target: int, count: int) -> list[Holder]:
        """Drop the slowest readers (most queued output) over their share until the total is at most ``target``."""
        dropped: list[Holder] = []
        if self.used <= target or self._relieving:
            return dropped
        self._relieving = True
        try:
            share = self.share(count)
            while self.used > target:
                victim = max(self._holders(), key=lambda c: c.held_out, default=None)
                if victim is None or victim.held_out <= share:
                    break
                self._counters["dropped_slow"] = self._counters.get("dropped_slow", 0) + 1
                dropped.append(victim)
                victim.fail(f"slowest reader: {victim.held_out} bytes queued, over its share of {share} bytes of "
                            f"the IPC memory budget ({self.limit} bytes, {self.used} in use by {count} "
                            f"connections)")
        finally:
            self._relieving = False
        return dropped


class RateLimitedLog:
    """At most one line per ``interval`` for each kind; the next line says how many were left out."""

    def __init__(self, log: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._log = log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``kind`` was logged within the interval; True when logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        left_out = self._suppressed.pop(kind, 0)
        if left_out:
            message += f" ({left_out} more like it in the last {self.interval:g} s not logged)"
        self._log.warning(message, *args)
        return True


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE now (a large number when unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_descriptors() -> int:
    """How many descriptors this process has open (0 when /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _load_trim() -> Callable[[int], int] | None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return trim
    return None


_TRIM = _load_trim()


def release_memory() -> bool:
    """Give free heap memory back to the kernel (glibc ``malloc_trim``); False where unavailable."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
