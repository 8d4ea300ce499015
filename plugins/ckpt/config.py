"""The ``ckpt { }`` section of openais.conf, declared by the CKPT plugin."""

from __future__ import annotations

from aisexec.config.sections import ConfigSection

SECTION = ConfigSection("ckpt", """
max_memory = integer(min=1048576, default=1073741824)
persist_dir = string(min=1, default=None)
no_quorum_writes = option(allow, deny, default=deny)
""")
