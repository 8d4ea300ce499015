"""What a benchmark reads about a process from ``/proc``: CPU seconds, kernel share, RSS, context switches.

Shared by the bench scripts (``from bench.procstat import cpu_s``), so each reads ``/proc`` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Clock ticks per second, the unit of ``utime``/``stime`` in ``/proc/<pid>/stat``.
TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def sys_s(pid: int) -> float:
    """System (kernel) CPU seconds ``pid`` has used so far: the kernel's share of :func:`cpu_s`."""
    return int(_stat_fields(pid)[12]) / TICK


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (or another ``/proc/<pid>/status`` field such as ``VmHWM``, the peak) of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ctx_switches(pid: int) -> int:
    """Context switches of ``pid``'s main thread so far (voluntary + involuntary)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            total += int(line.split()[1])
    return total
