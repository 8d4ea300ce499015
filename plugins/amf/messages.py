"""AMF cluster messages: what the executives multicast to each other, defined once.

The sender's nodeid is not carried (the ring delivers it).  Every decoder is
strict (:class:`openais.message.MessageError` on anything malformed).
"""

from __future__ import annotations

import enum

from openais.message import U8, U32, U64, Bool, Bytes, Message, Optional, Str

_NAME = 1024


class Exec(enum.IntEnum):
    """Cluster message ids of the AMF service."""

    SYNC = 0
    STARTUP = 1
    STARTUP_EXPIRED = 2
    REGISTER = 3
    UNREGISTER = 4
    INST_FAILED = 5
    LC_DONE = 6
    RESPONSE = 7
    QUIESCING_COMPLETE = 8
    ERROR = 9
    ERROR_CLEAR = 10
    ADMIN = 11
    NODE_STOP = 12
    ADJUST = 13
    DEP_EXPIRED = 14


class Startup(Message):
    """The first AMF member's clock: the startup timeout runs from here."""

    time_ns = U64()


class Empty(Message):
    """A message with no fields."""


class Register(Message):
    """A process of the sender's node registers (or unregisters) a component."""

    comp = Str(max_len=_NAME)
    conn = U64()
    request = U64()
    pid = U32()
    proxy = Optional(Str(max_len=_NAME))


class InstFailed(Message):
    """The sender's INSTANTIATE of ``comp`` (at ``epoch``) failed."""

    comp = Str(max_len=_NAME)
    epoch = U32()
    reason = Str(max_len=1024)


class LcDone(Message):
    """A life-cycle step (``what``: clean, term, inst) of ``comp`` at ``epoch`` finished on its node."""

    comp = Str(max_len=_NAME)
    epoch = U32()
    what = Str(max_len=16)
    ok = U8()


class Response(Message):
    """The answer to callback ``invocation`` (also a callback timeout, error TIMEOUT)."""

    invocation = U64()
    error = U32()


class Error(Message):
    """An error of a component with its recommended recovery (0: the component's own)."""

    comp = Str(max_len=_NAME)
    recovery = U32()
    time_ns = U64()
    source = Str(max_len=64)


class ErrorClear(Message):
    """component_error_clear."""

    comp = Str(max_len=_NAME)
    time_ns = U64()


class Admin(Message):
    """An administrative operation asked on the sender's node."""

    target = Str(max_len=_NAME)
    op = U32()
    conn = U64()
    request = U64()
    time_ns = U64()


class Adjust(Message):
    """Auto-adjust: the SG stayed undisturbed (``epoch``) for its AutoAdjustProb; take one step."""

    sg = Str(max_len=_NAME)
    epoch = U32()
    step = U32()


class DepExpired(Message):
    """A sponsor of ``si`` stayed without its active assignment for the tolerance time (window ``epoch``)."""

    si = Str(max_len=_NAME)
    epoch = U32()


class SyncRecord(Message):
    """A node's share of the sync round: its identity, model digest and (JSON) runtime."""

    nodeid = U32()
    hostname = Str(max_len=256)
    digest = Str(max_len=64)
    #: whether the sender's side of the partition was quorate when the ring changed (the merge prefers it)
    quorate = Bool()
    runtime = Bytes(max_len=64 << 20)


DECODERS: dict[int, type[Message]] = {
    Exec.STARTUP: Startup, Exec.STARTUP_EXPIRED: Empty, Exec.REGISTER: Register, Exec.UNREGISTER: Register,
    Exec.INST_FAILED: InstFailed, Exec.LC_DONE: LcDone, Exec.RESPONSE: Response,
    Exec.QUIESCING_COMPLETE: Response, Exec.ERROR: Error, Exec.ERROR_CLEAR: ErrorClear, Exec.ADMIN: Admin,
    Exec.NODE_STOP: Empty, Exec.ADJUST: Adjust, Exec.DEP_EXPIRED: DepExpired,
}
