"""The persisted ring sequence: a restarted node never reuses a ring id.

Eight bytes, network order, in ``OPENAIS_STATE_DIR/ringid_<nodeid>``; written
atomically (temp file, fsync, rename) before any packet of the new ring
leaves.  A missing or short file reads as 0.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_SEQ = struct.Struct("!Q")


class RingSeqStore:
    """Load and save one node's ring sequence."""

    def __init__(self, state_dir: str | os.PathLike, nodeid: int) -> None:
        self.path = Path(state_dir) / f"ringid_{nodeid}"

    def load(self) -> int:
        """The last persisted sequence, or 0."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return 0
        return _SEQ.unpack(data[: _SEQ.size])[0] if len(data) >= _SEQ.size else 0

    def save(self, seq: int) -> None:
        """Persist ``seq`` durably (raises OSError: the caller must not go on without it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, _SEQ.pack(seq))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
