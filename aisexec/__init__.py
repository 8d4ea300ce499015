"""aisexec: the openais cluster executive (Totem ring, service engines, IPC)."""

__version__ = "0.1.0"
