"""Local trackers of queue groups: which connection follows which group, and the callbacks they get."""

from __future__ import annotations

from typing import Any

from openais import msg as wire
from openais.errors import SaAisError
from openais.msg import Callback, QueueGroupChange


class Trackers:
    """group -> connection id -> (connection, track flags), for this node's connections."""

    def __init__(self) -> None:
        self._by_group: dict[str, dict[int, tuple[Any, int]]] = {}

    def track(self, group: str, conn: Any, flags: int) -> None:
        """Start (or replace) tracking of ``group`` by ``conn``."""
        self._by_group.setdefault(group, {})[conn.id] = (conn, flags)

    def stop(self, group: str, conn_id: int) -> bool:
        """Stop tracking; False when ``conn_id`` did not track ``group``."""
        entries = self._by_group.get(group)
        if not entries or conn_id not in entries:
            return False
        del entries[conn_id]
        if not entries:
            del self._by_group[group]
        return True

    def drop_conn(self, conn_id: int) -> None:
        """A connection is gone."""
        for group in list(self._by_group):
            self.stop(group, conn_id)

    def count(self) -> int:
        """Number of (group, connection) trackers."""
        return sum(len(v) for v in self._by_group.values())

    def notify(self, change: Any, service_id: int) -> None:
        """Dispatch one GroupChanged effect to the trackers of its group."""
        entries = self._by_group.get(change.group)
        if not entries:
            return
        if change.deleted:
            notice = wire.TrackNotice.pack(change.group, change.policy, 0, SaAisError.NOT_EXIST, [])
            for conn, _flags in list(entries.values()):
                if not conn.closed:
                    conn.dispatch(service_id, Callback.GROUP_TRACK, notice)
            del self._by_group[change.group]
            return
        full = [wire.Note(x, change.changes.get(x, QueueGroupChange.NO_CHANGE)) for x in change.members]
        full += [wire.Note(x, c) for x, c in change.changes.items()
                 if c == QueueGroupChange.REMOVED and x not in change.members]
        only = [wire.Note(x, c) for x, c in change.changes.items()]
        for conn, flags in list(entries.values()):
            if conn.closed:
                continue
            notes = full if flags & wire.TRACK_CHANGES else only
            conn.dispatch(service_id, Callback.GROUP_TRACK,
                          wire.TrackNotice.pack(change.group, change.policy, len(change.members), SaAisError.OK,
                                                notes))
