"""The AMF service plugin: ``openais.services`` entry point ``amf = plugins.amf``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.amf.engine import AmfEngine


@hookimpl
def openais_service_engine() -> AmfEngine:
    """Return a fresh AMF engine."""
    return AmfEngine()
