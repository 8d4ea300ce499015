"""The executive's local IPC: a Unix-socket server, per-client connections, SO_PEERCRED authorisation."""
