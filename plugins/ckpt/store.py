"""The persistent store of ``ckpt { persist_dir }``: a snapshot plus an append-only log, crash-safe.

Layout of the directory (mode 0700):

``snapshot``   the replicas at one point: a header (magic, the log sequence it
               covers), then the state records of :mod:`plugins.ckpt.records`,
               each framed ``u32 length, u32 crc32``, then an end frame.  It is
               written to ``snapshot.tmp``, fsync'ed, renamed over the old one
               and the directory fsync'ed: a reader sees the old snapshot or
               the new one, never a torn one.
``log``        every change applied since, in agreed order: ``u32 length,
               u32 crc32, u64 seq, u8 kind, u32 sender, u8 msg_id, payload``
               (the delivered cluster message itself).  Each entry is fsync'ed
               before the change counts as applied (so before the write is
               acknowledged).  A torn or corrupt tail (a SIGKILL mid-append)
               fails its CRC and is cut off at load: the state is then the
               last acknowledged one or the one before.

Loading replays the log over the snapshot through the same pure state the
engine uses.  The log is folded into a new snapshot when it grows past
:data:`COMPACT_BYTES` (or twice the snapshot), and after every sync round.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from openais.message import MessageError
from plugins.ckpt.messages import DECODERS
from plugins.ckpt.records import RecordBuilder, state_records
from plugins.ckpt.state import Checkpoint, CkptState

log = logging.getLogger("aisexec.ckpt")

MAGIC = b"OPENAIS-CKPT-1\n"
_FRAME = struct.Struct("!II")  # length, crc32
_ENTRY = struct.Struct("!QBIB")  # seq, kind, sender, msg_id
_SEQ = struct.Struct("!Q")
_END = b"\xff" * 8
KIND_MESSAGE = 0
KIND_NODES_LEFT = 1
KIND_RECOUNT = 2
_OPENER = struct.Struct("!QII")
_CLOSED = struct.Struct("!Qq")
#: Log size past which it is folded into a new snapshot.
COMPACT_BYTES = 64 * 1024 * 1024


class StoreError(Exception):
    """The store directory cannot be used (the executive stops with a configuration error)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recount(state: CkptState, payload: memoryview) -> None:
    """Apply a RECOUNT entry: openers and retention clocks as the sync round left them."""
    (n,) = struct.unpack_from("!I", payload, 0)
    offset = 4
    openers: dict[int, dict[int, int]] = {}
    for _ in range(n):
        uid, node, count = _OPENER.unpack_from(payload, offset)
        offset += _OPENER.size
        openers.setdefault(uid, {})[node] = count
    (n,) = struct.unpack_from("!I", payload, offset)
    offset += 4
    for _ in range(n):
        uid, closed_at = _CLOSED.unpack_from(payload, offset)
        offset += _CLOSED.size
        ck = state.by_uid.get(uid)
        if ck is not None:
            ck.closed_at = None if closed_at < 0 else closed_at
    for uid, ck in state.by_uid.items():
        ck.openers = openers.get(uid, {})


class Store:
    """The snapshot and log of one node."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)
            probe = self.path / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"ckpt.persist_dir {str(path)!r} is not usable: {exc}") from exc
        self.snapshot_path = self.path / "snapshot"
        self.log_path = self.path / "log"
        self.seq = 0
        self.snapshot_bytes = 0
        self._log = None
        self.log_bytes = 0

    # -- loading --------------------------------------------------------------------------------

    def load(self) -> dict[int, Checkpoint]:
        """The stored checkpoints (no openers, unlinked ones dropped); opens the log for appending."""
        state = CkptState()
        base = self._read_snapshot()
        state.install(base, (), (0, 0))
        good = self._replay(state)
        with open(self.log_path, "ab") as f:
            f.truncate(good)
        self._log = open(self.log_path, "ab")
        self.log_bytes = good
        state.drain_timers()
        out = {}
        for uid, ck in state.by_uid.items():
            if ck.unlinked:
                continue
            ck.openers = {}
            ck.closed_at = None
            out[uid] = ck
        return out

    def _read_snapshot(self) -> dict[int, Checkpoint]:
        if not self.snapshot_path.exists():
            return {}
        builder = RecordBuilder()
        with open(self.snapshot_path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise StoreError(f"{self.snapshot_path} is not a CKPT snapshot")
            (self.seq,) = _SEQ.unpack(f.read(_SEQ.size))
            while True:
                head = f.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    raise StoreError(f"{self.snapshot_path} is truncated")
                size, crc = _FRAME.unpack(head)
                body = f.read(size)
                if len(body) < size or zlib.crc32(body) != crc:
                    raise StoreError(f"{self.snapshot_path} is corrupt")
                if body == _END:
                    break
                builder.add(body)
        self.snapshot_bytes = self.snapshot_path.stat().st_size
        return builder.checkpoints

    def _replay(self, state: CkptState) -> int:
        """Apply the log's good entries newer than the snapshot; return the offset where they end."""
        if not self.log_path.exists():
            return 0
        data = self.log_path.read_bytes()
        view = memoryview(data)
        offset = 0
        while offset + _FRAME.size <= len(data):
            size, crc = _FRAME.unpack_from(view, offset)
            body = view[offset + _FRAME.size: offset + _FRAME.size + size]
            if len(body) < size or size < _ENTRY.size or zlib.crc32(body) != crc:
                log.warning("CKPT store: cutting a torn log tail at byte %d of %s", offset, self.log_path)
                break
            seq, kind, sender, msg_id = _ENTRY.unpack_from(body)
            payload = body[_ENTRY.size:]
            offset += _FRAME.size + size
            if seq <= self.seq:
                continue
            self.seq = seq
            try:
                if kind == KIND_MESSAGE:
                    state.apply(sender, msg_id, DECODERS[msg_id].decode(payload))
                elif kind == KIND_NODES_LEFT:
                    count = len(payload) // 4
                    nodes = struct.unpack(f"!{count}I", payload[: count * 4])
                    state.nodes_left(nodes[1:1 + nodes[0]], tuple(nodes[1 + nodes[0]:]))
                elif kind == KIND_RECOUNT:
                    _recount(state, payload)
            except (MessageError, KeyError, IndexError, struct.error) as exc:
                log.warning("CKPT store: skipping a bad log entry %d: %s", seq, exc)
        return offset

    # -- writing --------------------------------------------------------------------------------

    def append(self, sender: int, msg_id: int, payload: bytes | memoryview) -> None:
        """Log one applied message durably (fsync) before it counts as applied."""
        self._append(KIND_MESSAGE, sender, msg_id, payload)

    def append_nodes_left(self, left: Iterable[int], members: Iterable[int]) -> None:
        """Log a node loss (it changes active replicas)."""
        gone, rest = list(left), list(members)
        self._append(KIND_NODES_LEFT, 0, 0, struct.pack(f"!{1 + len(gone) + len(rest)}I", len(gone), *gone, *rest))

    def append_recount(self, checkpoints: dict[int, Checkpoint]) -> None:
        """Log the openers and retention clocks a sync round rebuilt (replay then decides as the cluster did)."""
        openers = [(uid, node, count) for uid, ck in checkpoints.items() for node, count in ck.openers.items()]
        closed = [(uid, -1 if ck.closed_at is None else ck.closed_at) for uid, ck in checkpoints.items()]
        parts = [struct.pack("!I", len(openers))]
        parts += [_OPENER.pack(*o) for o in openers]
        parts.append(struct.pack("!I", len(closed)))
        parts += [_CLOSED.pack(*c) for c in closed]
        self._append(KIND_RECOUNT, 0, 0, b"".join(parts))

    def _append(self, kind: int, sender: int, msg_id: int, payload: bytes | memoryview) -> None:
        if self._log is None:
            return
        self.seq += 1
        body = _ENTRY.pack(self.seq, kind, sender, msg_id) + bytes(payload)
        self._log.write(_FRAME.pack(len(body), zlib.crc32(body)) + body)
        self._log.flush()
        os.fsync(self._log.fileno())
        self.log_bytes += _FRAME.size + len(body)

    def wants_compaction(self) -> bool:
        """True when the log should be folded into a snapshot."""
        return self.log_bytes > max(COMPACT_BYTES, 2 * self.snapshot_bytes)

    def snapshot(self, checkpoints: dict[int, Checkpoint]) -> None:
        """Write every linked checkpoint as the new snapshot, then empty the log."""
        tmp = self.path / "snapshot.tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC + _SEQ.pack(self.seq))
            for record in state_records(checkpoints, include_unlinked=False):
                f.write(_FRAME.pack(len(record), zlib.crc32(record)))
                f.write(record)
            f.write(_FRAME.pack(len(_END), zlib.crc32(_END)) + _END)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        _fsync_dir(self.path)
        self.snapshot_bytes = self.snapshot_path.stat().st_size
        if self._log is not None:
            self._log.truncate(0)
            self._log.flush()
            os.fsync(self._log.fileno())
        self.log_bytes = 0

    def close(self) -> None:
        """Close the log."""
        if self._log is not None:
            self._log.close()
            self._log = None
