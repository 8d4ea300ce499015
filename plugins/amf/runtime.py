"""The replicated runtime records of AMF (presence, admin, oper states, assignments, callback queues).

Plain data, identical on every node at the same point of the agreed order;
:func:`to_doc` / :func:`from_doc` turn the whole runtime into a JSON-able
document for the sync state transfer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from openais.amf import AdminState as Adm
from openais.amf import OperationalState as Oper
from openais.amf import PresenceState as Pres

ACTIVE, STANDBY, QUIESCED, QUIESCING = 1, 2, 3, 4


@dataclass
class Op:
    """One callback to a component: csi_set, csi_remove, component_terminate, or proxied_* to a proxy."""

    invocation: int
    kind: str  # "set" | "remove" | "terminate" | "proxied_inst" | "proxied_clean"
    csi: str | None = None
    ha: int = 0
    flags: int = 0
    transition: int = 0
    other: str | None = None  # previous active (ACTIVE), active comp (STANDBY), the proxied comp (proxied_*)
    rank: int = 0
    epoch: int = 0  # proxied_*: the proxied component's epoch
    quiescing_acked: bool = False  # QUIESCING: response OK received, completion awaited


@dataclass
class Assign:
    """An acknowledged assignment of one CSI to one component."""

    ha: int
    rank: int = 0
    active_ref: str | None = None  # STANDBY: the active component it was told about
    stale: bool = False  # held across a restart: to be given back once registered


@dataclass
class CompRt:
    """Runtime state of one component."""

    presence: int = int(Pres.UNINSTANTIATED)
    oper: int = int(Oper.ENABLED)
    epoch: int = 0
    phase: str | None = None  # "inst" | "clean" | "term" | None
    after: str | None = None  # what follows the cleanup/termination in progress
    attempts: int = 0
    reg_node: int = 0
    reg_conn: int = 0
    reg_pid: int = 0
    restart_count: int = 0
    queue: list[Op] = field(default_factory=list)  # queue[0] is in flight when sent
    assigns: dict[str, Assign] = field(default_factory=dict)  # csi -> assignment

    @property
    def registered(self) -> bool:
        """True while a library handle is registered for it."""
        return self.reg_conn != 0


@dataclass
class SuRt:
    """Runtime state of one service unit."""

    oper: int = int(Oper.ENABLED)
    admin: int = int(Adm.UNLOCKED)
    failing: bool = False  # a component failover or SU failover is under way: out of service
    evacuate: bool = False  # node switchover: out of service until its active work moved elsewhere
    recovery: str | None = None  # "su_restart" | "su_failover" | "node_failover" | None
    comp_restarts: int = 0
    comp_restart_start: int | None = None
    su_restarts: int = 0
    su_restart_start: int | None = None
    restart_count: int = 0


@dataclass
class NodeRt:
    """Runtime state of one AMF node."""

    nodeid: int = 0  # bound CLM node id, 0 when unbound
    member: bool = False
    oper: int = int(Oper.ENABLED)
    admin: int = int(Adm.UNLOCKED)
    su_failovers: int = 0
    su_failover_start: int | None = None
    stopping: bool = False  # its executive is stopping cleanly: switch over, then terminate


@dataclass
class SiRt:
    """Runtime state of one service instance."""

    admin: int = int(Adm.UNLOCKED)
    handover: dict[str, list[Any]] = field(default_factory=dict)  # csi -> [transition, previous active comp]
    swap: bool = False


@dataclass
class AdminPending:
    """An administrative operation under way: who asked, and what completes it."""

    node: int
    conn: int
    request: int
    op: int
    target: str
    sgs: list[str]
    expect: str | None = None  # si-swap: the SU that must end up ACTIVE


@dataclass
class Runtime:
    """Everything replicated."""

    started: bool = False
    startup_deadline: int | None = None
    next_invocation: int = 1
    comps: dict[str, CompRt] = field(default_factory=dict)
    sus: dict[str, SuRt] = field(default_factory=dict)
    nodes: dict[str, NodeRt] = field(default_factory=dict)
    sgs_admin: dict[str, int] = field(default_factory=dict)
    sis: dict[str, SiRt] = field(default_factory=dict)
    admin: list[AdminPending] = field(default_factory=list)
    disturbed: dict[str, int] = field(default_factory=dict)  # sg -> count of recoveries, admin ops, joins
    adjust_steps: dict[str, int] = field(default_factory=dict)  # sg -> auto-adjust steps taken
    dep_windows: int = 0  # tolerance windows opened so far (their ids)
    dep_wait: dict[str, int] = field(default_factory=dict)  # si -> open tolerance window (a sponsor is down)
    dep_expired: dict[str, bool] = field(default_factory=dict)  # si -> its window expired: it is removed


def to_doc(rt: Runtime) -> dict:
    """The runtime as a JSON-able document."""
    return asdict(rt)


def from_doc(doc: dict) -> Runtime:
    """Rebuild a Runtime from :func:`to_doc` output."""
    rt = Runtime(started=doc["started"], startup_deadline=doc["startup_deadline"],
                 next_invocation=doc["next_invocation"])
    for dn, c in doc["comps"].items():
        queue = [Op(**o) for o in c.pop("queue")]
        assigns = {k: Assign(**v) for k, v in c.pop("assigns").items()}
        rt.comps[dn] = CompRt(**c, queue=queue, assigns=assigns)
    rt.sus = {dn: SuRt(**v) for dn, v in doc["sus"].items()}
    rt.nodes = {dn: NodeRt(**v) for dn, v in doc["nodes"].items()}
    rt.sgs_admin = dict(doc["sgs_admin"])
    rt.sis = {dn: SiRt(**v) for dn, v in doc["sis"].items()}
    rt.admin = [AdminPending(**a) for a in doc["admin"]]
    rt.disturbed = dict(doc.get("disturbed", {}))
    rt.adjust_steps = dict(doc.get("adjust_steps", {}))
    rt.dep_windows = doc.get("dep_windows", 0)
    rt.dep_wait = dict(doc.get("dep_wait", {}))
    rt.dep_expired = dict(doc.get("dep_expired", {}))
    return rt
