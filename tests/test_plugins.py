"""Plugin discovery through entry points, with real third-party distributions installed by pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aisexec import plugins
from aisexec.service import EngineHost, LibHandler, ServiceEngine
from tests.thirdparty import build_bad_distributions, build_echo_distribution

PROBE = """
import json, sys
from aisexec import plugins
out = {}
try:
    blocked = frozenset(sys.argv[1].split(",")) if sys.argv[1] else frozenset()
    out["services"] = [[s.engine.id, s.engine.name, s.origin.dist, s.origin.entry_point]
                       for s in plugins.load_services(blocked)]
except plugins.PluginError as exc:
    out["error"] = str(exc)
out["ifaces"] = sorted(plugins.config_interfaces())
if len(sys.argv) > 2:
    iface = plugins.load_config_interface(sys.argv[2])
    out["describe"] = iface.describe()
    tree = iface.read(sys.argv[3])
    out["sections"] = [s.name for s in tree.sections]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding the installed third-party distributions."""
    root = tmp_path_factory.mktemp("thirdparty-src")
    target = tmp_path_factory.mktemp("thirdparty-site")
    build_echo_distribution(root, target / "good")
    build_bad_distributions(root, target / "bad")
    return target


def probe(site_dirs: list[Path], *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in site_dirs))
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_third_party_service_and_parser_are_discovered(site, tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"totem": {"version": 2, "interface": [{"ringnumber": 0}]}}))
    out = probe([site / "good"], "", "json", str(conf))
    assert [200, "ECHO3P", "ais-thirdparty", "echo3p"] in out["services"]
    assert {"default", "ini", "json"} <= set(out["ifaces"])
    assert out["describe"].startswith("JSON configuration")
    assert out["sections"] == ["totem"]


def test_import_failure_names_distribution_and_entry_point(site):
    out = probe([site / "good", site / "bad"], "clash")
    assert "ais-broken" in out["error"] and "broken = ais_broken.plugin" in out["error"]
    assert "ModuleNotFoundError" in out["error"]


def test_two_services_claiming_one_id_stop_loading(site):
    out = probe([site / "good", site / "bad"], "broken")
    assert "service id 200 is claimed twice" in out["error"]
    assert "ais-thirdparty" in out["error"] and "ais-clash" in out["error"]


def test_blocked_plugins_are_skipped(site):
    out = probe([site / "good", site / "bad"], "broken,clash")
    assert "error" not in out
    assert any(s[1] == "ECHO3P" for s in out["services"])


def test_unknown_config_interface_lists_installed():
    with pytest.raises(plugins.PluginError) as err:
        plugins.load_config_interface("nope")
    assert "unknown configuration interface 'nope'" in str(err.value)
    assert "default" in str(err.value) and "ini" in str(err.value)


def test_engine_host_calls_plain_methods_as_hooks_and_checks_signatures():
    calls = []

    class Engine(ServiceEngine):
        id = 77
        name = "T"
        lib_handlers = {1: LibHandler(lambda conn, rid, data: None)}

        def lib_init(self, conn):
            calls.append(("lib_init", conn))

        def sync_process(self):
            return True

    host = EngineHost(Engine())
    host.hook.lib_init(conn="c1")
    assert calls == [("lib_init", "c1")]
    assert host.hook.sync_process() is True
    assert host.hook.sync_activate() == []  # an unimplemented hook is a no-op

    class Wrong(ServiceEngine):
        id = 78
        name = "W"

        def lib_init(self, connection):  # wrong argument name
            return None

    import pluggy

    with pytest.raises(pluggy.PluginValidationError):
        EngineHost(Wrong())
