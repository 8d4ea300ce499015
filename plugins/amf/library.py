"""The AMF engine's library request handlers: validate, then answer from the replicated state or multicast.

Mixed into :class:`plugins.amf.engine.AmfEngine` (``self.state``, ``self.api``, ``self.conns`` ...).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aisexec.outbox import mcast_request
from openais import amf as wire
from openais.amf import Request
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.amf.health import LOCAL_BIT
from plugins.amf.messages import Admin, Error, ErrorClear, Exec, Register, Response
from plugins.amf.runtime import Op

_OK = int(SaAisError.OK)
_NOT_EXIST = int(SaAisError.NOT_EXIST)
_INVALID = int(SaAisError.INVALID_PARAM)
_EXIST = int(SaAisError.EXIST)
_INIT = int(SaAisError.INIT)
_NAME_TOO_LONG = int(SaAisError.NAME_TOO_LONG)
_BAD_FLAGS = int(SaAisError.BAD_FLAGS)


class LibraryMixin:
    """One handler per :class:`openais.amf.Request`."""

    id = wire.SERVICE_ID
    state: Any
    api: Any
    outbox: Any

    def _decode(self, conn: Any, msg_id: int, request_id: int, cls: Any, payload: bytes) -> Any:
        try:
            return cls.decode(payload)
        except MessageError:
            conn.respond(self.id, msg_id, request_id, _INVALID)
            return None

    def _disabled(self, conn: Any, msg_id: int, request_id: int) -> bool:
        if self.state is None or self.excluded:
            conn.respond(self.id, msg_id, request_id, _NOT_EXIST)
            return True
        return False

    def _mcast(self, conn: Any, msg_id: int, request_id: int, kind: int, payload: bytes) -> bool:
        """Multicast a request's cluster message, or answer TRY_AGAIN (False) when the ring is full."""
        return mcast_request(self.api, self.id, conn, msg_id, request_id, kind, payload)

    @staticmethod
    def _long(*names: str | None) -> bool:
        return any(n is not None and len(n.encode()) > wire.MAX_NAME for n in names)

    def _lib_hello(self, conn: Any, request_id: int, payload: bytes) -> None:
        msg = self._decode(conn, Request.HELLO, request_id, wire.Hello, payload)
        if msg is not None:
            self.masks[conn.id] = msg.callbacks
            conn.respond(self.id, Request.HELLO, request_id, _OK)

    def _hosted_here(self, comp: str) -> bool:
        st = self.state
        return st is not None and comp in st.m.comps and st.host(comp) == self.api.nodeid

    def _lib_register(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.REGISTER, request_id):
            return
        msg = self._decode(conn, Request.REGISTER, request_id, wire.RegisterReq, payload)
        if msg is None:
            return
        if self._long(msg.comp, msg.proxy):
            conn.respond(self.id, Request.REGISTER, request_id, _NAME_TOO_LONG)
            return
        mask = self.masks.get(conn.id, 0)
        if (mask & 0b1110) != 0b1110 or (msg.proxy is not None and not mask & (1 << 6)):
            conn.respond(self.id, Request.REGISTER, request_id, _INIT)
            return
        comp = self.state.m.comps.get(msg.comp)
        if comp is None or (comp.category != "proxied" and not self._hosted_here(msg.comp)):
            conn.respond(self.id, Request.REGISTER, request_id, _NOT_EXIST)
            return
        if msg.proxy is not None:
            pr = self.state.rt.comps.get(msg.proxy)
            if pr is None or pr.reg_conn != conn.id or pr.reg_node != self.api.nodeid:
                conn.respond(self.id, Request.REGISTER, request_id, _NOT_EXIST)
                return
        self._mcast(conn, Request.REGISTER, request_id, Exec.REGISTER,
                    Register.pack(msg.comp, conn.id, request_id, conn.pid, msg.proxy))

    def _lib_unregister(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.UNREGISTER, request_id):
            return
        msg = self._decode(conn, Request.UNREGISTER, request_id, wire.RegisterReq, payload)
        if msg is None:
            return
        cr = self.state.rt.comps.get(msg.comp)
        if cr is None or cr.reg_conn != conn.id or cr.reg_node != self.api.nodeid:
            conn.respond(self.id, Request.UNREGISTER, request_id, _NOT_EXIST)
            return
        self._mcast(conn, Request.UNREGISTER, request_id, Exec.UNREGISTER,
                    Register.pack(msg.comp, conn.id, request_id, conn.pid, msg.proxy))

    def _registered_here(self, comp: str) -> bool:
        st = self.state
        cr = st.rt.comps.get(comp) if st else None
        return cr is not None and cr.registered and cr.reg_node == self.api.nodeid

    def _lib_pm_start(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.PM_START, request_id):
            return
        msg = self._decode(conn, Request.PM_START, request_id, wire.PmStartReq, payload)
        if msg is None:
            return
        if not msg.errors or msg.errors & ~7 or msg.depth < -1 or msg.recovery not in range(1, 9):
            conn.respond(self.id, Request.PM_START, request_id, _INVALID)
            return
        if not self._registered_here(msg.comp):
            conn.respond(self.id, Request.PM_START, request_id, _NOT_EXIST)
            return
        result = self.lc.pm_start(msg.comp, msg.pid, msg.depth, msg.errors, msg.recovery)
        code = {None: _OK, "exist": _EXIST, "noproc": _NOT_EXIST}[result]
        conn.respond(self.id, Request.PM_START, request_id, code)

    def _lib_pm_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.PM_STOP, request_id):
            return
        msg = self._decode(conn, Request.PM_STOP, request_id, wire.PmStopReq, payload)
        if msg is None:
            return
        if msg.qualifier not in (1, 2, 3) or not msg.errors or msg.errors & ~7:
            conn.respond(self.id, Request.PM_STOP, request_id, _INVALID)
            return
        ok = msg.comp in self.state.m.comps and self.lc.pm_stop(msg.comp, msg.qualifier, msg.pid, msg.errors)
        conn.respond(self.id, Request.PM_STOP, request_id, _OK if ok else _NOT_EXIST)

    def _lib_hc_start(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.HC_START, request_id):
            return
        msg = self._decode(conn, Request.HC_START, request_id, wire.HcStartReq, payload)
        if msg is None:
            return
        if not 1 <= len(msg.key) <= wire.HEALTHCHECK_KEY_MAX or msg.invocation_type not in (1, 2) \
                or msg.recovery not in range(1, 9):
            conn.respond(self.id, Request.HC_START, request_id, _INVALID)
            return
        if msg.invocation_type == 1 and not self.masks.get(conn.id, 0) & 1:
            conn.respond(self.id, Request.HC_START, request_id, _INIT)
            return
        comp = self.state.m.comps.get(msg.comp)
        key = bytes(msg.key)
        if comp is None or not self._registered_here(msg.comp) or key not in comp.healthchecks:
            conn.respond(self.id, Request.HC_START, request_id, _NOT_EXIST)
            return
        hk = comp.healthchecks[key]
        ok = self.health.start(msg.comp, key, conn, msg.invocation_type, msg.recovery, hk.period, hk.max_duration)
        conn.respond(self.id, Request.HC_START, request_id, _OK if ok else _EXIST)

    def _lib_hc_confirm(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.HC_CONFIRM, request_id):
            return
        msg = self._decode(conn, Request.HC_CONFIRM, request_id, wire.HcReq, payload)
        if msg is None:
            return
        ok = self.health.confirm(conn, msg.comp, bytes(msg.key), msg.result)
        conn.respond(self.id, Request.HC_CONFIRM, request_id, _OK if ok else _NOT_EXIST)

    def _lib_hc_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.HC_STOP, request_id):
            return
        msg = self._decode(conn, Request.HC_STOP, request_id, wire.HcReq, payload)
        if msg is None:
            return
        ok = self.health.stop(conn, msg.comp, bytes(msg.key))
        conn.respond(self.id, Request.HC_STOP, request_id, _OK if ok else _NOT_EXIST)

    def _lib_ha_state_get(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.HA_STATE_GET, request_id):
            return
        msg = self._decode(conn, Request.HA_STATE_GET, request_id, wire.HaStateGetReq, payload)
        if msg is None:
            return
        ha = self.state.ha_state(msg.comp, msg.csi)
        if ha is None:
            conn.respond(self.id, Request.HA_STATE_GET, request_id, _NOT_EXIST)
            return
        conn.respond(self.id, Request.HA_STATE_GET, request_id, _OK, wire.HaStateAnswer.pack(ha))

    def _pending_of(self, conn: Any, inv: int) -> tuple[str, Op] | None:
        found = self.state.find_op(inv)
        if found is None:
            return None
        cr = self.state.rt.comps[found[0]]
        if cr.reg_conn != conn.id or cr.reg_node != self.api.nodeid:
            return None
        return found

    def _lib_quiescing_complete(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.QUIESCING_COMPLETE, request_id):
            return
        msg = self._decode(conn, Request.QUIESCING_COMPLETE, request_id, wire.InvocationReq, payload)
        if msg is None:
            return
        found = self._pending_of(conn, msg.invocation)
        if found is None or found[1].ha != 4:
            conn.respond(self.id, Request.QUIESCING_COMPLETE, request_id, _INVALID)
            return
        if self._mcast(conn, Request.QUIESCING_COMPLETE, request_id, Exec.QUIESCING_COMPLETE,
                       Response.pack(msg.invocation, msg.error)):
            conn.respond(self.id, Request.QUIESCING_COMPLETE, request_id, _OK)

    def _lib_response(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.RESPONSE, request_id):
            return
        msg = self._decode(conn, Request.RESPONSE, request_id, wire.InvocationReq, payload)
        if msg is None:
            return
        inv = msg.invocation
        if inv & LOCAL_BIT:
            ok = self.health.response(conn, inv, msg.error)
            conn.respond(self.id, Request.RESPONSE, request_id, _OK if ok else _INVALID)
            return
        found = self._pending_of(conn, inv)
        if found is None or inv in self.answered or found[1].quiescing_acked:
            conn.respond(self.id, Request.RESPONSE, request_id, _INVALID)
            return
        self.answered.add(inv)
        if len(self.answered) > 100000:
            self.answered = {i for i in self.answered if self.state.find_op(i) is not None}
        cancel = self._callback_timers.pop(inv, None)
        if cancel is not None and found[1].ha != 4:
            cancel()
        elif cancel is not None:
            comp = self.state.m.comps[found[0]]
            cancel()
            self._callback_timers[inv] = self.api.call_later(comp.quiescing_timeout / 1000.0,
                                                             lambda: self._quiescing_timeout(inv))
        self.outbox.send(Exec.RESPONSE, Response.pack(inv, msg.error))
        conn.respond(self.id, Request.RESPONSE, request_id, _OK)

    def _quiescing_timeout(self, inv: int) -> None:
        self._callback_timers.pop(inv, None)
        found = self.state.find_op(inv) if self.state else None
        if found is not None and found[1].quiescing_acked:
            self.outbox.send(Exec.QUIESCING_COMPLETE, Response.pack(inv, int(SaAisError.TIMEOUT)))

    def _lib_pg_track(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.PG_TRACK, request_id):
            return
        msg = self._decode(conn, Request.PG_TRACK, request_id, wire.PgTrackReq, payload)
        if msg is None:
            return
        if wire.flags_error(msg.flags):
            conn.respond(self.id, Request.PG_TRACK, request_id, _BAD_FLAGS)
            return
        if msg.csi not in self.state.m.csis:
            conn.respond(self.id, Request.PG_TRACK, request_id, _NOT_EXIST)
            return
        has_cb = bool(self.masks.get(conn.id, 0) & (1 << 4))
        if (msg.flags & 6 or (msg.flags & 1 and not msg.want_buffer)) and not has_cb:
            conn.respond(self.id, Request.PG_TRACK, request_id, _INIT)
            return
        answer = self.tracking.track(conn, msg.csi, msg.flags, bool(msg.want_buffer))
        conn.respond(self.id, Request.PG_TRACK, request_id, _OK, answer)

    def _lib_pg_track_stop(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.PG_TRACK_STOP, request_id):
            return
        msg = self._decode(conn, Request.PG_TRACK_STOP, request_id, wire.PgTrackStopReq, payload)
        if msg is None:
            return
        ok = self.tracking.stop(conn.id, msg.csi)
        conn.respond(self.id, Request.PG_TRACK_STOP, request_id, _OK if ok else _NOT_EXIST)

    def _lib_error_report(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.ERROR_REPORT, request_id):
            return
        msg = self._decode(conn, Request.ERROR_REPORT, request_id, wire.ErrorReportReq, payload)
        if msg is None:
            return
        if msg.recovery not in range(1, 9):
            conn.respond(self.id, Request.ERROR_REPORT, request_id, _INVALID)
            return
        if msg.comp not in self.state.m.comps:
            conn.respond(self.id, Request.ERROR_REPORT, request_id, _NOT_EXIST)
            return
        if self._mcast(conn, Request.ERROR_REPORT, request_id, Exec.ERROR,
                       Error.pack(msg.comp, msg.recovery, time.time_ns(), "error report")):
            conn.respond(self.id, Request.ERROR_REPORT, request_id, _OK)

    def _lib_error_clear(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.ERROR_CLEAR, request_id):
            return
        msg = self._decode(conn, Request.ERROR_CLEAR, request_id, wire.ErrorClearReq, payload)
        if msg is None:
            return
        if msg.comp not in self.state.m.comps:
            conn.respond(self.id, Request.ERROR_CLEAR, request_id, _NOT_EXIST)
            return
        if self._mcast(conn, Request.ERROR_CLEAR, request_id, Exec.ERROR_CLEAR,
                       ErrorClear.pack(msg.comp, time.time_ns())):
            conn.respond(self.id, Request.ERROR_CLEAR, request_id, _OK)

    def _lib_cluster_state(self, conn: Any, request_id: int, payload: bytes) -> None:
        body = json.dumps(self.status()).encode()
        conn.respond(self.id, Request.CLUSTER_STATE, request_id, _OK, wire.JsonAnswer.pack(body))

    def _lib_admin(self, conn: Any, request_id: int, payload: bytes) -> None:
        if self._disabled(conn, Request.ADMIN, request_id):
            return
        msg = self._decode(conn, Request.ADMIN, request_id, wire.AdminReq, payload)
        if msg is None:
            return
        if self.state.m.entity(msg.target) is None:
            conn.respond(self.id, Request.ADMIN, request_id, _NOT_EXIST)
            return
        self._mcast(conn, Request.ADMIN, request_id, Exec.ADMIN,
                    Admin.pack(msg.target, msg.operation, conn.id, request_id, time.time_ns()))
