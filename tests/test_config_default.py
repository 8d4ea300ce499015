"""The openais.conf(5) parser: structure, line numbers, and every syntax error."""

from __future__ import annotations

import pytest

from aisexec.config.errors import ConfigError
from plugins.config_default import openais_config_describe, openais_config_read
from plugins.config_default.parser import parse_text

NESTED = """\
# a comment
totem {
\tversion: 2
    token:\t3000
\tinterface {
\t\tringnumber: 0
\t\tbindnetaddr: 127.0.0.1
\t\tmember { memberaddr: 127.0.0.1 }
\t\tmember {
\t\t\tmemberaddr: 127.0.0.2
\t\t}
\t}
}

logging {
    logfile: /var/log/my ais.log
    logger_subsys {
        subsys: AMF
    }
    logger_subsys {
        subsys: CKPT
    }
}
"""


def test_nested_and_repeated_sections_with_lines():
    root = parse_text(NESTED, "x.conf")
    (totem,) = root.section("totem")
    assert totem.line == 2
    assert totem.key("token").value == "3000" and totem.key("token").line == 4
    (itf,) = totem.section("interface")
    members = itf.section("member")
    assert [m.key("memberaddr").value for m in members] == ["127.0.0.1", "127.0.0.2"]
    assert [m.key("memberaddr").line for m in members] == [8, 10]
    (logging,) = root.section("logging")
    assert logging.key("logfile").value == "/var/log/my ais.log"
    assert [s.key("subsys").value for s in logging.section("logger_subsys")] == ["AMF", "CKPT"]


def test_one_line_nesting_and_ipv6_colons():
    root = parse_text("totem { interface { member { memberaddr: fe80::1 } } }\n", "x.conf")
    member = root.section("totem")[0].section("interface")[0].section("member")[0]
    assert member.key("memberaddr").value == "fe80::1"


def test_hash_after_value_is_part_of_value():
    root = parse_text("totem {\n token: 1000 # ms\n}\n", "x.conf")
    assert root.section("totem")[0].key("token").value == "1000 # ms"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("totem {\n token: 1\n", 1, "never closed"),
        ("totem {\n}\n}\n", 3, "unexpected '}'"),
        ("token: 1000\n", 1, "outside any section"),
        ("totem {\n token 1000\n}\n", 2, "missing ':'"),
        ("totem {\n @@@ !!\n}\n", 2, "cannot parse"),
        ("totem {\n to\u00a0ken: 1\n}\n", 2, "NO-BREAK SPACE"),
        ("totem {\n : 5\n}\n", 2, "empty key name"),
        ("{\n}\n", 1, "empty section name"),
    ],
)
def test_syntax_errors_name_file_and_line(text, line, fragment):
    with pytest.raises(ConfigError) as err:
        parse_text(text, "bad.conf")
    assert err.value.file == "bad.conf"
    assert err.value.line == line
    assert fragment.lower() in str(err.value).lower()
    assert str(err.value).startswith(f"bad.conf:{line}: ")


def test_missing_colon_names_the_key():
    with pytest.raises(ConfigError) as err:
        parse_text("totem {\n token 1000\n}\n", "bad.conf")
    assert err.value.key == "totem.token"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"totem {\n cluster_name: caf\xe9\n}\n")
    with pytest.raises(ConfigError) as err:
        openais_config_read(str(path))
    assert err.value.line == 2 and "UTF-8" in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigError) as err:
        openais_config_read(str(path))
    assert str(err.value).startswith(f"{path}: cannot read")


def test_bom_and_crlf_accepted(tmp_path):
    path = tmp_path / "win.conf"
    path.write_bytes(b"\xef\xbb\xbftotem {\r\n token: 2000\r\n}\r\n")
    root = openais_config_read(str(path))
    assert root.section("totem")[0].key("token").value == "2000"


def test_describe():
    assert "openais.conf" in openais_config_describe()


def test_config_error_format():
    err = ConfigError("a.conf", 3, "totem.tokn", "unknown key in section 'totem'", "token")
    assert str(err) == "a.conf:3: totem.tokn: unknown key in section 'totem' (did you mean 'token'?)"
    whole_file = ConfigError("a.conf", 0, "", "cannot read configuration file")
    assert str(whole_file) == "a.conf: cannot read configuration file"
    assert isinstance(err, ValueError) and (err.file, err.line, err.key) == ("a.conf", 3, "totem.tokn")
