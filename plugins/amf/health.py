"""Health checks of this node's components (AMF-invoked and component-invoked), node-local.

A failure is not decided here for the cluster: it is multicast as an error
of the component (``on_failure``), and the replicated state recovers it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aisexec.amf")

AMF_INVOKED, COMPONENT_INVOKED = 1, 2
#: Local health-check invocations have the top bit set (replicated callback invocations never do).
LOCAL_BIT = 1 << 63


@dataclass
class Check:
    """One started health check."""

    comp: str
    key: bytes
    conn: Any
    kind: int
    recovery: int
    period: float
    max_duration: float
    timer: Callable[[], None] | None = None
    pending: int = 0  # invocation awaiting an answer (AMF_INVOKED)


class HealthChecks:
    """Every health check started on this node."""

    def __init__(self, call_later: Callable[[float, Callable[[], None]], Callable[[], None]],
                 send_callback: Callable[[Any, int, str, bytes], None],
                 on_failure: Callable[[str, int, str], None]) -> None:
        self.call_later = call_later
        self.send_callback = send_callback
        self.on_failure = on_failure
        self.checks: dict[tuple[str, bytes], Check] = {}
        self.by_inv: dict[int, Check] = {}
        self._ids = itertools.count(1)

    def start(self, comp: str, key: bytes, conn: Any, kind: int, recovery: int, period_ms: int,
              max_ms: int) -> bool:
        """Start a check; False when this key is already started for the component."""
        if (comp, key) in self.checks:
            return False
        check = Check(comp, key, conn, kind, recovery, period_ms / 1000.0, max_ms / 1000.0)
        self.checks[(comp, key)] = check
        if kind == AMF_INVOKED:
            check.timer = self.call_later(check.period, lambda: self._invoke(check))
        else:
            check.timer = self.call_later(check.period + check.max_duration, lambda: self._fail(check, "no confirm"))
        return True

    def _invoke(self, check: Check) -> None:
        if self.checks.get((check.comp, check.key)) is not check:
            return
        inv = LOCAL_BIT | next(self._ids)
        check.pending = inv
        self.by_inv[inv] = check
        self.send_callback(check.conn, inv, check.comp, check.key)
        check.timer = self.call_later(check.max_duration, lambda: self._fail(check, "no answer"))

    def response(self, conn: Any, invocation: int, error: int) -> bool:
        """An answer to a health-check callback; False when it is not a pending one of ``conn``."""
        check = self.by_inv.pop(invocation, None)
        if check is None or check.conn is not conn or check.pending != invocation:
            return False
        check.pending = 0
        if check.timer is not None:
            check.timer()
        if error != 1:
            self._fail(check, f"answered error {error}")
            return True
        check.timer = self.call_later(check.period, lambda: self._invoke(check))
        return True

    def confirm(self, conn: Any, comp: str, key: bytes, result: int) -> bool:
        """healthcheck_confirm; False when no COMPONENT_INVOKED check of that key was started by ``conn``."""
        check = self.checks.get((comp, key))
        if check is None or check.kind != COMPONENT_INVOKED or check.conn is not conn:
            return False
        if check.timer is not None:
            check.timer()
        if result != 1:
            self._fail(check, f"confirmed error {result}")
            return True
        check.timer = self.call_later(check.period + check.max_duration, lambda: self._fail(check, "no confirm"))
        return True

    def stop(self, conn: Any, comp: str, key: bytes) -> bool:
        """healthcheck_stop; False when not started through ``conn``."""
        check = self.checks.get((comp, key))
        if check is None or check.conn is not conn:
            return False
        self._drop(check)
        return True

    def _drop(self, check: Check) -> None:
        self.checks.pop((check.comp, check.key), None)
        self.by_inv.pop(check.pending, None)
        if check.timer is not None:
            check.timer()
            check.timer = None

    def stop_component(self, comp: str) -> None:
        """The component was cleaned up or terminated: its checks end."""
        for check in [c for c in self.checks.values() if c.comp == comp]:
            self._drop(check)

    def stop_connection(self, conn: Any) -> None:
        """The handle that started checks is gone: they end."""
        for check in [c for c in self.checks.values() if c.conn is conn]:
            self._drop(check)

    def _fail(self, check: Check, why: str) -> None:
        if self.checks.get((check.comp, check.key)) is not check:
            return
        log.warning("health check %r of %s failed: %s", check.key, check.comp, why)
        self._drop(check)
        self.on_failure(check.comp, check.recovery, f"health check {check.key.decode(errors='replace')}")
