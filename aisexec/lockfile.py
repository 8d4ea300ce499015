"""Single-instance lock on the state directory, and the daemon's pid file.

The lock is an ``fcntl.lockf`` write lock on ``<state_dir>/aisexec.lock``;
the file holds the owner's pid for the error message.  The kernel drops the
lock when its process dies, so a file left behind by a SIGKILLed executive
never blocks the next start.
"""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = "aisexec.lock"
PID_NAME = "aisexec.pid"


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock; ``pid`` is its pid when it could be read (else None)."""

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"another aisexec is already running ({who} holds {path})")


class InstanceLock:
    """The held lock: keep the object alive for as long as the executive runs."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def rewrite_pid(self, pid: int | None = None) -> None:
        """Write ``pid`` (default the current one) into the lock file, e.g. after daemonizing."""
        if self._fd is None:
            raise RuntimeError("lock released")
        text = f"{os.getpid() if pid is None else pid}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means nothing)."""
        if self._fd is not None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def acquire(state_dir: str, name: str = LOCK_NAME) -> InstanceLock:
    """Take the instance lock in ``state_dir`` (created 0750 if missing) or raise AlreadyRunningError.

    Note: fcntl locks belong to the process; a fork keeps them in the
    parent only, so daemon mode must take the lock in the final child.
    """
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    path = os.path.join(state_dir, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunningError(path, pid) from None
    lock = InstanceLock(path, fd)
    lock.rewrite_pid()
    return lock


def default_pidfile(state_dir: str) -> str:
    """``<state_dir>/aisexec.pid``."""
    return os.path.join(state_dir, PID_NAME)


def write_pidfile(path: str, pid: int | None = None) -> None:
    """Atomically write ``pid`` (default the current one) to ``path`` (mode 0644)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(f"{os.getpid() if pid is None else pid}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Remove ``path`` if it still names ``pid`` (default the current one)."""
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() != str(os.getpid() if pid is None else pid):
                return
        os.unlink(path)
    except (OSError, ValueError):
        return
