"""IPC frames between the library and the executive: one definition, used by both sides.

Every frame starts with its total size (header included), network order:

request   ``size u32, service u16, msg_id u16, request_id u32`` + payload
response  ``size u32, service u16, msg_id u16, request_id u32, error u32`` + payload

A library handle opens two Unix-socket connections to the executive:

1. the *response channel*: its first frame is a HELLO request
   (``msg_id`` :data:`HELLO_RESPONSE`, payload = library protocol version);
   the answer carries the connection id and a random cookie;
2. the *dispatch channel*: its first frame is a HELLO request
   (``msg_id`` :data:`HELLO_DISPATCH`, payload = connection id + cookie).
   Afterwards only the executive writes on it: callback frames (response
   header, request id 0), and a :data:`PIPELINE_ERROR` frame for each
   pipelined request it answered with an error.  The library's selection
   object (``fileno()``) is an epoll set of its descriptor and of an eventfd
   the library raises while callbacks it already read wait to run.
"""

from __future__ import annotations

import os
import struct

#: Default path of the executive's socket (``OPENAIS_IPC_SOCKET`` overrides it).
DEFAULT_SOCKET = "/var/run/openais/aisexec.sock"
#: Environment variable naming the socket.
SOCKET_ENV = "OPENAIS_IPC_SOCKET"
#: Version of this frame protocol (HELLO payload).
PROTOCOL_VERSION = 1
#: Largest frame either side accepts by default (1 MiB of payload plus room for headers).
MAX_FRAME = 1024 * 1024 + 64 * 1024

HELLO_RESPONSE = 0xFFFF
HELLO_DISPATCH = 0xFFFE
#: A dispatch-channel frame (response header, no payload): the executive answered pipelined request
#: ``request_id`` with ``error``; ``dispatch`` raises it without reading the response channel.
PIPELINE_ERROR = 0xFFFD

REQUEST = struct.Struct("!IHHI")
RESPONSE = struct.Struct("!IHHII")
HELLO_VERSION = struct.Struct("!I")
HELLO_ANSWER = struct.Struct("!Q16s")
COOKIE_SIZE = 16


class FrameError(ValueError):
    """A frame that does not fit the protocol."""


def socket_path() -> str:
    """The executive's socket as the environment names it."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def encode_request(service: int, msg_id: int, request_id: int, payload: bytes = b"") -> bytes:
    """One request frame."""
    return REQUEST.pack(REQUEST.size + len(payload), service, msg_id, request_id) + payload


def encode_response(service: int, msg_id: int, request_id: int, error: int, payload: bytes = b"") -> bytes:
    """One response (or callback) frame."""
    return RESPONSE.pack(RESPONSE.size + len(payload), service, msg_id, request_id, error) + payload


def check_size(size: int, header: int, max_frame: int) -> None:
    """Raise FrameError unless a frame's size field is plausible."""
    if size < header:
        raise FrameError(f"frame size {size} is smaller than its {header}-byte header")
    if size > max_frame:
        raise FrameError(f"frame size {size} exceeds the limit of {max_frame} bytes")


def split_requests(buf: bytearray, max_frame: int = MAX_FRAME) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """Parse every complete request frame at the start of ``buf``.

    Returns ``([(service, msg_id, request_id, payload), ...], consumed)``; the
    caller drops ``consumed`` bytes.  Raises FrameError on a malformed frame.
    """
    frames = []
    offset = 0
    view = memoryview(buf)
    total = len(buf)
    try:
        while total - offset >= REQUEST.size:
            size, service, msg_id, request_id = REQUEST.unpack_from(view, offset)
            check_size(size, REQUEST.size, max_frame)
            if total - offset < size:
                break
            frames.append((service, msg_id, request_id, bytes(view[offset + REQUEST.size : offset + size])))
            offset += size
    finally:
        view.release()
    return frames, offset


def split_responses(buf: bytearray, max_frame: int = MAX_FRAME) -> tuple[list[tuple[int, int, int, int, bytes]], int]:
    """Parse every complete response frame at the start of ``buf`` (see :func:`split_requests`)."""
    frames = []
    offset = 0
    view = memoryview(buf)
    total = len(buf)
    try:
        while total - offset >= RESPONSE.size:
            size, service, msg_id, request_id, error = RESPONSE.unpack_from(view, offset)
            check_size(size, RESPONSE.size, max_frame)
            if total - offset < size:
                break
            frames.append((service, msg_id, request_id, error, bytes(view[offset + RESPONSE.size : offset + size])))
            offset += size
    finally:
        view.release()
    return frames, offset
