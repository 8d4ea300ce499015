"""Availability Management Framework (AMF): the application library and its IPC messages.

A component started by AMF registers through a handle and from then on gets
its work through callbacks: ``csi_set`` (an HA state for a CSI), ``csi_remove``,
``component_terminate`` and ``healthcheck``; it answers each with
:meth:`AmfHandle.response`::

    from openais import amf

    def csi_set(inv, comp, ha_state, descriptor):
        ...
        h.response(inv)

    h = amf.initialize(csi_set=csi_set, csi_remove=..., component_terminate=...)
    h.component_register(h.component_name_get())
    while True:
        select.select([h], [], [])
        h.dispatch(openais.DISPATCH_ALL)

The IPC messages (requests, answers and callbacks) are defined once here and
imported by the executive's AMF engine (``plugins.amf``).
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from openais import TIME_UNKNOWN as TIME_UNKNOWN  # re-exported
from openais import TRACK_CHANGES, TRACK_CHANGES_ONLY, TRACK_CURRENT, _common
from openais._client import Handle
from openais.errors import (
    AisError,
    BadFlags,
    BadHandle,
    Init,
    InvalidParam,
    NotExist,
    SaAisError,
    TryAgain,
)
from openais.message import I32, U8, U32, U64, Bytes, List, Message, Optional, Str

#: Service id of AMF.
SERVICE_ID = 2
#: Longest health-check key, in bytes.
HEALTHCHECK_KEY_MAX = 32
#: Longest DN, in bytes of UTF-8.
MAX_NAME = 256

PM_ZERO_EXIT = 0x1
PM_NON_ZERO_EXIT = 0x2
PM_ABNORMAL_END = 0x4
PM_ALL_ERRORS = 0x7

CSI_ADD_ONE = 0x1
CSI_TARGET_ONE = 0x2
CSI_TARGET_ALL = 0x4

COMP_SA_AWARE = 0x1
COMP_PROXY = 0x2
COMP_PROXIED = 0x4
COMP_LOCAL = 0x8

#: Track flags and TIME_UNKNOWN, re-exported from :mod:`openais`.
TRACK_ALL_FLAGS = TRACK_CURRENT | TRACK_CHANGES | TRACK_CHANGES_ONLY


class HAState(enum.IntEnum):
    """``SaAmfHAStateT``."""

    ACTIVE = 1
    STANDBY = 2
    QUIESCED = 3
    QUIESCING = 4


class ReadinessState(enum.IntEnum):
    """``SaAmfReadinessStateT``."""

    OUT_OF_SERVICE = 1
    IN_SERVICE = 2
    STOPPING = 3


class PresenceState(enum.IntEnum):
    """``SaAmfPresenceStateT``."""

    UNINSTANTIATED = 1
    INSTANTIATING = 2
    INSTANTIATED = 3
    TERMINATING = 4
    RESTARTING = 5
    INSTANTIATION_FAILED = 6
    TERMINATION_FAILED = 7


class OperationalState(enum.IntEnum):
    """``SaAmfOperationalStateT``."""

    ENABLED = 1
    DISABLED = 2


class AdminState(enum.IntEnum):
    """``SaAmfAdminStateT``."""

    UNLOCKED = 1
    LOCKED = 2
    LOCKED_INSTANTIATION = 3
    SHUTTING_DOWN = 4


class AssignmentState(enum.IntEnum):
    """``SaAmfAssignmentStateT``."""

    UNASSIGNED = 1
    FULLY_ASSIGNED = 2
    PARTIALLY_ASSIGNED = 3


class ProxyStatus(enum.IntEnum):
    """``SaAmfProxyStatusT``."""

    UNPROXIED = 1
    PROXIED = 2


class CSITransitionDescriptor(enum.IntEnum):
    """``SaAmfCSITransitionDescriptorT``."""

    NEW_ASSIGN = 1
    QUIESCED = 2
    NOT_QUIESCED = 3
    STILL_ACTIVE = 4


class ProtectionGroupChanges(enum.IntEnum):
    """``SaAmfProtectionGroupChangesT``."""

    NO_CHANGE = 1
    ADDED = 2
    REMOVED = 3
    STATE_CHANGE = 4


class RecommendedRecovery(enum.IntEnum):
    """``SaAmfRecommendedRecoveryT``."""

    NO_RECOMMENDATION = 1
    COMPONENT_RESTART = 2
    COMPONENT_FAILOVER = 3
    NODE_SWITCHOVER = 4
    NODE_FAILOVER = 5
    NODE_FAILFAST = 6
    CLUSTER_RESET = 7
    APPLICATION_RESTART = 8


class HealthcheckInvocation(enum.IntEnum):
    """``SaAmfHealthcheckInvocationT``."""

    AMF_INVOKED = 1
    COMPONENT_INVOKED = 2


class PmStopQualifier(enum.IntEnum):
    """``SaAmfPmStopQualifierT``."""

    PROC = 1
    PROC_AND_DESCENDENTS = 2
    ALL_PROCESSES = 3


class RedundancyModel(enum.IntEnum):
    """``SaAmfRedundancyModelT``."""

    TWO_N = 1
    NPM = 2
    N_WAY = 3
    N_WAY_ACTIVE = 4
    NO_REDUNDANCY = 5


class CompCapabilityModel(enum.IntEnum):
    """``SaAmfCompCapabilityModelT``."""

    X_ACTIVE_AND_Y_STANDBY = 1
    X_ACTIVE_OR_Y_STANDBY = 2
    ONE_ACTIVE_OR_Y_STANDBY = 3
    ONE_ACTIVE_OR_ONE_STANDBY = 4
    X_ACTIVE = 5
    ONE_ACTIVE = 6
    NON_PRE_INSTANTIABLE = 7


class AdminOperation(enum.IntEnum):
    """Administrative operations (extension, §2.11 of the contract)."""

    UNLOCK = 1
    LOCK = 2
    LOCK_INSTANTIATION = 3
    UNLOCK_INSTANTIATION = 4
    SHUTDOWN = 5
    RESTART = 6
    SI_SWAP = 7
    REPAIRED = 9


class CSIAttribute(NamedTuple):
    """``SaAmfCSIAttributeT``."""

    attr_name: str
    attr_value: str


class CSIActiveDescriptor(NamedTuple):
    """``SaAmfCSIActiveDescriptorT``."""

    transition_descriptor: CSITransitionDescriptor
    active_comp_name: str | None


class CSIStandbyDescriptor(NamedTuple):
    """``SaAmfCSIStandbyDescriptorT``."""

    active_comp_name: str | None
    standby_rank: int


class CSIDescriptor(NamedTuple):
    """``SaAmfCSIDescriptorT``."""

    csi_flags: int
    csi_name: str | None
    csi_state_descriptor: CSIActiveDescriptor | CSIStandbyDescriptor | None
    csi_attr: tuple[CSIAttribute, ...] = ()


class ProtectionGroupMember(NamedTuple):
    """``SaAmfProtectionGroupMemberT``."""

    comp_name: str
    ha_state: HAState
    rank: int


class ProtectionGroupNotification(NamedTuple):
    """``SaAmfProtectionGroupNotificationT``."""

    member: ProtectionGroupMember
    change: ProtectionGroupChanges


# -- IPC messages ---------------------------------------------------------------------------


class Request(enum.IntEnum):
    """Library request message ids."""

    REGISTER = 0
    UNREGISTER = 1
    PM_START = 2
    PM_STOP = 3
    HC_START = 4
    HC_CONFIRM = 5
    HC_STOP = 6
    HA_STATE_GET = 7
    QUIESCING_COMPLETE = 8
    PG_TRACK = 9
    PG_TRACK_STOP = 10
    ERROR_REPORT = 11
    ERROR_CLEAR = 12
    RESPONSE = 13
    CLUSTER_STATE = 14
    ADMIN = 15
    HELLO = 16


class Callback(enum.IntEnum):
    """Dispatch (callback) message ids."""

    HEALTHCHECK = 0
    TERMINATE = 1
    CSI_SET = 2
    CSI_REMOVE = 3
    PG_TRACK = 4
    PROXIED_INSTANTIATE = 5
    PROXIED_CLEANUP = 6


_NAME = MAX_NAME * 4  # the decoder bounds bytes; length in UTF-8 bytes is checked again by the engine


class Hello(Message):
    """Which callbacks the handle has (bit i: Callback i)."""

    callbacks = U32()


class RegisterReq(Message):
    """component_register / component_unregister."""

    comp = Str(max_len=_NAME)
    proxy = Optional(Str(max_len=_NAME))


class PmStartReq(Message):
    """pm_start."""

    comp = Str(max_len=_NAME)
    pid = U32()
    depth = I32()
    errors = U32()
    recovery = U32()


class PmStopReq(Message):
    """pm_stop."""

    comp = Str(max_len=_NAME)
    qualifier = U32()
    pid = U32()
    errors = U32()


class HcStartReq(Message):
    """healthcheck_start."""

    comp = Str(max_len=_NAME)
    key = Bytes(max_len=HEALTHCHECK_KEY_MAX)
    invocation_type = U32()
    recovery = U32()


class HcReq(Message):
    """healthcheck_confirm / healthcheck_stop."""

    comp = Str(max_len=_NAME)
    key = Bytes(max_len=HEALTHCHECK_KEY_MAX)
    result = U32(default=1)


class HaStateGetReq(Message):
    """ha_state_get."""

    comp = Str(max_len=_NAME)
    csi = Str(max_len=_NAME)


class HaStateAnswer(Message):
    """The answer of ha_state_get."""

    ha_state = U8()


class InvocationReq(Message):
    """response / csi_quiescing_complete."""

    invocation = U64()
    error = U32()


class PgTrackReq(Message):
    """protection_group_track."""

    csi = Str(max_len=_NAME)
    flags = U8()
    want_buffer = U8()


class PgTrackStopReq(Message):
    """protection_group_track_stop."""

    csi = Str(max_len=_NAME)


class PgMember(Message):
    """One notification of a protection group buffer."""

    comp = Str(max_len=_NAME)
    ha_state = U8()
    rank = U32()
    change = U8()


class PgBuffer(Message):
    """A protection group notification buffer (an answer or a callback)."""

    csi = Str(max_len=_NAME)
    members = List(PgMember, max_count=4096)
    count = U32()
    error = U32()


class ErrorReportReq(Message):
    """component_error_report."""

    comp = Str(max_len=_NAME)
    detection_time = U64()
    recovery = U32()
    ntf = U64()


class ErrorClearReq(Message):
    """component_error_clear."""

    comp = Str(max_len=_NAME)
    ntf = U64()


class AdminReq(Message):
    """admin_operation."""

    target = Str(max_len=_NAME)
    operation = U32()


class JsonAnswer(Message):
    """A JSON document (cluster_state)."""

    doc = Bytes(max_len=16 << 20)


class HealthcheckCb(Message):
    """healthcheck callback."""

    invocation = U64()
    comp = Str(max_len=_NAME)
    key = Bytes(max_len=HEALTHCHECK_KEY_MAX)


class CompCb(Message):
    """component_terminate / proxied_component_instantiate / proxied_component_cleanup callbacks."""

    invocation = U64()
    comp = Str(max_len=_NAME)


class AttrWire(Message):
    """One CSI attribute."""

    name = Str(max_len=4096)
    value = Str(max_len=65535)


class CsiSetCb(Message):
    """csi_set callback."""

    invocation = U64()
    comp = Str(max_len=_NAME)
    ha_state = U8()
    flags = U8()
    transition = U8()  # 0: standby/none
    rank = U32()
    attrs = List(AttrWire, max_count=4096)
    csi = Optional(Str(max_len=_NAME))
    other = Optional(Str(max_len=_NAME))  # previous active (ACTIVE) or active comp (STANDBY)


class CsiRemoveCb(Message):
    """csi_remove callback."""

    invocation = U64()
    comp = Str(max_len=_NAME)
    flags = U8()
    csi = Optional(Str(max_len=_NAME))


# -- the library -------------------------------------------------------------------------------

_CALLBACK_NAMES = ("healthcheck", "component_terminate", "csi_set", "csi_remove", "protection_group_track",
                   "proxied_component_instantiate", "proxied_component_cleanup")


def _name(value: Any, what: str = "name") -> str:
    """A DN: a str of 1..256 bytes of UTF-8 (InvalidParam, NameTooLong beyond)."""
    return _common.check_name(value, what, MAX_NAME)


def _key(value: Any) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)) or not 1 <= len(value) <= HEALTHCHECK_KEY_MAX:
        raise InvalidParam(f"health-check key must be 1..{HEALTHCHECK_KEY_MAX} bytes")
    return bytes(value)


def _enum(cls: type[enum.IntEnum], value: Any, what: str) -> int:
    try:
        return int(cls(value))
    except (ValueError, TypeError):
        raise InvalidParam(f"{what} {value!r} is not a {cls.__name__}") from None


def _error_code(value: Any) -> int:
    try:
        return int(SaAisError(value))
    except (ValueError, TypeError):
        raise InvalidParam(f"{value!r} is not a SaAisError") from None


def flags_error(flags: int) -> bool:
    """True when ``flags`` is not a valid track flag combination."""
    return (not flags or flags & ~TRACK_ALL_FLAGS
            or (flags & TRACK_CHANGES and flags & TRACK_CHANGES_ONLY)) != 0


def decode_pg_buffer(payload: bytes) -> tuple[str, list[ProtectionGroupNotification], int, SaAisError]:
    """Decode a PgBuffer into (csi, notifications, number_of_members, error)."""
    buf = PgBuffer.decode(payload)
    notes = [ProtectionGroupNotification(ProtectionGroupMember(m.comp, HAState(m.ha_state), m.rank),
                                         ProtectionGroupChanges(m.change)) for m in buf.members]
    return buf.csi, notes, buf.count, SaAisError(buf.error)


def decode_csi_set(payload: bytes) -> tuple[int, str, HAState, CSIDescriptor]:
    """Decode a csi_set callback into (invocation, comp, ha_state, descriptor)."""
    m = CsiSetCb.decode(payload)
    ha = HAState(m.ha_state)
    state: CSIActiveDescriptor | CSIStandbyDescriptor | None = None
    if ha is HAState.ACTIVE:
        state = CSIActiveDescriptor(CSITransitionDescriptor(m.transition or 1), m.other)
    elif ha is HAState.STANDBY:
        state = CSIStandbyDescriptor(m.other, m.rank)
    attrs = tuple(CSIAttribute(a.name, a.value) for a in m.attrs)
    return m.invocation, m.comp, ha, CSIDescriptor(m.flags, m.csi, state, attrs)


class AmfHandle(Handle):
    """``SaAmfHandleT``: one connection to the local executive's AMF."""

    def __init__(self, callbacks: dict[str, Callable | None], path: str | None) -> None:
        super().__init__(SERVICE_ID, path=path)
        self._callbacks = callbacks
        mask = 0
        for i, name in enumerate(_CALLBACK_NAMES):
            if callbacks.get(name) is not None:
                mask |= 1 << i
        self._call(Request.HELLO, Hello.pack(mask))

    def _has(self, name: str) -> bool:
        return self._callbacks.get(name) is not None

    # -- component registration ----------------------------------------------------------

    def component_name_get(self) -> str:
        """``saAmfComponentNameGet``: the DN AMF gave this process (``SA_AMF_COMPONENT_NAME``)."""
        self._check()
        name = os.environ.get("SA_AMF_COMPONENT_NAME")
        if not name:
            raise NotExist("SA_AMF_COMPONENT_NAME is not set: this process was not started by AMF")
        return name

    def component_register(self, comp_name: str, proxy_comp_name: str | None = None) -> None:
        """``saAmfComponentRegister``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        proxy = None if proxy_comp_name is None else _name(proxy_comp_name, "proxy_comp_name")
        if not (self._has("csi_set") and self._has("csi_remove") and self._has("component_terminate")):
            raise Init("component_register needs the csi_set, csi_remove and component_terminate callbacks")
        if proxy is not None and not self._has("proxied_component_cleanup"):
            raise Init("registering a proxied component needs the proxied_component_cleanup callback")
        self._call(Request.REGISTER, RegisterReq.pack(comp, proxy))

    def component_unregister(self, comp_name: str, proxy_comp_name: str | None = None) -> None:
        """``saAmfComponentUnregister``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        proxy = None if proxy_comp_name is None else _name(proxy_comp_name, "proxy_comp_name")
        self._call(Request.UNREGISTER, RegisterReq.pack(comp, proxy))

    # -- passive monitoring -------------------------------------------------------------

    def pm_start(self, comp_name: str, process_id: int, descendents_tree_depth: int, pm_errors: int,
                 recommended_recovery: RecommendedRecovery) -> None:
        """``saAmfPmStart``: watch a process of the component."""
        self._check()
        comp = _name(comp_name, "comp_name")
        if isinstance(pm_errors, bool) or not isinstance(pm_errors, int) or not pm_errors \
                or pm_errors & ~PM_ALL_ERRORS:
            raise InvalidParam(f"pm_errors {pm_errors!r} must be a non-zero combination of PM_* bits")
        if isinstance(descendents_tree_depth, bool) or not isinstance(descendents_tree_depth, int) \
                or descendents_tree_depth < -1 or descendents_tree_depth >= 1 << 31:
            raise InvalidParam(f"descendents_tree_depth {descendents_tree_depth!r} must be >= -1")
        if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 < process_id < 1 << 32:
            raise InvalidParam(f"process_id {process_id!r} is not a process id")
        rec = _enum(RecommendedRecovery, recommended_recovery, "recommended_recovery")
        self._call(Request.PM_START, PmStartReq.pack(comp, process_id, descendents_tree_depth, pm_errors, rec))

    def pm_stop(self, comp_name: str, stop_qualifier: PmStopQualifier, process_id: int, pm_errors: int) -> None:
        """``saAmfPmStop``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        qual = _enum(PmStopQualifier, stop_qualifier, "stop_qualifier")
        if isinstance(pm_errors, bool) or not isinstance(pm_errors, int) or not pm_errors \
                or pm_errors & ~PM_ALL_ERRORS:
            raise InvalidParam(f"pm_errors {pm_errors!r} must be a non-zero combination of PM_* bits")
        if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < 1 << 32:
            raise InvalidParam(f"process_id {process_id!r} is not a process id")
        self._call(Request.PM_STOP, PmStopReq.pack(comp, qual, process_id, pm_errors))

    # -- health checks -------------------------------------------------------------------

    def healthcheck_start(self, comp_name: str, healthcheck_key: bytes | str,
                          invocation_type: HealthcheckInvocation,
                          recommended_recovery: RecommendedRecovery) -> None:
        """``saAmfHealthcheckStart``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        key = _key(healthcheck_key)
        inv = _enum(HealthcheckInvocation, invocation_type, "invocation_type")
        rec = _enum(RecommendedRecovery, recommended_recovery, "recommended_recovery")
        if inv == HealthcheckInvocation.AMF_INVOKED and not self._has("healthcheck"):
            raise Init("an AMF_INVOKED health check needs the healthcheck callback")
        self._call(Request.HC_START, HcStartReq.pack(comp, key, inv, rec))

    def healthcheck_confirm(self, comp_name: str, healthcheck_key: bytes | str,
                            healthcheck_result: SaAisError = SaAisError.OK) -> None:
        """``saAmfHealthcheckConfirm``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        self._call(Request.HC_CONFIRM, HcReq.pack(comp, _key(healthcheck_key), _error_code(healthcheck_result)))

    def healthcheck_stop(self, comp_name: str, healthcheck_key: bytes | str) -> None:
        """``saAmfHealthcheckStop``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        self._call(Request.HC_STOP, HcReq.pack(comp, _key(healthcheck_key), 1))

    # -- state, answers --------------------------------------------------------------------

    def ha_state_get(self, comp_name: str, csi_name: str) -> HAState:
        """``saAmfHAStateGet``: the acknowledged HA state of the component for the CSI."""
        self._check()
        comp = _name(comp_name, "comp_name")
        csi = _name(csi_name, "csi_name")
        return HAState(HaStateAnswer.decode(self._call(Request.HA_STATE_GET, HaStateGetReq.pack(comp, csi))).ha_state)

    def csi_quiescing_complete(self, invocation: int, error: SaAisError = SaAisError.OK) -> None:
        """``saAmfCSIQuiescingComplete``."""
        self._check()
        self._call(Request.QUIESCING_COMPLETE, InvocationReq.pack(_common.check_invocation(invocation),
                                                                   _error_code(error)))

    def stopping_complete(self, invocation: int, error: SaAisError = SaAisError.OK) -> None:
        """The A.01 name of :meth:`csi_quiescing_complete`."""
        self.csi_quiescing_complete(invocation, error)

    def response(self, invocation: int, error: SaAisError = SaAisError.OK) -> None:
        """``saAmfResponse``: answer a callback."""
        self._check()
        self._call(Request.RESPONSE, InvocationReq.pack(_common.check_invocation(invocation), _error_code(error)))

    # -- protection groups --------------------------------------------------------------

    def protection_group_track(self, csi_name: str, track_flags: int,
                               buffer: bool | None = None) -> list[ProtectionGroupNotification] | None:
        """``saAmfProtectionGroupTrack``."""
        self._check()
        csi = _name(csi_name, "csi_name")
        if isinstance(track_flags, bool) or not isinstance(track_flags, int) or flags_error(track_flags):
            raise BadFlags(f"invalid track flags {track_flags!r}")
        has_cb = self._has("protection_group_track")
        want = bool(track_flags & TRACK_CURRENT) and ((not has_cb) if buffer is None else bool(buffer))
        needs_cb = bool(track_flags & (TRACK_CHANGES | TRACK_CHANGES_ONLY)) or (
            bool(track_flags & TRACK_CURRENT) and not want)
        if needs_cb and not has_cb:
            raise Init("protection_group_track needs the protection_group_track callback")
        payload = self._call(Request.PG_TRACK, PgTrackReq.pack(csi, track_flags, int(want)))
        if not want:
            return None
        return decode_pg_buffer(payload)[1]

    def protection_group_track_stop(self, csi_name: str) -> None:
        """``saAmfProtectionGroupTrackStop``."""
        self._check()
        self._call(Request.PG_TRACK_STOP, PgTrackStopReq.pack(_name(csi_name, "csi_name")))

    # -- errors ------------------------------------------------------------------------------

    def component_error_report(self, erroneous_component: str, error_detection_time: int,
                               recommended_recovery: RecommendedRecovery, ntf_identifier: int = 0) -> None:
        """``saAmfComponentErrorReport``: AMF recovers the component (any process, any node)."""
        self._check()
        comp = _name(erroneous_component, "erroneous_component")
        rec = _enum(RecommendedRecovery, recommended_recovery, "recommended_recovery")
        when = _common.check_u64(error_detection_time, "error_detection_time")
        self._call(Request.ERROR_REPORT, ErrorReportReq.pack(comp, when, rec, _common.check_u64(ntf_identifier, "ntf")))

    def error_report(self, erroneous_component: str, error_detection_time: int,
                     recommended_recovery: RecommendedRecovery, ntf_identifier: int = 0) -> None:
        """The short name of :meth:`component_error_report`."""
        self.component_error_report(erroneous_component, error_detection_time, recommended_recovery,
                                    ntf_identifier)

    def component_error_clear(self, comp_name: str, ntf_identifier: int = 0) -> None:
        """``saAmfComponentErrorClear``."""
        self._check()
        comp = _name(comp_name, "comp_name")
        self._call(Request.ERROR_CLEAR, ErrorClearReq.pack(comp, _common.check_u64(ntf_identifier, "ntf")))

    def error_cancel_all(self, comp_name: str) -> None:
        """The A.01 name of :meth:`component_error_clear`."""
        self.component_error_clear(comp_name)

    # -- extensions ------------------------------------------------------------------------

    def cluster_state(self) -> dict:
        """The status document of ``openais-amftool status --json``."""
        self._check()
        return json.loads(JsonAnswer.decode(self._call(Request.CLUSTER_STATE, b"")).doc)

    def admin_operation(self, target: str, operation: AdminOperation, timeout: float = 30.0) -> None:
        """Run an administrative operation on the entity named ``target``; return once it completed.

        ``TryAgain`` while the SG is busy is retried every 0.5 s until ``timeout``.
        """
        self._check()
        dn = _name(target, "target")
        op = _enum(AdminOperation, operation, "operation")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                from openais.errors import Timeout

                raise Timeout(f"{AdminOperation(op).name.lower()} of {dn} did not complete in {timeout} s")
            try:
                self._call(Request.ADMIN, AdminReq.pack(dn, op), timeout=left)
                return
            except TryAgain:
                if deadline - time.monotonic() <= 0.5:
                    raise
                time.sleep(0.5)

    # -- dispatch ---------------------------------------------------------------------------

    def _on_dispatch(self, msg_id: int, payload: bytes) -> None:
        cb = self._callbacks
        if msg_id == Callback.CSI_SET:
            fn = cb.get("csi_set")
            if fn is not None:
                fn(*decode_csi_set(payload))
        elif msg_id == Callback.CSI_REMOVE:
            m = CsiRemoveCb.decode(payload)
            fn = cb.get("csi_remove")
            if fn is not None:
                fn(m.invocation, m.comp, m.csi, m.flags)
        elif msg_id == Callback.HEALTHCHECK:
            m = HealthcheckCb.decode(payload)
            fn = cb.get("healthcheck")
            if fn is not None:
                fn(m.invocation, m.comp, bytes(m.key))
        elif msg_id in (Callback.TERMINATE, Callback.PROXIED_INSTANTIATE, Callback.PROXIED_CLEANUP):
            m = CompCb.decode(payload)
            name = {Callback.TERMINATE: "component_terminate", Callback.PROXIED_INSTANTIATE:
                    "proxied_component_instantiate", Callback.PROXIED_CLEANUP: "proxied_component_cleanup"}[msg_id]
            fn = cb.get(name)
            if fn is not None:
                fn(m.invocation, m.comp)
        elif msg_id == Callback.PG_TRACK:
            csi, notes, count, error = decode_pg_buffer(payload)
            fn = cb.get("protection_group_track")
            if fn is not None:
                fn(csi, notes, count, error)


def initialize(healthcheck: Callable | None = None, component_terminate: Callable | None = None,
               csi_set: Callable | None = None, csi_remove: Callable | None = None,
               protection_group_track: Callable | None = None,
               proxied_component_instantiate: Callable | None = None,
               proxied_component_cleanup: Callable | None = None, *, path: str | None = None,
               version: tuple = ("B", 1, 1)) -> AmfHandle:
    """``saAmfInitialize``: a handle to the local executive's AMF."""
    _common.check_version(version, "AMF", (1,), "('B', 1, 1)")
    callbacks = {"healthcheck": healthcheck, "component_terminate": component_terminate, "csi_set": csi_set,
                 "csi_remove": csi_remove, "protection_group_track": protection_group_track,
                 "proxied_component_instantiate": proxied_component_instantiate,
                 "proxied_component_cleanup": proxied_component_cleanup}
    return AmfHandle(callbacks, path)


__all__ = [
    "SERVICE_ID",
    "AdminOperation",
    "AdminState",
    "AisError",
    "AmfHandle",
    "AssignmentState",
    "BadHandle",
    "CSIActiveDescriptor",
    "CSIAttribute",
    "CSIDescriptor",
    "CSIStandbyDescriptor",
    "CSITransitionDescriptor",
    "CompCapabilityModel",
    "HAState",
    "HealthcheckInvocation",
    "OperationalState",
    "PmStopQualifier",
    "PresenceState",
    "ProtectionGroupChanges",
    "ProtectionGroupMember",
    "ProtectionGroupNotification",
    "ProxyStatus",
    "ReadinessState",
    "RecommendedRecovery",
    "RedundancyModel",
    "initialize",
]
