"""Loading the main configuration: parse with the chosen interface, then validate with the one schema."""

from __future__ import annotations

from aisexec.config.errors import ConfigError
from aisexec.config.model import Config
from aisexec.config.schema import validate_tree

__all__ = ["Config", "ConfigError", "load_config", "validate_tree"]


def load_config(iface_name: str, path: str) -> Config:
    """Read ``path`` with the configuration interface ``iface_name`` and validate it.

    Raises ConfigError for a missing/unreadable file or any problem in it, and
    :class:`aisexec.plugins.PluginError` for an unknown interface.
    """
    from aisexec import plugins  # late: plugins imports the service layer

    interface = plugins.load_config_interface(iface_name)
    try:
        open(path, "rb").close()  # fail early, naming the file, whatever parser reads it
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read configuration file: {exc.strerror or exc}") from exc
    try:
        tree = interface.read(path)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # a third-party parser's own failure: still name the file
        raise ConfigError(path, 0, "", f"configuration interface '{iface_name}' failed: {exc}") from exc
    return validate_tree(tree, source=path, iface=iface_name)
