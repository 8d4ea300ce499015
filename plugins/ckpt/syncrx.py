"""The receiving side of a CKPT sync round: chunks to records, section data written where it belongs.

The sender's records travel as :class:`aisexec.statesync.Chunk` pieces (a
record larger than a chunk is split).  A generic receiver joins the pieces
of a record into one buffer and hands it over; for section data, by far the
bulk of a checkpoint, that costs three copies of every byte.  This receiver
instead reads a DATA record's header from its first piece and writes every
following piece straight into the section buffer the SECTION record
allocated: the data is copied once, from the delivered message into place.
Records a node does not need (those of its own lineage group, which it
already holds) are skipped without being copied at all.
"""

from __future__ import annotations

import logging
import struct

from aisexec.statesync import Chunk
from aisexec.totem.api import RingId
from plugins.ckpt.messages import Rec
from plugins.ckpt.records import RecordBuilder

#: ``Piece.flags`` bit of a record's final piece (the :mod:`aisexec.statesync` wire format).
LAST_PIECE = 1
_DATA = Rec.DATA
_OPENERS = Rec.OPENERS
_DATA_HEAD = struct.Struct("!BQI")  # kind, uid, length of the section id (RecData's layout)
_OFFSET = struct.Struct("!Q")

log = logging.getLogger("aisexec.ckpt")


def data_header(buf: bytes | bytearray | memoryview) -> tuple[int, bytes, int, int] | None:
    """(uid, section id, offset, where the data starts) of a DATA record's start, or None while incomplete."""
    if len(buf) < _DATA_HEAD.size:
        return None
    _kind, uid, sid_len = _DATA_HEAD.unpack_from(buf)
    start = _DATA_HEAD.size + sid_len + _OFFSET.size
    if len(buf) < start:
        return None
    (offset,) = _OFFSET.unpack_from(buf, _DATA_HEAD.size + sid_len)
    return uid, bytes(buf[_DATA_HEAD.size:_DATA_HEAD.size + sid_len]), offset, start


class _Partial:
    """A record of one sender of which some pieces arrived."""

    __slots__ = ("discard", "head", "pos", "target")

    def __init__(self, first: memoryview | None) -> None:
        #: the record so far (until streaming starts; None while streaming or discarding)
        self.head: bytearray | None = None if first is None else bytearray(first)
        self.target: memoryview | None = None  # where the rest of a DATA record's bytes go
        self.pos = 0
        self.discard = False

    def close(self) -> None:
        if self.target is not None:
            self.target.release()
            self.target = None


class SyncReceiver:
    """Per sender, reassembles one round's chunks; section data goes straight into ``builder``'s buffers."""

    def __init__(self, ring: RingId) -> None:
        self.ring = ring
        self._partial: dict[int, _Partial] = {}
        self.errors = 0
        self.streamed_bytes = 0

    def receive(self, sender: int, payload: bytes | memoryview, builder: RecordBuilder | None) -> list[bytes]:
        """Take one delivered chunk of ``sender``; return the OPENERS records it completes.

        Every other record goes into ``builder`` in order (section data
        written in place); without a builder (the sender's copy is not
        wanted) it is skipped.  A chunk of another round is ignored.  Raises
        MessageError on a malformed chunk.
        """
        chunk = Chunk.decode(payload)
        if (chunk.ring_rep, chunk.ring_seq) != (self.ring.rep, self.ring.seq):
            return []
        done: list[bytes] = []
        part = self._partial.get(sender)
        for flags, data in chunk.pieces:
            last = flags & LAST_PIECE
            if part is None:
                if last:
                    self._whole(data, builder, done)
                    continue
                part = self._partial[sender] = self._start(data, builder)
            elif part.discard:
                pass
            elif part.target is not None:
                self._write(part, data)
            else:
                assert part.head is not None
                part.head += data
                if last:
                    self._whole(memoryview(part.head), builder, done)
                else:
                    self._try_stream(part, builder)
            if last:
                part.close()
                del self._partial[sender]
                part = None
        return done

    def abort(self) -> None:
        """Forget every partial record."""
        for part in self._partial.values():
            part.close()
        self._partial = {}

    # -- internals --------------------------------------------------------------------------------

    def _whole(self, record: memoryview, builder: RecordBuilder | None, done: list[bytes]) -> None:
        if record and record[0] == _OPENERS:
            done.append(bytes(record))
        elif builder is not None:
            builder.add(record)  # a DATA record's data is decoded as a view: one copy, into the section

    def _start(self, first: memoryview, builder: RecordBuilder | None) -> _Partial:
        """The first piece of a record split over several: stream a DATA record from its header on."""
        kind = first[0] if first else -1
        if kind != _OPENERS and (builder is None or kind == _DATA):
            if builder is None:
                part = _Partial(None)
                part.discard = True
                return part
            head = data_header(first)
            if head is not None:  # the usual case: the whole header in the first piece, no copy of it
                part = _Partial(None)
                self._stream(part, builder, head, first)
                return part
        part = _Partial(first)
        return part

    def _try_stream(self, part: _Partial, builder: RecordBuilder | None) -> None:
        """A DATA record whose header is now complete switches to writing in place."""
        buf = part.head
        assert buf is not None
        if builder is None or buf[0] != _DATA:
            return
        head = data_header(buf)
        if head is None:
            return
        part.head = None
        view = memoryview(buf)
        self._stream(part, builder, head, view)
        view.release()

    def _stream(self, part: _Partial, builder: RecordBuilder, head: tuple[int, bytes, int, int],
                buf: memoryview) -> None:
        uid, section_id, offset, start = head
        try:
            part.target = builder.data_target(uid, section_id, offset)
        except (KeyError, ValueError) as exc:
            self._bad(part, builder, f"section data for an unknown place: {exc}")
            return
        self._write(part, buf[start:], builder)

    def _write(self, part: _Partial, data: memoryview, builder: RecordBuilder | None = None) -> None:
        target = part.target
        assert target is not None
        end = part.pos + len(data)
        if end > len(target):
            self._bad(part, builder, f"section data runs {end - len(target)} bytes past the section's end")
            return
        target[part.pos:end] = data
        part.pos = end
        self.streamed_bytes += len(data)

    def _bad(self, part: _Partial, builder: RecordBuilder | None, reason: str) -> None:
        self.errors += 1
        if builder is not None:
            builder.errors += 1
        part.close()
        part.discard, part.head = True, None
        log.warning("CKPT: skipping a bad sync record: %s", reason)


__all__ = ["LAST_PIECE", "SyncReceiver", "data_header"]
