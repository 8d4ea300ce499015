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
* with ``fragment_id`` set, a payload larger than ``fragment_size`` (or
  ``split_over``) travels as :class:`Fragment` pieces (sent back to back,
  under that cluster message id), and a :class:`Reassembler` on every node
  joins each sender's pieces on delivery (Totem keeps one sender's messages
  in order); with ``sequenced`` the pieces are :class:`SequencedFragment`
  (numbered), so a receiver drops pieces that do not follow on, and
  :meth:`Outbox.restart` can send a payload whose pieces a sync round cut
  again, whole;
* with ``keep`` (for messages a later one supersedes, such as AMF's
  reports) at most that many wait: beyond it the oldest is dropped, logged.

A message a *client* waits for and that may be refused instead goes through
:func:`mcast_request` (multicast now, or answer the asker at once) or, when
it may be large or must keep its place behind what the outbox holds,
:meth:`Outbox.offer`.

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

import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

from aisexec.totem.api import MessageTooBig, QueueFull
from openais.errors import SaAisError
from openais.message import U8, U16, U32, Bool, Message, Tail

log = logging.getLogger("aisexec.outbox")

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


class SequencedFragment(Message):
    """A :class:`Fragment` that also names its payload (``serial``) and its place in it (``index``, from 0)."""

    serial = U32()
    index = U32()
    msg_id = U16()
    last = Bool()
    data = Tail(max_len=MAX_FRAGMENT, view=True)


class _Origin(NamedTuple):
    """What a queued piece is part of: the whole payload, and which of its ``count`` pieces it is."""

    msg_id: int
    payload: bytes
    index: int
    count: int


#: A queued ring message: (cluster message id, payload, safe, the payload it is a piece of or None).
_Entry = tuple[int, bytes, bool, _Origin | None]


class Outbox:
    """One service's ordered multicast of messages that must not be lost (see the module text).

    ``max_bytes`` and ``max_count`` bound what :meth:`accepting` (and
    :meth:`offer`) lets new requests add (None: no bound of that kind);
    ``fragment_id`` (None: never split) is the cluster message id the service
    routes to its :class:`Reassembler`; payloads larger than ``split_over``
    (default ``fragment_size``) go as pieces of ``fragment_size`` bytes,
    :class:`SequencedFragment` ones with ``sequenced``.  ``keep`` (None: no
    limit; not with fragments, whose pieces belong together) is the most
    ring messages that wait: a send beyond it drops the oldest, logged.
    """

    def __init__(self, api: Any, service_id: int, *, retry: float = RETRY, max_bytes: int | None = None,
                 max_count: int | None = None, fragment_id: int | None = None,
                 fragment_size: int = FRAGMENT_SIZE, split_over: int | None = None, sequenced: bool = False,
                 keep: int | None = None) -> None:
        if fragment_id is not None and not 0 < fragment_size <= MAX_FRAGMENT:
            raise ValueError(f"fragment_size {fragment_size} is not within 1..{MAX_FRAGMENT}")
        if keep is not None and (keep < 1 or fragment_id is not None):
            raise ValueError("keep is a positive count, and not for an outbox that fragments")
        self.api = api
        self.service_id = service_id
        self.retry = retry
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.fragment_id = fragment_id
        self.fragment_size = fragment_size
        self.split_over = fragment_size if split_over is None else split_over
        self.sequenced = sequenced
        self.keep = keep
        self._queue: deque[_Entry] = deque()
        self._bytes = 0
        self._serial = 0
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
        if self._queue or not self._within(size):
            return False
        has_room = getattr(self.api, "has_room", None)
        first = self.fragment_size if self._splits(size) else size
        return has_room is None or has_room(first + _FRAGMENT_OVERHEAD)

    def send(self, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Queue one message behind everything queued before (split if large); send what the ring takes."""
        if self._splits(len(payload)):
            for entry in self._pieces(msg_id, payload, safe):
                self._put(entry)
        else:
            self._put((msg_id, payload, safe, None))
        self.flush()

    def offer(self, msg_id: int, payload: bytes, safe: bool = False) -> SaAisError:
        """Multicast a library request's message now (its further pieces follow reliably), or refuse it.

        Answers OK when its first ring message went; TRY_AGAIN when something
        still waits after a flush (it would overtake that), the bound would be
        passed or the ring has no room; TOO_BIG when the ring cannot take it.
        A refused message is not kept: the asker gets the answer instead.
        """
        if self._queue:
            self.flush()
            if self._queue:
                return SaAisError.TRY_AGAIN
        if not self._within(len(payload)):
            return SaAisError.TRY_AGAIN
        entries = self._pieces(msg_id, payload, safe) if self._splits(len(payload)) else [(msg_id, payload, safe, None)]
        try:
            self.api.mcast(self.service_id, entries[0][0], entries[0][1], safe=safe)
        except QueueFull:
            return SaAisError.TRY_AGAIN
        except MessageTooBig:
            return SaAisError.TOO_BIG
        if len(entries) > 1:
            for entry in entries[1:]:
                self._put(entry)
            self.flush()
        return SaAisError.OK

    def flush(self) -> None:
        """Multicast queued messages until the ring is full (then retry shortly).

        A message the ring can never take (``MessageTooBig``) is dropped,
        logged, so that it does not hold up everything behind it.
        """
        while self._queue:
            msg_id, payload, safe, _origin = self._queue[0]
            try:
                self.api.mcast(self.service_id, msg_id, payload, safe=safe)
            except QueueFull:
                self._arm()
                return
            except MessageTooBig:
                log.error("service %d: dropping cluster message %d of %d bytes the ring cannot take",
                          self.service_id, msg_id, len(payload))
            self._queue.popleft()
            self._bytes -= len(payload)

    def restart(self, drop: Collection[int] = ()) -> None:
        """Every receiver's reassembly starts over (a sync round, at the same point of the agreed order).

        Waiting messages of the kinds ``drop`` are forgotten (the round
        accounts for them).  A payload whose first pieces already went is
        split again and sent whole, first in line, unless it is of those
        kinds; ``sequenced`` pieces let receivers drop the old ones that are
        still on their way.  Nothing is sent here (:meth:`flush` does).
        """
        queue = self._queue
        again: list[_Entry] = []
        if queue and queue[0][3] is not None and queue[0][3].index > 0:
            origin, safe = queue[0][3], queue[0][2]
            for _ in range(origin.count - origin.index):
                queue.popleft()
            if origin.msg_id not in drop:
                again = self._pieces(origin.msg_id, origin.payload, safe)
        kept: deque[_Entry] = deque(again)
        kept.extend(e for e in queue if (e[0] if e[3] is None else e[3].msg_id) not in drop)
        self._queue = kept
        self._bytes = sum(len(e[1]) for e in kept)

    def _within(self, size: int) -> bool:
        """True when ``size`` more bytes keep within the bound."""
        if self.max_bytes is not None and self._bytes + size > self.max_bytes:
            return False
        return self.max_count is None or len(self._queue) < self.max_count

    def _splits(self, size: int) -> bool:
        """True when a payload of ``size`` bytes travels as fragments."""
        return self.fragment_id is not None and size > self.split_over

    def _pieces(self, msg_id: int, payload: bytes, safe: bool) -> list[_Entry]:
        """The ring messages that carry ``payload`` as fragments."""
        assert self.fragment_id is not None
        view = memoryview(payload)
        size = self.fragment_size
        count = (len(view) + size - 1) // size
        out: list[_Entry] = []
        if self.sequenced:
            self._serial = (self._serial + 1) & 0xFFFFFFFF
        for index in range(count):
            piece = view[index * size:(index + 1) * size]
            last = index == count - 1
            frame = (SequencedFragment.pack(self._serial, index, msg_id, last, piece) if self.sequenced
                     else Fragment.pack(msg_id, int(last), piece))
            out.append((self.fragment_id, frame, safe, _Origin(msg_id, payload, index, count)))
        return out

    def _put(self, entry: _Entry) -> None:
        """Queue one ring message last (with ``keep``, dropping the oldest when that many wait)."""
        if self.keep is not None and len(self._queue) >= self.keep:
            oldest = self._queue.popleft()
            self._bytes -= len(oldest[1])
            log.error("service %d: outbox full (%d waiting): dropping the oldest message (%d)",
                      self.service_id, self.keep, oldest[0])
        self._queue.append(entry)
        self._bytes += len(entry[1])

    def _arm(self) -> None:
        if self._retry is not None or not hasattr(self.api, "call_later"):
            return

        def again() -> None:
            self._retry = None
            self.flush()

        self._retry = self.api.call_later(self.retry, again)


class Reassembler:
    """Joins each sender's :class:`Fragment` pieces (delivered in that sender's order) into whole payloads.

    With ``sequenced`` it takes :class:`SequencedFragment` pieces and checks
    that each follows on.
    """

    def __init__(self, limit: int = MAX_REASSEMBLY, *, sequenced: bool = False) -> None:
        self._parts: dict[int, bytearray] = {}
        self._next: dict[int, tuple[int, int, int]] = {}  # sender -> (serial, index, msg_id) of its next piece
        self.limit = limit
        self.sequenced = sequenced

    def receive(self, sender: int, payload: bytes) -> tuple[int, bytearray] | None:
        """Decode a delivered fragment and take it (see :meth:`add`); MessageError when malformed."""
        return self.add(sender, (SequencedFragment if self.sequenced else Fragment).decode(payload))

    def add(self, sender: int, piece: Any) -> tuple[int, bytearray] | None:
        """Take a piece (``msg_id``, ``last``, ``data``); return (msg_id, payload) when it completes one.

        Raises ValueError (and forgets the sender's partial payload) when the
        pieces would pass ``limit`` bytes.  With ``sequenced``, index 0 starts
        a new payload and a piece that does not follow on (a stale piece of a
        payload sent again after :meth:`Outbox.restart`) is dropped with the
        sender's partial payload (None).
        """
        if self.sequenced:
            if piece.index == 0:
                self._parts.pop(sender, None)
            elif self._next.pop(sender, None) != (piece.serial, piece.index, piece.msg_id):
                self._parts.pop(sender, None)
                return None
        buf = self._parts.setdefault(sender, bytearray())
        if len(buf) + len(piece.data) > self.limit:
            self._forget(sender)
            raise ValueError(f"fragments of node {sender} exceed {self.limit} bytes")
        buf += piece.data
        if not piece.last:
            if self.sequenced:
                self._next[sender] = (piece.serial, piece.index + 1, piece.msg_id)
            return None
        self._forget(sender)
        return piece.msg_id, buf

    def forget(self, nodes: Iterable[int]) -> None:
        """Drop partial payloads of nodes that left."""
        for node in nodes:
            self._forget(node)

    def clear(self) -> None:
        """Drop every partial payload (every node does, at the same point: a sync round starts)."""
        self._parts.clear()
        self._next.clear()

    def _forget(self, sender: int) -> None:
        """Drop ``sender``'s partial payload."""
        self._parts.pop(sender, None)
        self._next.pop(sender, None)

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


__all__ = ["FRAGMENT_SIZE", "MAX_FRAGMENT", "RETRY", "Fragment", "Outbox", "Reassembler", "SequencedFragment",
           "mcast_request"]
