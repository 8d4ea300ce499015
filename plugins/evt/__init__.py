"""The EVT service plugin: ``openais.services`` entry point ``evt = plugins.evt``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.evt.config import SECTION
from plugins.evt.engine import EventEngine


@hookimpl
def openais_service_engine() -> EventEngine:
    """Return a fresh EVT engine."""
    return EventEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the EVT service reads."""
    return [SECTION]
