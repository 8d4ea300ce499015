"""CLM cluster messages: what the engines multicast to each other, defined once.

There is one: during sync every node multicasts its own node record and the
view it comes from.  The sender's nodeid is not carried (the ring delivers
it).  Decoding raises :class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum

from openais.clm import MAX_ADDRESS, MAX_NAME
from openais.message import I64, U32, U64, List, Message, Str

#: Most previous-view members one record may list (far above any ring's size).
MAX_PREVIOUS_MEMBERS = 4096


class Exec(enum.IntEnum):
    """Cluster message ids of the CLM service."""

    NODE_RECORD = 0  #: NodeRecord


class NodeRecord(Message):
    """Sync traffic for ring ``(ring_rep, ring_seq)``: the sender's own node and the view it comes from.

    ``previous_view`` and ``previous_members`` describe the last view the
    sender activated (0 and empty after boot); ``initial_view`` is the view
    in which the sender joined (0 if it has not joined one yet).
    """

    ring_rep = U32()
    ring_seq = U64()
    previous_view = U64()
    initial_view = U64()
    boot_timestamp = I64()
    previous_members = List(U32(), max_count=MAX_PREVIOUS_MEMBERS)
    address = Str(max_len=MAX_ADDRESS)
    name = Str(max_len=MAX_NAME)
