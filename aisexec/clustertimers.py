"""Cluster-wide timers: a deadline decided once, for the whole cluster, by one node's clock.

Replicated state must never change because a node's own clock says so:
two nodes would decide at different points of the agreed order.  A service
records each deadline (an absolute time in nanoseconds since the epoch,
carried in the delivered message that created it) in a
:class:`ClusterTimers`.  Only the *owner* — the lowest nodeid of the current
regular configuration — arms a local timer; when it fires, ``on_expire(key)``
multicasts the service's own expiry message, and every node applies the
expiry when that message is delivered (and then calls :meth:`cancel`).  When
the owner leaves, the next owner arms every pending deadline (one already past
fires at once), so an expiry is never lost; an expiry message may therefore
arrive twice, and applying it must be idempotent (check that the object still
exists and its deadline is the one expired).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from aisexec.totem.api import QueueFull

#: Seconds between retries of an expiry the ring had no room for.
RETRY = 0.05


class ClusterTimers:
    """Pending deadlines of one service on one node; armed only on the owner node."""

    def __init__(self, api: Any, on_expire: Callable[[Hashable], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._api = api
        self._on_expire = on_expire
        self._clock = clock
        self._deadlines: dict[Hashable, int] = {}
        self._armed: dict[Hashable, Callable[[], None]] = {}
        self._members: tuple[int, ...] = ()

    @property
    def is_owner(self) -> bool:
        """True when this node decides expiries for the current configuration."""
        return bool(self._members) and min(self._members) == self._api.nodeid

    @property
    def pending(self) -> dict[Hashable, int]:
        """key -> deadline (ns) of every pending timer."""
        return dict(self._deadlines)

    def set(self, key: Hashable, deadline_ns: int) -> None:
        """Record (or move) the deadline of ``key``; arms it here if this node is the owner."""
        self._disarm(key)
        self._deadlines[key] = deadline_ns
        if self.is_owner:
            self._arm(key)

    def cancel(self, key: Hashable) -> None:
        """Forget ``key`` (its expiry was delivered, or the object is gone)."""
        self._deadlines.pop(key, None)
        self._disarm(key)

    def clear(self) -> None:
        """Forget every deadline (state replaced by sync)."""
        for key in list(self._armed):
            self._disarm(key)
        self._deadlines.clear()

    def membership(self, members: tuple[int, ...]) -> None:
        """A new regular configuration: the owner (re)arms every pending deadline."""
        self._members = tuple(members)
        for key in list(self._armed):
            self._disarm(key)
        if self.is_owner:
            for key in list(self._deadlines):
                self._arm(key)

    def _arm(self, key: Hashable) -> None:
        delay = max(0.0, (self._deadlines[key] - self._clock()) / 1e9)
        self._armed[key] = self._api.call_later(delay, lambda: self._fire(key))

    def _disarm(self, key: Hashable) -> None:
        cancel = self._armed.pop(key, None)
        if cancel is not None:
            cancel()

    def _fire(self, key: Hashable) -> None:
        self._armed.pop(key, None)
        if key not in self._deadlines or not self.is_owner:
            return
        try:
            self._on_expire(key)
        except QueueFull:
            self._armed[key] = self._api.call_later(RETRY, lambda: self._fire(key))
