"""The executive's environment variables and their defaults."""

from __future__ import annotations

from pathlib import Path

from aisexec.env import VARIABLES, Environment, EnvVar
from aisexec.plugins import environment_variables


def test_defaults_when_unset():
    env = Environment.from_environ({})
    assert env.main_config_file == "/etc/ais/openais.conf"
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


def test_core_names_no_service_variable():
    assert all(not var.name.startswith("OPENAIS_AMF") for var in VARIABLES)
    assert not hasattr(Environment(), "amf_config_file")


def test_plugin_variables_are_listed_and_documented():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    every = environment_variables(frozenset())
    names = [var.name for var in every]
    assert names[:len(VARIABLES)] == [var.name for var in VARIABLES]
    assert "OPENAIS_AMF_CONFIG_FILE" in names  # declared by the AMF plugin with its section
    assert len(names) == len(set(names))
    for var in every:
        assert f"`{var.name}`" in doc and var.default in doc, var.name
    assert "OPENAIS_AMF_CONFIG_FILE" not in names[:len(VARIABLES)]
    assert "OPENAIS_AMF_CONFIG_FILE" not in [var.name for var in environment_variables(frozenset({"amf"}))]


def test_envvar_read_default_and_value():
    var = EnvVar("OPENAIS_X_FILE", "x_file", "/etc/x", "x")
    assert var.read({}) == "/etc/x"
    assert var.read({"OPENAIS_X_FILE": ""}) == "/etc/x"
    assert var.read({"OPENAIS_X_FILE": "/tmp/x"}) == "/tmp/x"


def test_amf_reads_its_variable(monkeypatch):
    from plugins.amf import engine

    monkeypatch.setenv("OPENAIS_AMF_CONFIG_FILE", "/tmp/elsewhere/amf.conf")
    assert engine.config_file() == "/tmp/elsewhere/amf.conf"
    monkeypatch.delenv("OPENAIS_AMF_CONFIG_FILE")
    assert engine.config_file() == "/etc/ais/amf.conf"
