"""The ``quorum { }`` section of openais.conf, as the quorum plugin declares it to the executive's schema."""

from __future__ import annotations

from aisexec.config.sections import CheckedSection, ConfigSection, SectionContext

SPEC = """
provider = option(votequorum, default=votequorum)
expected_votes = integer(min=1, max=100000, default=None)
two_node = boolean(default=False)
wait_for_all = boolean(default=None)
last_man_standing = boolean(default=False)
last_man_standing_window = integer(min=1000, max=3600000, default=10000)
auto_tie_breaker = boolean(default=False)
"""


def check(section: CheckedSection, context: SectionContext) -> dict:
    """votequorum(5)'s relations: ``expected_votes`` derived from the member list when unset, two_node."""
    values = dict(section.values)
    if not section.given:
        return values
    members = context.interfaces[0]["members"] if context.interfaces else []
    if values["expected_votes"] is None:
        if not members:
            raise section.error("expected_votes", "is required without a member list (transport udp): "
                                                  "give the votes of the whole cluster")
        values["expected_votes"] = sum(int(m.get("votes") or 1) for m in members)
    if values["two_node"]:
        if values["expected_votes"] != 2:
            raise section.error("two_node", f"two_node needs expected_votes 2, not {values['expected_votes']}")
        if values["wait_for_all"] is None:
            values["wait_for_all"] = True  # votequorum(5): two_node enables wait_for_all
    if values["wait_for_all"] is None:
        values["wait_for_all"] = False
    votes = context.totem.get("votes")
    if votes is not None and votes > values["expected_votes"]:
        raise context.error("totem.votes",
                            f"this node's {votes} votes exceed quorum.expected_votes {values['expected_votes']}")
    return values


SECTION = ConfigSection("quorum", SPEC, check)
