"""The CLM (cluster membership) service plugin: ``openais.services`` entry point ``clm = plugins.clm``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.clm.engine import ClmEngine


@hookimpl
def openais_service_engine() -> ClmEngine:
    """Return a fresh CLM engine."""
    return ClmEngine()
