"""The LCK service plugin: ``openais.services`` entry point ``lck = plugins.lck``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.lck.config import SECTION
from plugins.lck.engine import LockEngine


@hookimpl
def openais_service_engine() -> LockEngine:
    """Return a fresh LCK engine."""
    return LockEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the LCK service reads."""
    return [SECTION]
