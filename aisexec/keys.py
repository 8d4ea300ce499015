"""Loading and checking the shared Totem authentication key (``authkey``)."""

from __future__ import annotations

import os
import stat

#: Size of the key ais-keygen writes and the executive accepts (1024 bits, as openais).
AUTHKEY_SIZE = 128


class KeyFileError(RuntimeError):
    """The authentication key is unusable; ``str()`` is one line saying how to fix it."""


def load_authkey(path: str) -> bytes:
    """Read the key at ``path`` after checking it exists, is private and is exactly 128 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"authentication key {path} does not exist; create it with 'ais-keygen -k {path}'") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open authentication key {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(
                f"authentication key {path} is not a regular file; create it with 'ais-keygen -k {path}'")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"authentication key {path} has mode {stat.S_IMODE(info.st_mode):04o}, readable or writable by "
                f"group/others; fix it with 'chmod 0400 {path}'"
            )
        data = os.read(fd, AUTHKEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != AUTHKEY_SIZE:
        size = f"{len(data)}" if len(data) <= AUTHKEY_SIZE else f"more than {AUTHKEY_SIZE}"
        raise KeyFileError(
            f"authentication key {path} is {size} bytes, must be {AUTHKEY_SIZE}; "
            f"regenerate it with 'ais-keygen --force -k {path}' and copy it to every node"
        )
    return data
