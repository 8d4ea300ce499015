"""Votequorum rules as a pure object: the decisions the issue's scenarios need, node by node."""

from __future__ import annotations

from plugins.quorum.state import QuorumSettings, QuorumState


def state(nodeid: int = 1, **settings) -> QuorumState:
    settings.setdefault("expected_votes", 3)
    return QuorumState(QuorumSettings(**settings), nodeid)


def test_a_majority_is_quorate_and_a_minority_is_not():
    s = state()
    assert s.configuration((1, 2, 3)).quorate
    d = s.configuration((1, 2))
    assert d.quorate and d.quorum == 2 and d.total_votes == 2
    single = state(3)
    single.configuration((1, 2, 3))
    d = single.configuration((3,))
    assert not d.quorate and d.quorum == 2 and d.total_votes == 1


def test_an_even_split_loses_quorum_on_both_sides_without_the_tie_breaker():
    sides = [state(1, expected_votes=4), state(3, expected_votes=4)]
    for s in sides:
        s.configuration((1, 2, 3, 4))
    assert not sides[0].configuration((1, 2)).quorate
    assert not sides[1].configuration((3, 4)).quorate


def test_auto_tie_breaker_keeps_quorum_on_the_side_with_the_lowest_node():
    low, high = state(1, expected_votes=4, auto_tie_breaker=True), state(3, expected_votes=4, auto_tie_breaker=True)
    for s in (low, high):
        s.configuration((1, 2, 3, 4))
    assert low.configuration((1, 2)).quorate
    assert not high.configuration((3, 4)).quorate
    # a 3+1 split is decided by votes alone
    assert not high.configuration((4,)).quorate


def test_two_node_with_wait_for_all():
    s = state(1, expected_votes=2, two_node=True, wait_for_all=True)
    assert not s.configuration((1,)).quorate  # first start alone: waits for all
    assert s.configuration((1, 2)).quorate
    d = s.configuration((1,))  # the peer died: one vote is enough
    assert d.quorate and d.quorum == 1
    fresh = state(2, expected_votes=2, two_node=True, wait_for_all=True)
    assert not fresh.configuration((2,)).quorate  # a restarted node alone does not take over


def test_last_man_standing_shrinks_one_step_per_window_down_to_two():
    s = state(1, expected_votes=5, last_man_standing=True)
    s.configuration((1, 2, 3, 4, 5))
    assert s.shrink_target() is None
    members = [1, 2, 3, 4, 5]
    for gone in (5, 4, 3):
        members.remove(gone)
        d = s.configuration(tuple(members))
        assert d.quorate, (members, d)
        target = s.shrink_target()
        assert target == max(len(members), 2)
        s.apply_shrink(tuple(members), target)
        assert s.expected_votes == target
    assert members == [1, 2] and s.expected_votes == 2
    members.remove(2)
    assert not s.configuration((1,)).quorate  # below two without the tie breaker: lost
    assert s.shrink_target() is None


def test_without_last_man_standing_losing_three_of_five_loses_quorum():
    s = state(1, expected_votes=5)
    s.configuration((1, 2, 3, 4, 5))
    assert s.configuration((1, 2, 3)).quorate
    assert not s.configuration((1, 2)).quorate
    assert s.shrink_target() is None


def test_a_shrink_for_another_configuration_is_ignored():
    s = state(1, expected_votes=5, last_man_standing=True)
    s.configuration((1, 2, 3, 4, 5))
    s.configuration((1, 2, 3, 4))
    s.configuration((1, 2, 3))
    s.apply_shrink((1, 2, 3, 4), 4)  # decided for the previous configuration
    assert s.expected_votes == 5


def test_sync_merges_votes_expected_votes_and_wait_for_all():
    a = state(1, expected_votes=3, wait_for_all=True, own_votes=2)
    b = state(2, expected_votes=3, wait_for_all=True)
    a.configuration((1, 2))
    b.configuration((1, 2))
    # before sync node 2 does not know node 1 has 2 votes; after the merge both agree
    records = [a.sync_record(), b.sync_record()]
    da, db = a.merge(records), b.merge(records)
    assert da == db
    assert da.total_votes == 3 and da.quorate  # every expected vote present at once clears wait_for_all
    assert a.node_votes == b.node_votes == {1: 2, 2: 1}


def test_set_expected_never_goes_below_the_votes_present():
    s = state(1, expected_votes=3)
    s.configuration((1,))
    assert not s.compute().quorate
    assert s.apply_set_expected(1).quorate
    s.configuration((1, 2))
    assert s.apply_set_expected(1).expected_votes == 2
