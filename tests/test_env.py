"""The executive's environment variables and their defaults."""

from __future__ import annotations

from pathlib import Path

from aisexec.env import VARIABLES, Environment


def test_defaults_when_unset():
    env = Environment.from_environ({})
    assert env.main_config_file == "/etc/ais/openais.conf"
    assert env.amf_config_file == "/etc/ais/amf.conf"
    assert env.totem_authkey_file == "/etc/ais/authkey"
    assert env.config_iface == "default"
    assert env.ipc_socket == "/var/run/openais/aisexec.sock"
    assert env.state_dir == "/var/lib/openais"
    assert env == Environment()


def test_every_variable_is_read():
    environ = {var.name: f"/x/{var.field}" for var in VARIABLES}
    env = Environment.from_environ(environ)
    for var in VARIABLES:
        assert getattr(env, var.field) == f"/x/{var.field}"
    assert env.to_environ() == environ


def test_empty_value_means_default():
    assert Environment.from_environ({"OPENAIS_DEFAULT_CONFIG_IFACE": ""}).config_iface == "default"


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", "/tmp/n1.sock")
    monkeypatch.setenv("OPENAIS_DEFAULT_CONFIG_IFACE", "ini")
    env = Environment.from_environ()
    assert (env.ipc_socket, env.config_iface) == ("/tmp/n1.sock", "ini")


def test_table_matches_dataclass_defaults_and_docs():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for var in VARIABLES:
        assert getattr(Environment(), var.field) == var.default
        assert f"`{var.name}`" in doc and var.default in doc
