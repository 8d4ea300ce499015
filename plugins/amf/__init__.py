"""The AMF service plugin: ``openais.services`` entry point ``amf = plugins.amf``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.amf.config import SECTION
from plugins.amf.engine import AmfEngine


@hookimpl
def openais_service_engine() -> AmfEngine:
    """Return a fresh AMF engine."""
    return AmfEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the AMF service reads."""
    return [SECTION]
