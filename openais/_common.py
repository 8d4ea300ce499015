"""Argument checks and callback bookkeeping the service libraries share (CKPT, EVT, LCK, ...).

Each check raises the :class:`openais.AisError` subclass the AIS contract
names for a bad argument, so that every service answers the same mistake
the same way:

* :func:`check_version`: a SaVersionT ``(release, major, minor)`` the
  service speaks, else ``Version``;
* :func:`check_name`: a SaNameT as ``str`` of 1..256 bytes of UTF-8, else
  ``InvalidParam`` (not a str, empty, not encodable) or ``NameTooLong``;
* :func:`check_u64` / :func:`check_invocation`: an unsigned 64-bit int
  (a bool is not one), else ``InvalidParam``;
* :func:`timeout_ns`: a call timeout in seconds as SaTimeT nanoseconds
  (``None`` and anything beyond SaTimeT wait forever), ``InvalidParam`` when
  not a number >= 0, ``Timeout`` for 0 (a call that always waits for the
  cluster cannot finish in no time).

The *async open* calls (``checkpoint_open_async``, ``channel_open_async``)
remember what they asked under their invocation until the callback brings
the object: :func:`remember_open`, :func:`forget_open`, :func:`claim_open`
keep that in a plain dict, several opens under one invocation answered in
the order they were asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from openais.errors import InvalidParam, NameTooLong, Timeout, Version

#: Largest unsigned 64-bit value (invocations, handles).
U64_MAX = (1 << 64) - 1
#: Largest SaTimeT (nanoseconds); SA_TIME_END.
TIME_MAX = (1 << 63) - 1
#: Longest SaNameT, in bytes of UTF-8 (SA_MAX_NAME_LENGTH).
MAX_NAME = 256


def check_version(version: Any, service: str, majors: Iterable[int], spoken: str) -> tuple[str, int, int]:
    """``version`` when it is ``(release, major, minor)`` with release 'B' and a major in ``majors``; else Version."""
    ok = (isinstance(version, tuple) and len(version) == 3 and isinstance(version[0], str)
          and all(isinstance(v, int) and not isinstance(v, bool) for v in version[1:]))
    if not ok or version[0] != "B" or version[1] not in set(majors):
        raise Version(f"{service} speaks {spoken}, not {version!r}")
    return version


def check_name(name: Any, what: str = "name", max_len: int = MAX_NAME) -> str:
    """``name`` when it is a str of 1..``max_len`` bytes of UTF-8; else InvalidParam or NameTooLong."""
    if not isinstance(name, str):
        raise InvalidParam(f"{what} must be a str, not {type(name).__name__}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidParam(f"{what} is not encodable as UTF-8") from None
    if size == 0:
        raise InvalidParam(f"{what} must not be empty")
    if size > max_len:
        raise NameTooLong(f"{what} is {size} bytes of UTF-8, at most {max_len}")
    return name


def check_u64(value: Any, what: str) -> int:
    """``value`` when it is an int in 0..2**64-1 (not a bool); else InvalidParam."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise InvalidParam(f"{what} must be an unsigned 64-bit int, not {value!r}")
    return value


def check_invocation(invocation: Any) -> int:
    """An async call's ``invocation`` (an unsigned 64-bit int); else InvalidParam."""
    return check_u64(invocation, "invocation")


def timeout_ns(timeout: Any, forever: int, *, infinite: bool = True) -> int:
    """A call timeout in seconds as nanoseconds; ``forever`` for None (and, with ``infinite``, beyond SaTimeT).

    InvalidParam unless a number >= 0 (a bool is not one; ``inf`` only with
    ``infinite``); Timeout when it is 0 ns: nothing is sent.
    """
    if timeout is None:
        return forever
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout < 0
            or (math.isinf(timeout) and not infinite)):
        raise InvalidParam(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    if timeout * 1e9 >= TIME_MAX:
        return forever if infinite else TIME_MAX
    ns = int(timeout * 1e9)
    if ns == 0:
        raise Timeout("timeout 0: the call always waits for the cluster, nothing was sent")
    return ns


def remember_open(pending: dict[int, list[Any]], invocation: int, asked: Any) -> None:
    """Keep what an async open asked (name, flags, ...) under its invocation, behind earlier ones."""
    pending.setdefault(invocation, []).append(asked)


def forget_open(pending: dict[int, list[Any]], invocation: int) -> None:
    """The open just remembered under ``invocation`` was not sent after all (the call failed)."""
    queued = pending.get(invocation)
    if queued:
        queued.pop()
    if not queued:
        pending.pop(invocation, None)


def claim_open(pending: dict[int, list[Any]], invocation: int, default: Any) -> Any:
    """What the oldest async open under ``invocation`` asked (its callback came), or ``default``."""
    queued = pending.get(invocation)
    if not queued:
        pending.pop(invocation, None)
        return default
    asked = queued.pop(0)
    if not queued:
        del pending[invocation]
    return asked


__all__ = [
    "MAX_NAME", "TIME_MAX", "U64_MAX", "check_invocation", "check_name", "check_u64", "check_version",
    "claim_open", "forget_open", "remember_open", "timeout_ns",
]
