"""The ``event { }`` section of openais.conf (openais's name for EVT's queue limits), declared by the EVT plugin."""

from __future__ import annotations

from aisexec.config.sections import CheckedSection, ConfigSection, SectionContext

SPEC = """
delivery_queue_size = integer(min=1, max=1000000, default=1000)
delivery_queue_resume = integer(min=0, max=1000000, default=500)
"""


def check(section: CheckedSection, context: SectionContext) -> dict:
    """A queue resumes below its size: ``delivery_queue_resume`` < ``delivery_queue_size``."""
    values = dict(section.values)
    if values["delivery_queue_resume"] >= values["delivery_queue_size"]:
        raise section.error("delivery_queue_resume",
                            f"{values['delivery_queue_resume']} must be below delivery_queue_size "
                            f"({values['delivery_queue_size']})")
    return values


SECTION = ConfigSection("event", SPEC, check)
