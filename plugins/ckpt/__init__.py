"""The CKPT service plugin: ``openais.services`` entry point ``ckpt = plugins.ckpt``."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from plugins.ckpt.config import SECTION
from plugins.ckpt.engine import CheckpointEngine


@hookimpl
def openais_service_engine() -> CheckpointEngine:
    """Return a fresh CKPT engine."""
    return CheckpointEngine()


@hookimpl
def openais_config_sections() -> list[ConfigSection]:
    """The section of openais.conf the CKPT service reads."""
    return [SECTION]
