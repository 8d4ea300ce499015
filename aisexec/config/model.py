"""The validated configuration services see, whichever parser read the file."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from aisexec.totem.config import TotemConfig


@dataclass(slots=True)
class Config:
    """A checked openais.conf: every key present with its value or default.

    ``totem`` holds every ``totem { }`` key including the derived timers
    (``token_retransmit``, ``hold``, ``consensus``,
    ``rrp_token_expired_timeout``); ``totem_config`` is the same as a
    :class:`TotemConfig`.  ``interfaces`` are sorted by ``ringnumber``, each
    with a ``members`` list of ``{"memberaddr": ...}``.  ``logger_subsys``
    entries have every unset override filled from ``logging``.
    """

    totem: dict
    totem_config: TotemConfig
    interfaces: list[dict] = field(default_factory=list)
    logging: dict = field(default_factory=dict)
    logger_subsys: list[dict] = field(default_factory=list)
    aisexec: dict = field(default_factory=dict)
    uidgid: list[dict] = field(default_factory=list)
    #: checked sections the service plugins declare (``quorum``, ``event``, ...), every key with its default
    services: dict[str, dict] = field(default_factory=dict)
    #: top-level sections the file gave explicitly (``quorum`` in it means quorum is configured)
    present: frozenset = frozenset()
    source: str = ""
    iface: str = ""

    def to_dict(self) -> dict:
        """A JSON-able copy (for ``aisexec -t``, ``openais-cfgtool --dump``)."""
        return {
            "source": self.source,
            "iface": self.iface,
            "totem": dict(self.totem),
            "interfaces": copy.deepcopy(self.interfaces),
            "logging": dict(self.logging),
            "logger_subsys": copy.deepcopy(self.logger_subsys),
            "aisexec": dict(self.aisexec),
            "uidgid": copy.deepcopy(self.uidgid),
            **{name: dict(values) for name, values in self.services.items()},
        }

    def has_section(self, name: str) -> bool:
        """True when the file gave section ``name`` (not only its defaults)."""
        return name in self.present

    def section(self, name: str) -> dict:
        """The checked values of service section ``name`` (every key with its default; {} if unknown)."""
        return self.services.get(name, {})
