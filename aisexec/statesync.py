"""Chunked state transfer for a service's sync round: bounded messages, records of any size.

A service whose replicated state must reach a joining node or a merged
partition sends *records* (its own encoding of one object: a checkpoint's
attributes, a section, a lock, ...) through a :class:`StateTransfer`.  The
transfer packs records into chunks of at most ``chunk_size`` bytes, splits a
record larger than a chunk into pieces, multicasts as many chunks as the ring
takes on each ``process()`` (one held back when the ring is full) and, on every
node, reassembles each sender's records in agreed order.  A chunk carries the
ring id of its round; chunks of another round are ignored, so an aborted round
never leaks into the next.  Memory: the sender holds one encoded chunk beyond
the records it iterates lazily; a receiver holds at most one partial record
per sender.

Typical engine use::

    def sync_init(self, transitional, members, ring_id):
        self.transfer.start(ring_id, self.state.sync_records(self.api.nodeid))

    def sync_process(self):
        return self.transfer.process()

    def _exec_sync(self, sender, payload):
        for record in self.transfer.receive(sender, payload):
            self.shadow.add(sender, record)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from aisexec.totem.api import QueueFull, RingId
from openais.message import U8, U32, U64, Bytes, List, Message

#: Default largest chunk, in bytes of payload (well under the ring's message limit).
CHUNK_SIZE = 60 * 1024
#: Bytes of a chunk's own header and each piece's header.
_CHUNK_OVERHEAD = 4 + 8 + 4 + 4
_PIECE_OVERHEAD = 1 + 4
_LAST = 1


class Piece(Message):
    """A record, or a piece of one (``last`` set on its final piece)."""

    flags = U8()
    data = Bytes(max_len=1 << 24, view=True)


class Chunk(Message):
    """One sync message of a state transfer: the round's ring id and some pieces."""

    ring_rep = U32()
    ring_seq = U64()
    serial = U32()
    pieces = List(Piece, max_count=1 << 16)


class StateTransfer:
    """One service's chunked state transfer (sender and receiver sides)."""

    def __init__(self, api: Any, service_id: int, msg_id: int, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size <= _CHUNK_OVERHEAD + _PIECE_OVERHEAD:
            raise ValueError(f"chunk_size {chunk_size} leaves no room for data")
        self._api = api
        self._service = service_id
        self._msg_id = msg_id
        self._chunk_size = chunk_size
        self._ring: RingId | None = None
        self._records: Iterator[bytes | memoryview] | None = None
        self._carry: memoryview | None = None  # rest of a record being split
        self._held: bytes | None = None  # an encoded chunk the ring had no room for
        self._serial = 0
        self._partial: dict[int, list[bytes]] = {}
        self.sent_chunks = 0
        self.sent_bytes = 0

    @property
    def ring(self) -> RingId | None:
        """The ring id of the round in progress (None when idle)."""
        return self._ring

    def start(self, ring_id: Any, records: Iterable[bytes | memoryview]) -> None:
        """Begin a round for ``ring_id``: ``records`` (iterated lazily) are this node's share."""
        self._ring = RingId(*ring_id)
        self._records = iter(records)
        self._carry = None
        self._held = None
        self._serial = 0
        self._partial = {}

    def abort(self) -> None:
        """Forget the round (its chunks still in flight are ignored on arrival)."""
        self._ring = None
        self._records = None
        self._carry = None
        self._held = None
        self._partial = {}

    def process(self) -> bool:
        """Multicast chunks until the share is sent or the ring is full; True while more remains."""
        if self._ring is None:
            return False
        while True:
            if self._held is None:
                self._held = self._next_chunk()
                if self._held is None:
                    return False
            try:
                self._api.mcast(self._service, self._msg_id, self._held)
            except QueueFull:
                return True
            self.sent_chunks += 1
            self.sent_bytes += len(self._held)
            self._held = None

    def _next_chunk(self) -> bytes | None:
        room = self._chunk_size - _CHUNK_OVERHEAD
        pieces: list[tuple[int, memoryview]] = []
        while room > _PIECE_OVERHEAD:
            if self._carry is None:
                record = next(self._records, None) if self._records is not None else None
                if record is None:
                    break
                self._carry = memoryview(record)
            take = room - _PIECE_OVERHEAD
            data = self._carry
            if len(data) <= take:
                pieces.append((_LAST, data))
                room -= _PIECE_OVERHEAD + len(data)
                self._carry = None
            else:
                pieces.append((0, data[:take]))
                self._carry = data[take:]
                room = 0
        if not pieces:
            return None
        ring = self._ring
        assert ring is not None
        self._serial += 1
        return Chunk.pack(ring.rep, ring.seq, self._serial, [Piece(f, d) for f, d in pieces])

    def receive(self, sender: int, payload: bytes | memoryview) -> list[bytes]:
        """The complete records a delivered chunk of ``sender`` finishes ([] for another round's chunk).

        Raises :class:`openais.message.MessageError` on a malformed chunk.
        """
        chunk = Chunk.decode(payload)
        ring = self._ring
        if ring is None or (chunk.ring_rep, chunk.ring_seq) != (ring.rep, ring.seq):
            return []
        done: list[bytes] = []
        partial = self._partial.get(sender)
        for flags, data in chunk.pieces:
            if flags & _LAST:
                if partial:
                    partial.append(bytes(data))
                    done.append(b"".join(partial))
                    partial = None
                    self._partial.pop(sender, None)
                else:
                    done.append(bytes(data))
            else:
                if partial is None:
                    partial = self._partial.setdefault(sender, [])
                partial.append(bytes(data))
        return done
