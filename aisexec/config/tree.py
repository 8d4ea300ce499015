"""The raw configuration tree every parser produces, with source positions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RawKey:
    """One ``key: value`` as written, with its line (1-based)."""

    name: str
    value: str
    line: int


@dataclass(slots=True)
class RawSection:
    """One ``name { ... }`` block; the root section has name ``""``.

    Sections may repeat (``interface``, ``member``, ``logger_subsys``,
    ``uidgid``), so subsections are a list in file order.
    """

    name: str
    line: int
    file: str
    keys: list[RawKey] = field(default_factory=list)
    sections: list[RawSection] = field(default_factory=list)

    def section(self, name: str) -> list[RawSection]:
        """Every direct subsection called ``name``, in file order."""
        return [s for s in self.sections if s.name == name]

    def key(self, name: str) -> RawKey | None:
        """The last ``name`` key of this section (a later one overrides), or None."""
        found = None
        for k in self.keys:
            if k.name == name:
                found = k
        return found
