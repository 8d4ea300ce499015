"""Extended virtual synchrony (EVS): the raw ring as groups; the library and its IPC messages.

A handle joins any number of named groups; messages multicast to groups are
delivered, in agreed order, to every handle on every node that has joined
one of them (the sender's own included).  Configuration changes report the
ring's node membership to every handle::

    from openais import evs

    def deliver(nodeid, data): ...
    def confchg(members, left, joined): ...

    with evs.initialize(deliver=deliver, confchg=confchg) as h:
        h.join(["a", "b"])
        h.mcast_joined(b"hello")

The IPC messages are :class:`openais.message.Message` definitions, here
once and imported by the executive's EVS engine (``plugins.evs``); decoding
raises :class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from openais._client import Handle, checked_timeout
from openais.errors import InvalidParam, TooBig
from openais.message import U32, Enum, List, Message, MessageError, Str, Tail

#: Service id of EVS.
SERVICE_ID = 0
#: Longest group name, in bytes of UTF-8 (openais ``struct evs_group``).
MAX_GROUP_NAME = 32
#: Most groups in one request, and joined by one handle.
MAX_GROUPS = 256
#: Largest message, in bytes: delivered intact to every handle joined to one of its groups.
MAX_MESSAGE = 1024 * 1024
#: Most nodes one membership list carries.
MAX_NODES = 1 << 16


class Guarantee(enum.IntEnum):
    """Delivery guarantee of a multicast."""

    AGREED = 0
    SAFE = 1


AGREED = Guarantee.AGREED
SAFE = Guarantee.SAFE


class Request(enum.IntEnum):
    """Library request message ids."""

    JOIN = 0  #: GroupRequest -> empty
    LEAVE = 1  #: GroupRequest -> empty
    MCAST_JOINED = 2  #: McastJoinedRequest -> empty
    MCAST_GROUPS = 3  #: McastGroupsRequest -> empty
    MEMBERSHIP = 4  #: empty -> MembershipResponse


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    DELIVER = 0  #: Deliver
    CONFCHG = 1  #: Confchg


# -- the IPC messages ------------------------------------------------------------


def groups_field() -> List:
    """A group list field: at most 256 names of 1..32 bytes (shared with the engine's cluster message)."""
    return List(Str(max_len=MAX_GROUP_NAME, min_len=1), max_count=MAX_GROUPS)


def nodes_field() -> List:
    """A list of node ids."""
    return List(U32(), max_count=MAX_NODES)


class GroupRequest(Message):
    """JOIN and LEAVE request: a group list."""

    groups = groups_field()


class McastJoinedRequest(Message):
    """MCAST_JOINED request: the guarantee, then the message (to this handle's groups)."""

    guarantee = Enum(Guarantee)
    data = Tail(max_len=MAX_MESSAGE, view=True)


class McastGroupsRequest(Message):
    """MCAST_GROUPS request: the guarantee, the groups, then the message."""

    guarantee = Enum(Guarantee)
    groups = groups_field()
    data = Tail(max_len=MAX_MESSAGE, view=True)


class MembershipResponse(Message):
    """MEMBERSHIP response: the local nodeid and the ring's members."""

    local_nodeid = U32()
    members = nodes_field()


class Deliver(Message):
    """DELIVER callback: the sender's nodeid, then the message."""

    nodeid = U32()
    data = Tail(max_len=MAX_MESSAGE, view=True)


class Confchg(Message):
    """CONFCHG callback: the member, left and joined nodeid lists."""

    members = nodes_field()
    left = nodes_field()
    joined = nodes_field()


# -- the library ----------------------------------------------------------------

DeliverFn = Callable[[int, bytes], None]
ConfchgFn = Callable[[list[int], list[int], list[int]], None]


def _checked_groups(groups: Iterable[str]) -> list[str]:
    if isinstance(groups, str):
        raise InvalidParam("groups must be a list of names, not one str")
    names = list(groups)
    try:
        GroupRequest.pack(names)
    except MessageError as exc:
        raise InvalidParam(str(exc)) from None
    return names


def _checked_message(data: bytes, guarantee: int) -> None:
    if guarantee not in (AGREED, SAFE):
        raise InvalidParam(f"unknown guarantee {guarantee}")
    if len(data) > MAX_MESSAGE:
        raise TooBig(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")


class EvsHandle(Handle):
    """One EVS handle: any number of joined groups, callbacks run by ``dispatch``.

    Multicasts are pipelined (up to ``PIPELINE_WINDOW`` in flight): an error
    the executive finds for one is raised by the next call, dispatch, flush
    or finalize of the handle.
    """

    def __init__(self, deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None, *,
                 path: str | None = None, timeout: float | None = None) -> None:
        super().__init__(SERVICE_ID, path=path, timeout=timeout)
        self._deliver_fn = deliver
        self._confchg_fn = confchg

    def join(self, groups: Iterable[str], *, timeout: float | None = None) -> None:
        """Add ``groups`` to this handle's groups (joining one twice is harmless)."""
        self._call(Request.JOIN, GroupRequest.pack(_checked_groups(groups)), timeout=checked_timeout(timeout))

    def leave(self, groups: Iterable[str], *, timeout: float | None = None) -> None:
        """Remove ``groups``; NotExist (and no change) if any of them is not joined."""
        self._call(Request.LEAVE, GroupRequest.pack(_checked_groups(groups)), timeout=checked_timeout(timeout))

    def mcast_joined(self, data: bytes, guarantee: int = AGREED, *, timeout: float | None = None) -> None:
        """Multicast ``data`` to this handle's groups; TryAgain when the executive is backed up.

        ``timeout``: seconds a send may wait while the executive takes no data (then ``Timeout``).
        """
        timeout = checked_timeout(timeout)
        _checked_message(data, guarantee)
        try:
            request = McastJoinedRequest.pack(guarantee, data)
        except MessageError as exc:  # data that is not bytes-like
            raise InvalidParam(str(exc)) from None
        self._send_pipelined(Request.MCAST_JOINED, request, *(() if timeout is None else (timeout,)))

    def mcast_groups(self, groups: Iterable[str], data: bytes, guarantee: int = AGREED, *,
                     timeout: float | None = None) -> None:
        """Multicast ``data`` to ``groups`` (joined or not); ``timeout`` as for :meth:`mcast_joined`."""
        timeout = checked_timeout(timeout)
        _checked_message(data, guarantee)
        names = _checked_groups(groups)
        try:
            request = McastGroupsRequest.pack(guarantee, names, data)
        except MessageError as exc:  # data that is not bytes-like
            raise InvalidParam(str(exc)) from None
        self._send_pipelined(Request.MCAST_GROUPS, request, *(() if timeout is None else (timeout,)))

    def membership(self, *, timeout: float | None = None) -> tuple[int, list[int]]:
        """(local nodeid, nodeids of the current ring)."""
        local, members = MembershipResponse.decode(self._call(Request.MEMBERSHIP, b"",
                                                              timeout=checked_timeout(timeout)))
        return local, members

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.DELIVER:
            nodeid, data = Deliver.unpack(payload)
            if self._deliver_fn is not None:
                self._deliver_fn(nodeid, bytes(data))
        elif msg_id == Callback.CONFCHG:
            members, left, joined = Confchg.decode(payload)
            if self._confchg_fn is not None:
                self._confchg_fn(members, left, joined)
        else:
            raise MessageError("EVS callback", None, f"unknown callback id {msg_id}")


def initialize(deliver: DeliverFn | None = None, confchg: ConfchgFn | None = None, *,
               path: str | None = None, timeout: float | None = None) -> EvsHandle:
    """Connect to the local executive's EVS service and return a handle.

    ``path``: its IPC socket (default ``$OPENAIS_IPC_SOCKET``); ``timeout``: seconds to connect.
    """
    return EvsHandle(deliver=deliver, confchg=confchg, path=path, timeout=timeout)
