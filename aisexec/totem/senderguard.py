"""Keeping a misconfigured node out of a healthy ring: unknown addresses and duplicate node ids.

Two configuration mistakes used to destabilise a healthy ring: a node whose
address is missing from the others' ``member`` lists (udpu) still reached
them with its joins and made the ring re-form every second or two, and two
nodes with the same ``nodeid`` made every receiver flip the nodeid's address
back and forth.  The driver asks a :class:`SenderGuard` about every sender
whose address it has not seen before (or that changed) and drops what it
refuses before the Totem core sees it, so the healthy ring never hears the
misconfigured node:

- with a member list (udpu), an address not in it is refused;
- a nodeid already heard at another address within ``hold`` seconds is
  refused (the first address keeps it; a node that really moved is accepted
  once its old address has been silent that long).

Every refusal is counted and logged, at most once per ``log_interval`` per
address, saying which node, which address and what to fix.  The guard is a
plain object (time is an argument) so that it is tested without sockets.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

log = logging.getLogger("aisexec.totem")

#: Seconds a nodeid's address must be silent before another address may take the nodeid.
DEFAULT_HOLD = 10.0
#: Seconds between two log lines about the same address.
LOG_INTERVAL = 5.0


def _norm(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


class SenderGuard:
    """Decides whether packets from (nodeid, address) may reach the core."""

    def __init__(self, members: Iterable[str] | None, hold: float = DEFAULT_HOLD,
                 log_interval: float = LOG_INTERVAL) -> None:
        self.allowed = None if members is None else {_norm(m) for m in members}
        self.hold = hold
        self.log_interval = log_interval
        self._owner: dict[int, str] = {}  # nodeid -> the address that holds it
        self._heard: dict[int, float] = {}  # nodeid -> when its owner address was last heard
        self._logged: dict[str, float] = {}
        self.refused_unknown = 0
        self.refused_duplicate = 0

    def heard(self, nodeid: int, now: float) -> None:
        """A packet from ``nodeid`` at its known address (keeps the address's claim fresh)."""
        self._heard[nodeid] = now

    def refuses(self, nodeid: int, address: str, now: float) -> bool:
        """Before any decryption: would :meth:`admit` refuse this claim?  Counts and logs, changes no claim.

        The driver asks this with the nodeid of the clear envelope header, so a
        refused node's packets never reach the per-sender crypto state (replay
        windows) of the node id they claim.
        """
        norm = _norm(address)
        if self.allowed is not None and norm not in self.allowed:
            return not self.admit(nodeid, address, now)
        owner = self._owner.get(nodeid)
        if owner is not None and owner != norm and now - self._heard.get(nodeid, -1e18) < self.hold:
            return not self.admit(nodeid, address, now)
        return False

    def admit(self, nodeid: int, address: str, now: float) -> bool:
        """True when packets of ``nodeid`` from ``address`` may go to the core (its address is new or changed)."""
        address = _norm(address)
        if self.allowed is not None and address not in self.allowed:
            self.refused_unknown += 1
            self._say(address, now, "packets from %s (node %d) are ignored: that address is not in this node's "
                                    "member list; add 'member { memberaddr: %s }' on every node, or stop that node",
                      address, nodeid, address)
            return False
        owner = self._owner.get(nodeid)
        if owner is not None and owner != address and now - self._heard.get(nodeid, -1e18) < self.hold:
            self.refused_duplicate += 1
            self._say(address, now, "node %d is heard at %s and at %s: two nodes use nodeid %d; keeping %s, "
                                    "ignoring %s; give every node its own totem.nodeid",
                      nodeid, owner, address, nodeid, owner, address)
            return False
        if owner is not None and owner != address:
            log.warning("node %d moved from %s to %s", nodeid, owner, address)
        self._owner[nodeid] = address
        self._heard[nodeid] = now
        return True

    def _say(self, address: str, now: float, message: str, *args: object) -> None:
        last = self._logged.get(address)
        if last is None or now - last >= self.log_interval:
            self._logged[address] = now
            log.error(message, *args)

    def stats(self) -> dict[str, int]:
        """Refusal counters for the status and metrics."""
        return {"refused_unknown_sender": self.refused_unknown, "refused_duplicate_nodeid": self.refused_duplicate}
