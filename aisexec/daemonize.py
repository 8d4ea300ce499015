"""Classic double-fork daemonizing, with the parent waiting for the child's verdict.

The parent keeps the read end of a pipe and blocks until the daemon writes
``OK`` (started) or ``ERR <code> <message>`` (failed), so ``aisexec``
without ``-f`` fails visibly on a bad configuration instead of dying
silently in the background.
"""

from __future__ import annotations

import os
import sys

import gevent

from aisexec.exitcodes import ExitCode


class StartupPipe:
    """The daemon's end of the start-up pipe: report success or failure exactly once."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, text: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, text.encode("utf-8", "replace")[:4000])
        except BrokenPipeError:
            return  # the parent is gone: nobody left to tell
        finally:
            os.close(fd)

    def started(self) -> None:
        """Tell the waiting parent the daemon runs (it exits 0)."""
        self._send("OK\n")

    def failed(self, code: int, message: str) -> None:
        """Tell the waiting parent the daemon failed (it prints ``message`` and exits ``code``)."""
        self._send(f"ERR {int(code)} {message}\n")

    @property
    def pending(self) -> bool:
        """True until a verdict was sent."""
        return self._fd is not None


def _wait_for_child(read_fd: int, prog: str) -> int:
    chunks = []
    while True:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    text = b"".join(chunks).decode("utf-8", "replace").strip()
    if text == "OK":
        return ExitCode.OK
    if text.startswith("ERR "):
        _, code, *rest = text.split(" ", 2)
        message = rest[0] if rest else "failed"
        print(f"{prog}: error: {message}", file=sys.stderr)
        try:
            return int(code)
        except ValueError:
            return ExitCode.DAEMONIZE
    print(f"{prog}: error: the daemon exited during start-up without a report", file=sys.stderr)
    return ExitCode.DAEMONIZE


def _redirect_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def daemonize(prog: str = "aisexec") -> StartupPipe:
    """Detach into the background; return in the daemon only, with its :class:`StartupPipe`.

    The original process never returns: it waits for the daemon's verdict and
    exits with 0 or the reported exit code.  The daemon is in a new session,
    has cwd ``/`` and stdin/stdout/stderr on ``/dev/null``.  Call this before
    starting gevent's hub work (gevent.reinit is run in the daemon).
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os.close(write_fd)
        os._exit(_wait_for_child(read_fd, prog))
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    _redirect_stdio()
    gevent.reinit()
    return StartupPipe(write_fd)
