"""The LCK service plugin: ``openais.services`` entry point ``lck = plugins.lck``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.lck.engine import LockEngine


@hookimpl
def openais_service_engine() -> LockEngine:
    """Return a fresh LCK engine."""
    return LockEngine()
