"""The INI configuration interface read through configobj (``OPENAIS_DEFAULT_CONFIG_IFACE=ini``)."""

from __future__ import annotations

from aisexec.config.tree import RawSection
from aisexec.hookspecs import hookimpl
from plugins.config_ini.parser import parse_file


@hookimpl
def openais_config_read(path: str) -> RawSection:
    """Parse the INI file at ``path`` into a raw section tree."""
    return parse_file(path)


@hookimpl
def openais_config_describe() -> str:
    """One line describing this parser."""
    return "INI form via configobj: [totem], [[interface 0]], [[[member a]]], 'key = value'"
