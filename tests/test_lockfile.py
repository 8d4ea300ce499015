"""Single-instance lock: a second holder fails naming the pid; a SIGKILLed holder leaves no lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from aisexec import lockfile
from aisexec.exitcodes import ExitCode

HOLDER = textwrap.dedent("""
    import sys, time
    from aisexec import lockfile
    lock = lockfile.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")

SECOND = textwrap.dedent("""
    import sys
    from aisexec import lockfile
    from aisexec.exitcodes import ExitCode
    try:
        lockfile.acquire(sys.argv[1])
    except lockfile.AlreadyRunningError as exc:
        print(exc, file=sys.stderr)
        sys.exit(ExitCode.ALREADY_RUNNING)
""")


@pytest.fixture
def holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()


def test_lock_writes_pid_and_releases(tmp_path):
    with lockfile.acquire(str(tmp_path)) as lock:
        assert lock.held
        assert (tmp_path / "aisexec.lock").read_text().strip() == str(os.getpid())
    assert not lock.held
    lockfile.acquire(str(tmp_path)).release()


def test_second_instance_fails_with_exit_code_and_pid(tmp_path, holder):
    second = subprocess.run([sys.executable, "-c", SECOND, str(tmp_path)], capture_output=True, text=True,
                            timeout=30)
    assert second.returncode == ExitCode.ALREADY_RUNNING == 18
    assert f"pid {holder.pid}" in second.stderr
    with pytest.raises(lockfile.AlreadyRunningError) as err:
        lockfile.acquire(str(tmp_path))
    assert err.value.pid == holder.pid


def test_sigkilled_holder_does_not_block(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(5)
    assert (tmp_path / "aisexec.lock").exists()  # the stale file stays ...
    lock = lockfile.acquire(str(tmp_path))  # ... but does not block
    try:
        assert (tmp_path / "aisexec.lock").read_text().strip() == str(os.getpid())
    finally:
        lock.release()


def test_pidfile_write_and_guarded_remove(tmp_path):
    path = str(tmp_path / "run" / "aisexec.pid")
    lockfile.write_pidfile(path)
    assert open(path).read().strip() == str(os.getpid())
    lockfile.remove_pidfile(path, pid=os.getpid() + 1)  # someone else's: kept
    assert os.path.exists(path)
    lockfile.remove_pidfile(path)
    assert not os.path.exists(path)
    assert lockfile.default_pidfile("/var/lib/openais") == "/var/lib/openais/aisexec.pid"
