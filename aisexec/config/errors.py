"""The one exception a configuration problem raises: file, line, key, message and a suggestion."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, located in its file.

    ``str()`` is one line: ``FILE:LINE: KEY: message (did you mean 'x'?)``.
    ``line`` is 1-based; 0 means the whole file (e.g. it cannot be read), and
    the ``:LINE`` part is then left out.  ``key`` is the dotted key or section
    path (``totem.token``, ``totem.interface``); an empty key (pure syntax
    errors) leaves out the ``KEY:`` part.
    """

    def __init__(self, file: str, line: int, key: str, message: str, suggestion: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        self.suggestion = suggestion
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        return text

    def __str__(self) -> str:
        return self._render()
