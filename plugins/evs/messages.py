"""EVS cluster messages, defined once; decoding raises :class:`openais.message.MessageError`."""

from __future__ import annotations

import enum

from openais.evs import MAX_MESSAGE, groups_field
from openais.message import Message, Tail


class Exec(enum.IntEnum):
    """Cluster message ids of the EVS service."""

    MCAST = 0  #: McastMsg


class McastMsg(Message):
    """A message for every handle joined to one of ``groups`` (the sender comes with the delivery)."""

    groups = groups_field()
    data = Tail(max_len=MAX_MESSAGE, view=True)
