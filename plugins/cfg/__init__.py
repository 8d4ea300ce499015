"""The CFG (ring status and administration) service plugin: ``openais.services`` entry point ``cfg = plugins.cfg``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.cfg.engine import CfgEngine


@hookimpl
def openais_service_engine() -> CfgEngine:
    """Return a fresh CFG engine."""
    return CfgEngine()
