"""Waiting for a socket to become readable, again and again, without re-arming the event loop each time.

``gevent.socket.wait_read`` builds a new libev watcher for every wait; starting
it costs an ``fcntl`` check and an ``epoll_ctl`` that fails with ``EEXIST``.
A read loop on a hot socket waits thousands of times a second, so
:class:`ReadWaiter` keeps one watcher started for as long as its greenlet
reads: a wait is one switch to the hub and back.
"""

from __future__ import annotations

from typing import Any

import gevent

_READ = 1  # libev EV_READ


class ReadWaiter:
    """One greenlet's repeated waits for ``fd`` to become readable."""

    def __init__(self, fd: int) -> None:
        self._hub = gevent.get_hub()
        self._watcher = self._hub.loop.io(fd, _READ)
        self._waiting: Any = None  # the greenlet parked in wait(), or None
        self._cancelled: BaseException | None = None

    def wait(self) -> None:
        """Return once ``fd`` is readable (at once if it already is); raise what :meth:`cancel` was given."""
        if self._cancelled is not None:
            raise self._cancelled
        watcher = self._watcher
        if not watcher.active:
            watcher.start(self._ready)
        self._waiting = gevent.getcurrent()
        try:
            self._hub.switch()
        finally:
            self._waiting = None

    def _ready(self) -> None:
        """Loop callback: wake the waiting greenlet; with nobody waiting, stop until the next wait()."""
        waiting = self._waiting
        if waiting is None:
            # The reader is busy elsewhere (it yielded inside its own work): a level-triggered watcher left
            # running would fire on every loop iteration until it reads again.
            self._watcher.stop()
            return
        waiting.switch()

    def close(self) -> None:
        """Stop and release the watcher."""
        self._watcher.stop()
        self._watcher.close()

    def cancel(self, error: BaseException) -> None:
        """The fd is about to be closed: release the watcher; the parked reader (and any later wait) gets ``error``.

        Call it before closing the fd, so the watcher never outlives it.  The reader is woken from
        the hub, not from the caller, which may be that very greenlet or one that must not switch.
        """
        if self._cancelled is not None:
            return
        self._cancelled = error
        self.close()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._hub.loop.run_callback(waiting.throw, error)
