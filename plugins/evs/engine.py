"""The EVS service engine: group-addressed agreed-order messages and ring membership callbacks.

EVS keeps no replicated state: a handle's groups live on its own node only
(join and leave are answered locally), a multicast names its groups, and on
delivery every node hands it to each local handle joined to one of them.
Every REGULAR configuration is reported to every handle as node lists
(members, left since the previous regular configuration, joined).
"""

from __future__ import annotations

from typing import Any

from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.totem.api import ConfKind, MessageTooBig, QueueFull
from openais import evs as wire
from openais.errors import SaAisError
from openais.evs import (
    Confchg,
    Deliver,
    GroupRequest,
    McastGroupsRequest,
    McastJoinedRequest,
    MembershipResponse,
    Request,
)
from openais.message import MessageError
from plugins.evs.messages import Exec, McastMsg

_OK = int(SaAisError.OK)
_TRY_AGAIN = int(SaAisError.TRY_AGAIN)
_INVALID_PARAM = int(SaAisError.INVALID_PARAM)
_NOT_EXIST = int(SaAisError.NOT_EXIST)
_NO_SPACE = int(SaAisError.NO_SPACE)
_TOO_BIG = int(SaAisError.TOO_BIG)

#: Largest request payloads: a group list; a multicast (the guarantee, a group list, the largest message).
_GROUP_REQUEST = 4 + wire.MAX_GROUPS * (2 + wire.MAX_GROUP_NAME)
_MCAST_REQUEST = 1 + _GROUP_REQUEST + wire.MAX_MESSAGE


def _refusal(exc: MessageError) -> int:
    """The answer to a malformed multicast request: TOO_BIG when only the message is too long."""
    return _TOO_BIG if exc.field == "data" else _INVALID_PARAM


class EvsEngine(ServiceEngine):
    """Extended virtual synchrony groups (service id 0)."""

    id = wire.SERVICE_ID
    name = "EVS"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self._groups: dict[int, tuple[Any, set[str]]] = {}  # conn id -> (conn, joined groups)
        self._members: tuple[int, ...] = ()
        self.lib_handlers = {
            Request.JOIN: LibHandler(self._lib_join, max_size=_GROUP_REQUEST),
            Request.LEAVE: LibHandler(self._lib_leave, max_size=_GROUP_REQUEST),
            Request.MCAST_JOINED: LibHandler(self._lib_mcast_joined, needs_cluster=True, max_size=_MCAST_REQUEST,
                                             pipelined=True),
            Request.MCAST_GROUPS: LibHandler(self._lib_mcast_groups, needs_cluster=True, max_size=_MCAST_REQUEST,
                                             pipelined=True),
            Request.MEMBERSHIP: LibHandler(self._lib_membership, max_size=0),
        }
        self.exec_handlers = {Exec.MCAST: ExecHandler(self._exec_mcast)}

    # -- lifecycle ----------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the executive api."""
        self.api = api

    def lib_init(self, conn: Any) -> None:
        """A connection opened with no groups."""
        self._groups[conn.id] = (conn, set())

    def lib_exit(self, conn: Any) -> None:
        """A connection closed: forget its groups."""
        self._groups.pop(conn.id, None)

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Report every REGULAR configuration to every handle."""
        if kind != ConfKind.REGULAR:
            return
        before = set(self._members)
        self._members = tuple(members)
        callback = Confchg.pack(members, sorted(before - set(members)), sorted(set(members) - before))
        for conn, _groups in list(self._groups.values()):
            conn.dispatch(self.id, wire.Callback.CONFCHG, callback)

    def dump(self) -> dict:
        """Members and each connection's groups."""
        return {"members": list(self._members),
                "connections": {cid: sorted(groups) for cid, (_conn, groups) in self._groups.items()}}

    # -- library requests -----------------------------------------------------------

    def _lib_join(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            groups = GroupRequest.decode(payload).groups
        except MessageError:
            conn.respond(self.id, Request.JOIN, request_id, _INVALID_PARAM)
            return
        joined = self._groups[conn.id][1]
        if len(joined | set(groups)) > wire.MAX_GROUPS:
            conn.respond(self.id, Request.JOIN, request_id, _NO_SPACE)
            return
        joined.update(groups)
        conn.respond(self.id, Request.JOIN, request_id, _OK)

    def _lib_leave(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            groups = GroupRequest.decode(payload).groups
        except MessageError:
            conn.respond(self.id, Request.LEAVE, request_id, _INVALID_PARAM)
            return
        joined = self._groups[conn.id][1]
        if not set(groups) <= joined:
            conn.respond(self.id, Request.LEAVE, request_id, _NOT_EXIST)
            return
        joined.difference_update(groups)
        conn.respond(self.id, Request.LEAVE, request_id, _OK)

    def _lib_mcast_joined(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            guarantee, data = McastJoinedRequest.unpack(payload)
        except MessageError as exc:
            conn.respond(self.id, Request.MCAST_JOINED, request_id, _refusal(exc))
            return
        groups = sorted(self._groups[conn.id][1])
        self._send(conn, Request.MCAST_JOINED, request_id, groups, data, guarantee)

    def _lib_mcast_groups(self, conn: Any, request_id: int, payload: bytes) -> None:
        try:
            guarantee, groups, data = McastGroupsRequest.unpack(payload)
        except MessageError as exc:
            conn.respond(self.id, Request.MCAST_GROUPS, request_id, _refusal(exc))
            return
        self._send(conn, Request.MCAST_GROUPS, request_id, groups, data, guarantee)

    def _lib_membership(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.MEMBERSHIP, request_id, _OK,
                     MembershipResponse.pack(self.api.nodeid, self.api.members()))

    def _send(self, conn: Any, request: int, request_id: int, groups: list[str], data: memoryview,
              guarantee: int) -> None:
        try:
            self.api.mcast(self.id, Exec.MCAST, McastMsg.pack(groups, data), safe=guarantee == wire.SAFE)
        except QueueFull:
            conn.respond(self.id, request, request_id, _TRY_AGAIN)
            return
        except MessageTooBig:
            conn.respond(self.id, request, request_id, _TOO_BIG)
            return
        conn.respond(self.id, request, request_id, _OK)

    # -- cluster messages -----------------------------------------------------------

    def _exec_mcast(self, sender: int, payload: bytes) -> None:
        groups, data = McastMsg.unpack(payload)
        if not groups:
            return
        wanted = set(groups)
        callback = None
        for conn, joined in list(self._groups.values()):
            if joined.isdisjoint(wanted):
                continue
            if callback is None:
                callback = Deliver.pack(sender, data)
            conn.dispatch(self.id, wire.Callback.DELIVER, callback)
