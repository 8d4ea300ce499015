"""This node's outgoing MSG cluster messages: kept in order, split when large, retried when the ring is full.

Every message the engine multicasts goes through one :class:`Outbox`, so
what this node sends is delivered in the order it was produced even when
the ring pushes back (a CONSUMED never overtakes the CLOSE that followed
it).  A message larger than :data:`FRAGMENT_OVER` travels as numbered
:class:`plugins.msg.messages.Fragment` pieces, sent back to back;
receivers rebuild it per sender (Totem keeps one sender's messages in
order) and drop anything that does not follow on.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aisexec.totem.api import MessageTooBig, QueueFull
from openais.errors import SaAisError
from plugins.msg import messages as m

#: Messages above this many bytes are split.
FRAGMENT_OVER = 900 * 1024
#: Bytes of payload per fragment.
FRAGMENT_PIECE = 256 * 1024
#: Most logical messages waiting (internal messages beyond it are still kept: they are bounded by state).
SOFT_LIMIT = 10_000
#: Most bytes one sender's unfinished message may take here (our largest message, with room).
MAX_REASSEMBLY = 2 << 20
#: Seconds between retries when the ring is full.
RETRY = 0.002


class Outbox:
    """Ordered, fragmenting multicast for one service engine."""

    def __init__(self, api: Any, service_id: int) -> None:
        self._api = api
        self._service = service_id
        self._queue: deque[tuple[int, bytes]] = deque()  # logical messages not started
        self._pieces: deque[tuple[int, bytes]] = deque()  # ring messages of the message being sent
        self._pieces_kind: int | None = None
        self._pieces_msg: tuple[int, bytes] | None = None  # the message being sent in fragments
        self._serial = 0
        self._retry: Any = None
        self._partial: dict[int, tuple[int, int, int, list[bytes]]] = {}  # sender -> serial, next, msg_id, parts

    def __len__(self) -> int:
        return len(self._queue) + (1 if self._pieces else 0)

    # -- sending ----------------------------------------------------------------------

    def put(self, msg_id: int, payload: bytes) -> None:
        """Queue an internal message behind everything this node sent before; send what the ring takes."""
        if not self._queue and not self._pieces and len(payload) <= FRAGMENT_OVER:
            try:  # the common case: nothing waiting, the ring has room
                self._api.mcast(self._service, msg_id, payload)
                return
            except QueueFull:
                pass
        self._queue.append((msg_id, payload))
        self.flush()

    def offer(self, msg_id: int, payload: bytes) -> SaAisError:
        """Send a library request's message now, or refuse it (TRY_AGAIN when backed up, TOO_BIG)."""
        if self._queue or self._pieces:
            self.flush()
            if self._queue or self._pieces:
                return SaAisError.TRY_AGAIN
        frames = self._frames(msg_id, payload)
        try:
            self._api.mcast(self._service, *frames[0])
        except QueueFull:
            return SaAisError.TRY_AGAIN
        except MessageTooBig:
            return SaAisError.TOO_BIG
        if len(frames) > 1:
            self._pieces.extend(frames[1:])
            self._pieces_kind = msg_id
            self._pieces_msg = (msg_id, payload)
            self.flush()
        return SaAisError.OK

    def _frames(self, msg_id: int, payload: bytes) -> list[tuple[int, bytes]]:
        """(exec id, payload) of each ring message carrying one logical message."""
        if len(payload) <= FRAGMENT_OVER:
            return [(msg_id, payload)]
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        view = memoryview(payload)
        count = (len(payload) + FRAGMENT_PIECE - 1) // FRAGMENT_PIECE
        return [(m.Exec.FRAGMENT, m.Fragment.pack(self._serial, i, msg_id, i == count - 1,
                                                  view[i * FRAGMENT_PIECE:(i + 1) * FRAGMENT_PIECE]))
                for i in range(count)]

    def flush(self) -> None:
        """Send queued messages until the ring is full (then retry shortly)."""
        while True:
            if not self._pieces:
                self._pieces_kind = None
                if not self._queue:
                    return
                msg_id, payload = self._queue.popleft()
                self._pieces.extend(self._frames(msg_id, payload))
                self._pieces_kind = msg_id
                self._pieces_msg = (msg_id, payload) if len(self._pieces) > 1 else None
            exec_id, frame = self._pieces[0]
            try:
                self._api.mcast(self._service, exec_id, frame)
            except QueueFull:
                self._arm()
                return
            except MessageTooBig:
                pass  # cannot happen for our own sizes; dropping it keeps the rest moving
            self._pieces.popleft()

    def _arm(self) -> None:
        if self._retry is not None:
            return

        def again() -> None:
            self._retry = None
            self.flush()

        self._retry = self._api.call_later(RETRY, again)

    def sync_started(self, msg_ids: tuple[int, ...]) -> None:
        """A sync round starts (on every node at the same point of the agreed order).

        Queued messages of the kinds ``msg_ids`` are forgotten (the sync share
        accounts for them).  Every node forgets its unfinished reassemblies, so a
        joining node and the others agree; a message this node was sending in
        fragments starts over (whole, first in line) unless it is of those kinds.
        """
        self._queue = deque(e for e in self._queue if e[0] not in msg_ids)
        self._partial.clear()
        if self._pieces and self._pieces_msg is not None:
            if self._pieces_msg[0] not in msg_ids:
                self._queue.appendleft(self._pieces_msg)
            self._pieces.clear()
            self._pieces_kind = None
            self._pieces_msg = None
        elif self._pieces and self._pieces_kind in msg_ids:
            self._pieces.clear()
            self._pieces_kind = None

    # -- receiving ------------------------------------------------------------------------

    def reassemble(self, sender: int, payload: bytes) -> tuple[int, bytes] | None:
        """Add a delivered fragment; return (msg_id, message) when it completes one."""
        frag = m.Fragment.decode(payload)
        partial = self._partial.get(sender)
        if frag.index == 0:
            partial = (frag.serial, 0, frag.msg_id, [])
        elif partial is None or partial[0] != frag.serial or partial[1] != frag.index or partial[2] != frag.msg_id:
            self._partial.pop(sender, None)
            return None
        partial[3].append(bytes(frag.piece))
        if sum(len(piece) for piece in partial[3]) > MAX_REASSEMBLY:
            self._partial.pop(sender, None)  # no message of ours is that large: a broken sender
            return None
        if frag.last:
            self._partial.pop(sender, None)
            return frag.msg_id, b"".join(partial[3])
        self._partial[sender] = (partial[0], frag.index + 1, partial[2], partial[3])
        return None

    def forget_senders(self, nodes: tuple[int, ...]) -> None:
        """Nodes left: their unfinished messages will never complete."""
        for n in nodes:
            self._partial.pop(n, None)
