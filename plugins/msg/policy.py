"""Which queue(s) of a destination take a message: the four group policies, decided in agreed order.

Pure functions of the replicated state (they move the group's cursors), so
every node makes the same choice for the same delivered send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openais.errors import SaAisError
from openais.msg import QueueGroupPolicy, SendKind

if TYPE_CHECKING:
    from plugins.msg.state import MsgState, QueueState

OK = SaAisError.OK
_OPEN = 1  #: Status.OPEN of plugins.msg.state
_UNAVAILABLE = 3  #: Status.UNAVAILABLE


def choose(state: MsgState, sender: int, dest: str, p: int, length: int,
           kind: SendKind) -> tuple[SaAisError, list[QueueState]]:
    """(error, target queues) for a message of ``length`` bytes, priority ``p``, sent from node ``sender``."""
    q = state.queue(dest)
    if q is not None:
        if q.status == _UNAVAILABLE:
            return SaAisError.QUEUE_NOT_AVAILABLE, []
        if not q.fits(p, length):
            return SaAisError.QUEUE_FULL, []
        return OK, [q]
    g = state.groups.get(dest)
    if g is None:
        return SaAisError.NOT_EXIST, []
    if g.policy is QueueGroupPolicy.BROADCAST and kind is SendKind.SEND_RECEIVE:
        return SaAisError.INVALID_PARAM, []
    members = [state.queue(name) for name in g.members]
    eligible = [i for i, mq in enumerate(members) if mq is not None and mq.status == _OPEN]
    if not eligible:
        return SaAisError.QUEUE_NOT_AVAILABLE, []
    if g.policy is QueueGroupPolicy.BROADCAST:
        chosen = [members[i] for i in eligible if members[i].fits(p, length)]  # type: ignore[union-attr]
        return (OK, chosen) if chosen else (SaAisError.QUEUE_FULL, [])
    local = [i for i in eligible if members[i].home == sender]  # type: ignore[union-attr]
    if g.policy is QueueGroupPolicy.LOCAL_BEST_QUEUE and local:
        best = max(local, key=lambda i: (members[i].free(p), -i))  # type: ignore[union-attr]
        mq = members[best]
        return (OK, [mq]) if mq.fits(p, length) else (SaAisError.QUEUE_FULL, [])  # type: ignore[union-attr,list-item]
    if g.policy is QueueGroupPolicy.LOCAL_ROUND_ROBIN and local:
        pick = _round_robin(members, local, g.cursors.get(sender, -1), p, length)
        if pick is None:
            return SaAisError.QUEUE_FULL, []
        g.cursors[sender] = pick
        return OK, [members[pick]]  # type: ignore[list-item]
    pick = _round_robin(members, eligible, g.last, p, length)
    if pick is None:
        return SaAisError.QUEUE_FULL, []
    g.last = pick
    return OK, [members[pick]]  # type: ignore[list-item]


def _round_robin(members: list, candidates: list[int], last: int, p: int, length: int) -> int | None:
    """Index of the next candidate with room after ``last``, in member order (None: none has room)."""
    n = len(members)
    allowed = set(candidates)
    for step in range(1, n + 1):
        i = (last + step) % n
        if i in allowed and members[i].fits(p, length):
            return i
    return None
