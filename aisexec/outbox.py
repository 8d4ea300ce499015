"""Ordered, bounded, reliable multicast of a service's own messages, with fragments when large.

Some messages a service engine sends must not be lost: the cleanup of a
connection that went (``lib_exit``), a change the engine already accepted
from a client (a close, an unsubscribe), an expiry the timer owner decided.
The ring may have no room at that moment (``QueueFull``); dropping the
message would leave the cluster with an opener, a subscription or a lock
that nobody holds.  Every such message goes through one :class:`Outbox`:

* messages are kept in the order they were produced and multicast as the
  ring takes them; when it is full the outbox retries shortly after
  (``api.call_later``), and the engine may also call :meth:`Outbox.flush`
  when a new configuration may have room;
* :meth:`Outbox.send` never refuses (a cleanup is always taken); the bound
  (``max_bytes``, ``max_count``) is the back-pressure answer
  :meth:`Outbox.accepting` gives for *new client requests*, which the engine
  answers ``TRY_AGAIN`` instead of queueing behind a backed-up outbox;
* with ``fragment_id`` set, a payload larger than ``fragment_size`` travels
  as :class:`Fragment` pieces (sent back to back, under that cluster message
  id), and a :class:`Reassembler` on every node joins each sender's pieces
  on delivery (Totem keeps one sender's messages in order).

A message a *client* waits for and that may be refused instead goes through
:func:`mcast_request`: multicast now, or answer the asker at once.

Typical engine use::

    def exec_init(self, api):
        self.outbox = Outbox(api, self.id)

    def lib_exit(self, conn):
        for handle, obj in self.handles.release(conn):
            self.outbox.send(Exec.CLOSE, Close.pack(obj.id, handle))

    def confchg(self, kind, members, left, joined, ring_id):
        self.outbox.flush()  # the new ring may have room
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aisexec.totem.api import MessageTooBig, QueueFull
from openais.errors import SaAisError
from openais.message import U8, Message, Tail

#: Seconds between retries when the ring had no room.
RETRY = 0.05
#: Default largest payload of one ring message when fragmenting.
FRAGMENT_SIZE = 512 * 1024
#: Largest piece a :class:`Fragment` may carry.
MAX_FRAGMENT = 1 << 21
#: Default most bytes one sender's unfinished payload may take in a :class:`Reassembler`.
MAX_REASSEMBLY = 4 * 1024 * 1024
#: Bytes a fragment's own header adds, and room for the layers below.
_FRAGMENT_OVERHEAD = 64

_TRY_AGAIN = int(SaAisError.TRY_AGAIN)
_TOO_BIG = int(SaAisError.TOO_BIG)


class Fragment(Message):
    """A piece of a payload larger than one ring message; ``last`` is set on its final piece."""

    msg_id = U8()
    last = U8()
    data = Tail(max_len=MAX_FRAGMENT, view=True)


class Outbox:
    """One service's ordered multicast of messages that must not be lost (see the module text).

    ``max_bytes`` and ``max_count`` bound what :meth:`accepting` lets new
    requests add (None: no bound of that kind); ``fragment_id`` (None: never
    split) is the cluster message id the service routes to its
    :class:`Reassembler`.
    """

    def __init__(self, api: Any, service_id: int, *, retry: float = RETRY, max_bytes: int | None = None,
                 max_count: int | None = None, fragment_id: int | None = None,
                 fragment_size: int = FRAGMENT_SIZE) -> None:
        if fragment_id is not None and not 0 < fragment_size <= MAX_FRAGMENT:
            raise ValueError(f"fragment_size {fragment_size} is not within 1..{MAX_FRAGMENT}")
        self.api = api
        self.service_id = service_id
        self.retry = retry
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.fragment_id = fragment_id
        self.fragment_size = fragment_size
        self._queue: deque[tuple[int, bytes, bool]] = deque()
        self._bytes = 0
        self._retry: Callable[[], None] | None = None

    def __len__(self) -> int:
        """Ring messages waiting (a fragmented payload counts each of its pieces)."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes of payload waiting for the ring."""
        return self._bytes

    def accepting(self, size: int) -> bool:
        """True when a new request of ``size`` bytes may be taken now (else the asker gets TRY_AGAIN).

        False while anything waits (the ring is backed up), when the bound
        would be passed, or when the ring says it has no room for the first
        ring message of it.
        """
        if self._queue:
            return False
        if self.max_bytes is not None and self._bytes + size > self.max_bytes:
            return False
        if self.max_count is not None and len(self._queue) >= self.max_count:
            return False
        has_room = getattr(self.api, "has_room", None)
        first = min(size, self.fragment_size) if self.fragment_id is not None else size
        return has_room is None or has_room(first + _FRAGMENT_OVERHEAD)

    def send(self, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Queue one message behind everything queued before (split if large); send what the ring takes."""
        if self.fragment_id is None or len(payload) <= self.fragment_size:
            self._put(msg_id, payload, safe)
        else:
            view = memoryview(payload)
            size = self.fragment_size
            for start in range(0, len(view), size):
                last = int(start + size >= len(view))
                self._put(self.fragment_id, Fragment.pack(msg_id, last, view[start:start + size]), safe)
        self.flush()

    def flush(self) -> None:
        """Multicast queued messages until the ring is full (then retry shortly)."""
        while self._queue:
            msg_id, payload, safe = self._queue[0]
            try:
                self.api.mcast(self.service_id, msg_id, payload, safe=safe)
            except QueueFull:
                self._arm()
                return
            self._queue.popleft()
            self._bytes -= len(payload)

    def _put(self, msg_id: int, payload: bytes, safe: bool) -> None:
        self._queue.append((msg_id, payload, safe))
        self._bytes += len(payload)

    def _arm(self) -> None:
        if self._retry is not None or not hasattr(self.api, "call_later"):
            return

        def again() -> None:
            self._retry = None
            self.flush()

        self._retry = self.api.call_later(self.retry, again)


class Reassembler:
    """Joins each sender's :class:`Fragment` pieces (delivered in that sender's order) into whole payloads."""

    def __init__(self, limit: int = MAX_REASSEMBLY) -> None:
        self._parts: dict[int, bytearray] = {}
        self.limit = limit

    def receive(self, sender: int, payload: bytes) -> tuple[int, bytearray] | None:
        """Decode a delivered fragment and take it (see :meth:`add`); MessageError when malformed."""
        return self.add(sender, Fragment.decode(payload))

    def add(self, sender: int, piece: Any) -> tuple[int, bytearray] | None:
        """Take a piece (``msg_id``, ``last``, ``data``); return (msg_id, payload) when it completes one.

        Raises ValueError (and forgets the sender's partial payload) when the
        pieces would pass ``limit`` bytes.
        """
        buf = self._parts.setdefault(sender, bytearray())
        if len(buf) + len(piece.data) > self.limit:
            del self._parts[sender]
            raise ValueError(f"fragments of node {sender} exceed {self.limit} bytes")
        buf += piece.data
        if not piece.last:
            return None
        del self._parts[sender]
        return piece.msg_id, buf

    def forget(self, nodes: Iterable[int]) -> None:
        """Drop partial payloads of nodes that left."""
        for node in nodes:
            self._parts.pop(node, None)

    def __len__(self) -> int:
        """Senders with an unfinished payload."""
        return len(self._parts)


def mcast_request(api: Any, service_id: int, conn: Any, request: int, request_id: int, exec_id: int,
                  payload: bytes, *, safe: bool = False, too_big: int = _TOO_BIG) -> bool:
    """Multicast the cluster message of a library request, or answer the asker and return False.

    A request the client waits for is refused rather than queued: the ring
    full answers TRY_AGAIN, a message over the ring's limit ``too_big``
    (TOO_BIG unless the service answers otherwise).
    """
    try:
        api.mcast(service_id, exec_id, payload, safe=safe)
    except QueueFull:
        conn.respond(service_id, request, request_id, _TRY_AGAIN)
        return False
    except MessageTooBig:
        conn.respond(service_id, request, request_id, too_big)
        return False
    return True


__all__ = ["FRAGMENT_SIZE", "MAX_FRAGMENT", "RETRY", "Fragment", "Outbox", "Reassembler", "mcast_request"]
