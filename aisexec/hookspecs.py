"""pluggy hook specifications: the configuration-parser interface and the service-engine contract.

Two entry-point groups feed the executive:

``openais.config``
    Configuration parsers (``OPENAIS_DEFAULT_CONFIG_IFACE`` names one).  The
    entry point resolves to a module or object implementing the hooks of
    :class:`ConfigParserSpec`.

``openais.services``
    Service engines.  The entry point resolves to a module or object
    implementing :meth:`ServiceDiscoverySpec.openais_service_engine`, which
    returns one :class:`aisexec.service.ServiceEngine`, and optionally
    :meth:`ServiceDiscoverySpec.openais_config_sections`, the sections of
    openais.conf the service reads (the core's schema names none of them).

Each engine is then hosted in a plugin manager of its own
(:class:`aisexec.service.EngineHost`) that validates it against
:class:`EngineSpec`: the lifecycle hooks the core calls on every engine, in
this order over a node's life::

    exec_init -> (lib_init / lib requests / lib_exit)*  per connection
              -> (confchg TRANSITIONAL, confchg REGULAR,
                  sync_init, sync_process*, sync_activate | sync_abort)*  per ring
              -> exec_exit

Library request handlers and cluster message handlers are tables on the
engine (``lib_handlers`` and ``exec_handlers``), looked up by message id on
the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aisexec.config.sections import ConfigSection
    from aisexec.config.tree import RawSection
    from aisexec.service import ServiceEngine

PROJECT = "openais"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ConfigParserSpec:
    """Hooks a configuration parser (``openais.config`` entry point) implements."""

    @hookspec(firstresult=True)
    def openais_config_read(self, path: str) -> RawSection:
        """Read the main configuration file at ``path`` into a raw section tree.

        Returns the root :class:`aisexec.config.tree.RawSection` whose
        subsections and keys carry their source line numbers.  Raise
        :class:`aisexec.config.errors.ConfigError` naming file and line on a
        syntax error.  The executive validates the tree against one schema,
        so every parser yields the same validated configuration.
        """

    @hookspec(firstresult=True)
    def openais_config_describe(self) -> str:
        """Return a one-line description of the format this parser reads."""


class ServiceDiscoverySpec:
    """Hook a service plugin (``openais.services`` entry point) implements."""

    @hookspec(firstresult=True)
    def openais_service_engine(self) -> ServiceEngine:
        """Return the service engine this plugin provides (one per plugin)."""

    @hookspec
    def openais_config_sections(self) -> list[ConfigSection]:
        """Return the top-level sections of openais.conf this service reads (optional).

        Each :class:`aisexec.config.sections.ConfigSection` names the section
        and gives its keys as configspec lines; the executive checks them with
        its one schema (file, line and key in every error) and hands the
        values to the engine as ``api.config.section(name)``.
        """


class EngineSpec:
    """The service-engine contract: lifecycle hooks the core calls on one engine.

    A :class:`aisexec.service.ServiceEngine` subclass implements any of these
    simply by defining a method of the same name; all are optional.
    """

    @hookspec
    def exec_init(self, api: Any) -> None:
        """Called once at start with the :class:`aisexec.service.ExecutiveApi`."""

    @hookspec
    def config_check(self, config: Any, env: Any) -> None:
        """Check the service's own configuration files before anything starts (also ``aisexec -t``).

        ``config`` is the validated main configuration, ``env`` the
        :class:`aisexec.env.Environment`; raise
        :class:`aisexec.config.errors.ConfigError` (exit status CONFIG).
        """

    @hookspec
    def exec_stopping(self) -> None:
        """Clean stop: the executive is about to leave the ring; the ring and IPC still work.

        An engine may hand work over here (multicast, wait for deliveries
        under gevent), bounded by a few seconds; ``exec_exit`` follows.
        """

    @hookspec
    def exec_exit(self) -> None:
        """Called once at clean shutdown."""

    @hookspec
    def lib_init(self, conn: Any) -> None:
        """A library connection to this service opened (``conn.private`` is fresh)."""

    @hookspec
    def lib_exit(self, conn: Any) -> None:
        """A library connection closed or died: release everything it held."""

    @hookspec
    def confchg(
        self,
        kind: Any,
        members: tuple[int, ...],
        left: tuple[int, ...],
        joined: tuple[int, ...],
        ring_id: Any,
    ) -> None:
        """A transitional or regular configuration was delivered by Totem."""

    @hookspec
    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Start synchronising replicated state for the new regular configuration."""

    @hookspec(firstresult=True)
    def sync_process(self) -> bool:
        """Multicast a bounded share of state; return True while more remains."""

    @hookspec
    def sync_activate(self) -> None:
        """Every member finished sending: commit the rebuilt state."""

    @hookspec
    def sync_abort(self) -> None:
        """The configuration changed during sync: discard the round's state."""

    @hookspec
    def dump(self) -> dict:
        """Return a JSON-able description of the engine's state (SIGUSR2, tools)."""
