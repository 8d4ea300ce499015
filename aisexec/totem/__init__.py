"""Totem single-ring ordering and membership protocol (sans-IO core, transports, crypto)."""
