"""Finding and loading the LCRSO components through entry points.

The core holds no list of services or parsers: everything in the
``openais.config`` and ``openais.services`` groups is found through the
installed distributions' metadata, ours exactly like a third party's.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from dataclasses import dataclass

import pluggy

from aisexec import hookspecs
from aisexec.service import EngineHost, ServiceEngine

CONFIG_GROUP = "openais.config"
SERVICES_GROUP = "openais.services"
#: Comma-separated entry-point names to skip (an operator's escape hatch).
BLOCK_ENV = "OPENAIS_BLOCK_SERVICES"
log = logging.getLogger("aisexec.serv")


class PluginError(RuntimeError):
    """A plugin could not be found, imported or accepted; the message names it."""


@dataclass(frozen=True, slots=True)
class PluginOrigin:
    """Where a plugin came from: distribution, version and entry point."""

    dist: str
    dist_version: str
    entry_point: str
    value: str

    def __str__(self) -> str:
        return f"entry point '{self.entry_point} = {self.value}' of distribution {self.dist} {self.dist_version}"


@dataclass(slots=True)
class LoadedService:
    """A service engine, its host and where it came from."""

    engine: ServiceEngine
    host: EngineHost
    origin: PluginOrigin


def _origin(ep: md.EntryPoint) -> PluginOrigin:
    dist = getattr(ep, "dist", None)
    return PluginOrigin(
        dist=dist.name if dist is not None else "?",
        dist_version=dist.version if dist is not None else "?",
        entry_point=ep.name,
        value=ep.value,
    )


def _entry_points(group: str) -> list[md.EntryPoint]:
    """Entry points of ``group``, one per (name, value), sorted for determinism."""
    seen: dict[tuple[str, str], md.EntryPoint] = {}
    for ep in md.entry_points(group=group):
        seen.setdefault((ep.name, ep.value), ep)
    return sorted(seen.values(), key=lambda ep: (ep.name, ep.value))


def config_interfaces() -> dict[str, PluginOrigin]:
    """Installed configuration interfaces by name."""
    return {ep.name: _origin(ep) for ep in _entry_points(CONFIG_GROUP)}


def _load(ep: md.EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(f"cannot load {_origin(ep)}: {type(exc).__name__}: {exc}") from exc


@dataclass(slots=True)
class ConfigInterface:
    """A loaded configuration parser."""

    name: str
    origin: PluginOrigin
    manager: pluggy.PluginManager

    def read(self, path: str):
        """Parse ``path`` into a raw section tree with this parser."""
        tree = self.manager.hook.openais_config_read(path=path)
        if tree is None:
            raise PluginError(f"configuration interface '{self.name}' ({self.origin}) returned nothing for {path}")
        return tree

    def describe(self) -> str:
        """One line describing the parser."""
        return self.manager.hook.openais_config_describe() or self.name


def load_config_interface(name: str) -> ConfigInterface:
    """Load the configuration parser registered under ``name`` in ``openais.config``."""
    matches = [ep for ep in _entry_points(CONFIG_GROUP) if ep.name == name]
    if not matches:
        installed = ", ".join(sorted(config_interfaces())) or "none"
        raise PluginError(
            f"unknown configuration interface '{name}' (OPENAIS_DEFAULT_CONFIG_IFACE); installed: {installed}"
        )
    if len(matches) > 1:
        raise PluginError(
            f"configuration interface '{name}' is provided twice: " + "; ".join(str(_origin(ep)) for ep in matches)
        )
    ep = matches[0]
    plugin = _load(ep)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.ConfigParserSpec)
    try:
        pm.register(plugin, name=f"{CONFIG_GROUP}:{name}")
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{_origin(ep)} does not fit the configuration interface: {exc}") from exc
    if not pm.hook.openais_config_read.get_hookimpls():
        raise PluginError(f"{_origin(ep)} implements no openais_config_read hook")
    log.debug("configuration interface %s loaded from %s", name, _origin(ep))
    return ConfigInterface(name=name, origin=_origin(ep), manager=pm)


def _declared_sections(plugin: object) -> list:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.ServiceDiscoverySpec)
    pm.register(plugin)
    return [section for result in pm.hook.openais_config_sections() for section in (result or [])]


def service_config_sections(blocked: frozenset[str] | None = None) -> list:
    """The :class:`aisexec.config.sections.ConfigSection` of every installed service plugin not blocked.

    ``blocked`` defaults to the entry point names in ``OPENAIS_BLOCK_SERVICES``.
    A plugin that fails to import is left out here; :func:`load_services`
    reports it, naming its distribution.
    """
    from aisexec.config.sections import installed_sections

    if blocked is None:
        blocked = blocked_services()
    entry_points = [ep for ep in _entry_points(SERVICES_GROUP) if ep.name not in blocked]
    return installed_sections(entry_points, _declared_sections)


def environment_variables(blocked: frozenset[str] | None = None) -> list:
    """Every environment variable the executive reads: the core's, then each installed plugin's.

    :class:`aisexec.env.EnvVar` items; a plugin declares its own with its
    configuration section (``ConfigSection.environment``).
    """
    from aisexec.env import VARIABLES

    return [*VARIABLES, *(var for section in service_config_sections(blocked) for var in section.environment)]


def blocked_services() -> frozenset[str]:
    """The entry point names ``OPENAIS_BLOCK_SERVICES`` asks to skip."""
    import os

    return frozenset(name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip())


def load_services(blocked: frozenset[str] = frozenset()) -> list[LoadedService]:
    """Load every service engine of ``openais.services``, sorted by service id.

    Raises PluginError naming the distribution and entry point when a plugin
    fails to import, returns no engine, does not fit the contract, or claims
    an id or name another plugin already holds.
    """
    loaded: list[LoadedService] = []
    by_id: dict[int, LoadedService] = {}
    by_name: dict[str, LoadedService] = {}
    for ep in _entry_points(SERVICES_GROUP):
        if ep.name in blocked:
            log.debug("service entry point %s skipped (%s)", ep.name, BLOCK_ENV)
            continue
        origin = _origin(ep)
        plugin = _load(ep)
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs.ServiceDiscoverySpec)
        try:
            pm.register(plugin, name=f"{SERVICES_GROUP}:{ep.name}")
            pm.check_pending()
            engine = pm.hook.openais_service_engine()
        except Exception as exc:
            raise PluginError(f"{origin} failed to provide a service engine: {type(exc).__name__}: {exc}") from exc
        if not isinstance(engine, ServiceEngine):
            raise PluginError(f"{origin} returned {engine!r}, not a ServiceEngine")
        if not isinstance(engine.id, int) or not 0 <= engine.id < 65536 or not engine.name:
            raise PluginError(f"{origin}: service needs a name and an id in 0..65535 (got {engine.id!r})")
        if engine.id in by_id:
            raise PluginError(
                f"service id {engine.id} is claimed twice: by {by_id[engine.id].origin} "
                f"({by_id[engine.id].engine.name}) and by {origin} ({engine.name})"
            )
        if engine.name in by_name:
            raise PluginError(
                f"service name {engine.name!r} is claimed twice: by {by_name[engine.name].origin} and by {origin}"
            )
        try:
            host = EngineHost(engine)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{origin}: engine {engine.name} does not fit the service contract: {exc}") from exc
        entry = LoadedService(engine=engine, host=host, origin=origin)
        by_id[engine.id] = entry
        by_name[engine.name] = entry
        loaded.append(entry)
        log.debug("service %s (id %d, version %s) loaded from %s", engine.name, engine.id, engine.version, origin)
    loaded.sort(key=lambda s: s.engine.id)
    return loaded
