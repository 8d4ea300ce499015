"""Configuration sections that service plugins declare: the core's schema knows none of them by name.

A service plugin that reads a top-level section of openais.conf declares it
through the ``openais_config_sections`` hook of its entry point module::

    from aisexec.config.sections import ConfigSection
    from aisexec.hookspecs import hookimpl

    @hookimpl
    def openais_config_sections():
        return [ConfigSection("echo", "greeting = string(min=1, default=hello)")]

``spec`` holds the section's keys in configobj configspec syntax (the same
checks as the core's own sections: ``integer(min=, max=)``, ``boolean``,
``option(...)``, ``string``, ``ip_address``); every key is checked, every
default filled, every mistake reported with file, line and dotted key.  An
optional ``check(section, context)`` then tests relations between keys (and
with the totem section, through ``context``) and returns the final values.
The engine reads them as ``api.config.section(name)``; ``has_section(name)``
says whether the file gave the section at all.  ``environment`` lists the
environment variables the plugin reads (:class:`aisexec.env.EnvVar`, named
``OPENAIS_...``), so the executive can list and document every variable it
and its plugins read; a name the core or another plugin already declares is
a plugin error at start.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aisexec.config.errors import ConfigError
from aisexec.config.tree import RawSection
from aisexec.env import VARIABLES, EnvVar

log = logging.getLogger("aisexec.config")

#: A section name as it may appear in a file: a letter, then letters, digits and ``_``.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
#: An environment variable a plugin may declare.
_ENV_NAME = re.compile(r"OPENAIS_[A-Z0-9_]+\Z")


@dataclass(frozen=True, slots=True)
class CheckedSection:
    """One section's values after the key checks: every key present, with its value or default.

    ``given`` is True when the file wrote the section; ``lines`` maps each
    key the file wrote to its line.
    """

    raw: RawSection
    path: str
    values: dict
    lines: dict[str, int]
    given: bool = True

    def line_of(self, key: str) -> int:
        """Line of ``key`` if it was written, else of the section header."""
        return self.lines.get(key, self.raw.line)

    def error(self, key: str, message: str, suggestion: str | None = None) -> ConfigError:
        """A ConfigError located at ``key`` of this section."""
        return ConfigError(self.raw.file, self.line_of(key), f"{self.path}.{key}", message, suggestion)


@dataclass(frozen=True, slots=True)
class SectionContext:
    """What a section's ``check`` may consult besides its own keys: the checked totem section."""

    file: str
    totem: dict
    interfaces: list[dict]

    def error(self, dotted_key: str, message: str) -> ConfigError:
        """A ConfigError about another section's key (``totem.votes``), located in the file only."""
        return ConfigError(self.file, 0, dotted_key, message)


#: ``check(section, context) -> values``: relations between keys; raise ``section.error(key, message)``.
SectionCheck = Callable[[CheckedSection, SectionContext], dict]


@dataclass(frozen=True, slots=True)
class ConfigSection:
    """A top-level section of openais.conf that a service plugin reads.

    ``name``: the section's name in the file; ``spec``: its keys, one
    configspec line each (``key = check(..., default=...)``; empty for a
    section without keys); ``check``: optional relations between keys,
    returning the values the engine will see; ``environment``: the
    environment variables the plugin reads.
    """

    name: str
    spec: str = ""
    check: SectionCheck | None = None
    origin: str = field(default="", compare=False)
    environment: tuple[EnvVar, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"config section name {self.name!r}: a letter, then letters, digits or '_'")
        if not isinstance(self.spec, str):
            raise ValueError(f"config section {self.name!r}: spec must be configspec text")
        if self.check is not None and not callable(self.check):
            raise ValueError(f"config section {self.name!r}: check must be callable")
        for var in self.environment:
            if not isinstance(var, EnvVar) or not _ENV_NAME.match(var.name):
                raise ValueError(f"config section {self.name!r}: environment holds EnvVar named OPENAIS_..., "
                                 f"not {var!r}")

    def spec_lines(self) -> list[str]:
        """The section as configspec text: its header, then its keys."""
        keys = [line.strip() for line in self.spec.splitlines() if line.strip() and not line.strip().startswith("#")]
        for line in keys:
            if line.startswith("["):
                raise ValueError(f"config section {self.name!r}: spec holds keys only, not sections ({line})")
        return [f"[{self.name}]", *keys]


def merge(core: Iterable[str], declared: Iterable[ConfigSection]) -> dict[str, ConfigSection]:
    """The declared sections by name; ValueError when one claims a core name or another plugin's name.

    The same for the environment variables they declare: none may be the core's or another plugin's.
    """
    core_names = set(core)
    out: dict[str, ConfigSection] = {}
    variables: dict[str, str] = {var.name: "the executive itself" for var in VARIABLES}
    for section in declared:
        for var in section.environment:
            if var.name in variables:
                raise ValueError(f"{section.origin or 'a service plugin'} declares environment variable "
                                 f"{var.name}, which {variables[var.name]} declares")
            variables[var.name] = section.origin or f"config section {section.name!r}"
        if section.name in core_names:
            raise ValueError(f"{section.origin or 'a service plugin'} declares config section {section.name!r}, "
                             "which the executive itself owns")
        if section.name in out:
            first = out[section.name]
            raise ValueError(f"config section {section.name!r} is declared twice: by {first.origin or '?'} "
                             f"and by {section.origin or '?'}")
        out[section.name] = section
    return out


def installed_sections(entry_points: Iterable[md.EntryPoint], hook: Callable[[Any], list | None]
                       ) -> list[ConfigSection]:
    """Every section the given service entry points declare, each tagged with its entry point.

    ``hook(plugin_module)`` returns the plugin's declarations (None without the
    hook).  A plugin that cannot be imported is skipped here: loading the
    services reports it, naming its distribution.
    """
    found: list[ConfigSection] = []
    for ep in entry_points:
        try:
            module = ep.load()
        except Exception as exc:  # reported with its origin when the services load
            log.debug("config sections of entry point %s skipped: %s", ep.name, exc)
            continue
        declared = hook(module) or []
        origin = f"entry point '{ep.name} = {ep.value}'"
        for section in declared:
            if not isinstance(section, ConfigSection):
                raise ValueError(f"{origin} declared {section!r}, not a ConfigSection")
            found.append(ConfigSection(section.name, section.spec, section.check, origin, section.environment))
    return found
