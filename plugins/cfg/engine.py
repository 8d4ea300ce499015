"""The CFG service engine: ring status, membership, readiness and clean shutdown for operators.

Everything is answered locally from the executive api (no cluster messages):
``ring_status()`` normalised into :class:`openais.cfg.RingStatus`,
``members()`` with ``node_address()``, ``ready()``, ``config.to_dict()``
and the whole status for DUMP (secrets left out), and ``shutdown()``,
which runs just after the answer has been queued so the tool hears it.
Shutdown is refused (``SA_AIS_ERR_ACCESS``) unless the caller is root or
the executive's own user.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aisexec.service import LibHandler, ServiceEngine
from openais import cfg as wire
from openais.cfg import Dump, Member, Membership, Request, Ring, RingStatus, State, redact
from openais.errors import SaAisError

log = logging.getLogger("aisexec.cfg")

_OK = int(SaAisError.OK)
_ACCESS = int(SaAisError.ACCESS)

#: Seconds between answering a shutdown request and asking the executive to stop.
SHUTDOWN_DELAY = 0.05


#: Keys of the api's ring status that RingStatus carries as fields; the rest go to ``stats``.
_STATUS_KEYS = frozenset({"nodeid", "rings", "state", "members", "synced", "ring_id"})


def _text(value: Any) -> str:
    return "" if value is None else str(value)[: wire.MAX_ADDRESS]


class CfgEngine(ServiceEngine):
    """Ring status and administration (service id 7)."""

    id = wire.SERVICE_ID
    name = "CFG"
    version = "1.0"

    def __init__(self) -> None:
        self.api: Any = None
        self.shutdown_requested_by: int | None = None
        self.lib_handlers = {
            Request.RING_STATUS: LibHandler(self._lib_ring_status, max_size=0),
            Request.MEMBERS: LibHandler(self._lib_members, max_size=0),
            Request.STATE: LibHandler(self._lib_state, max_size=0),
            Request.SHUTDOWN: LibHandler(self._lib_shutdown, max_size=0),
            Request.DUMP: LibHandler(self._lib_dump, max_size=0),
        }

    def exec_init(self, api: Any) -> None:
        """Keep the executive api."""
        self.api = api

    def dump(self) -> dict:
        """Whether a shutdown was requested and by which pid."""
        return {"shutdown_requested_by": self.shutdown_requested_by}

    def ring_status(self) -> RingStatus:
        """The api's ring status, normalised (missing fields get their defaults)."""
        raw = dict(self.api.ring_status())
        current = str(self.api.ring_id())
        rings = [
            Ring(int(r.get("ringnumber", i)), _text(r.get("ring_id") or current), _text(r.get("address")),
                 _text(r.get("status") or wire.RING_FAULTY))
            for i, r in enumerate(raw.get("rings") or [])
        ]
        stats = {("totem" if key == "stats" else key): value for key, value in raw.items() if key not in _STATUS_KEYS}
        return RingStatus(
            nodeid=int(raw["nodeid"] if "nodeid" in raw else self.api.nodeid),
            rings=rings,
            state=str(raw.get("state", "")),
            members=[int(m) for m in (raw["members"] if "members" in raw else self.api.members())],
            synced=bool(raw["synced"] if "synced" in raw else self.api.ready()),
            stats=stats,
        )

    def dump_doc(self) -> Dump:
        """The effective configuration and the whole status, secrets left out."""
        config = getattr(self.api, "config", None)
        to_dict = getattr(config, "to_dict", None)
        settings = to_dict() if callable(to_dict) else {}
        status = self.ring_status()
        whole = {
            "nodeid": status.nodeid,
            "state": status.state,
            "synced": status.synced,
            "members": list(status.members),
            "rings": [r._asdict() for r in status.rings],
            **status.stats,
        }
        return Dump(config=redact(settings), status=redact(whole))

    def _lib_dump(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.DUMP, request_id, _OK, self.dump_doc().encode())

    def _lib_ring_status(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.RING_STATUS, request_id, _OK, self.ring_status().encode())

    def _lib_members(self, conn: Any, request_id: int, payload: bytes) -> None:
        ring = self.api.ring_id()
        members = [Member(n, _text(self.api.node_address(n))) for n in self.api.members()]
        conn.respond(self.id, Request.MEMBERS, request_id, _OK,
                     Membership.pack(ring.rep, ring.seq, members))

    def _lib_state(self, conn: Any, request_id: int, payload: bytes) -> None:
        conn.respond(self.id, Request.STATE, request_id, _OK, State.pack(self.api.nodeid, self.api.ready()))

    def _lib_shutdown(self, conn: Any, request_id: int, payload: bytes) -> None:
        if conn.uid not in (0, os.getuid()):
            log.warning("refusing shutdown requested by uid %d (pid %d)", conn.uid, conn.pid)
            conn.respond(self.id, Request.SHUTDOWN, request_id, _ACCESS)
            return
        log.warning("shutdown requested by pid %d (uid %d)", conn.pid, conn.uid)
        self.shutdown_requested_by = conn.pid
        conn.respond(self.id, Request.SHUTDOWN, request_id, _OK)
        self.api.call_later(SHUTDOWN_DELAY, self.api.shutdown)
