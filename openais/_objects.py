"""Object handles derived from a library handle: checkpoints, channels, resources, queues, ...

An :class:`ObjectHandle` stands for one object the executive opened for a
library handle (its executive-side handle is ``object_id``).  It is a context
manager that closes on exit; once it is closed, or once its library handle is
finalized, every use raises :class:`openais.BadHandle`.  Services subclass it
and implement :meth:`_close` (the request that closes it in the executive).
"""

from __future__ import annotations

from typing import Any

from openais.errors import BadHandle


class ObjectHandle:
    """Base of every object handle of the library."""

    def __init__(self, parent: Any, object_id: int) -> None:
        self._parent = parent
        self.object_id = object_id
        self._closed = False
        children = parent.__dict__.setdefault("_object_handles", {})
        children[id(self)] = self

    @property
    def closed(self) -> bool:
        """True once closed, or once the library handle it came from is finalized."""
        return self._closed or bool(getattr(self._parent, "_finalized", False))

    def _check(self) -> None:
        """Raise BadHandle unless the object is usable."""
        if self._closed:
            raise BadHandle(f"the {type(self).__name__.lower()} was closed")
        if getattr(self._parent, "_finalized", False):
            raise BadHandle("its library handle was finalized")

    def close(self) -> None:
        """Close the object in the executive; later uses raise BadHandle."""
        self._check()
        try:
            self._close()
        finally:
            self._closed = True
            self._parent.__dict__.get("_object_handles", {}).pop(id(self), None)

    def _close(self) -> None:
        """The request that closes the object in the executive (services override)."""

    def _forget(self) -> None:
        """Mark closed without telling the executive (it already released the object)."""
        self._closed = True
        self._parent.__dict__.get("_object_handles", {}).pop(id(self), None)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close()
