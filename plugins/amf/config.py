"""The ``amf { }`` section of openais.conf, declared by the AMF plugin (the model itself is amf.conf)."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection
from aisexec.env import EnvVar

#: Where the AMF information model is read from (only when ``amf { mode: enabled }``).
AMF_CONFIG_FILE = EnvVar("OPENAIS_AMF_CONFIG_FILE", "amf_config_file", "/etc/ais/amf.conf",
                         "path of the AMF configuration file (read only when amf { mode: enabled })")

SECTION = ConfigSection("amf", """
mode = option(enabled, disabled, default=disabled)
no_quorum_policy = option(stop, freeze, default=stop)
""", environment=(AMF_CONFIG_FILE,))
