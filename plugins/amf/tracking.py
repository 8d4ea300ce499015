"""Protection-group tracking for this node's connections (the CLM track pattern, per CSI)."""

from __future__ import annotations

from typing import Any

from openais import amf as wire

NO_CHANGE, ADDED, REMOVED, STATE_CHANGE = 1, 2, 3, 4


class Tracking:
    """Which local connection tracks which CSI, and what it was last told."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.flags: dict[tuple[int, str], int] = {}
        self.last: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}

    def _members(self, csi: str) -> dict[str, tuple[int, int]]:
        return {c: (ha, rank) for c, ha, rank in self.engine.state.pg_members(csi)}

    @staticmethod
    def _buffer(csi: str, notes: list[tuple[str, int, int, int]], count: int) -> bytes:
        return wire.PgBuffer.pack(csi, [wire.PgMember(c, ha, rank, ch) for c, ha, rank, ch in notes], count, 1)

    def track(self, conn: Any, csi: str, flags: int, want_buffer: bool) -> bytes:
        """Start (or change) tracking; return the answer payload (a buffer when asked for)."""
        now = self._members(csi)
        current = [(c, ha, rank, NO_CHANGE) for c, (ha, rank) in sorted(now.items(), key=lambda x: x[0].encode())]
        if flags & (wire.TRACK_CHANGES | wire.TRACK_CHANGES_ONLY):
            self.flags[(conn.id, csi)] = flags
            self.last[(conn.id, csi)] = now
        if flags & wire.TRACK_CURRENT and not want_buffer:
            conn.dispatch(self.engine.id, wire.Callback.PG_TRACK, self._buffer(csi, current, len(current)))
        return self._buffer(csi, current, len(current)) if want_buffer else b""

    def stop(self, conn_id: int, csi: str) -> bool:
        """Stop tracking; False when the connection was not tracking ``csi``."""
        self.last.pop((conn_id, csi), None)
        return self.flags.pop((conn_id, csi), None) is not None

    def drop(self, conn_id: int) -> None:
        """The connection closed."""
        for key in [k for k in self.flags if k[0] == conn_id]:
            self.flags.pop(key, None)
            self.last.pop(key, None)

    def changed(self, csi: str) -> None:
        """The CSI's protection group may have changed: tell the trackers what did."""
        keys = [k for k in self.flags if k[1] == csi]
        if not keys:
            return
        now = self._members(csi)
        for key in keys:
            before = self.last.get(key, {})
            if before == now:
                continue
            notes = []
            for c in sorted(set(now) | set(before), key=str.encode):
                if c not in now:
                    ha, rank = before[c]
                    notes.append((c, ha, rank, REMOVED))
                elif c not in before:
                    notes.append((c, *now[c], ADDED))
                elif before[c] != now[c]:
                    notes.append((c, *now[c], STATE_CHANGE))
                elif not self.flags[key] & wire.TRACK_CHANGES_ONLY:
                    notes.append((c, *now[c], NO_CHANGE))
            self.last[key] = now
            conn = self.engine.conns.get(key[0])
            if conn is not None and not conn.closed:
                conn.dispatch(self.engine.id, wire.Callback.PG_TRACK, self._buffer(csi, notes, len(now)))
