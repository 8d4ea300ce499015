"""What one node keeps beside the replicated state: its openers, iterations, waiting requests, outbox.

None of this is replicated.  :class:`Outbox` is the one way the engine
multicasts its changes: in order, split into :class:`ExFragment` pieces when
larger than one ring message, bounded, and retried when the ring is full, so
a change the engine accepted (a close, a cleanup, an expiry) is never lost.
:class:`Reassembler` joins a sender's fragments on delivery.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.totem.api import QueueFull
from plugins.ckpt.messages import Exec, ExFragment

#: Largest payload of one ring message the engine sends; bigger changes go as fragments.
FRAGMENT = 512 * 1024
#: Most bytes the outbox holds (then requests get TRY_AGAIN; cleanups are always taken).
OUTBOX_BYTES = 8 * 1024 * 1024
#: Seconds between retries when the ring had no room.
RETRY = 0.02


@dataclass(slots=True)
class LocalOpen:
    """A checkpoint handle of a local connection."""

    uid: int
    name: str
    flags: int


@dataclass(slots=True)
class LocalIter:
    """A section iteration of a local connection: the ids chosen at initialize, and where it is."""

    handle: int  # the checkpoint handle it belongs to
    uid: int
    ids: list[bytes]
    pos: int = 0


@dataclass(slots=True)
class Pending:
    """A request multicast by this node, waiting for its delivery (answered then)."""

    conn: Any
    request: int
    name: str = ""
    flags: int = 0
    is_async: bool = False
    invocation: int = 0
    timed_out: bool = False
    cancel: Callable[[], None] | None = None
    extra: dict = field(default_factory=dict)


class Outbox:
    """Ordered, bounded multicast of the engine's changes with fragmenting and retry."""

    def __init__(self, api: Any, service_id: int) -> None:
        self.api = api
        self.service_id = service_id
        self._queue: deque[tuple[int, bytes, bool]] = deque()
        self._bytes = 0
        self._retry: Callable[[], None] | None = None

    def accepting(self, size: int) -> bool:
        """True when a new request of ``size`` bytes can be taken now (else the asker gets TRY_AGAIN)."""
        if self._queue or self._bytes + size > OUTBOX_BYTES:
            return False
        has_room = getattr(self.api, "has_room", None)
        return has_room is None or has_room(min(size, FRAGMENT) + 64)

    def send(self, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Queue one change (split if large) and send what the ring takes now."""
        if len(payload) <= FRAGMENT:
            self._queue.append((msg_id, payload, safe))
        else:
            view = memoryview(payload)
            for start in range(0, len(view), FRAGMENT):
                piece = view[start:start + FRAGMENT]
                last = int(start + FRAGMENT >= len(view))
                self._queue.append((Exec.FRAGMENT, ExFragment.pack(msg_id, last, piece), safe))
        self._bytes += len(payload)
        self.flush()

    def flush(self) -> None:
        """Multicast queued changes until the ring is full (then retry shortly)."""
        while self._queue:
            msg_id, payload, safe = self._queue[0]
            try:
                self.api.mcast(self.service_id, msg_id, payload, safe=safe)
            except QueueFull:
                self._arm()
                return
            self._queue.popleft()
            self._bytes -= len(payload)
        self._bytes = max(self._bytes, 0)

    def _arm(self) -> None:
        if self._retry is not None or not hasattr(self.api, "call_later"):
            return

        def again() -> None:
            self._retry = None
            self.flush()

        self._retry = self.api.call_later(RETRY, again)

    def __len__(self) -> int:
        return len(self._queue)


class Reassembler:
    """Joins each sender's fragments (delivered in that sender's order) into whole payloads."""

    def __init__(self, limit: int = 4 * 1024 * 1024) -> None:
        self._parts: dict[int, bytearray] = {}
        self.limit = limit

    def add(self, sender: int, piece: ExFragment) -> tuple[int, bytearray] | None:
        """Take a fragment; return (msg_id, payload) when it completes one."""
        buf = self._parts.setdefault(sender, bytearray())
        if len(buf) + len(piece.data) > self.limit:
            del self._parts[sender]
            raise ValueError(f"fragments of node {sender} exceed {self.limit} bytes")
        buf += piece.data
        if not piece.last:
            return None
        del self._parts[sender]
        return piece.msg_id, buf

    def forget(self, nodes: set[int] | tuple[int, ...]) -> None:
        """Drop partial payloads of nodes that left."""
        for node in nodes:
            self._parts.pop(node, None)
