"""Cluster membership (CLM, SA Forum B.01.01): the application library and its IPC messages.

A handle answers who is in the cluster and tells the application when that
changes::

    from openais import clm

    def track(buffer, number_of_members, error): ...

    with clm.initialize(track=track) as h:
        now = h.track(clm.TRACK_CURRENT)             # with a track callback: delivered by dispatch
        h.track(clm.TRACK_CHANGES)                   # later changes: full set, per-node change
        me = h.node_get(clm.LOCAL_NODE_ID, timeout=1.0)
        h.dispatch(openais.DISPATCH_ALL)

Without a track callback, ``track(TRACK_CURRENT)`` returns the
:class:`NotificationBuffer` at once.  The IPC message layouts (network byte
order) are :class:`openais.message.Message` definitions, here once and imported
by the executive's CLM engine (``plugins.clm``); decoding raises
:class:`openais.message.MessageError` on anything malformed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from openais._client import Handle, checked_timeout
from openais.errors import AisError, SaAisError
from openais.message import I64, U8, U32, U64, Bool, Enum, List, Message, MessageError, Nested, Optional, Str

#: Service id of CLM.
SERVICE_ID = 1
#: ``SA_CLM_LOCAL_NODE_ID``: "the node this handle is connected to".
LOCAL_NODE_ID = 0xFFFFFFFF

#: Track flags (``SaUint8T trackFlags``).
TRACK_CURRENT = 0x01
TRACK_CHANGES = 0x02
TRACK_CHANGES_ONLY = 0x04
TRACK_ALL_FLAGS = TRACK_CURRENT | TRACK_CHANGES | TRACK_CHANGES_ONLY

#: Longest node address text (``SA_CLM_MAX_ADDRESS_LENGTH``) and node name (``SA_MAX_NAME_LENGTH``), in bytes.
MAX_ADDRESS = 64
MAX_NAME = 256
#: Most notifications one buffer carries (every member and every node that left).
MAX_NOTIFICATIONS = 1 << 16


class ClusterChange(enum.IntEnum):
    """``SaClmClusterChangesT``: how a node changed in a track notification."""

    NO_CHANGE = 1
    JOINED = 2
    LEFT = 3
    RECONFIGURED = 4


#: The old name, still caught by the operator tool: decoding raises :class:`openais.message.MessageError`.
ClmMessageError = MessageError


class Request(enum.IntEnum):
    """Library request message ids."""

    TRACK = 0  #: TrackRequest -> NotificationBuffer (when asked for) or empty
    TRACK_STOP = 1  #: empty -> empty
    NODE_GET = 2  #: NodeGetRequest -> ClusterNode
    NODE_GET_ASYNC = 3  #: NodeGetAsyncRequest -> empty (answer by the NODE_GET callback)


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    TRACK = 0  #: TrackCallback
    NODE_GET = 1  #: NodeGetCallback


# -- the IPC messages ------------------------------------------------------------


class ClusterNode(Message):
    """``SaClmClusterNodeT``: one node of the cluster.

    ``boot_timestamp`` is nanoseconds since the epoch at which the node's
    executive started; ``initial_view_number`` is the view in which it joined.
    """

    node_id = U32()
    node_address = Str(max_len=MAX_ADDRESS)
    node_name = Str(max_len=MAX_NAME)
    member = Bool()
    boot_timestamp = I64()
    initial_view_number = U64()


class Notification(Message):
    """``SaClmClusterNotificationT``: a node and how it changed."""

    node = Nested(ClusterNode)
    cluster_change = Enum(ClusterChange)


class NotificationBuffer(Message):
    """``SaClmClusterNotificationBufferT``: the view number and its notifications."""

    view_number = U64()
    notifications = List(Notification, max_count=MAX_NOTIFICATIONS)


class TrackRequest(Message):
    """TRACK request: the flags, and whether the current set comes back in the response."""

    flags = U8()
    want_buffer = Bool()


class NodeGetRequest(Message):
    """NODE_GET request."""

    node_id = U32()


class NodeGetAsyncRequest(Message):
    """NODE_GET_ASYNC request: the caller's invocation and the node id."""

    invocation = U64()
    node_id = U32()


class TrackCallback(Message):
    """TRACK callback: the member count, an error code and the notification buffer."""

    number_of_members = U32()
    error = U32()
    buffer = Nested(NotificationBuffer)


class NodeGetCallback(Message):
    """NODE_GET callback: the invocation, an error code, and the node when the error is OK."""

    invocation = U64()
    error = U32()
    node = Optional(Nested(ClusterNode))


def flags_error(flags: int) -> int:
    """SaAisError code for ``flags`` of a track request: OK, or BAD_FLAGS (unknown bits, CHANGES|CHANGES_ONLY)."""
    if not isinstance(flags, int) or flags & ~TRACK_ALL_FLAGS or flags == 0:
        return SaAisError.BAD_FLAGS
    if flags & TRACK_CHANGES and flags & TRACK_CHANGES_ONLY:
        return SaAisError.BAD_FLAGS
    return SaAisError.OK


# -- the library -----------------------------------------------------------------------

#: ``track(buffer, number_of_members, error)``
TrackFn = Callable[[NotificationBuffer, int, int], None]
#: ``node_get(invocation, node_or_None, error)``
NodeGetFn = Callable[[int, ClusterNode | None, int], None]


def _fail(code: int, message: str) -> AisError:
    return AisError.from_code(code, message)


def _error_code(code: int) -> int:
    """``code`` as a SaAisError member when it is one (callbacks get readable names)."""
    try:
        return SaAisError(code)
    except ValueError:
        return code


def _checked_node_id(node_id: int) -> int:
    if isinstance(node_id, bool) or not isinstance(node_id, int) or not 1 <= node_id <= 0xFFFFFFFF:
        raise _fail(SaAisError.INVALID_PARAM, f"node id must be 1..0xffffffff, not {node_id!r}")
    return node_id


class ClmHandle(Handle):
    """One CLM handle (``SaClmHandleT``); callbacks run in ``dispatch``."""

    def __init__(self, track: TrackFn | None = None, node_get: NodeGetFn | None = None, *,
                 path: str | None = None, timeout: float | None = None) -> None:
        super().__init__(SERVICE_ID, path=path, timeout=timeout)
        self._track_fn = track
        self._node_get_fn = node_get

    def track(self, flags: int, buffer: bool | None = None, *,
              timeout: float | None = None) -> NotificationBuffer | None:
        """``saClmClusterTrack``: fetch the current membership and/or start tracking changes.

        With ``TRACK_CURRENT`` the current members come back as the return
        value when ``buffer`` is true, or through the track callback when it
        is false; by default (None) they are returned only when no track
        callback was registered.  ``TRACK_CHANGES`` / ``TRACK_CHANGES_ONLY``
        need the track callback (``Init`` otherwise).
        """
        if isinstance(flags, bool) or not isinstance(flags, int) or flags_error(flags) != SaAisError.OK:
            raise _fail(SaAisError.BAD_FLAGS, f"invalid track flags {flags!r}")
        want_buffer = bool(flags & TRACK_CURRENT) and (self._track_fn is None if buffer is None else buffer)
        needs_callback = bool(flags & (TRACK_CHANGES | TRACK_CHANGES_ONLY)) or (
            bool(flags & TRACK_CURRENT) and not want_buffer
        )
        if needs_callback and self._track_fn is None:
            raise _fail(SaAisError.INIT, "no track callback was registered at initialize")
        payload = self._call(Request.TRACK, TrackRequest.pack(flags, want_buffer), timeout=checked_timeout(timeout))
        return NotificationBuffer.decode(payload) if want_buffer else None

    def track_stop(self, *, timeout: float | None = None) -> None:
        """``saClmClusterTrackStop``: stop change tracking (NotExist when none is active)."""
        self._call(Request.TRACK_STOP, b"", timeout=checked_timeout(timeout))

    def node_get(self, node_id: int = LOCAL_NODE_ID, timeout: float | None = None) -> ClusterNode:
        """``saClmClusterNodeGet``: one node (``LOCAL_NODE_ID`` = this one); NotExist if it is not a member.

        ``timeout`` is in seconds (None waits as long as the executive is
        alive); 0 gives ``Timeout`` at once, as openais did; negative is
        ``InvalidParam``.
        """
        _checked_node_id(node_id)
        if timeout is not None:
            if timeout < 0:
                raise _fail(SaAisError.INVALID_PARAM, f"timeout must not be negative, not {timeout}")
            if timeout == 0:
                raise _fail(SaAisError.TIMEOUT, "timeout 0 expires at once")
        return ClusterNode.decode(self._call(Request.NODE_GET, NodeGetRequest.pack(node_id), timeout=timeout))

    def node_get_async(self, invocation: int, node_id: int = LOCAL_NODE_ID, *, timeout: float | None = None) -> None:
        """``saClmClusterNodeGetAsync``: the answer comes to the node-get callback with ``invocation``."""
        _checked_node_id(node_id)
        if isinstance(invocation, bool) or not isinstance(invocation, int) or not 0 <= invocation < 1 << 64:
            raise _fail(SaAisError.INVALID_PARAM, f"invocation must be an unsigned 64-bit int, not {invocation!r}")
        if self._node_get_fn is None:
            raise _fail(SaAisError.INIT, "no node_get callback was registered at initialize")
        self._call(Request.NODE_GET_ASYNC, NodeGetAsyncRequest.pack(invocation, node_id),
                   timeout=checked_timeout(timeout))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.TRACK:
            members, error, buffer = TrackCallback.decode(payload)
            if self._track_fn is not None:
                self._track_fn(buffer, members, _error_code(error))
        elif msg_id == Callback.NODE_GET:
            invocation, error, node = NodeGetCallback.decode(payload)
            if self._node_get_fn is not None:
                self._node_get_fn(invocation, node, _error_code(error))
        else:
            raise MessageError("CLM callback", None, f"unknown callback id {msg_id}")


def initialize(track: TrackFn | None = None, node_get: NodeGetFn | None = None, *,
               path: str | None = None, timeout: float | None = None) -> ClmHandle:
    """``saClmInitialize``: connect to the local executive's CLM service.

    ``path``: its IPC socket (default ``$OPENAIS_IPC_SOCKET``); ``timeout``: seconds to connect.
    """
    return ClmHandle(track=track, node_get=node_get, path=path, timeout=timeout)


def cluster_nodes(path: str | None = None, *, timeout: float | None = None) -> NotificationBuffer:
    """The current members of the cluster with the view number (opens and closes a handle)."""
    with ClmHandle(path=path, timeout=timeout) as handle:
        return NotificationBuffer.decode(handle._call(Request.TRACK, TrackRequest.pack(TRACK_CURRENT, True),
                                                      timeout=checked_timeout(timeout)))
