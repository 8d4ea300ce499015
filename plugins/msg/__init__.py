"""The MSG service plugin: ``openais.services`` entry point ``msg = plugins.msg``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.msg.config import SECTION
from plugins.msg.engine import MessageEngine


@hookimpl
def openais_service_engine() -> MessageEngine:
    """Return a fresh MSG engine."""
    return MessageEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the MSG service reads."""
    return [SECTION]
