"""The MSG service plugin: ``openais.services`` entry point ``msg = plugins.msg``."""

from __future__ import annotations

from aisexec.hookspecs import hookimpl
from plugins.msg.engine import MessageEngine


@hookimpl
def openais_service_engine() -> MessageEngine:
    """Return a fresh MSG engine."""
    return MessageEngine()
