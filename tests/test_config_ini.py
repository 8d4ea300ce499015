"""The INI configuration interface: same tree as openais.conf, recovered line numbers, configobj errors."""

from __future__ import annotations

import pytest

from aisexec.config.errors import ConfigError
from aisexec.config.validated import load_config
from plugins.config_ini import openais_config_describe
from plugins.config_ini.parser import parse_text

INI = """\
# cluster
[totem]
version = 2
token = 3000
transport = udpu
secauth = off
  [[interface 0]]
  ringnumber = 0
  bindnetaddr = 127.0.0.1
    [[[member a]]]
    memberaddr = 127.0.0.1
    [[[member b]]]
    memberaddr = 127.0.0.2
[logging]
to_stderr = yes
  [[logger_subsys amf]]
  subsys = AMF
  debug = on
[aisexec]
user = root
group = root
"""

CONF = """\
totem {
    version: 2
    token: 3000
    transport: udpu
    secauth: off
    interface {
        ringnumber: 0
        bindnetaddr: 127.0.0.1
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
    logger_subsys {
        subsys: AMF
        debug: on
    }
}
aisexec {
    user: root
    group: root
}
"""


def test_tree_names_and_lines():
    root = parse_text(INI, "c.ini")
    (totem,) = root.section("totem")
    assert totem.line == 2
    assert totem.key("token").line == 4 and totem.key("token").value == "3000"
    (itf,) = totem.section("interface")
    assert itf.line == 7 and itf.key("bindnetaddr").line == 9
    members = itf.section("member")
    assert [(m.line, m.key("memberaddr").line, m.key("memberaddr").value) for m in members] == [
        (10, 11, "127.0.0.1"),
        (12, 13, "127.0.0.2"),
    ]
    (sub,) = root.section("logging")[0].section("logger_subsys")
    assert sub.key("subsys").value == "AMF" and sub.key("debug").line == 18


def test_both_parsers_yield_the_same_config(tmp_path):
    ini = tmp_path / "c.ini"
    conf = tmp_path / "c.conf"
    ini.write_text(INI)
    conf.write_text(CONF)
    a = load_config("ini", str(ini)).to_dict()
    b = load_config("default", str(conf)).to_dict()
    for d in (a, b):
        d.pop("source")
        d.pop("iface")
    assert a == b
    assert a["totem"]["consensus"] == 3600
    assert [m["memberaddr"] for m in a["interfaces"][0]["members"]] == ["127.0.0.1", "127.0.0.2"]


def test_validation_error_points_at_ini_line(tmp_path):
    ini = tmp_path / "c.ini"
    ini.write_text(INI.replace("token = 3000", "tokn = 3000"))
    with pytest.raises(ConfigError) as err:
        load_config("ini", str(ini))
    assert err.value.line == 4 and err.value.suggestion == "token"
    assert str(err.value) == f"{ini}:4: totem.tokn: unknown key in section 'totem' (did you mean 'token'?)"


def test_duplicate_section_header_is_a_located_error():
    text = "[totem]\n[[interface]]\nbindnetaddr = 127.0.0.1\n[[interface]]\nbindnetaddr = 127.0.0.2\n"
    with pytest.raises(ConfigError) as err:
        parse_text(text, "c.ini")
    assert err.value.line == 4 and "Duplicate section" in str(err.value)


def test_bad_syntax_is_a_located_error():
    with pytest.raises(ConfigError) as err:
        parse_text("[totem]\ntoken = 1\nthis line has no equals\n", "c.ini")
    assert err.value.line == 3


def test_key_outside_any_section():
    with pytest.raises(ConfigError) as err:
        parse_text("token = 5\n[totem]\n", "c.ini")
    assert err.value.line == 1 and "outside any section" in str(err.value)


def test_describe():
    assert "INI" in openais_config_describe()


def test_non_utf8_ini(tmp_path):
    ini = tmp_path / "c.ini"
    ini.write_bytes(b"[totem]\ncluster_name = \xff\n")
    with pytest.raises(ConfigError) as err:
        load_config("ini", str(ini))
    assert err.value.line == 2 and "UTF-8" in err.value.message
