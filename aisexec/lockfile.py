"""Single-instance lock on the state directory, and the daemon's pid file.

The lock is an ``fcntl.lockf`` write lock on ``<state_dir>/aisexec.lock``;
the file holds the owner's pid for the error message.  The kernel drops the
lock when its process dies, so a file left behind by a SIGKILLed executive
never blocks the next start.

Nothing here removes a file this process does not own: the lock file is
never removed, and the pid file is removed only while it still is the very
file this process wrote (same device and inode) and names this process.
"""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = "aisexec.lock"
PID_NAME = "aisexec.pid"
#: Pid files this process wrote: path -> (st_dev, st_ino, st_ctime_ns) of the file it put there.
_WRITTEN: dict[str, tuple[int, int, int]] = {}


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

    The lock is taken on the file the path names after locking (a file
    removed and recreated meanwhile is locked afresh), so two executives never
    hold locks on two different files of one path.

    Note: fcntl locks belong to the process; a fork keeps them in the
    parent only, so daemon mode must take the lock in the final child.
    """
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    path = os.path.join(state_dir, name)
    for _attempt in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunningError(path, pid) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the file was replaced between open and lock: lock the one the path names now
    else:
        raise AlreadyRunningError(path, None)
    lock = InstanceLock(path, fd)
    lock.rewrite_pid()
    return lock


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    """Device, inode and change time: an inode number freed by an unlink is reused at once."""
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _same_file(fd: int, path: str) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def default_pidfile(state_dir: str) -> str:
    """``<state_dir>/aisexec.pid``."""
    return os.path.join(state_dir, PID_NAME)


def write_pidfile(path: str, pid: int | None = None) -> tuple[int, int, int]:
    """Atomically write ``pid`` (default the current one) to ``path`` (mode 0644); return its identity
    (device, inode, change time).

    The identity is remembered: :func:`remove_pidfile` removes only that very file.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(f"{os.getpid() if pid is None else pid}\n")
        os.fchmod(out.fileno(), 0o644)
    os.replace(tmp, path)
    identity = _identity(os.stat(path))
    _WRITTEN[os.path.abspath(path)] = identity
    return identity


def remove_pidfile(path: str, pid: int | None = None) -> bool:
    """Remove ``path`` if it still names ``pid`` (default the current one) and, when this process wrote a
    pid file there, is still that file (same device and inode); True when removed."""
    key = os.path.abspath(path)
    written = _WRITTEN.get(key)
    try:
        with open(path, encoding="ascii") as f:
            if written is not None and _identity(os.fstat(f.fileno())) != written:
                _WRITTEN.pop(key, None)
                return False  # another process replaced it: theirs now
            if f.read().strip() != str(os.getpid() if pid is None else pid):
                return False
        os.unlink(path)
    except (OSError, ValueError):
        return False
    _WRITTEN.pop(key, None)
    return True
