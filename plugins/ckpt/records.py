"""Checkpoint replicas as a stream of bounded records, and back; the merge rule of partitions.

The same records carry a node's state in a sync round (through
:class:`aisexec.statesync.StateTransfer`) and in the persistent store's
snapshots.  A section's data goes in DATA records of at most
:data:`DATA_PIECE` bytes, so no record (and no copy of one) is large, and the
receiver writes each piece straight into the section's buffer: the data is
held once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from openais.message import MessageError
from plugins.ckpt.messages import Rec, RecCheckpoint, RecData, RecOpeners, RecSection
from plugins.ckpt.state import Checkpoint, Section

#: Largest piece of section data in one record.
DATA_PIECE = 256 * 1024
_DATA_KIND = bytes((Rec.DATA,))

log = logging.getLogger("aisexec.ckpt")


def checkpoint_records(ck: Checkpoint) -> Iterator[bytes | bytearray]:
    """The records of one checkpoint (data copied a piece at a time, when the piece is produced)."""
    yield bytes((Rec.CHECKPOINT,)) + RecCheckpoint.pack(
        ck.uid, ck.name, int(ck.unlinked), ck.attrs, -1 if ck.active is None else ck.active, ck.changes,
        -1 if ck.closed_at is None else ck.closed_at, ck.gen)
    for sid, sec in list(ck.sections.items()):
        size = len(sec.data)
        yield bytes((Rec.SECTION,)) + RecSection.pack(ck.uid, sid, sec.expiration, sec.last_update, size)
        for offset in range(0, size, DATA_PIECE):
            current = ck.sections.get(sid)
            if current is not sec:
                break  # deleted meanwhile (never during a sync round; defensive for the store)
            # one copy of the data: the header (RecData's data is its tail), then the piece straight from the section
            record = bytearray(_DATA_KIND)
            record += RecData.pack(ck.uid, sid, offset, b"")
            record += memoryview(sec.data)[offset:offset + DATA_PIECE]
            yield record


def state_records(checkpoints: dict[int, Checkpoint], include_unlinked: bool = True) -> Iterator[bytes | bytearray]:
    """Records of every checkpoint (lazily)."""
    for ck in list(checkpoints.values()):
        if ck.unlinked and not include_unlinked:
            continue
        yield from checkpoint_records(ck)


def openers_record(uid: int, name: str, count: int) -> bytes:
    """An OPENERS record (sync only)."""
    return bytes((Rec.OPENERS,)) + RecOpeners.pack(uid, name, count)


class RecordBuilder:
    """Rebuilds checkpoints from records; bad records are logged and skipped, never fatal."""

    def __init__(self) -> None:
        self.checkpoints: dict[int, Checkpoint] = {}
        self.openers: list[RecOpeners] = []
        self.errors = 0

    def data_target(self, uid: int, section_id: bytes, offset: int) -> memoryview:
        """Where a DATA record's bytes for ``(uid, section_id)`` from ``offset`` go (KeyError, ValueError)."""
        sec = self.checkpoints[uid].sections[section_id]
        if offset > len(sec.data):
            raise ValueError(f"offset {offset} past the section's {len(sec.data)} bytes")
        return memoryview(sec.data)[offset:]

    def add(self, record: bytes | memoryview) -> None:
        """Take one record."""
        view = memoryview(record)
        if not view:
            self.errors += 1
            return
        kind, body = view[0], view[1:]
        try:
            if kind == Rec.CHECKPOINT:
                r = RecCheckpoint.decode(body)
                ck = Checkpoint(r.uid, r.name, r.attrs, None if r.active < 0 else r.active)
                ck.unlinked = bool(r.unlinked)
                ck.changes = r.changes
                ck.closed_at = None if r.closed_at < 0 else r.closed_at
                ck.gen = r.gen
                self.checkpoints[r.uid] = ck
            elif kind == Rec.SECTION:
                s = RecSection.decode(body)
                ck = self.checkpoints[s.uid]
                sec = Section(s.section_id, b"", s.expiration, s.last_update)
                sec.data = bytearray(s.size)
                old = ck.sections.get(s.section_id)
                if old is not None:
                    ck.used -= len(old.data)
                ck.sections[s.section_id] = sec
                ck.used += s.size
            elif kind == Rec.DATA:
                d = RecData.decode(body)
                sec = self.checkpoints[d.uid].sections[d.section_id]
                end = d.offset + len(d.data)
                if end > len(sec.data):
                    raise ValueError(f"data piece ends at {end}, past the section's {len(sec.data)} bytes")
                sec.data[d.offset:end] = d.data
            elif kind == Rec.OPENERS:
                self.openers.append(RecOpeners.decode(body))
            else:
                raise ValueError(f"unknown record kind {kind}")
        except (MessageError, KeyError, ValueError) as exc:
            self.errors += 1
            log.warning("CKPT: skipping a bad state record: %s", exc)


def merge(copies: dict[int, dict[int, Checkpoint]]) -> tuple[dict[int, Checkpoint], list[str]]:
    """Merge the copies of several partitions (key: the partition's lowest nodeid).

    For a name held by several partitions, the copy with more changes wins,
    then the partition with the lowest nodeid; unlinked checkpoints are kept
    by uid under the same rule (dropped if their uid is a linked winner's).
    Returns the merged checkpoints and one log line per conflict decided.
    """
    linked: dict[str, tuple[int, Checkpoint]] = {}
    unlinked: dict[int, tuple[int, Checkpoint]] = {}
    notes: list[str] = []
    for part in sorted(copies):
        for ck in copies[part].values():
            table, key = (unlinked, ck.uid) if ck.unlinked else (linked, ck.name)
            current = table.get(key)  # type: ignore[call-overload]
            if current is None:
                table[key] = (part, ck)  # type: ignore[index]
                continue
            cpart, cck = current
            if (ck.changes, -part) > (cck.changes, -cpart):
                table[key] = (part, ck)  # type: ignore[index]
                winner, loser = (part, ck), (cpart, cck)
            else:
                winner, loser = (cpart, cck), (part, ck)
            notes.append(f"checkpoint {ck.name!r}: the copy of the partition of node {winner[0]} "
                         f"({winner[1].changes} changes) wins over that of node {loser[0]} "
                         f"({loser[1].changes} changes), which is dropped")
    result = {ck.uid: ck for _, ck in linked.values()}
    for uid, (_part, ck) in unlinked.items():
        if uid not in result:
            result[uid] = ck
    return result, notes
