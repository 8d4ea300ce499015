"""Service config sections declared by plugins: the core's schema names none, yet checks them all alike."""

from __future__ import annotations

import pytest

from aisexec.config import schema
from aisexec.config.configspec import SPEC_TEXT
from aisexec.config.errors import ConfigError
from aisexec.config.sections import ConfigSection
from aisexec.config.validated import validate_tree
from aisexec.env import EnvVar
from plugins.config_default.parser import parse_text

BASE = """\
totem {
\tversion: 2
\tsecauth: off
\tinterface {
\t\tringnumber: 0
\t\tbindnetaddr: 127.0.0.1
\t\tmcastaddr: 239.255.1.1
\t\tmcastport: 5405
\t}
}
"""

SERVICE_SECTIONS = {"amf", "ckpt", "event", "lck", "msg", "quorum"}


def _relation(section, context):
    if section.values["low"] >= section.values["high"]:
        raise section.error("low", f"must be below high ({section.values['high']})")
    return {**section.values, "span": section.values["high"] - section.values["low"], "given": section.given}


ECHO = ConfigSection("echo", """
low = integer(min=0, default=1)
high = integer(min=1, max=100, default=10)
mode = option(fast, safe, default=safe)
""", _relation, origin="entry point 'echo = test'")


def validate(text: str, sections=(ECHO,)):
    return validate_tree(parse_text(text, "t.conf"), source="t.conf", iface="default",
                         schema=schema.Schema(sections))


def test_a_declared_section_gets_its_defaults_and_its_check_when_absent():
    cfg = validate(BASE)
    assert cfg.section("echo") == {"low": 1, "high": 10, "mode": "safe", "span": 9, "given": False}
    assert not cfg.has_section("echo")


def test_a_declared_section_given_is_checked_key_by_key_with_file_and_line():
    cfg = validate(BASE + "echo {\n\tlow: 5\n\tmode: fast\n}\n")
    assert cfg.section("echo") == {"low": 5, "high": 10, "mode": "fast", "span": 5, "given": True}
    assert cfg.has_section("echo")
    assert cfg.to_dict()["echo"]["mode"] == "fast"
    with pytest.raises(ConfigError) as bad:
        validate(BASE + "echo {\n\thigh: 101\n}\n")
    assert (bad.value.file, bad.value.line, bad.value.key) == ("t.conf", 12, "echo.high")
    assert "an integer from 1 to 100" in str(bad.value)
    with pytest.raises(ConfigError) as unknown:
        validate(BASE + "echo {\n\tmdoe: fast\n}\n")
    assert unknown.value.key == "echo.mdoe" and unknown.value.suggestion == "mode"
    with pytest.raises(ConfigError) as relation:
        validate(BASE + "echo {\n\tlow: 10\n}\n")
    assert (relation.value.line, relation.value.key) == (12, "echo.low") and "below high (10)" in str(relation.value)


def test_a_declared_section_is_single_and_top_level():
    with pytest.raises(ConfigError, match="given twice"):
        validate(BASE + "echo {\n}\necho {\n}\n")
    with pytest.raises(ConfigError, match="not allowed here"):
        validate(BASE.replace("\tversion: 2\n", "\tversion: 2\n\techo {\n\t}\n"))


def test_without_its_plugin_a_section_is_unknown_and_the_error_says_why():
    with pytest.raises(ConfigError) as bad:
        validate(BASE + "echo {\n}\n", sections=())
    assert bad.value.key == "echo" and "unknown section" in str(bad.value) and "plugin" in str(bad.value)


def test_a_check_that_fails_on_its_own_is_reported_naming_the_plugin():
    def broken(section, context):
        raise KeyError("oops")

    def not_a_dict(section, context):
        return [1]

    for check, words in ((broken, "KeyError"), (not_a_dict, "not a dict")):
        with pytest.raises(ConfigError) as bad:
            validate(BASE, sections=(ConfigSection("echo", "a = integer(default=1)", check, origin="entry point X"),))
        assert "entry point X" in str(bad.value) and words in str(bad.value)


def test_declarations_that_cannot_be_accepted_are_refused_naming_both_sides():
    with pytest.raises(ValueError, match="the executive itself owns"):
        schema.Schema([ConfigSection("totem", "x = integer(default=1)", origin="entry point A")])
    with pytest.raises(ValueError, match="declared twice: by entry point A and by entry point B"):
        schema.Schema([ConfigSection("echo", origin="entry point A"), ConfigSection("echo", origin="entry point B")])
    with pytest.raises(ValueError, match="bogus"):
        schema.Schema([ConfigSection("echo", "x = bogus(1)", origin="entry point A")])
    with pytest.raises(ValueError, match="keys only"):
        schema.Schema([ConfigSection("echo", "[sub]\nx = integer(default=1)")])
    for name in ("", "1abc", "a-b", "a b"):
        with pytest.raises(ValueError, match="config section name"):
            ConfigSection(name)


def test_environment_variables_a_plugin_declares_are_checked_against_the_core_and_each_other():
    mine = EnvVar("OPENAIS_ECHO_FILE", "echo_file", "/etc/echo", "echo's file")
    assert schema.Schema([ConfigSection("echo", environment=(mine,), origin="entry point A")])
    with pytest.raises(ValueError, match="OPENAIS_IPC_SOCKET, which the executive itself declares"):
        schema.Schema([ConfigSection("echo", environment=(EnvVar("OPENAIS_IPC_SOCKET", "s", "/x", "x"),),
                                     origin="entry point A")])
    with pytest.raises(ValueError, match="entry point B declares environment variable OPENAIS_ECHO_FILE, "
                                         "which entry point A declares"):
        schema.Schema([ConfigSection("echo", environment=(mine,), origin="entry point A"),
                       ConfigSection("other", environment=(mine,), origin="entry point B")])
    for bad in ("ECHO_FILE", "openais_echo", EnvVar("OPENAIS_lower", "f", "", "")):
        var = bad if isinstance(bad, EnvVar) else EnvVar(bad, "f", "", "")
        with pytest.raises(ValueError, match="environment holds EnvVar named OPENAIS_"):
            ConfigSection("echo", environment=(var,))
    with pytest.raises(ValueError, match="environment holds EnvVar"):
        ConfigSection("echo", environment=("OPENAIS_ECHO_FILE",))


def test_the_core_configspec_names_no_service_section():
    core = {line[1:-1] for line in SPEC_TEXT.splitlines() if line.startswith("[")}
    assert core == set(schema.SECTIONS)
    assert not core & SERVICE_SECTIONS


def test_the_installed_services_declare_their_sections_through_entry_points():
    installed = schema.installed_schema(frozenset())
    assert SERVICE_SECTIONS <= set(installed.services)
    assert {name: s.origin for name, s in installed.services.items() if name in {"event", "quorum"}} == {
        "event": "entry point 'evt = plugins.evt'", "quorum": "entry point 'quorum = plugins.quorum'"}
    without_evt = schema.installed_schema(frozenset({"evt"}))
    assert "event" not in without_evt.services and "quorum" in without_evt.services
    with pytest.raises(ConfigError, match="unknown section"):
        validate_tree(parse_text(BASE + "event {\n}\n", "t.conf"), schema=without_evt)


def test_the_quorum_plugin_derives_expected_votes_through_the_context():
    members = "\t\tmember {\n\t\t\tmemberaddr: 127.0.0.1\n\t\t}\n\t\tmember {\n\t\t\tmemberaddr: 127.0.0.2\n" \
              "\t\t\tvotes: 2\n\t\t}\n"
    text = BASE.replace("\t\tmcastaddr: 239.255.1.1\n", "")
    text = text.replace("\tsecauth: off\n", "\tsecauth: off\n\ttransport: udpu\n")
    text = text.replace("\t\tmcastport: 5405\n", "\t\tmcastport: 5405\n" + members)
    installed = schema.installed_schema(frozenset())
    cfg = validate_tree(parse_text(text + "quorum {\n}\n", "t.conf"), schema=installed)
    assert cfg.section("quorum")["expected_votes"] == 3 and cfg.has_section("quorum")


def test_a_default_that_fails_its_own_check_is_refused():
    with pytest.raises(ValueError, match="echo"):
        schema.Schema([ConfigSection("echo", "x = integer(min=5, default=1)", origin="entry point A")])


def test_an_unacceptable_installed_declaration_is_a_plugin_error(monkeypatch):
    from aisexec import plugins

    clash = [ConfigSection("echo", origin="entry point A"), ConfigSection("echo", origin="entry point B")]
    monkeypatch.setattr(plugins, "service_config_sections", lambda blocked: clash)
    schema.installed_schema.cache_clear()
    try:
        with pytest.raises(plugins.PluginError, match="declared twice"):
            schema.installed_schema(frozenset({"nothing"}))
    finally:
        schema.installed_schema.cache_clear()
