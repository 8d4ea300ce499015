"""CKPT library requests: validate against the local replica, then multicast the change (or answer a read).

Checks run in the contract's order (ckpt.md §1): the handle, argument errors
for every element, Access, BadOperation; the state's own errors (no active
replica, NotExist, Exist, NoSpace, NoResources) are decided by every replica
when the change is delivered (:mod:`plugins.ckpt.state`).  Reads, status and
iteration are answered from the local replica.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from aisexec.totem.api import MessageTooBig, QueueFull
from openais import ckpt as wire
from openais.ckpt import (
    CHECKPOINT_CREATE,
    CHECKPOINT_READ,
    CHECKPOINT_WRITE,
    MAX_IO_SIZE,
    OPEN_FLAGS,
    TIME_END,
    Request,
    SectionsChosen,
)
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.ckpt import messages as m
from plugins.ckpt.local import LocalIter, LocalOpen, Pending
from plugins.ckpt.state import Checkpoint

OK = int(SaAisError.OK)
TRY_AGAIN = int(SaAisError.TRY_AGAIN)
INVALID_PARAM = int(SaAisError.INVALID_PARAM)
BAD_HANDLE = int(SaAisError.BAD_HANDLE)
BAD_FLAGS = int(SaAisError.BAD_FLAGS)
ACCESS = int(SaAisError.ACCESS)
NOT_EXIST = int(SaAisError.NOT_EXIST)
BAD_OPERATION = int(SaAisError.BAD_OPERATION)
TOO_BIG = int(SaAisError.TOO_BIG)
NO_SECTIONS = int(SaAisError.NO_SECTIONS)
NO_RESOURCES = int(SaAisError.NO_RESOURCES)
TIMEOUT = int(SaAisError.TIMEOUT)


def vector(error: int, index: int = -1, data: list | None = None) -> bytes:
    """A WRITE/READ answer payload."""
    return wire.VectorAnswer.pack(error, index, data or [])


def _matches(sec: Any, chosen: int, expiration: int) -> bool:
    if chosen == SectionsChosen.ANY:
        return True
    if chosen == SectionsChosen.FOREVER:
        return sec.expiration == TIME_END
    if chosen == SectionsChosen.LEQ_EXPIRATION_TIME:
        return sec.expiration <= expiration
    if chosen == SectionsChosen.GEQ_EXPIRATION_TIME:
        return sec.expiration >= expiration
    return False  # CORRUPTED: sections are never corrupted (atomic writes)


class RequestHandlers:
    """Mixin of the CKPT engine: one method per library request."""

    # provided by the engine
    id: int
    api: Any
    state: Any
    handles: Any
    iters: Any
    pending: dict
    outbox: Any
    mem_limit: int

    def may_write(self) -> bool:  # the engine overrides (quorum)
        """May this partition change checkpoints now."""
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------------------------

    def _now(self) -> int:
        return time.time_ns()

    def _decode(self, conn: Any, rid: int, request: int, cls: type, payload: bytes) -> Any:
        try:
            return cls.decode(payload)
        except MessageError:
            self._respond_error(conn, request, rid, INVALID_PARAM)
            return None

    def _respond_error(self, conn: Any, request: int, rid: int, error: int, index: int = -1) -> None:
        if request in (Request.WRITE, Request.READ):
            conn.respond(self.id, request, rid, OK, vector(error, index))
        else:
            conn.respond(self.id, request, rid, error)

    def _opened(self, conn: Any, rid: int, request: int, handle: int) -> tuple[LocalOpen, Checkpoint] | None:
        """The connection's checkpoint handle and its replica; answers BAD_HANDLE / NOT_EXIST itself."""
        local = self.handles.get(conn, handle)
        if local is None:
            self._respond_error(conn, request, rid, BAD_HANDLE)
            return None
        ck = self.state.find(local.uid)
        if ck is None:
            self._respond_error(conn, request, rid, NOT_EXIST)
            return None
        return local, ck

    def _submit(self, conn: Any, rid: int, request: int, exec_id: int, payload: bytes, *, safe: bool = False,
                pending: Pending | None = None) -> bool:
        """Multicast a change for a request; answers TRY_AGAIN itself when it cannot be taken now."""
        if not self.may_write() or not self.outbox.accepting(len(payload)):
            self._respond_error(conn, request, rid, TRY_AGAIN)
            return False
        self.pending[(conn.id, rid)] = pending or Pending(conn, request)
        try:
            self.outbox.send(exec_id, payload, safe)
        except (QueueFull, MessageTooBig):  # pragma: no cover - the outbox queues instead
            self.pending.pop((conn.id, rid), None)
            self._respond_error(conn, request, rid, TRY_AGAIN)
            return False
        return True

    def _write_safe(self, ck: Checkpoint) -> bool:
        """SAFE delivery (every member has it) unless the active replica is this node's, or it is alone."""
        if len(self.api.members()) <= 1:
            return False  # the only replica is this node's: applied at delivery
        return ck.all_replicas or ck.active != self.api.nodeid

    # -- open / close / unlink ----------------------------------------------------------------------

    def _lib_open(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.OPEN, wire.OpenReq, payload)
        if req is None:
            return
        if req.open_flags & ~OPEN_FLAGS:
            conn.respond(self.id, Request.OPEN, rid, BAD_FLAGS)
            return
        create = bool(req.open_flags & CHECKPOINT_CREATE)
        if create != (req.attrs is not None) or (req.attrs is not None and wire.attributes_error(req.attrs)):
            conn.respond(self.id, Request.OPEN, rid, INVALID_PARAM)
            return
        if req.timeout_ns == 0:
            conn.respond(self.id, Request.OPEN, rid, TIMEOUT)
            return
        uid = int.from_bytes(os.urandom(8), "big") or 1
        exec_payload = m.ExOpen.pack(conn.id, rid, req.name, req.open_flags, req.attrs, uid, self._now(),
                                     self.mem_limit)
        pending = Pending(conn, Request.OPEN, req.name, req.open_flags, bool(req.is_async), req.invocation)
        if not self._submit(conn, rid, Request.OPEN, m.Exec.OPEN, exec_payload, pending=pending):
            return
        if req.is_async:
            conn.respond(self.id, Request.OPEN, rid, OK)
        elif req.timeout_ns > 0:
            pending.cancel = self.api.call_later(req.timeout_ns / 1e9, lambda: self._open_timed_out(pending, rid))

    def _open_timed_out(self, pending: Pending, rid: int) -> None:
        if pending.timed_out or (pending.conn.id, rid) not in self.pending:
            return
        pending.timed_out = True
        pending.conn.respond(self.id, Request.OPEN, rid, TIMEOUT)

    def _lib_close(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.CLOSE, wire.HandleReq, payload)
        if req is None:
            return
        local = self.handles.remove(conn, req.handle)
        if local is None:
            conn.respond(self.id, Request.CLOSE, rid, BAD_HANDLE)
            return
        self._drop_iterations(conn, req.handle)
        # Always taken (queued when the ring is full): a close must never be lost.
        self.pending[(conn.id, rid)] = Pending(conn, Request.CLOSE)
        self.outbox.send(m.Exec.CLOSE, m.ExClose.pack(conn.id, rid, local.uid, self._now()))

    def _drop_iterations(self, conn: Any, handle: int) -> None:
        for ih, it in self.iters.of(conn):
            if it.handle == handle:
                self.iters.remove(conn, ih)

    def _lib_unlink(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.UNLINK, wire.NameReq, payload)
        if req is None:
            return
        self._submit(conn, rid, Request.UNLINK, m.Exec.UNLINK, m.ExUnlink.pack(conn.id, rid, req.name))

    def _lib_retention_set(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.RETENTION_SET, wire.RetentionReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.RETENTION_SET, req.handle)
        if found is None:
            return
        local, ck = found
        if req.retention_ns < -1:
            conn.respond(self.id, Request.RETENTION_SET, rid, INVALID_PARAM)
            return
        if ck.unlinked:
            conn.respond(self.id, Request.RETENTION_SET, rid, BAD_OPERATION)
            return
        self._submit(conn, rid, Request.RETENTION_SET, m.Exec.RETENTION_SET,
                     m.ExRetention.pack(conn.id, rid, local.uid, req.retention_ns))

    def _lib_active_set(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.ACTIVE_SET, wire.HandleReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.ACTIVE_SET, req.handle)
        if found is None:
            return
        local, ck = found
        if not local.flags & CHECKPOINT_WRITE:
            conn.respond(self.id, Request.ACTIVE_SET, rid, ACCESS)
            return
        if not ck.collocated:
            conn.respond(self.id, Request.ACTIVE_SET, rid, BAD_OPERATION)
            return
        self._submit(conn, rid, Request.ACTIVE_SET, m.Exec.ACTIVE_SET, m.ExActive.pack(conn.id, rid, local.uid))

    # -- local reads ----------------------------------------------------------------------------------

    def _lib_status_get(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.STATUS_GET, wire.HandleReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.STATUS_GET, req.handle)
        if found is None:
            return
        _local, ck = found
        if ck.no_active_replica:
            conn.respond(self.id, Request.STATUS_GET, rid, NOT_EXIST)
            return
        conn.respond(self.id, Request.STATUS_GET, rid, OK,
                     wire.StatusAnswer.pack(ck.attrs, len(ck.sections), ck.used))

    def _lib_read(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.READ, wire.ReadReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.READ, req.handle)
        if found is None:
            return
        local, ck = found
        limit = ck.attrs.max_section_size
        if not req.items:
            self._respond_error(conn, Request.READ, rid, INVALID_PARAM)
            return
        for i, item in enumerate(req.items):
            if item.size > limit or item.offset > limit:
                self._respond_error(conn, Request.READ, rid, INVALID_PARAM, i)
                return
        if not local.flags & CHECKPOINT_READ:
            self._respond_error(conn, Request.READ, rid, ACCESS)
            return
        if ck.no_active_replica:
            self._respond_error(conn, Request.READ, rid, NOT_EXIST)
            return
        out = []
        total = 0
        for i, item in enumerate(req.items):
            sec = ck.sections.get(item.section_id)
            if sec is None:
                self._respond_error(conn, Request.READ, rid, NOT_EXIST, i)
                return
            end = len(sec.data) if item.size < 0 else item.offset + item.size
            piece = bytes(sec.data[item.offset:end])
            total += len(piece)
            if total > MAX_IO_SIZE:
                self._respond_error(conn, Request.READ, rid, TOO_BIG, i)
                return
            out.append(piece)
        conn.respond(self.id, Request.READ, rid, OK, vector(OK, -1, out))

    def _lib_read_one(self, conn: Any, rid: int, payload: bytes) -> None:
        try:
            req = wire.ReadOneReq.decode(payload)
        except MessageError:
            conn.respond(self.id, Request.READ_ONE, rid, OK, wire.ReadOneAnswer.pack(INVALID_PARAM, -1, b""))
            return
        error, index, data = self._read_element(conn, req.handle, req.section_id, req.offset, req.size)
        conn.respond(self.id, Request.READ_ONE, rid, OK, wire.ReadOneAnswer.pack(error, index, data))

    def _read_element(self, conn: Any, handle: int, sid: bytes, offset: int, size: int) -> tuple[int, int, bytes]:
        """One read element checked in the contract's order: (error, index or -1, data)."""
        local = self.handles.get(conn, handle)
        if local is None:
            return BAD_HANDLE, -1, b""
        ck = self.state.find(local.uid)
        if ck is None:
            return NOT_EXIST, -1, b""
        limit = ck.attrs.max_section_size
        if size > limit or offset > limit:
            return INVALID_PARAM, 0, b""
        if not local.flags & CHECKPOINT_READ:
            return ACCESS, -1, b""
        if ck.no_active_replica:
            return NOT_EXIST, -1, b""
        sec = ck.sections.get(sid)
        if sec is None:
            return NOT_EXIST, 0, b""
        data = sec.data
        piece = bytes(data[offset:] if size < 0 else data[offset:offset + size])
        if len(piece) > MAX_IO_SIZE:
            return TOO_BIG, 0, b""
        return OK, -1, piece

    def _lib_iter_init(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.ITER_INIT, wire.IterInitReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.ITER_INIT, req.handle)
        if found is None:
            return
        local, ck = found
        if req.chosen not in set(SectionsChosen):
            conn.respond(self.id, Request.ITER_INIT, rid, INVALID_PARAM)
            return
        if ck.no_active_replica:
            conn.respond(self.id, Request.ITER_INIT, rid, NOT_EXIST)
            return
        ids = [sid for sid, sec in ck.sections.items() if _matches(sec, req.chosen, req.expiration)]
        try:
            handle = self.iters.add(conn, LocalIter(req.handle, local.uid, ids))
        except OverflowError:
            conn.respond(self.id, Request.ITER_INIT, rid, NO_RESOURCES)
            return
        conn.respond(self.id, Request.ITER_INIT, rid, OK, wire.OpenAnswer.pack(handle))

    def _lib_iter_next(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.ITER_NEXT, wire.HandleReq, payload)
        if req is None:
            return
        it = self.iters.get(conn, req.handle)
        if it is None or self.handles.get(conn, it.handle) is None:
            conn.respond(self.id, Request.ITER_NEXT, rid, BAD_HANDLE)
            return
        ck = self.state.find(it.uid)
        while ck is not None and it.pos < len(it.ids):
            sid = it.ids[it.pos]
            it.pos += 1
            sec = ck.sections.get(sid)
            if sec is not None:
                conn.respond(self.id, Request.ITER_NEXT, rid, OK, wire.WireDescriptor.pack(
                    sid, sec.expiration, len(sec.data), int(wire.SectionState.VALID), sec.last_update))
                return
        it.pos = len(it.ids)
        conn.respond(self.id, Request.ITER_NEXT, rid, NO_SECTIONS)

    def _lib_iter_finalize(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.ITER_FINALIZE, wire.HandleReq, payload)
        if req is None:
            return
        error = OK if self.iters.remove(conn, req.handle) is not None else BAD_HANDLE
        conn.respond(self.id, Request.ITER_FINALIZE, rid, error)

    # -- changes to sections ------------------------------------------------------------------------

    def _writable(self, conn: Any, rid: int, request: int, local: LocalOpen) -> bool:
        if not local.flags & CHECKPOINT_WRITE:
            self._respond_error(conn, request, rid, ACCESS)
            return False
        return True

    def _lib_section_create(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.SECTION_CREATE, wire.SectionCreateReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.SECTION_CREATE, req.handle)
        if found is None:
            return
        local, ck = found
        a = ck.attrs
        sid = req.section_id
        bad = (sid is None and a.max_section_id_size == 0) or (sid is not None and (
            sid == b"" or len(sid) > a.max_section_id_size)) or len(req.data) > a.max_section_size
        if bad:
            conn.respond(self.id, Request.SECTION_CREATE, rid, INVALID_PARAM)
            return
        if not self._writable(conn, rid, Request.SECTION_CREATE, local):
            return
        self._submit(conn, rid, Request.SECTION_CREATE, m.Exec.SECTION_CREATE, m.ExSectionCreate.pack(
            conn.id, rid, local.uid, sid, req.expiration, self._now(), self.mem_limit, req.data),
            safe=self._write_safe(ck))

    def _lib_section_delete(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.SECTION_DELETE, wire.SectionReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.SECTION_DELETE, req.handle)
        if found is None:
            return
        local, ck = found
        if req.section_id == b"":
            conn.respond(self.id, Request.SECTION_DELETE, rid, INVALID_PARAM)
            return
        if not self._writable(conn, rid, Request.SECTION_DELETE, local):
            return
        self._submit(conn, rid, Request.SECTION_DELETE, m.Exec.SECTION_DELETE,
                     m.ExSectionDelete.pack(conn.id, rid, local.uid, req.section_id), safe=self._write_safe(ck))

    def _lib_expiration_set(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.EXPIRATION_SET, wire.ExpirationReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.EXPIRATION_SET, req.handle)
        if found is None:
            return
        local, ck = found
        if req.section_id == b"":
            conn.respond(self.id, Request.EXPIRATION_SET, rid, INVALID_PARAM)
            return
        if not self._writable(conn, rid, Request.EXPIRATION_SET, local):
            return
        self._submit(conn, rid, Request.EXPIRATION_SET, m.Exec.EXPIRATION_SET,
                     m.ExExpiration.pack(conn.id, rid, local.uid, req.section_id, req.expiration),
                     safe=self._write_safe(ck))

    def _lib_write(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.WRITE, wire.WriteReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.WRITE, req.handle)
        if found is None:
            return
        local, ck = found
        if not req.items:
            self._respond_error(conn, Request.WRITE, rid, INVALID_PARAM)
            return
        total = 0
        for i, item in enumerate(req.items):
            if len(item.data) > ck.attrs.max_section_size:
                self._respond_error(conn, Request.WRITE, rid, INVALID_PARAM, i)
                return
            total += len(item.data)
        if total > MAX_IO_SIZE:
            self._respond_error(conn, Request.WRITE, rid, TOO_BIG)
            return
        if not self._writable(conn, rid, Request.WRITE, local):
            return
        self._submit(conn, rid, Request.WRITE, m.Exec.WRITE, m.ExWrite.pack(
            conn.id, rid, local.uid, self._now(), self.mem_limit, req.items), safe=self._write_safe(ck))

    def _lib_overwrite(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.OVERWRITE, wire.OverwriteReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.OVERWRITE, req.handle)
        if found is None:
            return
        local, ck = found
        if len(req.data) > ck.attrs.max_section_size:
            conn.respond(self.id, Request.OVERWRITE, rid, INVALID_PARAM)
            return
        if not self._writable(conn, rid, Request.OVERWRITE, local):
            return
        self._submit(conn, rid, Request.OVERWRITE, m.Exec.OVERWRITE, m.ExOverwrite.pack(
            conn.id, rid, local.uid, self._now(), self.mem_limit, req.section_id, req.data),
            safe=self._write_safe(ck))

    def _lib_synchronize(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.SYNCHRONIZE, wire.SynchronizeReq, payload)
        if req is None:
            return
        found = self._opened(conn, rid, Request.SYNCHRONIZE, req.handle)
        if found is None:
            return
        local, ck = found
        if not self._writable(conn, rid, Request.SYNCHRONIZE, local):
            return
        if ck.all_replicas:
            conn.respond(self.id, Request.SYNCHRONIZE, rid, BAD_OPERATION)
            return
        if ck.no_active_replica:
            conn.respond(self.id, Request.SYNCHRONIZE, rid, NOT_EXIST)
            return
        if req.timeout_ns == 0:
            conn.respond(self.id, Request.SYNCHRONIZE, rid, TIMEOUT)
            return
        pending = Pending(conn, Request.SYNCHRONIZE, is_async=bool(req.is_async), invocation=req.invocation)
        if not self._submit(conn, rid, Request.SYNCHRONIZE, m.Exec.BARRIER,
                            m.ExBarrier.pack(conn.id, rid, local.uid), safe=len(self.api.members()) > 1,
                            pending=pending):
            return
        if req.is_async:
            conn.respond(self.id, Request.SYNCHRONIZE, rid, OK)
        elif req.timeout_ns > 0:
            def expire() -> None:
                if self.pending.pop((conn.id, rid), None) is not None:
                    conn.respond(self.id, Request.SYNCHRONIZE, rid, TIMEOUT)
            pending.cancel = self.api.call_later(req.timeout_ns / 1e9, expire)

    # -- the tool -------------------------------------------------------------------------------------

    def listing(self) -> dict:
        """Every checkpoint of the local replica (``openais-ckpttool --json``)."""
        members = list(self.api.members()) if hasattr(self.api, "members") else []
        out = []
        for ck in sorted(self.state.by_uid.values(), key=lambda c: (c.name, c.uid)):
            a = ck.attrs
            out.append({
                "name": ck.name, "uid": f"{ck.uid:016x}", "unlinked": ck.unlinked,
                "attributes": {"creation_flags": a.creation_flags, "checkpoint_size": a.checkpoint_size,
                               "retention_duration": None if a.retention_ns < 0 else a.retention_ns / 1e9,
                               "max_sections": a.max_sections, "max_section_size": a.max_section_size,
                               "max_section_id_size": a.max_section_id_size},
                "sections": [{"id": sid.hex(), "id_text": sid.decode("utf-8", "replace"), "size": len(sec.data),
                              "expiration_time": sec.expiration, "last_update": sec.last_update}
                             for sid, sec in sorted(ck.sections.items())],
                "size": ck.used, "openers": ck.opener_count,
                "openers_by_node": {str(n): c for n, c in sorted(ck.openers.items())},
                "replicas": members, "active_replica": None if ck.all_replicas else ck.active,
                "retention_started": ck.closed_at, "changes": ck.changes,
            })
        return {"nodeid": self.api.nodeid, "memory": self.state.memory, "max_memory": self.mem_limit,
                "checkpoints": out}

    def _lib_list(self, conn: Any, rid: int, payload: bytes) -> None:
        conn.respond(self.id, Request.LIST, rid, OK, wire.JsonAnswer.pack(json.dumps(self.listing()).encode()))

    def _lib_peek(self, conn: Any, rid: int, payload: bytes) -> None:
        req = self._decode(conn, rid, Request.PEEK, wire.PeekReq, payload)
        if req is None:
            return
        ck = self.state.by_name.get(req.name)
        sec = None if ck is None else ck.sections.get(req.section_id)
        if sec is None:
            conn.respond(self.id, Request.PEEK, rid, NOT_EXIST)
            return
        end = len(sec.data) if req.size < 0 else req.offset + req.size
        data = bytes(sec.data[req.offset:min(end, req.offset + MAX_IO_SIZE)])
        conn.respond(self.id, Request.PEEK, rid, OK, wire.JsonAnswer.pack(data))
