"""The quorum section: derived defaults and inconsistent settings refused with file, line and key."""

from __future__ import annotations

import pytest

from aisexec.config.errors import ConfigError
from aisexec.config.validated import validate_tree
from plugins.config_default.parser import parse_text
from plugins.quorum.engine import own_votes

UDPU = """\
totem {
    version: 2
    transport: udpu
    interface {
        bindnetaddr: 127.0.0.1
        member {
            memberaddr: 127.0.0.1
            votes: 2
        }
        member {
            memberaddr: 127.0.0.2
        }
    }
}
"""

UDP = """\
totem {
    version: 2
    interface {
        bindnetaddr: 127.0.0.1
        mcastaddr: 239.255.1.1
    }
}
"""


def validate(text: str):
    return validate_tree(parse_text(text, "t.conf"), source="t.conf", iface="default")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate(text)
    return err.value


def test_no_section_means_no_quorum():
    config = validate(UDPU)
    assert not config.has_section("quorum")
    assert config.section("quorum")["expected_votes"] is None


def test_expected_votes_default_to_the_member_votes_and_own_votes_come_from_the_own_member():
    config = validate(UDPU + "quorum {\n    provider: votequorum\n}\n")
    assert config.has_section("quorum")
    assert config.section("quorum")["expected_votes"] == 3
    assert own_votes(config) == 2


def test_totem_votes_win_over_the_member_entry():
    config = validate(UDPU.replace("    version: 2\n", "    version: 2\n    votes: 1\n") + "quorum {\n}\n")
    assert own_votes(config) == 1


def test_udp_without_expected_votes_is_refused():
    err = error_of(UDP + "quorum {\n    two_node: 0\n}\n")
    assert err.key == "quorum.expected_votes" and err.line == 8 and "member list" in str(err)


def test_two_node_needs_two_expected_votes_and_turns_wait_for_all_on():
    err = error_of(UDP + "quorum {\n    expected_votes: 3\n    two_node: 1\n}\n")
    assert err.key == "quorum.two_node" and err.line == 10
    config = validate(UDP + "quorum {\n    expected_votes: 2\n    two_node: 1\n}\n")
    assert config.section("quorum")["wait_for_all"] is True
    config = validate(UDP + "quorum {\n    expected_votes: 2\n    two_node: 1\n    wait_for_all: 0\n}\n")
    assert config.section("quorum")["wait_for_all"] is False


def test_zero_votes_and_unknown_keys_are_refused():
    err = error_of(UDPU.replace("votes: 2", "votes: 0"))
    assert err.key.endswith("member.votes") and err.line == 8
    err = error_of(UDP + "quorum {\n    expected_votes: 2\n    tie_breaker: 1\n}\n")
    assert err.key == "quorum.tie_breaker"
