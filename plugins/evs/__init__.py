"""The EVS (extended virtual synchrony) service plugin: ``openais.services`` entry point ``evs = plugins.evs``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.evs.engine import EvsEngine


@hookimpl
def openais_service_engine() -> EvsEngine:
    """Return a fresh EVS engine."""
    return EvsEngine()
