"""The quorum service plugin: ``openais.services`` entry point ``quorum = plugins.quorum``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.quorum.config import SECTION
from plugins.quorum.engine import QuorumEngine


@hookimpl
def openais_service_engine() -> QuorumEngine:
    """Return a fresh quorum engine."""
    return QuorumEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the quorum service reads."""
    return [SECTION]
