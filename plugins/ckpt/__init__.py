"""The CKPT service plugin: ``openais.services`` entry point ``ckpt = plugins.ckpt``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.ckpt.engine import CheckpointEngine


@hookimpl
def openais_service_engine() -> CheckpointEngine:
    """Return a fresh CKPT engine."""
    return CheckpointEngine()
