"""The CPG (closed process groups) service plugin: ``openais.services`` entry point ``cpg = plugins.cpg``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.cpg.engine import CpgEngine


@hookimpl
def openais_service_engine() -> CpgEngine:
    """Return a fresh CPG engine."""
    return CpgEngine()
