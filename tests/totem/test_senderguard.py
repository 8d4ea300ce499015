"""SenderGuard: unknown addresses and duplicate node ids are refused, loudly, before the core sees them."""

from __future__ import annotations

import logging

from aisexec.totem.senderguard import SenderGuard


def test_an_address_outside_the_member_list_is_refused_and_logged_once_per_interval(caplog):
    guard = SenderGuard(["127.0.0.1", "127.0.0.2"], log_interval=5.0)
    caplog.set_level(logging.ERROR, "aisexec.totem")
    assert guard.admit(2, "127.0.0.2", 0.0)
    assert not guard.admit(4, "127.0.0.4", 0.0)
    assert not guard.admit(4, "127.0.0.4", 1.0)
    assert not guard.admit(4, "127.0.0.4", 6.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "127.0.0.4 (node 4) are ignored" in lines[0] and "memberaddr: 127.0.0.4" in lines[0]
    assert guard.stats() == {"refused_unknown_sender": 3, "refused_duplicate_nodeid": 0}


def test_without_a_member_list_any_address_may_come():
    guard = SenderGuard(None)
    assert guard.admit(9, "10.1.2.3", 0.0)


def test_a_second_address_for_a_live_nodeid_is_refused_until_the_first_falls_silent(caplog):
    guard = SenderGuard(None, hold=10.0)
    caplog.set_level(logging.WARNING, "aisexec.totem")
    assert guard.admit(2, "127.0.0.2", 0.0)
    guard.heard(2, 8.0)
    assert not guard.admit(2, "127.0.0.3", 9.0)
    assert "two nodes use nodeid 2; keeping 127.0.0.2, ignoring 127.0.0.3" in caplog.text
    assert not guard.admit(2, "127.0.0.3", 17.0)  # 127.0.0.2 was heard at 8 s: still its node
    assert guard.admit(2, "127.0.0.3", 18.5)  # silent for more than the hold: the node moved
    assert "node 2 moved from 127.0.0.2 to 127.0.0.3" in caplog.text
    assert guard.stats()["refused_duplicate_nodeid"] == 2


def test_addresses_are_compared_normalised():
    guard = SenderGuard(["::1"])
    assert guard.admit(1, "0:0:0:0:0:0:0:1", 0.0)


def test_refuses_checks_a_claim_before_decryption_without_taking_the_nodeid():
    guard = SenderGuard(["127.0.0.2", "127.0.0.4"], hold=10.0)
    assert not guard.refuses(2, "127.0.0.4", 0.0)  # nobody holds node 2 yet: let it be authenticated first
    assert guard.admit(2, "127.0.0.2", 0.1)  # the authenticated node 2
    assert guard.refuses(2, "127.0.0.4", 0.2)  # a second address claiming it is refused before opening
    assert guard.refuses(5, "127.0.0.5", 0.3)  # not a member
    assert guard.stats() == {"refused_unknown_sender": 1, "refused_duplicate_nodeid": 1}
