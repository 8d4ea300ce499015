"""The aisexec command line: --version, -t, setuid refusal, unknown interface, bad key, and a real start/stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from aisexec import __version__, main
from aisexec.exitcodes import ExitCode
from aisexec.keygen import write_authkey

CONF = """\
totem {
    version: 2
    secauth: %s
    interface {
        ringnumber: 0
        bindnetaddr: 127.0.0.1
        mcastaddr: 239.255.1.1
        mcastport: 5405
    }
}
logging {
    to_stderr: yes
    to_syslog: no
}
"""


def _conf(tmp_path, secauth: str = "off") -> str:
    path = tmp_path / "openais.conf"
    path.write_text(CONF % secauth)
    return str(path)


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    environ.pop("NOTIFY_SOCKET", None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "aisexec.main", *args], env=environ, capture_output=True,
                          text=True, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aisexec: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_version_lists_interfaces(capsys):
    assert main.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert f"openais-py aisexec {__version__}" in out
    assert "default (openais-py" in out and "services:" in out


def test_test_config_ok(tmp_path, capsys):
    path = _conf(tmp_path)
    assert main.main(["-t", "-c", path]) == 0
    assert capsys.readouterr().out.strip() == f"Configuration OK: {path} (iface default)"


def test_test_config_reports_config_error_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.conf"
    path.write_text("totem {\n    tokn: 1000\n}\n")
    assert main.main(["-t", "-c", str(path)]) == ExitCode.CONFIG
    line = _one_error_line(capsys.readouterr().err)
    assert f"{path}:2" in line


def test_test_config_checks_the_key(tmp_path, monkeypatch, capsys):
    key = tmp_path / "authkey"
    monkeypatch.setenv("OPENAIS_TOTEM_AUTHKEY_FILE", str(key))
    path = _conf(tmp_path, "on")
    assert main.main(["-t", "-c", path]) == ExitCode.KEY
    assert f"ais-keygen -k {key}" in _one_error_line(capsys.readouterr().err)
    write_authkey(str(key))
    os.chmod(key, 0o644)
    assert main.main(["-t", "-c", path]) == ExitCode.KEY
    assert "chmod 0400" in _one_error_line(capsys.readouterr().err)
    os.chmod(key, 0o400)
    assert main.main(["-t", "-c", path]) == 0


@pytest.mark.parametrize("ids", [("getuid", "geteuid"), ("getgid", "getegid")])
def test_setuid_or_setgid_is_refused(tmp_path, monkeypatch, capsys, ids):
    real, effective = ids
    monkeypatch.setattr(os, real, lambda: 1000)
    monkeypatch.setattr(os, effective, lambda: 0)
    assert main.main(["-t", "-c", _conf(tmp_path)]) == ExitCode.SETUID == 22
    assert "setuid/setgid" in _one_error_line(capsys.readouterr().err)


def test_unknown_config_iface_lists_installed_ones(tmp_path):
    result = _run(["-t", "-c", _conf(tmp_path)], env={"OPENAIS_DEFAULT_CONFIG_IFACE": "nope"})
    assert result.returncode == ExitCode.PLUGIN
    line = _one_error_line(result.stderr)
    assert "'nope'" in line and "installed: " in line and "default" in line


@pytest.fixture
def node_env(tmp_path):
    notify_path = str(tmp_path / "notify")
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind(notify_path)
    notify_sock.settimeout(30)
    conf = tmp_path / "openais.conf"
    port = 20000 + os.getpid() % 20000
    conf.write_text(CONF.replace("secauth: %s", "secauth: off").replace("5405", str(port))
                    .replace("mcastaddr: 239.255.1.1", "member { memberaddr: 127.0.0.1 }")
                    .replace("version: 2", "version: 2\n    transport: udpu"))
    env = dict(os.environ)
    env.update({"OPENAIS_MAIN_CONFIG_FILE": str(conf), "OPENAIS_STATE_DIR": str(tmp_path / "state"),
                "OPENAIS_IPC_SOCKET": str(tmp_path / "aisexec.sock"), "NOTIFY_SOCKET": notify_path})
    procs: list[subprocess.Popen] = []
    try:
        yield env, notify_sock, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        notify_sock.close()


def _recv_until(sock: socket.socket, field: str, proc: subprocess.Popen | None = None) -> list[str]:
    seen = []
    sock.settimeout(0.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            if proc is not None and proc.poll() is not None:
                break
            continue
        seen.append(message)
        if field in message.split("\n"):
            return seen
    raise AssertionError(f"{field} not received: {seen}")


@pytest.mark.multiprocess
def test_foreground_start_ready_second_instance_and_sigterm(tmp_path, node_env):
    pytest.importorskip("aisexec.ipc.server", reason="the IPC server is not in the tree yet")
    env, notify_sock, procs = node_env
    proc = subprocess.Popen([sys.executable, "-m", "aisexec.main", "-f"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    try:
        _recv_until(notify_sock, "READY=1", proc)
    except AssertionError:
        proc.kill()
        pytest.fail(f"no READY=1; output: {proc.communicate(timeout=10)[0]}")
    assert os.path.exists(env["OPENAIS_IPC_SOCKET"])
    second_env = dict(env, NOTIFY_SOCKET="")
    second = subprocess.run([sys.executable, "-m", "aisexec.main", "-f"], env=second_env, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == ExitCode.ALREADY_RUNNING
    assert f"pid {proc.pid}" in _one_error_line(second.stderr)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "notice  [MAIN  ] openais-py aisexec" in out and "from " + env["OPENAIS_MAIN_CONFIG_FILE"] in out
    assert not os.path.exists(env["OPENAIS_IPC_SOCKET"])
    _recv_until(notify_sock, "STOPPING=1")


@pytest.mark.multiprocess
def test_daemon_mode_reports_lock_failure_through_the_parent(tmp_path, node_env):
    from aisexec import lockfile

    env, _, _ = node_env
    lock = lockfile.acquire(env["OPENAIS_STATE_DIR"])
    try:
        result = subprocess.run([sys.executable, "-m", "aisexec.main"], env=dict(env, NOTIFY_SOCKET=""),
                                capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert result.returncode == ExitCode.ALREADY_RUNNING
    assert f"pid {os.getpid()}" in _one_error_line(result.stderr)


FAKE_EXECUTIVE_RUN = """
import sys, types, gevent, gevent.event
from aisexec import main

class Executive:
    def __init__(self, config, env, services, authkey=None, logger=None):
        self.ready_event = gevent.event.Event()
        self.stop_requested = gevent.event.Event()
        self.nodeid = 7
        self.logger = logger
    def start(self):
        print("executive started", flush=True)
        gevent.spawn_later(0.1, self.ready_event.set)
    def stop(self):
        print("executive stopped", flush=True)

sys.modules["aisexec.executive"] = types.SimpleNamespace(Executive=Executive)
sys.exit(main.main(sys.argv[1:]))
"""


@pytest.mark.multiprocess
def test_signals_drive_a_foreground_daemon(tmp_path, node_env):
    """SIGHUP reopens logs, SIGUSR2 dumps the blackbox, SIGTERM stops cleanly; READY/STOPPING are notified."""
    env, notify_sock, procs = node_env
    logfile = tmp_path / "aisexec.log"
    conf = tmp_path / "openais.conf"
    conf.write_text(conf.read_text().replace("to_syslog: no", f"to_syslog: no\n    to_logfile: yes\n"
                                                            f"    logfile: {logfile}"))
    proc = subprocess.Popen([sys.executable, "-c", FAKE_EXECUTIVE_RUN, "-f", "--debug"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    _recv_until(notify_sock, "READY=1", proc)
    assert (tmp_path / "state" / "aisexec.lock").read_text().strip() == str(proc.pid)
    os.rename(logfile, tmp_path / "rotated.log")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not logfile.exists() or "SIGHUP" not in logfile.read_text():
        assert time.monotonic() < deadline, "SIGHUP did not reopen the log"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    dump = tmp_path / "state" / f"aisexec-blackbox.{proc.pid}.log"
    deadline = time.monotonic() + 10
    while not dump.exists() or "services:" not in dump.read_text():
        assert time.monotonic() < deadline, "SIGUSR2 wrote no dump"
        time.sleep(0.05)
    assert re.search(r"notice  \[MAIN  \] main.py:\d+ openais-py aisexec .* starting", dump.read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "executive started" in out and "executive stopped" in out and "SIGTERM: stopping" in out
    _recv_until(notify_sock, "STOPPING=1")
    assert "starting; config interface default" in (tmp_path / "rotated.log").read_text()


@pytest.mark.multiprocess
def test_daemon_mode_starts_writes_pidfile_and_stops(tmp_path, node_env):
    env, notify_sock, _ = node_env
    pidfile = tmp_path / "run" / "aisexec.pid"
    result = subprocess.run([sys.executable, "-c", FAKE_EXECUTIVE_RUN, "-p", str(pidfile)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    pid = int(pidfile.read_text())
    try:
        assert pid != os.getpid()
        assert (tmp_path / "state" / "aisexec.lock").read_text().strip() == str(pid)
        _recv_until(notify_sock, "READY=1")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while pidfile.exists():
            assert time.monotonic() < deadline, "daemon did not remove its pid file"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_crashed_long_lived_greenlet_stops_with_runtime_code(tmp_path):
    import gevent
    import gevent.event

    daemon = main.Daemon(prepared=None)
    daemon.stop_event = gevent.event.Event()
    daemon.watch(lambda: 1 / 0)
    assert daemon.stop_event.wait(5)
    assert daemon.exit_code == ExitCode.RUNTIME
    gevent.sleep(0)
