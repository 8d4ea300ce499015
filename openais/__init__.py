"""The openais application library: a thin IPC client per AIS service.

Every service module (``openais.cpg``, ``openais.evs``, ``openais.clm``,
``openais.cfg``) offers ``initialize(...)`` returning a handle that is a
context manager, has ``fileno()`` (the selection object), ``dispatch(flags)``
and ``finalize()``.  Failures raise :class:`AisError` subclasses carrying the
SA Forum error code.
"""

from openais.errors import *  # noqa: F403
from openais.errors import __all__ as _errors_all

#: Run at most one pending callback.
DISPATCH_ONE = 1
#: Run every pending callback, then return.
DISPATCH_ALL = 2
#: Run callbacks until the handle is finalized.
DISPATCH_BLOCKING = 3

__all__ = [*_errors_all, "DISPATCH_ALL", "DISPATCH_BLOCKING", "DISPATCH_ONE"]
