"""A running executive as an operator and a third party meet it: plugins, metrics, readiness, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aisexec.embedded import single_node
from aisexec.localcluster import LocalCluster, free_port_pair
from tests.thirdparty import build_echo_distribution

pytestmark = pytest.mark.multiprocess

CLIENT = """
import sys
from openais._client import Handle
h = Handle(200)
print(h._call(1, b"abc").decode())
print(int.from_bytes(h._call(2, b""), "big"))
print(h._call(3, b"").decode())
h.finalize()
"""


SAFE_CLIENT = """
import select, openais
from openais import cpg
got = []
h = cpg.initialize(deliver=lambda g, n, p, d: got.append(d.decode()))
h.join("safe")
h.mcast(b"agreed-1")
h.mcast(b"safe-1", cpg.SAFE)
h.mcast(b"agreed-2", cpg.AGREED)
h.mcast(b"safe-2", cpg.SAFE)
while len(got) < 4:
    select.select([h], [], [], 5)
    h.dispatch(openais.DISPATCH_ALL)
print(" ".join(got))
"""


def wait_ready(env: dict, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "--ready"], env=env,
                             capture_output=True, text=True)
        if out.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError("executive never became ready")


def test_executive_loads_and_uses_a_third_party_service_and_config_parser(tmp_path):
    site = tmp_path / "site"
    build_echo_distribution(tmp_path / "src", site)
    node = single_node(tmp_path / "node")
    conf = tmp_path / "openais.json"
    conf.write_text(json.dumps({
        "totem": {"version": 2, "nodeid": 1, "secauth": "off", "transport": "udpu",
                  "interface": [{"ringnumber": 0, "bindnetaddr": "127.0.0.1", "mcastport": free_port_pair(),
                                 "member": [{"memberaddr": "127.0.0.1"}]}]},
        "logging": {"to_stderr": "yes", "to_syslog": "no"},
        "echo3p": {"greeting": "bonjour", "times": 2},
    }))
    env = {**os.environ, **node.environ(), "PYTHONPATH": str(site), "OPENAIS_DEFAULT_CONFIG_IFACE": "json",
           "OPENAIS_MAIN_CONFIG_FILE": str(conf)}
    proc = subprocess.Popen([sys.executable, "-m", "aisexec.main", "-f"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(env)
        out = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        # echoed by the plugin; its cluster message went round the ring; its own config section reached it
        assert out.stdout.split() == ["cba", "1", "bonjourbonjour"]
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0
    assert "config interface json (ais-thirdparty 1.2.3)" in log
    assert "ECHO3P 200 (ais-thirdparty 1.2.3)" in log
    assert not node.socket.exists()


def test_a_third_party_config_section_is_checked_like_the_executives_own(tmp_path):
    site = tmp_path / "site"
    build_echo_distribution(tmp_path / "src", site)
    node = single_node(tmp_path / "node")
    env = {**os.environ, **node.environ(), "PYTHONPATH": str(site)}
    base = node.config_file.read_text()
    cases = [
        ("echo3p {\n\ttimes: 11\n}\n", "echo3p.times", "expected an integer from 1 to 10"),
        ("echo3p {\n\tgreting: hi\n}\n", "echo3p.greting", "greeting"),  # unknown key, nearest one suggested
        ("echo3p {\n\tgreeting: abcdefghijklmnopqrstuvwxyz\n\ttimes: 2\n}\n", "echo3p.times", "over 40"),
    ]
    for extra, key, words in cases:
        node.config_file.write_text(base + extra)
        out = subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 8, (extra, out.stdout, out.stderr)  # ExitCode.CONFIG
        offset = next(i for i, text in enumerate(extra.splitlines()) if key.split(".")[1] in text)
        line = base.count("\n") + 1 + offset  # the key's own line in the file
        assert f"{node.config_file}:{line}" in out.stderr and key in out.stderr and words in out.stderr, out.stderr
    node.config_file.write_text(base + "echo3p {\n\tgreeting: hi\n}\n")
    ok = subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env=env, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    # without the plugin the same file names the section as unknown, and says why that can be
    bare = subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env={**os.environ, **node.environ()},
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 8 and "echo3p" in bare.stderr and "unknown section" in bare.stderr, bare.stderr


def test_metrics_readiness_and_liveness_of_a_running_node(tmp_path):
    port = free_port_pair()
    with LocalCluster(tmp_path, 1, transport="udpu", secauth=True) as cluster:
        config = cluster.nodes[0].config_file
        config.write_text(config.read_text() + f"aisexec {{\n\tmetrics_port: {port}\n}}\n")
        cluster.start(1)
        env = cluster.environ(1)
        wait_ready(env)
        ping = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "--ping", "--json"], env=env,
                              capture_output=True, text=True)
        assert ping.returncode == 0 and json.loads(ping.stdout)["alive"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "openais_up 1" in text
        assert "openais_ring_members 1" in text
        assert "openais_synced 1" in text
        safe = cluster.client(1, SAFE_CLIENT)
        assert safe.returncode == 0, safe.stderr
        assert safe.stdout.split() == ["agreed-1", "safe-1", "agreed-2", "safe-2"]
        cluster.kill(1, signal.SIGTERM)
        down = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "--ready"], env=env,
                              capture_output=True, text=True)
        assert down.returncode == 2 and "openais-cfgtool" in down.stderr


def test_demo_starts_a_cluster_shows_it_and_leaves_nothing_behind(tmp_path):
    out = subprocess.run([sys.executable, "-m", "aisexec.demo", "-n", "2", "--once", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(r[3] == "OPERATIONAL" and r[-1] == "1,2" for r in rows)
    pids = [int(r[2]) for r in rows]
    time.sleep(0.5)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_node_on_ipv6_loopback_forms_its_ring(tmp_path):
    node = single_node(tmp_path / "v6")
    port = free_port_pair()
    node.config_file.write_text(
        "totem {\n\tversion: 2\n\tnodeid: 7\n\tsecauth: on\n\ttransport: udpu\n"
        f"\tinterface {{\n\t\tringnumber: 0\n\t\tbindnetaddr: ::1\n\t\tmcastport: {port}\n"
        "\t\tmember {\n\t\t\tmemberaddr: ::1\n\t\t}\n\t}\n}\nlogging {\n\tto_stderr: yes\n\tto_syslog: no\n}\n"
    )
    env = {**os.environ, **node.environ()}
    proc = subprocess.Popen([sys.executable, "-m", "aisexec.main", "-f"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(env)
        out = subprocess.run([sys.executable, "-m", "openais.tools.cfgtool", "-s", "--json"], env=env,
                             capture_output=True, text=True)
        status = json.loads(out.stdout)
        assert status["nodeid"] == 7 and status["rings"][0]["address"] == "::1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    missing_nodeid = node.config_file.read_text().replace("\tnodeid: 7\n", "")
    node.config_file.write_text(missing_nodeid)
    check = subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env=env, capture_output=True, text=True)
    assert check.returncode == 8 and "nodeid" in check.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_RR needs CAP_SYS_NICE")
def test_dash_r_gives_realtime_scheduling_and_no_realtime_keeps_the_normal_class(tmp_path):
    with LocalCluster(tmp_path, 2, transport="udpu", realtime=True) as cluster:
        rr = cluster.start(1)
        other = cluster.start(2, "--no-realtime")
        wait_ready(cluster.environ(1))
        wait_ready(cluster.environ(2))
        assert os.sched_getscheduler(rr.pid) == os.SCHED_RR
        assert os.sched_getparam(rr.pid).sched_priority == os.sched_get_priority_max(os.SCHED_RR)
        assert os.sched_getscheduler(other.pid) == os.SCHED_OTHER
        log = (cluster.nodes[0].root / "stdout.log").read_text()
        assert "SCHED_RR" in log
