"""The ``msg { }`` section of openais.conf, declared by the MSG plugin (no keys yet: accepted, as openais did)."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection

SECTION = ConfigSection("msg")
