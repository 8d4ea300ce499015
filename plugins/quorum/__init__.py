"""The quorum service plugin: ``openais.services`` entry point ``quorum = plugins.quorum``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.quorum.engine import QuorumEngine


@hookimpl
def openais_service_engine() -> QuorumEngine:
    """Return a fresh quorum engine."""
    return QuorumEngine()
