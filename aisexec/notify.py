"""Dependency-free ``sd_notify``: tell systemd (``Type=notify``) about readiness and status."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("aisexec.main")


def _address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to ``$NOTIFY_SOCKET``.

    Returns True when a datagram was sent; False (no-op) without
    ``NOTIFY_SOCKET`` or on error (logged at debug level, never raised).
    """
    source = os.environ if environ is None else environ
    raw = source.get("NOTIFY_SOCKET")
    if not raw or not fields:
        return False
    payload = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, _address(raw))
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """``READY=1`` (and ``STATUS=``)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    """``STATUS=text``."""
    return notify(f"STATUS={text}")


def stopping(status: str | None = None) -> bool:
    """``STOPPING=1`` (and ``STATUS=``)."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def watchdog() -> bool:
    """``WATCHDOG=1`` keep-alive."""
    return notify("WATCHDOG=1")
