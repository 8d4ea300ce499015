"""What ran a benchmark: the interpreter, named in every JSON row so that figures can be compared.

The same code runs at very different speeds on different CPython builds: on the 2-core
benchmark machine a ``struct.unpack_from`` costs 0.054 us on Debian's ``/usr/bin/python3.11``
(3.11.2, built with PGO and LTO into a static executable) and 0.139 us on a pyenv 3.11.7
built with the defaults (no ``--enable-optimizations``, ``--enable-shared``).  A row that does
not say which interpreter produced it cannot be set beside another.
"""

from __future__ import annotations

import os
import platform
import sys
import timeit
from functools import cache


def interpreter() -> str:
    """``"CPython 3.11.2 /usr/bin/python3.11"``: implementation, version and the real executable (venv resolved)."""
    return f"{platform.python_implementation()} {platform.python_version()} {os.path.realpath(sys.executable)}"


def struct_unpack_ns(repeat: int = 5, number: int = 200_000) -> float:
    """Nanoseconds of one ``Struct.unpack_from`` of 16 bytes (best of ``repeat``): a rough speed of the interpreter."""
    best = min(timeit.repeat("u(b)", setup="import struct; u = struct.Struct('!IIQ').unpack_from; b = bytes(16)",
                             repeat=repeat, number=number))
    return round(best / number * 1e9, 1)


@cache
def host_fields() -> dict[str, object]:
    """The fields every benchmark row carries about what ran it (measured once per process)."""
    return {"python": interpreter(), "py_unpack_ns": struct_unpack_ns()}
