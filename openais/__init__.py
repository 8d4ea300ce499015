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

#: SaTimeT "forever" and "unknown" (absolute times are ns since the epoch).
TIME_END = 0x7FFFFFFFFFFFFFFF
TIME_UNKNOWN = 0x8000000000000000

#: SaTrackFlagsT (CLM, MSG queue groups, AMF protection groups, quorum).
TRACK_CURRENT = 0x01
TRACK_CHANGES = 0x02
TRACK_CHANGES_ONLY = 0x04

__all__ = [*_errors_all, "DISPATCH_ALL", "DISPATCH_BLOCKING", "DISPATCH_ONE", "TIME_END", "TIME_UNKNOWN",
           "TRACK_CHANGES", "TRACK_CHANGES_ONLY", "TRACK_CURRENT"]
