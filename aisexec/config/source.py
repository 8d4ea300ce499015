"""Reading a configuration file's text: missing files and non-UTF-8 bytes become ConfigError."""

from __future__ import annotations

from aisexec.config.errors import ConfigError


def read_text(path: str) -> str:
    """Return the UTF-8 text of ``path`` (a leading BOM is dropped) or raise ConfigError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read configuration file: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise ConfigError(path, line, "", f"file is not valid UTF-8 (byte 0x{byte})") from exc
