"""EVS cluster messages (network byte order); decoders raise :class:`EvsClusterMessageError`."""

from __future__ import annotations

import enum
from typing import NamedTuple

from openais.evs import EvsMessageError, pack_groups, unpack_groups


class EvsClusterMessageError(ValueError):
    """An EVS cluster message that does not decode."""


class Exec(enum.IntEnum):
    """Cluster message ids of the EVS service."""

    MCAST = 0


class McastMsg(NamedTuple):
    """A message for every handle joined to one of ``groups`` (the sender comes with the delivery)."""

    groups: list[str]
    data: memoryview


def encode_mcast(groups: list[str], data: bytes | memoryview) -> bytes:
    """Encode an MCAST: group list, then the message."""
    try:
        return pack_groups(groups) + bytes(data)
    except EvsMessageError as exc:
        raise EvsClusterMessageError(str(exc)) from exc


def decode_mcast(payload: bytes) -> McastMsg:
    """Decode an MCAST (``data`` is a view into ``payload``)."""
    buf = memoryview(payload)
    try:
        groups, offset = unpack_groups(buf, 0)
    except EvsMessageError as exc:
        raise EvsClusterMessageError(str(exc)) from exc
    return McastMsg(groups, buf[offset:])
