"""``aisexec -t`` runs every check the start runs that needs no network, with file, line, key and exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from aisexec.exitcodes import ExitCode

UDPU = """\
totem {
    version: 2
    secauth: off
    transport: udpu
    interface {
        bindnetaddr: %(bind)s
        mcastport: %(port)d
        member {
            memberaddr: 127.0.0.1
        }
        member {
            memberaddr: 127.0.0.2
        }
    }
}
logging {
    to_stderr: yes
    to_syslog: no
}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_t(tmp_path, text: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    conf = tmp_path / "openais.conf"
    conf.write_text(text)
    environ = dict(os.environ)
    environ.pop("NOTIFY_SOCKET", None)
    environ.update({"OPENAIS_MAIN_CONFIG_FILE": str(conf), "OPENAIS_STATE_DIR": str(tmp_path / "state"),
                    "OPENAIS_IPC_SOCKET": str(tmp_path / "aisexec.sock")})
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env=environ, capture_output=True,
                          text=True, timeout=60)


def test_a_good_configuration_passes(tmp_path):
    result = run_t(tmp_path, UDPU % {"bind": "127.0.0.1", "port": free_udp_port()})
    assert result.returncode == 0, result.stderr
    assert "Configuration OK" in result.stdout


def test_a_bindnetaddr_that_is_not_local_is_a_configuration_error_with_its_line(tmp_path):
    result = run_t(tmp_path, UDPU.replace("memberaddr: 127.0.0.2", "memberaddr: 203.0.113.9")
                   % {"bind": "203.0.113.9", "port": free_udp_port()})
    assert result.returncode == ExitCode.CONFIG
    assert f"{tmp_path / 'openais.conf'}:6: totem.interface.bindnetaddr:" in result.stderr
    assert "matches no local interface" in result.stderr


def test_own_address_missing_from_the_member_list_and_a_member_twice(tmp_path):
    text = (UDPU % {"bind": "127.0.0.3", "port": free_udp_port()}).replace(
        "memberaddr: 127.0.0.2", "memberaddr: 127.0.0.1")
    result = run_t(tmp_path, text)
    assert result.returncode == ExitCode.CONFIG
    assert ":12: totem.interface.member.memberaddr: member 127.0.0.1 is listed twice" in result.stderr
    assert "this node's own address 127.0.0.3 is not in the member list" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # every finding, one line each


def test_a_non_loopback_metrics_address_is_refused_by_t(tmp_path):
    text = UDPU % {"bind": "127.0.0.1", "port": free_udp_port()} + \
        "aisexec {\n    metrics_port: 9405\n    metrics_address: 0.0.0.0\n}\n"
    result = run_t(tmp_path, text)
    assert result.returncode == ExitCode.CONFIG
    assert ":22: aisexec.metrics_address: 0.0.0.0 is not a loopback address" in result.stderr


def test_a_port_in_use_is_busy_not_a_configuration_error(tmp_path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        result = run_t(tmp_path, UDPU % {"bind": "127.0.0.1", "port": port})
    finally:
        holder.close()
    assert result.returncode == ExitCode.RESOURCE_BUSY, result.stderr
    assert "aisexec: busy:" in result.stderr and f"127.0.0.1:{port}" in result.stderr


def test_a_listening_ipc_socket_is_busy_and_survives(tmp_path):
    path = tmp_path / "aisexec.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    try:
        result = run_t(tmp_path, UDPU % {"bind": "127.0.0.1", "port": free_udp_port()})
        assert result.returncode == ExitCode.RESOURCE_BUSY
        assert f"another executive is listening on {path}" in result.stderr
        assert path.exists()
    finally:
        listener.close()


def test_a_blocked_broken_plugin_and_the_exit_code_order():
    from aisexec import preflight

    findings = [preflight.Finding(preflight.BUSY, "b"), preflight.Finding(preflight.PLUGIN, "p")]
    assert preflight.exit_code(findings) == ExitCode.PLUGIN
    assert preflight.exit_code([*findings, preflight.Finding(preflight.CONFIG, "c")]) == ExitCode.CONFIG
    assert preflight.exit_code([]) == ExitCode.OK
    assert str(preflight.Finding(preflight.CONFIG, "bad", "f.conf", 3, "totem.x")) == "f.conf:3: totem.x: bad"


@pytest.mark.multiprocess
def test_the_start_refuses_what_t_refuses_with_the_same_line(tmp_path):
    text = (UDPU % {"bind": "127.0.0.3", "port": free_udp_port()})
    conf = tmp_path / "openais.conf"
    conf.write_text(text)
    environ = dict(os.environ)
    environ.pop("NOTIFY_SOCKET", None)
    environ.update({"OPENAIS_MAIN_CONFIG_FILE": str(conf), "OPENAIS_STATE_DIR": str(tmp_path / "state"),
                    "OPENAIS_IPC_SOCKET": str(tmp_path / "aisexec.sock")})
    result = subprocess.run([sys.executable, "-m", "aisexec.main", "-f"], env=environ, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == ExitCode.CONFIG
    assert "aisexec: error:" in result.stderr and "own address 127.0.0.3 is not in the member list" in result.stderr
