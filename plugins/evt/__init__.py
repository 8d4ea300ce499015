"""The EVT service plugin: ``openais.services`` entry point ``evt = plugins.evt``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.evt.engine import EventEngine


@hookimpl
def openais_service_engine() -> EventEngine:
    """Return a fresh EVT engine."""
    return EventEngine()
