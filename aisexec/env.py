"""The executive's environment variables: where its files are and which configuration parser to use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable the executive reads: name, default, meaning, and the field it sets."""

    name: str
    field: str
    default: str
    meaning: str

    def read(self, environ: Mapping[str, str] | None = None) -> str:
        """This variable's value in ``environ`` (default ``os.environ``); unset or empty: the default."""
        return (os.environ if environ is None else environ).get(self.name) or self.default


#: Every variable the executive's core reads (also rendered in docs/configuration.md).  A service
#: plugin declares its own with its configuration section (``ConfigSection.environment``).
VARIABLES: tuple[EnvVar, ...] = (
    EnvVar("OPENAIS_MAIN_CONFIG_FILE", "main_config_file", "/etc/ais/openais.conf",
           "path of the main configuration file (openais.conf)"),
    EnvVar("OPENAIS_TOTEM_AUTHKEY_FILE", "totem_authkey_file", "/etc/ais/authkey",
           "path of the shared Totem authentication key (totem.keyfile overrides it)"),
    EnvVar("OPENAIS_DEFAULT_CONFIG_IFACE", "config_iface", "default",
           "name of the configuration interface (entry point in group openais.config) that reads the main file"),
    EnvVar("OPENAIS_IPC_SOCKET", "ipc_socket", "/var/run/openais/aisexec.sock",
           "path of the Unix socket library clients connect to"),
    EnvVar("OPENAIS_STATE_DIR", "state_dir", "/var/lib/openais",
           "directory for persistent per-node state (ring id sequence)"),
)


@dataclass(frozen=True, slots=True)
class Environment:
    """The executive's paths and parser choice, from the environment with the documented defaults."""

    main_config_file: str = "/etc/ais/openais.conf"
    totem_authkey_file: str = "/etc/ais/authkey"
    config_iface: str = "default"
    ipc_socket: str = "/var/run/openais/aisexec.sock"
    state_dir: str = "/var/lib/openais"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Read every variable of :data:`VARIABLES` from ``environ`` (default ``os.environ``).

        An unset or empty variable takes its default.
        """
        source = os.environ if environ is None else environ
        return cls(**{var.field: source.get(var.name) or var.default for var in VARIABLES})

    def to_environ(self) -> dict[str, str]:
        """The variables that reproduce this environment (for starting a child executive)."""
        return {var.name: getattr(self, var.field) for var in VARIABLES}
