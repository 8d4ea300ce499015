"""LCK client processes for the multi-process tests, and the history checker.

Run as a process (``python -m tests.lck_history MODE``):

``agent``   reads commands on stdin, one per line, and prints one JSON line per result or callback:
            ``open NAME [flags]``, ``lock TAG NAME MODE [flags] [signal] [timeout]`` (blocking, in its own
            thread), ``lock_async TAG NAME MODE [flags] [signal]``, ``unlock TAG``, ``purge NAME``,
            ``close NAME``, ``quit``.  Results: {"ok": cmd, "tag", "status", "lock_id"} or
            {"err": cmd, "tag", "error"}; callbacks: {"ev": "waiter" | "grant", ...}.
``worker``  ``worker NAME LOG COUNT [MODE]``: COUNT times lock NAME in EX (or MODE), read the last value
            of LOG, append value + 1 (one write), unlock; every step goes into the history (JSON lines).
            It starts once the file LOG.go exists (the test's start barrier).

The checker (:func:`check_history`) takes the values appended to LOG and the workers' histories and
asserts mutual exclusion (no two EX holders at once, from grant to unlock) and no lost update (the
appended values are exactly 1, 2, 3, ... with no value written twice).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import sys
import threading
import time

import openais
from openais import lck

_out_lock = threading.Lock()


def emit(obj: dict) -> None:
    """Print one JSON line (thread-safe)."""
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _retry(fn, *args, **kwargs):
    """Call ``fn`` until it stops raising TryAgain (sync after a membership change)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return fn(*args, **kwargs)
        except openais.TryAgain:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- agent ----------------------------------------------------------------------------------------------


def agent() -> None:
    """Serve commands until quit or end of input."""

    def waiter(signal, lock_id, held, requested):
        emit({"ev": "waiter", "signal": signal, "lock_id": lock_id, "held": held.name, "requested": requested.name})

    def grant(invocation, status, error):
        emit({"ev": "grant", "invocation": invocation, "status": None if status is None else status.name,
              "error": error.name})

    handle = lck.initialize(lock_grant=grant, lock_waiter=waiter)
    resources: dict[str, lck.Resource] = {}
    locks: dict[str, lck.Lock] = {}
    stop = threading.Event()

    def dispatcher() -> None:
        while not stop.is_set():
            try:
                readable, _, _ = select.select([handle], [], [], 0.2)
                if readable:
                    handle.dispatch(openais.DISPATCH_ALL)
            except (openais.AisError, ValueError, OSError):
                return

    threading.Thread(target=dispatcher, daemon=True).start()

    def run(words: list[str]) -> None:
        cmd = words[0]
        tag = words[1] if len(words) > 1 else ""
        try:
            if cmd == "open":
                flags = int(words[2]) if len(words) > 2 else lck.RESOURCE_CREATE
                resources[words[1]] = _retry(handle.resource_open, words[1], flags, timeout=30)
                emit({"ok": "open", "tag": tag})
            elif cmd in ("lock", "lock_async"):
                name, mode = words[2], lck.LockMode[words[3]]
                flags = int(words[4]) if len(words) > 4 else 0
                signal = int(words[5]) if len(words) > 5 else 0
                res = resources[name]
                if cmd == "lock":
                    timeout = float(words[6]) if len(words) > 6 else None
                    lock = _retry(res.lock, mode, flags, signal, timeout=timeout)
                else:
                    lock = _retry(res.lock_async, int(time.monotonic_ns() & 0xFFFFFF), mode, flags, signal)
                locks[tag] = lock
                emit({"ok": cmd, "tag": tag, "lock_id": lock.lock_id,
                      "status": None if lock.status is None else lock.status.name, "t": time.monotonic()})
            elif cmd == "unlock":
                locks[tag].unlock()
                emit({"ok": "unlock", "tag": tag})
            elif cmd == "purge":
                _retry(resources[tag].lock_purge)
                emit({"ok": "purge", "tag": tag})
            elif cmd == "close":
                resources.pop(tag).close()
                emit({"ok": "close", "tag": tag})
            else:
                emit({"err": cmd, "tag": tag, "error": "unknown command"})
        except openais.AisError as exc:
            emit({"err": cmd, "tag": tag, "error": exc.code.name})

    emit({"ok": "init", "pid": os.getpid()})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        threading.Thread(target=run, args=(words,), daemon=True).start()
    stop.set()
    handle.finalize()


# -- worker ---------------------------------------------------------------------------------------------


def _last_value(path: str) -> int:
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for raw in reversed(lines):
        if raw.strip():
            return int(raw.split()[0])
    return 0


def worker(name: str, log_path: str, count: int, mode: str = "EX") -> None:
    """Lock (EX; PR only to show that the checker catches a broken exclusion), read-modify-write, unlock."""
    me = os.getpid()
    with lck.initialize() as handle:
        res = _retry(handle.resource_open, name, lck.RESOURCE_CREATE, timeout=30)
        emit({"ev": "ready", "pid": me})
        go = log_path + ".go"  # a start barrier: the test creates it once every first worker is ready
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(count):
            t0 = time.monotonic()
            lock = _retry(res.lock, lck.LockMode[mode], timeout=20)
            if lock.status != lck.LockStatus.GRANTED:
                emit({"ev": "refused", "status": lock.status.name})
                continue
            t1 = time.monotonic()
            value = _last_value(log_path) + 1
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, f"{value} {me} {i}\n".encode())
            os.close(fd)
            t2 = time.monotonic()
            emit({"ev": "op", "pid": me, "i": i, "asked": t0, "granted": t1, "written": t2, "value": value})
            lock.unlock()
        emit({"ev": "done", "pid": me})


# -- checker --------------------------------------------------------------------------------------------


def read_log(path: str) -> list[tuple[int, int, int]]:
    """(value, pid, op) for every line appended to the shared log."""
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                value, pid, op = line.split()
                out.append((int(value), int(pid), int(op)))
    return out


def check_history(log: list[tuple[int, int, int]], ops: list[dict]) -> None:
    """Assert no lost update (values 1..N, each once) and mutual exclusion of the recorded critical sections.

    ``ops`` are the workers' completed operations: each holds the lock from ``granted`` to ``written``
    (the unlock is sent after). Two of them overlapping in time means two EX holders at once.
    """
    values = [v for v, _pid, _op in log]
    assert values == list(range(1, len(values) + 1)), f"lost or duplicated update: {values}"
    logged = {(pid, op) for _v, pid, op in log}
    for op in ops:
        assert (op["pid"], op["i"]) in logged, f"an operation reported done is not in the log: {op}"
    spans = sorted((op["granted"], op["written"], op["pid"]) for op in ops)
    for (s1, e1, p1), (s2, _e2, p2) in itertools.pairwise(spans):
        assert s2 >= e1, f"two EX holders at once: pid {p1} [{s1}, {e1}] and pid {p2} from {s2}"


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "agent":
        agent()
    elif mode == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])
    else:
        raise SystemExit(f"unknown mode {mode}")
