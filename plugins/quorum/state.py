"""Votequorum as a pure, deterministic object: votes, expected votes and the quorate decision.

Every member of a configuration holds the same :class:`QuorumState` after
sync (votes of every known node, expected votes, whether wait_for_all has been
satisfied once), so :meth:`QuorumState.compute` gives every member the same
answer for the same configuration.  No clock, no IPC: the engine feeds it
configurations, sync records and delivered decisions.

The rules are corosync's votequorum(5):

- ``quorum = highest_expected // 2 + 1`` where ``highest_expected`` is the
  larger of ``expected_votes`` and the votes present;
- ``two_node`` (expected 2): one vote is quorate;
- ``wait_for_all``: not quorate until every expected vote was present at once;
- ``auto_tie_breaker``: exactly half the votes is quorate on the side holding
  the lowest node id of every node known to the cluster;
- ``last_man_standing``: the engine asks :meth:`shrink_target` after a quorate
  configuration lost nodes and stayed unchanged for the window; the decision
  is multicast and applied with :meth:`apply_shrink` on every node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Flags reported by ``info()`` and the tool, as corosync-quorumtool names them.
FLAG_QUORATE = "Quorate"
FLAG_TWO_NODE = "TwoNode"
FLAG_WAIT_FOR_ALL = "WaitForAll"
FLAG_LMS = "LastManStanding"
FLAG_ATB = "AutoTieBreaker"


@dataclass(frozen=True, slots=True)
class QuorumSettings:
    """The checked ``quorum { }`` section plus this node's own votes."""

    expected_votes: int
    own_votes: int = 1
    two_node: bool = False
    wait_for_all: bool = False
    last_man_standing: bool = False
    last_man_standing_window_ms: int = 10_000
    auto_tie_breaker: bool = False

    @classmethod
    def from_config(cls, section: dict, own_votes: int) -> QuorumSettings:
        """Build from ``Config.section("quorum")``."""
        return cls(
            expected_votes=int(section["expected_votes"]),
            own_votes=own_votes,
            two_node=bool(section["two_node"]),
            wait_for_all=bool(section["wait_for_all"]),
            last_man_standing=bool(section["last_man_standing"]),
            last_man_standing_window_ms=int(section["last_man_standing_window"]),
            auto_tie_breaker=bool(section["auto_tie_breaker"]),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules say of one configuration."""

    quorate: bool
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """One node's view, multicast in every sync round."""

    nodeid: int
    own_votes: int
    expected_votes: int
    wfa_cleared: bool
    known: tuple[tuple[int, int], ...]  #: (nodeid, votes) of every node this node knows


@dataclass(slots=True)
class QuorumState:
    """The replicated quorum state of one node."""

    settings: QuorumSettings
    nodeid: int
    expected_votes: int = 0
    wfa_cleared: bool = False
    node_votes: dict[int, int] = field(default_factory=dict)
    members: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.expected_votes:
            self.expected_votes = self.settings.expected_votes
        self.node_votes.setdefault(self.nodeid, self.settings.own_votes)

    # -- inputs -----------------------------------------------------------------------------

    def configuration(self, members: tuple[int, ...]) -> Decision:
        """A configuration was delivered (transitional or regular): compute and record its decision."""
        self.members = tuple(sorted(members))
        for node in self.members:
            self.node_votes.setdefault(node, 1)  # until sync says otherwise
        decision = self.compute()
        if decision.total_votes >= self.expected_votes:
            self.expected_votes = decision.total_votes  # more votes present than expected: expect them
            self.wfa_cleared = True
        return self.compute()

    def sync_record(self) -> SyncRecord:
        """This node's share of the sync round."""
        return SyncRecord(self.nodeid, self.settings.own_votes, self.expected_votes, self.wfa_cleared,
                          tuple(sorted(self.node_votes.items())))

    def merge(self, records: list[SyncRecord]) -> Decision:
        """Every member's record is in: adopt the union (each node's own votes win for itself)."""
        votes = dict(self.node_votes)
        for record in records:
            for node, count in record.known:
                votes.setdefault(node, count)
        for record in records:
            votes[record.nodeid] = record.own_votes
        self.node_votes = votes
        if records:
            self.expected_votes = max(record.expected_votes for record in records)
            self.wfa_cleared = any(record.wfa_cleared for record in records)
        return self.configuration(self.members)

    def apply_set_expected(self, votes: int) -> Decision:
        """An operator's ``set_expected`` was delivered."""
        self.expected_votes = max(votes, self.total_votes())
        return self.compute()

    def shrink_target(self) -> int | None:
        """With last_man_standing, the expected votes to shrink to now (None: nothing to do)."""
        if not self.settings.last_man_standing:
            return None
        decision = self.compute()
        target = max(decision.total_votes, 2)
        if not decision.quorate or target >= self.expected_votes:
            return None
        return target

    def apply_shrink(self, members: tuple[int, ...], expected: int) -> Decision:
        """A last_man_standing decision for configuration ``members`` was delivered."""
        if tuple(sorted(members)) == self.members and self.compute().quorate and expected < self.expected_votes:
            self.expected_votes = max(expected, self.total_votes())
        return self.compute()

    # -- the rules ----------------------------------------------------------------------------

    def total_votes(self) -> int:
        """Votes of the current configuration's members."""
        return sum(self.node_votes.get(node, 1) for node in self.members)

    def compute(self) -> Decision:
        """The decision for the current configuration (same on every member with the same state)."""
        s = self.settings
        total = self.total_votes()
        highest = max(self.expected_votes, total)
        quorum = highest // 2 + 1
        if s.two_node and self.expected_votes == 2:
            quorum = 1
        quorate = bool(self.members) and total >= quorum
        if (not quorate and s.auto_tie_breaker and self.members and total * 2 == highest
                and min(self.node_votes) in self.members):
            quorate = True
        if s.wait_for_all and not self.wfa_cleared:
            quorate = False
        flags = {name for name, on in ((FLAG_QUORATE, quorate), (FLAG_TWO_NODE, s.two_node),
                                       (FLAG_WAIT_FOR_ALL, s.wait_for_all), (FLAG_LMS, s.last_man_standing),
                                       (FLAG_ATB, s.auto_tie_breaker)) if on}
        return Decision(quorate, self.expected_votes, highest, total, quorum, frozenset(flags))
