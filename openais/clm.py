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
order) are defined once here and imported by the executive's CLM engine
(``plugins.clm``); every decoder raises :class:`ClmMessageError` on anything
malformed.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import NamedTuple

from openais._client import Handle
from openais.errors import AisError, SaAisError

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


class ClusterChange(enum.IntEnum):
    """``SaClmClusterChangesT``: how a node changed in a track notification."""

    NO_CHANGE = 1
    JOINED = 2
    LEFT = 3
    RECONFIGURED = 4


class ClusterNode(NamedTuple):
    """``SaClmClusterNodeT``: one node of the cluster.

    ``boot_timestamp`` is nanoseconds since the epoch at which the node's
    executive started; ``initial_view_number`` is the view in which it joined.
    """

    node_id: int
    node_address: str
    node_name: str
    member: bool
    boot_timestamp: int
    initial_view_number: int


class Notification(NamedTuple):
    """``SaClmClusterNotificationT``: a node and how it changed."""

    node: ClusterNode
    cluster_change: ClusterChange


class NotificationBuffer(NamedTuple):
    """``SaClmClusterNotificationBufferT``: the view number and its notifications."""

    view_number: int
    notifications: list[Notification]


class ClmMessageError(ValueError):
    """A CLM IPC message that does not decode."""


class Request(enum.IntEnum):
    """Library request message ids."""

    TRACK = 0  #: TrackRequest -> NotificationBuffer (when asked for) or empty
    TRACK_STOP = 1  #: empty -> empty
    NODE_GET = 2  #: node id -> ClusterNode
    NODE_GET_ASYNC = 3  #: invocation, node id -> empty (answer by the NODE_GET callback)


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    TRACK = 0  #: number of members, error, NotificationBuffer
    NODE_GET = 1  #: invocation, error, ClusterNode (when error is OK)


_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_TRACK_REQ = struct.Struct("!BB")  # flags, want buffer in the response
_NODE_HEAD = struct.Struct("!IBqQ")  # node id, member, boot timestamp, initial view
_CHANGE = struct.Struct("!B")
_BUFFER_HEAD = struct.Struct("!QI")  # view number, notification count
_TRACK_CB_HEAD = struct.Struct("!II")  # number of members, error
_ASYNC_REQ = struct.Struct("!QI")  # invocation, node id
_NODE_GET_CB_HEAD = struct.Struct("!QI")  # invocation, error


def flags_error(flags: int) -> int:
    """SaAisError code for ``flags`` of a track request: OK, or BAD_FLAGS (unknown bits, CHANGES|CHANGES_ONLY)."""
    if not isinstance(flags, int) or flags & ~TRACK_ALL_FLAGS or flags == 0:
        return SaAisError.BAD_FLAGS
    if flags & TRACK_CHANGES and flags & TRACK_CHANGES_ONLY:
        return SaAisError.BAD_FLAGS
    return SaAisError.OK


# -- building blocks -------------------------------------------------------------


def _pack_text(text: str, limit: int, what: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise ClmMessageError(f"{what} longer than {limit} bytes")
    return _U16.pack(len(raw)) + raw


def _unpack_text(buf: memoryview, offset: int, limit: int, what: str) -> tuple[str, int]:
    if offset + _U16.size > len(buf):
        raise ClmMessageError(f"truncated {what} length")
    (length,) = _U16.unpack_from(buf, offset)
    offset += _U16.size
    if length > limit or offset + length > len(buf):
        raise ClmMessageError(f"{what} length {length} out of range")
    try:
        text = bytes(buf[offset : offset + length]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClmMessageError(f"{what} is not UTF-8") from exc
    return text, offset + length


def _expect_end(buf: memoryview, offset: int) -> None:
    if offset != len(buf):
        raise ClmMessageError(f"{len(buf) - offset} trailing bytes")


def pack_node(node: ClusterNode) -> bytes:
    """A ClusterNode on the wire (shared with the engine's cluster messages)."""
    return b"".join((
        _NODE_HEAD.pack(node.node_id, 1 if node.member else 0, node.boot_timestamp, node.initial_view_number),
        _pack_text(node.node_address, MAX_ADDRESS, "node address"),
        _pack_text(node.node_name, MAX_NAME, "node name"),
    ))


def unpack_node(buf: memoryview, offset: int) -> tuple[ClusterNode, int]:
    """Read a ClusterNode at ``offset``; return it and the offset after it."""
    if offset + _NODE_HEAD.size > len(buf):
        raise ClmMessageError("truncated cluster node")
    node_id, member, boot, view = _NODE_HEAD.unpack_from(buf, offset)
    if member not in (0, 1):
        raise ClmMessageError(f"member flag {member} is not 0 or 1")
    address, offset = _unpack_text(buf, offset + _NODE_HEAD.size, MAX_ADDRESS, "node address")
    name, offset = _unpack_text(buf, offset, MAX_NAME, "node name")
    return ClusterNode(node_id, address, name, bool(member), boot, view), offset


def _pack_buffer(buffer: NotificationBuffer) -> bytes:
    parts = [_BUFFER_HEAD.pack(buffer.view_number, len(buffer.notifications))]
    for note in buffer.notifications:
        parts.append(pack_node(note.node))
        parts.append(_CHANGE.pack(note.cluster_change))
    return b"".join(parts)


def _unpack_buffer(buf: memoryview, offset: int) -> tuple[NotificationBuffer, int]:
    if offset + _BUFFER_HEAD.size > len(buf):
        raise ClmMessageError("truncated notification buffer")
    view, count = _BUFFER_HEAD.unpack_from(buf, offset)
    offset += _BUFFER_HEAD.size
    notes: list[Notification] = []
    for _ in range(count):
        if offset >= len(buf):
            raise ClmMessageError("notification count exceeds the payload")
        node, offset = unpack_node(buf, offset)
        if offset + _CHANGE.size > len(buf):
            raise ClmMessageError("truncated cluster change")
        (change,) = _CHANGE.unpack_from(buf, offset)
        try:
            notes.append(Notification(node, ClusterChange(change)))
        except ValueError as exc:
            raise ClmMessageError(f"unknown cluster change {change}") from exc
        offset += _CHANGE.size
    return NotificationBuffer(view, notes), offset


# -- requests and responses --------------------------------------------------------


def encode_track_request(flags: int, want_buffer: bool) -> bytes:
    """TRACK request: flags and whether the current set comes back in the response."""
    if not 0 <= flags <= 0xFF:
        raise ClmMessageError(f"track flags {flags} out of range")
    return _TRACK_REQ.pack(flags, 1 if want_buffer else 0)


def decode_track_request(payload: bytes) -> tuple[int, bool]:
    """Decode a TRACK request into (flags, want_buffer)."""
    if len(payload) != _TRACK_REQ.size:
        raise ClmMessageError("track request must be 2 bytes")
    flags, want = _TRACK_REQ.unpack(payload)
    if want not in (0, 1):
        raise ClmMessageError(f"want-buffer flag {want} is not 0 or 1")
    return flags, bool(want)


def encode_buffer(buffer: NotificationBuffer) -> bytes:
    """TRACK response with the current set: a notification buffer."""
    return _pack_buffer(buffer)


def decode_buffer(payload: bytes) -> NotificationBuffer:
    """Decode a notification buffer response."""
    buf = memoryview(payload)
    buffer, offset = _unpack_buffer(buf, 0)
    _expect_end(buf, offset)
    return buffer


def encode_node_id(node_id: int) -> bytes:
    """NODE_GET request: the node id."""
    return _U32.pack(node_id)


def decode_node_id(payload: bytes) -> int:
    """Decode a NODE_GET request."""
    if len(payload) != _U32.size:
        raise ClmMessageError("node id must be 4 bytes")
    return _U32.unpack(payload)[0]


def encode_node(node: ClusterNode) -> bytes:
    """NODE_GET response: one cluster node."""
    return pack_node(node)


def decode_node(payload: bytes) -> ClusterNode:
    """Decode a NODE_GET response."""
    buf = memoryview(payload)
    node, offset = unpack_node(buf, 0)
    _expect_end(buf, offset)
    return node


def encode_node_get_async(invocation: int, node_id: int) -> bytes:
    """NODE_GET_ASYNC request: the caller's invocation and the node id."""
    return _ASYNC_REQ.pack(invocation, node_id)


def decode_node_get_async(payload: bytes) -> tuple[int, int]:
    """Decode a NODE_GET_ASYNC request into (invocation, node id)."""
    if len(payload) != _ASYNC_REQ.size:
        raise ClmMessageError("async node get request must be 12 bytes")
    return _ASYNC_REQ.unpack(payload)


# -- callbacks -----------------------------------------------------------------------


def encode_track_callback(buffer: NotificationBuffer, number_of_members: int, error: int = SaAisError.OK) -> bytes:
    """TRACK callback: member count, error, notification buffer."""
    return _TRACK_CB_HEAD.pack(number_of_members, error) + _pack_buffer(buffer)


def decode_track_callback(payload: bytes) -> tuple[NotificationBuffer, int, int]:
    """Decode a TRACK callback into (buffer, number_of_members, error)."""
    buf = memoryview(payload)
    if len(buf) < _TRACK_CB_HEAD.size:
        raise ClmMessageError("truncated track callback")
    members, error = _TRACK_CB_HEAD.unpack_from(buf)
    buffer, offset = _unpack_buffer(buf, _TRACK_CB_HEAD.size)
    _expect_end(buf, offset)
    return buffer, members, error


def encode_node_get_callback(invocation: int, error: int, node: ClusterNode | None) -> bytes:
    """NODE_GET callback: invocation, error, then the node when error is OK."""
    head = _NODE_GET_CB_HEAD.pack(invocation, error)
    if error == SaAisError.OK:
        if node is None:
            raise ClmMessageError("a successful node get callback needs a node")
        return head + pack_node(node)
    return head


def decode_node_get_callback(payload: bytes) -> tuple[int, int, ClusterNode | None]:
    """Decode a NODE_GET callback into (invocation, error, node or None)."""
    buf = memoryview(payload)
    if len(buf) < _NODE_GET_CB_HEAD.size:
        raise ClmMessageError("truncated node get callback")
    invocation, error = _NODE_GET_CB_HEAD.unpack_from(buf)
    offset = _NODE_GET_CB_HEAD.size
    node = None
    if error == SaAisError.OK:
        node, offset = unpack_node(buf, offset)
    _expect_end(buf, offset)
    return invocation, error, node


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
                 path: str | None = None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self._track_fn = track
        self._node_get_fn = node_get

    def track(self, flags: int, buffer: bool | None = None) -> NotificationBuffer | None:
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
        payload = self._call(Request.TRACK, encode_track_request(flags, want_buffer))
        return decode_buffer(payload) if want_buffer else None

    def track_stop(self) -> None:
        """``saClmClusterTrackStop``: stop change tracking (NotExist when none is active)."""
        self._call(Request.TRACK_STOP, b"")

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
        return decode_node(self._call(Request.NODE_GET, encode_node_id(node_id), timeout=timeout))

    def node_get_async(self, invocation: int, node_id: int = LOCAL_NODE_ID) -> None:
        """``saClmClusterNodeGetAsync``: the answer comes to the node-get callback with ``invocation``."""
        _checked_node_id(node_id)
        if isinstance(invocation, bool) or not isinstance(invocation, int) or not 0 <= invocation < 1 << 64:
            raise _fail(SaAisError.INVALID_PARAM, f"invocation must be an unsigned 64-bit int, not {invocation!r}")
        if self._node_get_fn is None:
            raise _fail(SaAisError.INIT, "no node_get callback was registered at initialize")
        self._call(Request.NODE_GET_ASYNC, encode_node_get_async(invocation, node_id))

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        if msg_id == Callback.TRACK:
            buffer, members, error = decode_track_callback(payload)
            if self._track_fn is not None:
                self._track_fn(buffer, members, _error_code(error))
        elif msg_id == Callback.NODE_GET:
            invocation, error, node = decode_node_get_callback(payload)
            if self._node_get_fn is not None:
                self._node_get_fn(invocation, node, _error_code(error))
        else:
            raise ClmMessageError(f"unknown CLM callback {msg_id}")


def initialize(track: TrackFn | None = None, node_get: NodeGetFn | None = None, *,
               path: str | None = None) -> ClmHandle:
    """``saClmInitialize``: connect to the local executive's CLM service (``path``: its IPC socket)."""
    return ClmHandle(track=track, node_get=node_get, path=path)


def cluster_nodes(path: str | None = None) -> NotificationBuffer:
    """The current members of the cluster with the view number (opens and closes a handle)."""
    with ClmHandle(path=path) as handle:
        return decode_buffer(handle._call(Request.TRACK, encode_track_request(TRACK_CURRENT, True)))
