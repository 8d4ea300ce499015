"""The default configuration interface: openais.conf(5) (``OPENAIS_DEFAULT_CONFIG_IFACE=default``)."""

from __future__ import annotations

from aisexec.config.tree import RawSection
from aisexec.hookspecs import hookimpl
from plugins.config_default.parser import parse_file


@hookimpl
def openais_config_read(path: str) -> RawSection:
    """Parse the openais.conf file at ``path`` into a raw section tree."""
    return parse_file(path)


@hookimpl
def openais_config_describe() -> str:
    """One line describing this parser."""
    return "openais.conf(5) format: 'section { key: value }' blocks, '#' whole-line comments"
