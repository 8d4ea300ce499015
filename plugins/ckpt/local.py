"""What one node keeps beside the replicated state: its openers, iterations, waiting requests, outbox.

None of this is replicated.  The engine multicasts every change through one
:class:`aisexec.outbox.Outbox` (:func:`outbox` sets it up for CKPT): in order,
split into fragments when larger than one ring message, bounded, and retried
when the ring is full, so a change the engine accepted (a close, a cleanup,
an expiry) is never lost; an :class:`aisexec.outbox.Reassembler` joins a
sender's fragments on delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aisexec.outbox import Outbox
from plugins.ckpt.messages import Exec

#: Largest payload of one ring message the engine sends; bigger changes go as fragments.
FRAGMENT = 512 * 1024
#: Most bytes the outbox holds (then requests get TRY_AGAIN; cleanups are always taken).
OUTBOX_BYTES = 8 * 1024 * 1024
#: Seconds between retries when the ring had no room.
RETRY = 0.02


@dataclass(slots=True)
class LocalOpen:
    """A checkpoint handle of a local connection."""

    uid: int
    name: str
    flags: int


@dataclass(slots=True)
class LocalIter:
    """A section iteration of a local connection: the ids chosen at initialize, and where it is."""

    handle: int  # the checkpoint handle it belongs to
    uid: int
    ids: list[bytes]
    pos: int = 0


@dataclass(slots=True)
class Pending:
    """A request multicast by this node, waiting for its delivery (answered then)."""

    conn: Any
    request: int
    name: str = ""
    flags: int = 0
    is_async: bool = False
    invocation: int = 0
    timed_out: bool = False
    cancel: Callable[[], None] | None = None
    extra: dict = field(default_factory=dict)


def outbox(api: Any, service_id: int) -> Outbox:
    """The engine's :class:`aisexec.outbox.Outbox`: CKPT's fragment size, bound and retry."""
    return Outbox(api, service_id, retry=RETRY, max_bytes=OUTBOX_BYTES, fragment_id=Exec.FRAGMENT,
                  fragment_size=FRAGMENT)
