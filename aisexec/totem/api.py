"""The contract between the sans-IO Totem core and whatever drives it.

The core (``aisexec.totem.srp``) never touches sockets, greenlets or clocks.
A driver (the gevent transport in the daemon, the simulator in tests) feeds it

* received packets (already authenticated and decrypted) with ``receive``,
* timer expirations with ``timer_expired``,
* application messages with ``submit``,

always passing ``now``: seconds on a monotonic clock, as a float.  After each
call the driver collects what the core wants done with ``take_ready()``, which
returns a :class:`Ready` holding, in order:

* ``sends``: ``(dest, packet)`` pairs; ``dest`` is a nodeid for unicast
  (tokens, commit tokens) or :data:`MULTICAST` for every ring member;
* ``timers``: ``name -> deadline`` (absolute ``now`` seconds) to arm or
  re-arm, or ``None`` to cancel;
* ``events``: :class:`Delivery` and :class:`ConfigChange` objects, in the one
  order the layer above must see them;
* ``ring_seq_to_persist``: the ring sequence number to write durably *before*
  any packet of this ``Ready`` is sent (``None`` when nothing changed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

#: Destination meaning "every member of the ring" in :attr:`Ready.sends`.
MULTICAST: int = 0


class RingId(NamedTuple):
    """A ring's identity: its representative's nodeid and a 64-bit sequence."""

    rep: int
    seq: int

    def __str__(self) -> str:
        return f"{self.rep:x}.{self.seq:x}"


class Guarantee(enum.IntEnum):
    """Delivery guarantee requested for one message."""

    AGREED = 0
    SAFE = 1


class ConfKind(enum.IntEnum):
    """Kind of configuration change delivered to the layer above (EVS)."""

    TRANSITIONAL = 0
    REGULAR = 1


class MembState(enum.IntEnum):
    """The four membership states of the single-ring protocol."""

    OPERATIONAL = 1
    GATHER = 2
    COMMIT = 3
    RECOVERY = 4


class TimerName(enum.IntEnum):
    """Timers the core may arm; the driver keeps at most one of each."""

    TOKEN_LOSS = 1
    TOKEN_RETRANSMIT = 2
    HOLD = 3
    JOIN = 4
    CONSENSUS = 5
    MERGE_DETECT = 6
    HEARTBEAT = 7
    PAUSE_CHECK = 8
    SEND_JOIN = 9


class Delivery(NamedTuple):
    """One application message delivered in agreed (or safe) order."""

    sender: int
    payload: bytes
    ring_id: RingId
    seq: int
    guarantee: int


class ConfigChange(NamedTuple):
    """A transitional or regular configuration delivered to the layer above.

    ``members`` is sorted (ring order); for a transitional configuration
    ``joined`` is empty, for a regular one ``left`` is empty.
    """

    kind: ConfKind
    members: tuple[int, ...]
    left: tuple[int, ...]
    joined: tuple[int, ...]
    ring_id: RingId


@dataclass(slots=True)
class Ready:
    """Everything the core asks its driver to do after one input."""

    sends: list[tuple[int, bytes]] = field(default_factory=list)
    timers: dict[TimerName, float | None] = field(default_factory=dict)
    events: list[Delivery | ConfigChange] = field(default_factory=list)
    ring_seq_to_persist: int | None = None

    def __bool__(self) -> bool:
        return bool(self.sends or self.timers or self.events or self.ring_seq_to_persist is not None)


class QueueFull(Exception):
    """``submit`` refused: the pending queue has no room (answer TRY_AGAIN)."""


class MessageTooBig(Exception):
    """``submit`` refused: the message can never fit (answer TOO_BIG)."""
