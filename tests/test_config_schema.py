"""The one schema: defaults, types, ranges, relations, suggestions, and load_config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aisexec.config import schema
from aisexec.config.errors import ConfigError
from aisexec.config.validated import load_config, validate_tree
from aisexec.totem.config import TotemConfig
from plugins.config_default.parser import parse_text

BASE = """\
totem {
    version: 2
    transport: udpu
    interface {
        bindnetaddr: 127.0.0.1
        member {
            memberaddr: 127.0.0.1
        }
    }
}
"""


def validate(text: str):
    """Parse openais.conf text and validate it."""
    return validate_tree(parse_text(text, "t.conf"), source="t.conf", iface="default")


def error_of(text: str) -> ConfigError:
    """The ConfigError validating ``text`` raises."""
    with pytest.raises(ConfigError) as err:
        validate(text)
    return err.value


def with_totem(lines: str) -> str:
    """BASE with extra lines at the start of the totem section (line 2 onwards)."""
    return BASE.replace("totem {\n", "totem {\n" + lines, 1)


def test_documented_corosync_defaults():
    cfg = validate(BASE)
    expected = {
        "token": 1000, "token_retransmit": 238, "hold": 180, "consensus": 1200, "join": 50, "merge": 200,
        "window_size": 68, "max_messages": 34, "netmtu": 1500, "fail_recv_const": 2500,
        "seqno_unchanged_const": 30, "token_retransmits_before_loss_const": 4, "downcheck": 1000,
        "send_join": 0, "miss_count_const": 5, "token_linger": 1, "heartbeat_failures_allowed": 0,
        "max_network_delay": 50,
        "rrp_problem_count_timeout": 2000, "rrp_problem_count_threshold": 10, "rrp_token_expired_timeout": 238,
        "secauth": True, "threads": 0, "rrp_mode": "none", "vsftype": "ykd", "version": 2,
    }
    assert {k: cfg.totem[k] for k in expected} == expected
    itf = cfg.interfaces[0]
    assert (itf["mcastport"], itf["ttl"], itf["ringnumber"], itf["broadcast"]) == (5405, 1, 0, False)
    assert cfg.logging["to_stderr"] is True and cfg.logging["to_logfile"] is False
    assert cfg.logging["syslog_facility"] == "daemon" and cfg.logging["debug"] == "off"
    assert cfg.aisexec == {"user": "ais", "group": "ais", "metrics_port": 0, "metrics_address": "127.0.0.1",
                           "ipc_memory_budget": 64 * 1024 * 1024, "ipc_frame_timeout": 10000,
                           "ipc_max_connections_per_uid": 512}
    assert cfg.section("amf") == {"mode": "disabled", "no_quorum_policy": "stop"}
    assert cfg.section("event") == {"delivery_queue_size": 1000, "delivery_queue_resume": 500}
    assert cfg.totem_config == TotemConfig().validate()
    json.dumps(cfg.to_dict())


def test_token_linger_from_the_file_and_out_of_range():
    assert validate(with_totem("    token_linger: 0\n")).totem_config.token_linger == 0
    err = error_of(with_totem("    token_linger: 11\n"))
    assert err.key == "totem.token_linger" and err.line == 2


def test_derived_timers_follow_token():
    cfg = validate(with_totem("    token: 5000\n"))
    assert (cfg.totem["token_retransmit"], cfg.totem["consensus"]) == (1190, 6000)
    assert cfg.totem_config.token == 5000 and cfg.totem_config.hold == cfg.totem["hold"]


def test_unknown_key_suggests_nearest():
    err = error_of(with_totem("    consensu: 1200\n"))
    assert (err.line, err.key, err.suggestion) == (2, "totem.consensu", "consensus")
    assert str(err) == "t.conf:2: totem.consensu: unknown key in section 'totem' (did you mean 'consensus'?)"


def test_unknown_section_suggests_nearest():
    err = error_of(BASE + "loging {\n    debug: on\n}\n")
    assert (err.line, err.key, err.suggestion) == (11, "loging", "logging")


def test_misplaced_section():
    err = error_of(BASE + "member {\n    memberaddr: 127.0.0.1\n}\n")
    assert err.line == 11 and "belongs inside 'interface'" in err.message


def test_duplicate_singleton_section():
    err = error_of(BASE + "amf {\n mode: enabled\n}\namf {\n mode: disabled\n}\n")
    assert err.line == 14 and "first at line 11" in err.message


def test_bad_type():
    err = error_of(with_totem("    token: fast\n"))
    assert (err.line, err.key) == (2, "totem.token") and "expected an integer >= 30" in err.message


def test_hash_after_value_gets_a_hint():
    err = error_of(with_totem("    token: 1000 # ms\n"))
    assert "not a comment" in err.message


def test_out_of_range():
    err = error_of(with_totem("    netmtu: 20000\n"))
    assert err.line == 2 and "576 to 10000" in err.message


def test_bad_option_lists_choices():
    err = error_of(with_totem("    transport: tcp\n"))
    assert "one of: udp, udpu" in err.message


def test_consensus_not_above_token_points_at_consensus():
    err = error_of(with_totem("    token: 2000\n    consensus: 1500\n"))
    assert (err.line, err.key) == (3, "totem.consensus") and "must be above token" in err.message


def test_derived_relation_error_points_at_totem_section():
    err = error_of(with_totem("    token_retransmit: 900\n    hold: 950\n"))
    assert err.key == "totem.hold" and err.line == 3


def test_missing_required_key():
    text = BASE.replace("        bindnetaddr: 127.0.0.1\n", "")
    err = error_of(text)
    assert err.key == "totem.interface.bindnetaddr" and err.line == 4 and "missing required" in err.message


def test_missing_subsys():
    err = error_of(BASE + "logging {\n    logger_subsys {\n        debug: on\n    }\n}\n")
    assert err.key == "logging.logger_subsys.subsys" and err.line == 12


def test_missing_totem_and_interface():
    assert error_of("amf {\n mode: enabled\n}\n").key == "totem"
    assert error_of("totem {\n token: 1000\n}\n").key == "totem.interface"


def test_udpu_needs_members():
    text = "totem {\n transport: udpu\n interface {\n  bindnetaddr: 127.0.0.1\n }\n}\n"
    err = error_of(text)
    assert err.line == 3 and "udpu" in err.message


def test_udp_needs_multicast_group():
    text = "totem {\n interface {\n  bindnetaddr: 127.0.0.1\n }\n}\n"
    assert "mcastaddr" in error_of(text).message
    text = "totem {\n interface {\n  bindnetaddr: 127.0.0.1\n  mcastaddr: 127.0.0.2\n }\n}\n"
    err = error_of(text)
    assert err.line == 4 and "not a multicast" in err.message
    ok = validate("totem {\n interface {\n  bindnetaddr: 127.0.0.0\n  mcastaddr: 239.255.1.1\n }\n}\n")
    assert ok.interfaces[0]["mcastaddr"] == "239.255.1.1"


def test_bad_ip_address():
    err = error_of(BASE.replace("bindnetaddr: 127.0.0.1", "bindnetaddr: 127.0.0.300"))
    assert err.line == 5 and "IPv4 or IPv6" in err.message


def test_ipv6_requires_nodeid():
    text = BASE.replace("127.0.0.1", "::1")
    err = error_of(text)
    assert err.key == "totem.nodeid" and err.line == 1
    cfg = validate(with_totem("    nodeid: 7\n").replace("127.0.0.1", "::1"))
    assert cfg.totem["nodeid"] == 7


def test_two_rings_need_rrp_mode_and_distinct_ports():
    second = "    interface {\n        ringnumber: 1\n        bindnetaddr: 127.0.0.1\n" \
             "        member {\n            memberaddr: 127.0.0.1\n        }\n    }\n}\n"
    text = BASE[: BASE.rindex("}")] + second
    assert error_of(text).key == "totem.rrp_mode"
    cfg = validate(with_totem("    rrp_mode: passive\n")[: -2] + second)
    assert [i["ringnumber"] for i in cfg.interfaces] == [0, 1]


def test_logging_to_file_alias_and_subsys_inheritance():
    cfg = validate(BASE + "logging {\n to_file: yes\n logfile: /tmp/a.log\n debug: on\n"
                   " logger_subsys {\n  subsys: AMF\n  debug: off\n }\n}\n")
    assert cfg.logging["to_logfile"] is True and "to_file" not in cfg.logging
    (amf,) = cfg.logger_subsys
    assert amf["debug"] == "off" and amf["logfile"] == "/tmp/a.log" and amf["to_logfile"] is True


def test_logfile_required_when_logging_to_file():
    err = error_of(BASE + "logging {\n to_logfile: yes\n}\n")
    assert err.key == "logging.to_logfile" and err.line == 12


def test_event_queue_relation_and_uidgid():
    err = error_of(BASE + "event {\n delivery_queue_size: 10\n delivery_queue_resume: 10\n}\n")
    assert err.key == "event.delivery_queue_resume" and err.line == 13
    cfg = validate(BASE + "uidgid {\n uid: hacluster\n}\nuidgid {\n gid: haclient\n}\n")
    assert [u["uid"] for u in cfg.uidgid] == ["hacluster", None]
    assert error_of(BASE + "uidgid {\n}\n").key == "uidgid"


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as err:
        load_config("default", str(path))
    assert str(err.value).startswith(f"{path}: cannot read")


def test_load_config_records_source_and_iface(tmp_path):
    path = tmp_path / "ok.conf"
    path.write_text(BASE)
    cfg = load_config("default", str(path))
    assert (cfg.source, cfg.iface) == (str(path), "default")


def test_every_schema_key_is_documented():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for section in schema.current_schema().rules:
        assert re.search(rf"`{section}`", doc), section
        for key in schema.key_checks(section):
            assert f"`{key}`" in doc, f"{section}.{key}"
