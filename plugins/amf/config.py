"""The ``amf { }`` section of openais.conf, declared by the AMF plugin (the model itself is amf.conf)."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection

SECTION = ConfigSection("amf", """
mode = option(enabled, disabled, default=disabled)
no_quorum_policy = option(stop, freeze, default=stop)
""")
