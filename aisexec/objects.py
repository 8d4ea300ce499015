"""Handle tables: the objects a service opened for library connections, released per connection.

Every service that hands out object handles (checkpoints, channels,
resources, queues, ...) keeps them in an :class:`ObjectTable`: handles are
u64 ids never reused within one executive's life, a handle is only found for
the connection that owns it (another connection's handle is ``BAD_HANDLE``),
and ``lib_exit`` releases everything the connection still held in one call.
The table is local to a node: it is not replicated state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ObjectTable(Generic[T]):
    """Handle -> (owning connection id, object); bounded by ``limit`` (``add`` raises OverflowError)."""

    def __init__(self, limit: int = 1_000_000, first: int = 1) -> None:
        self._ids = itertools.count(first)
        self._objects: dict[int, tuple[int, T]] = {}
        self._by_conn: dict[int, dict[int, T]] = {}
        self.limit = limit

    def add(self, conn: Any, obj: T) -> int:
        """Record ``obj`` as owned by ``conn`` (or a connection id); return its new handle."""
        if len(self._objects) >= self.limit:
            raise OverflowError(f"more than {self.limit} open objects")
        cid = _cid(conn)
        handle = next(self._ids)
        self._objects[handle] = (cid, obj)
        self._by_conn.setdefault(cid, {})[handle] = obj
        return handle

    def get(self, conn: Any, handle: int) -> T | None:
        """The object of ``handle`` if ``conn`` owns it, else None."""
        entry = self._objects.get(handle)
        if entry is None or entry[0] != _cid(conn):
            return None
        return entry[1]

    def lookup(self, handle: int) -> T | None:
        """The object of ``handle`` whoever owns it (cluster-message handlers), else None."""
        entry = self._objects.get(handle)
        return None if entry is None else entry[1]

    def owner(self, handle: int) -> int | None:
        """Connection id owning ``handle``, or None."""
        entry = self._objects.get(handle)
        return None if entry is None else entry[0]

    def remove(self, conn: Any, handle: int) -> T | None:
        """Forget ``handle`` if ``conn`` owns it; return its object (None if not found)."""
        entry = self._objects.get(handle)
        cid = _cid(conn)
        if entry is None or entry[0] != cid:
            return None
        del self._objects[handle]
        owned = self._by_conn.get(cid)
        if owned is not None:
            owned.pop(handle, None)
            if not owned:
                del self._by_conn[cid]
        return entry[1]

    def release(self, conn: Any) -> list[tuple[int, T]]:
        """Forget every object ``conn`` owns; return them as (handle, object) in handle order."""
        owned = self._by_conn.pop(_cid(conn), {})
        for handle in owned:
            del self._objects[handle]
        return sorted(owned.items(), key=lambda item: item[0])

    def of(self, conn: Any) -> list[tuple[int, T]]:
        """(handle, object) pairs ``conn`` owns, in handle order."""
        return sorted(self._by_conn.get(_cid(conn), {}).items(), key=lambda item: item[0])

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[tuple[int, int, T]]:
        """(handle, connection id, object) for every open object."""
        for handle, (cid, obj) in list(self._objects.items()):
            yield handle, cid, obj

    def __contains__(self, handle: object) -> bool:
        return handle in self._objects


def _cid(conn: Any) -> int:
    return conn if isinstance(conn, int) else conn.id
