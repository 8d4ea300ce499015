"""The AMF information model: amf.conf validated into nodes, SGs, SUs, components, SIs and CSIs.

:func:`load` reads the file named by ``OPENAIS_AMF_CONFIG_FILE``; every
problem raises :class:`aisexec.config.errors.ConfigError` in the form
``FILE:LINE: KEY: message``.  The model is immutable after loading and is
the same on every node that reads the same file (:attr:`Model.digest`).
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from aisexec.config.errors import ConfigError
from plugins.amf.conffile import RawObject, parse_text

MODELS = ("2n", "nplusm", "nway", "nwayactive", "noredundancy")
CATEGORIES = ("sa_aware", "proxy", "proxied", "local")
CAPABILITIES = ("x_active_and_y_standby", "x_active_or_y_standby", "one_active_or_y_standby",
                "one_active_or_one_standby", "x_active", "1_active", "non_preinstantiable")
RECOVERIES = ("component_restart", "component_failover", "node_switchover", "node_failover", "node_failfast",
              "application_restart", "cluster_reset", "no_recommendation")
#: RecommendedRecovery values of the recovery words.
RECOVERY_VALUE = {"no_recommendation": 1, "component_restart": 2, "component_failover": 3, "node_switchover": 4,
                  "node_failover": 5, "node_failfast": 6, "cluster_reset": 7, "application_restart": 8}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLCCLI = {"clccli_path": ("str", None), "clccli_user": ("str", None), "clccli_group": ("str", None)}
_UNLIMITED = 0


def _t(default: Any = None) -> tuple:
    return ("time", default)


# key -> (type, default[, extra]); "req" as default marks required keys.
SPECS: dict[str, dict[str, tuple]] = {
    "safAmfCluster": {"saAmfClusterStartupTimeout": _t(5000), "saAmfClusterClmCluster": ("str", None)},
    "safAmfNode": {
        "saAmfNodeClmNode": ("str", None), "saAmfNodeClmNodeId": ("int", None, 1, 2**32 - 1),
        "saAmfNodeSuFailOverProb": _t(1200000), "saAmfNodeSuFailoverMax": ("int", 10, 0, None),
        "saAmfNodeAutoRepair": ("bool", True), "saAmfNodeRebootOnInstantiationFailure": ("bool", False),
        "saAmfNodeRebootOnTerminationFailure": ("bool", False)},
    "safApp": dict(_CLCCLI),
    "safSg": {
        "saAmfSGRedundancyModel": ("enum", "req", MODELS), "saAmfSGNumPrefActiveSUs": ("int", 1, 1, None),
        "saAmfSGNumPrefStandbySUs": ("int", 1, 1, None), "saAmfSGNumPrefInserviceSUs": ("int", None, 1, None),
        "saAmfSGNumPrefAssignedSUs": ("int", None, 1, None), "saAmfSGMaxActiveSIsperSUs": ("int", 0, 0, None),
        "saAmfSGMaxStandbySIsperSUs": ("int", 0, 0, None), "saAmfSGAutoAdjust": ("bool", False),
        "saAmfSGAutoAdjustProb": _t(10000), "saAmfSGAutoRepair": ("bool", True),
        "saAmfSGCompRestartProb": _t(4000), "saAmfSGCompRestartMax": ("int", 10, 0, None),
        "saAmfSGSuRestartProb": _t(4000), "saAmfSGSuRestartMax": ("int", 10, 0, None), **_CLCCLI},
    "safSu": {
        "saAmfSUHostedByNode": ("name", "req"), "saAmfSURank": ("int", 0, 0, None), "saAmfSUFailover": ("bool", False),
        "saAmfSUNumComponents": ("int", None, 0, None), "saAmfSUIsExternal": ("bool", False), **_CLCCLI},
    "safComp": {
        "saAmfCompCategory": ("enum", "sa_aware", CATEGORIES),
        "saAmfCompCapability": ("enum", "x_active_and_y_standby", CAPABILITIES),
        "saAmfCompNumMaxActiveCsi": ("int", None, 1, None), "saAmfCompNumMaxStandbyCsi": ("int", None, 1, None),
        "saAmfCompCsTypes": ("multi", "req"), "saAmfCompCmdEnv": ("multi", ()),
        "saAmfCompInstantiateCmd": ("str", None), "saAmfCompInstantiateCmdArgv": ("str", ""),
        "saAmfCompInstantiateTimeout": _t(), "saAmfCompTerminateCmd": ("str", None),
        "saAmfCompTerminateCmdArgv": ("str", ""), "saAmfCompTerminateTimeout": _t(),
        "saAmfCompCleanupCmd": ("str", None), "saAmfCompCleanupCmdArgv": ("str", ""),
        "saAmfCompCleanupTimeout": _t(), "saAmfCompDefaultClcCliTimeout": _t(10000),
        "saAmfCompDefaultCallbackTimeOut": _t(10000), "saAmfCompCSISetCallbackTimeout": _t(),
        "saAmfCompCSIRmvCallbackTimeout": _t(), "saAmfCompQuiescingCompleteTimeout": _t(),
        "saAmfCompTerminateCallbackTimeout": _t(), "saAmfCompInstantiationLevel": ("int", 1, 1, None),
        "saAmfCompNumMaxInstantiateWithoutDelay": ("int", 2, 1, None),
        "saAmfCompNumMaxInstantiateWithDelay": ("int", 0, 0, None),
        "saAmfCompDelayBetweenInstantiateAttempts": _t(0),
        "saAmfCompRecoveryOnError": ("enum", "component_restart", (*RECOVERIES, "no_recomondation")),
        "saAmfCompDisableRestart": ("bool", False), "saAmfCompProxyCsi": ("name", None), **_CLCCLI},
    "safHealthcheckKey": {"saAmfHealthcheckPeriod": ("time", "req"), "saAmfHealthcheckMaxDuration": ("time", "req")},
    "safSi": {
        "saAmfSIProtectedbySG": ("name", None), "saAmfSIRank": ("int", 0, 0, None),
        "saAmfSINumCSIs": ("int", None, 0, None), "saAmfSIPrefActiveAssignments": ("int", 1, 1, None),
        "saAmfSIPrefStandbyAssignments": ("int", 1, 1, None)},
    "safRankedSu": {"saAmfRank": ("int", "req", 1, None)},
    "safDepend": {"saAmfToleranceTime": _t(0)},
    "safCsi": {"saAmfCSTypeName": ("name", "req"), "saAmfCSIDependencies": ("multi", ())},
    "safCSIAttr": {},
    "safCSType": {"safAmfCSAttrName": ("multi", ())},
}
CHILDREN = {
    "": ("safAmfCluster",), "safAmfCluster": ("safAmfNode", "safApp"), "safApp": ("safSg", "safSi", "safCSType"),
    "safSg": ("safSu",), "safSu": ("safComp",), "safComp": ("safHealthcheckKey",),
    "safSi": ("safRankedSu", "safDepend", "safCsi"), "safCsi": ("safCSIAttr",),
}
_REFUSED = ("saAmfCompAmStartCmd", "saAmfCompAmStopCmd", "saAmfCompAmStartCmdArgv", "saAmfCompAmStopCmdArgv",
            "saAmfCompAmStartTimeout", "saAmfCompAmStopTimeout", "saAmfCompNumMaxAmStartAttempt",
            "saAmfCompNumMaxAmStopAttempt")
#: Keys that apply only to some redundancy models.
_APPLIES = {
    "saAmfSGNumPrefActiveSUs": ("2n", "nplusm"), "saAmfSGNumPrefStandbySUs": ("2n", "nplusm"),
    "saAmfSGNumPrefAssignedSUs": ("nway", "nwayactive"),
    "saAmfSGMaxActiveSIsperSUs": ("nplusm", "nway", "nwayactive"), "saAmfSGMaxStandbySIsperSUs": ("nplusm", "nway"),
    "saAmfSGAutoAdjust": ("2n", "nplusm", "nway", "nwayactive"),
    "saAmfSGAutoAdjustProb": ("2n", "nplusm", "nway", "nwayactive"),
    "saAmfSIPrefActiveAssignments": ("nwayactive",), "saAmfSIPrefStandbyAssignments": ("nway",),
}


@dataclass
class Entity:
    """Base of every model object: DN, name, line and its attributes (with defaults)."""

    dn: str
    name: str
    line: int
    a: dict[str, Any]


@dataclass
class Node(Entity):
    """``safAmfNode``."""

    clm_name: str | None = None
    clm_nodeid: int | None = None
    sus: list[str] = field(default_factory=list)


@dataclass
class HealthcheckKey(Entity):
    """``safHealthcheckKey``: period and max duration in ms."""

    period: int = 0
    max_duration: int = 0


@dataclass
class Command:
    """A CLC-CLI command: argv and timeout (ms)."""

    argv: list[str]
    timeout: int


@dataclass
class Comp(Entity):
    """``safComp``."""

    su: str = ""
    category: str = "sa_aware"
    capability: str = "x_active_and_y_standby"
    max_active: int = 0  # 0: no limit
    max_standby: int = 0
    cs_types: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    instantiate: Command | None = None
    terminate: Command | None = None
    cleanup: Command | None = None
    user: str | None = None
    group: str | None = None
    level: int = 1
    healthchecks: dict[bytes, HealthcheckKey] = field(default_factory=dict)
    recovery: int = 2
    disable_restart: bool = False
    proxy_csi: str | None = None  # proxied: the CSI whose active holder is the proxy
    instantiate_timeout: int = 10000
    csi_set_timeout: int = 10000
    csi_remove_timeout: int = 10000
    quiescing_timeout: int = 10000
    terminate_callback_timeout: int = 10000
    max_without_delay: int = 2
    max_with_delay: int = 0
    delay: int = 0


@dataclass
class SU(Entity):
    """``safSu``."""

    sg: str = ""
    node: str = ""
    rank: int = 0
    failover: bool = False
    comps: list[str] = field(default_factory=list)


@dataclass
class SG(Entity):
    """``safSg``."""

    app: str = ""
    model: str = "2n"
    sus: list[str] = field(default_factory=list)  # in preference order (rank, then name)
    sis: list[str] = field(default_factory=list)  # in assignment order
    n_active: int = 1
    n_standby: int = 1
    n_inservice: int = 1
    n_assigned: int = 1
    max_active: int = 0
    max_standby: int = 0
    auto_repair: bool = True
    auto_adjust: bool = False
    comp_restart_prob: int = 4000
    comp_restart_max: int = 10
    su_restart_prob: int = 4000
    su_restart_max: int = 10


@dataclass
class CSI(Entity):
    """``safCsi``."""

    si: str = ""
    cs_type: str = ""
    attrs: list[tuple[str, str]] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)


@dataclass
class SI(Entity):
    """``safSi``."""

    app: str = ""
    sg: str = ""
    rank: int = 0
    csis: list[str] = field(default_factory=list)  # in dependency order
    ranked_sus: list[str] = field(default_factory=list)
    depends: dict[str, int] = field(default_factory=dict)
    pref_active: int = 1
    pref_standby: int = 1


@dataclass
class App(Entity):
    """``safApp``."""

    sgs: list[str] = field(default_factory=list)
    sis: list[str] = field(default_factory=list)


@dataclass
class Model:
    """The whole information model, keyed by DN."""

    path: str
    cluster_dn: str = ""
    startup_timeout: int = 5000
    nodes: dict[str, Node] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    sgs: dict[str, SG] = field(default_factory=dict)
    sus: dict[str, SU] = field(default_factory=dict)
    comps: dict[str, Comp] = field(default_factory=dict)
    sis: dict[str, SI] = field(default_factory=dict)
    csis: dict[str, CSI] = field(default_factory=dict)
    cs_types: dict[str, list[str]] = field(default_factory=dict)
    digest: str = ""

    def entity(self, dn: str) -> Entity | None:
        """The object named ``dn`` of any class, or None."""
        for table in (self.nodes, self.apps, self.sgs, self.sus, self.comps, self.sis, self.csis):
            if dn in table:
                return table[dn]
        return None


class _Checker:
    """Builds the model from the raw tree, raising ConfigError at the first problem."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.model = Model(path)

    def fail(self, line: int, key: str, message: str, suggestion: str | None = None) -> None:
        """Raise the ConfigError for ``line``/``key``."""
        raise ConfigError(self.path, line, key, message, suggestion)

    # -- attributes --------------------------------------------------------------------------

    def attrs(self, obj: RawObject, dn: str, model: str | None = None) -> dict[str, Any]:
        """The attributes of ``obj`` parsed against its class's keys, with defaults; unknown keys refused."""
        spec = SPECS[obj.cls]
        out: dict[str, Any] = {}
        for key, vals in obj.attrs.items():
            line = obj.key_lines[key]
            if key in _REFUSED:
                self.fail(line, key, "external active monitors (AM_START/AM_STOP) are not supported")
            if key not in spec:
                close = difflib.get_close_matches(key, list(spec), n=1)
                self.fail(line, key, f"unknown key in {dn}", close[0] if close else None)
            kind = spec[key][0]
            if model is not None and key in _APPLIES and model not in _APPLIES[key]:
                self.fail(line, key, f"does not apply to {model}")
            if kind == "multi":
                out[key] = [v for v, _ in vals]
                continue
            if len(vals) > 1:
                self.fail(vals[1][1], key, f"given twice in {dn}")
            if key not in obj.single:
                self.fail(line, key, "a single-valued key cannot be written as a block")
            out[key] = self.value(key, spec[key], vals[0][0], vals[0][1])
        for key, sp in spec.items():
            if key in out:
                continue
            if sp[1] == "req":
                self.fail(obj.line, key, f"required key missing in {dn}")
            out[key] = list(sp[1]) if sp[0] == "multi" else sp[1]
        return out

    def value(self, key: str, sp: tuple, text: str, line: int) -> Any:
        """One value parsed by its key's type."""
        kind = sp[0]
        if kind in ("int", "time"):
            if not re.fullmatch(r"-?[0-9]+", text):
                self.fail(line, key, f"{text!r} is not an integer" + (" (milliseconds)" if kind == "time" else ""))
            v = int(text)
            lo, hi = (sp[2], sp[3]) if kind == "int" else (0, None)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                self.fail(line, key, f"{v} is out of range" + (f" (at least {lo})" if lo is not None else ""))
            return v
        if kind == "bool":
            if text not in ("true", "false"):
                self.fail(line, key, f"{text!r} is not true or false")
            return text == "true"
        if kind == "enum":
            if text not in sp[2]:
                words = [w for w in sp[2] if w != "no_recomondation"]
                self.fail(line, key, f"{text!r} is not one of {', '.join(words)}")
            return text
        if not text and kind in ("name", "str") and key not in ("saAmfCompInstantiateCmdArgv",
                                                                 "saAmfCompTerminateCmdArgv",
                                                                 "saAmfCompCleanupCmdArgv"):
            self.fail(line, key, "empty value")
        return text

    def children(self, obj: RawObject) -> None:
        """Refuse misplaced, unknown or duplicate child objects of ``obj``."""
        allowed = CHILDREN.get(obj.cls, ())
        seen: set[tuple[str, str]] = set()
        for child in obj.children:
            if child.cls not in allowed:
                where = f"inside {obj.cls}" if obj.cls else "at the top level"
                known = child.cls in SPECS
                self.fail(child.line, child.cls, f"{'misplaced' if known else 'unknown'} class {where}",
                          None if known else (difflib.get_close_matches(child.cls, list(allowed), n=1) or [None])[0])
            if (child.cls, child.name) in seen:
                self.fail(child.line, child.cls, f"duplicate name {child.name!r}")
            seen.add((child.cls, child.name))

    def ref(self, text: str, table: dict[str, Any], suffix: str, line: int, key: str, what: str, where: str) -> str:
        """Resolve a name (or DN) of an object of ``table``; refuse one that refers to nothing."""
        dn = text if "=" in text else f"{what}={text}{suffix}"
        if dn not in table:
            self.fail(line, key, f"no {what} {text!r} in {where}")
        return dn

    # -- classes ---------------------------------------------------------------------------------

    def build(self, root: RawObject) -> Model:
        """The whole model from the raw tree."""
        self.children(root)
        clusters = root.child("safAmfCluster")
        if len(clusters) != 1:
            self.fail(clusters[1].line if len(clusters) > 1 else 1, "safAmfCluster",
                      "exactly one safAmfCluster is required")
        cl = clusters[0]
        m = self.model
        m.cluster_dn = f"safAmfCluster={cl.name}"
        ca = self.attrs(cl, m.cluster_dn)
        m.startup_timeout = ca["saAmfClusterStartupTimeout"] or 5000
        self.children(cl)
        clm_names: dict[Any, str] = {}
        for n in cl.child("safAmfNode"):
            dn = f"safAmfNode={n.name},{m.cluster_dn}"
            a = self.attrs(n, dn)
            if (a["saAmfNodeClmNode"] is None) == (a["saAmfNodeClmNodeId"] is None):
                self.fail(n.line, "saAmfNodeClmNode", f"exactly one of saAmfNodeClmNode and saAmfNodeClmNodeId "
                                                      f"is required in {dn}")
            bind = ("name", a["saAmfNodeClmNode"]) if a["saAmfNodeClmNode"] else ("id", a["saAmfNodeClmNodeId"])
            if bind in clm_names:
                key = "saAmfNodeClmNode" if bind[0] == "name" else "saAmfNodeClmNodeId"
                self.fail(n.key_lines[key], key, f"CLM node {bind[1]!r} is already named by {clm_names[bind]}")
            clm_names[bind] = dn
            self.children(n)
            m.nodes[dn] = Node(dn, n.name, n.line, a, a["saAmfNodeClmNode"], a["saAmfNodeClmNodeId"])
        if not m.nodes:
            self.fail(cl.line, "safAmfNode", "at least one safAmfNode is required")
        for app in cl.child("safApp"):
            self.app(app)
        self.finish()
        return m

    def app(self, obj: RawObject) -> None:
        """One ``safApp`` with its CS types, SGs and SIs."""
        m = self.model
        adn = f"safApp={obj.name}"
        a = self.attrs(obj, adn)
        self.children(obj)
        app = App(adn, obj.name, obj.line, a)
        m.apps[adn] = app
        for t in obj.child("safCSType"):
            self.children(t)
            ta = self.attrs(t, f"safCSType={t.name},{adn}")
            m.cs_types[f"safCSType={t.name},{adn}"] = list(ta["safAmfCSAttrName"])
        for g in obj.child("safSg"):
            self.sg(g, app)
        for s in obj.child("safSi"):
            self.si(s, app)

    def sg(self, obj: RawObject, app: App) -> None:
        """One ``safSg`` with its SUs, and its consistency checks."""
        m = self.model
        dn = f"safSg={obj.name},{app.dn}"
        model = obj.attrs.get("saAmfSGRedundancyModel", [("", 0)])[0][0]
        a = self.attrs(obj, dn, model if model in MODELS else None)
        self.children(obj)
        sg = SG(dn, obj.name, obj.line, a, app=app.dn, model=a["saAmfSGRedundancyModel"])
        app.sgs.append(dn)
        m.sgs[dn] = sg
        inherited = {k: a[k] or app.a[k] for k in _CLCCLI}
        for u in obj.child("safSu"):
            self.su(u, sg, inherited)
        sus = obj.child("safSu")
        if not sus:
            self.fail(obj.line, "safSu", f"{dn} needs at least one safSu")
        count = len(sus)
        sg.n_active, sg.n_standby = a["saAmfSGNumPrefActiveSUs"], a["saAmfSGNumPrefStandbySUs"]
        sg.n_inservice = a["saAmfSGNumPrefInserviceSUs"] or count
        sg.n_assigned = a["saAmfSGNumPrefAssignedSUs"] or sg.n_inservice
        sg.max_active, sg.max_standby = a["saAmfSGMaxActiveSIsperSUs"], a["saAmfSGMaxStandbySIsperSUs"]
        sg.auto_repair, sg.auto_adjust = a["saAmfSGAutoRepair"], a["saAmfSGAutoAdjust"]
        sg.comp_restart_prob, sg.comp_restart_max = a["saAmfSGCompRestartProb"], a["saAmfSGCompRestartMax"]
        sg.su_restart_prob, sg.su_restart_max = a["saAmfSGSuRestartProb"], a["saAmfSGSuRestartMax"]
        line = obj.key_lines.get
        if sg.n_inservice > count:
            self.fail(line("saAmfSGNumPrefInserviceSUs", obj.line), "saAmfSGNumPrefInserviceSUs",
                      f"{sg.n_inservice} is more than the {count} SUs of {dn}")
        if sg.model == "2n":
            for key in ("saAmfSGNumPrefActiveSUs", "saAmfSGNumPrefStandbySUs"):
                if a[key] != 1:
                    self.fail(line(key, obj.line), key, "must be 1 for 2n")
            if sg.n_inservice < 2:
                self.fail(line("saAmfSGNumPrefInserviceSUs", obj.line), "saAmfSGNumPrefInserviceSUs",
                          "2n needs at least 2 in-service SUs")
        if sg.model == "nplusm" and sg.n_active + sg.n_standby > sg.n_inservice:
            self.fail(line("saAmfSGNumPrefActiveSUs", obj.line), "saAmfSGNumPrefActiveSUs",
                      "NumPrefActiveSUs + NumPrefStandbySUs is more than NumPrefInserviceSUs")
        if sg.model in ("nway", "nwayactive") and sg.n_assigned > sg.n_inservice:
            self.fail(line("saAmfSGNumPrefAssignedSUs", obj.line), "saAmfSGNumPrefAssignedSUs",
                      "NumPrefAssignedSUs is more than NumPrefInserviceSUs")
        sg.sus = sorted((s.dn for s in m.sus.values() if s.sg == dn), key=lambda d: _rank_key(m.sus[d].rank, d))

    def su(self, obj: RawObject, sg: SG, inherited: dict[str, Any]) -> None:
        """One ``safSu`` with its components."""
        m = self.model
        dn = f"safSu={obj.name},{sg.dn}"
        a = self.attrs(obj, dn)
        self.children(obj)
        if a["saAmfSUIsExternal"]:
            self.fail(obj.key_lines["saAmfSUIsExternal"], "saAmfSUIsExternal", "external SUs are not supported")
        node = self.ref(a["saAmfSUHostedByNode"], m.nodes, f",{m.cluster_dn}", obj.key_lines["saAmfSUHostedByNode"],
                        "saAmfSUHostedByNode", "safAmfNode", m.cluster_dn)
        su = SU(dn, obj.name, obj.line, a, sg=sg.dn, node=node, rank=a["saAmfSURank"], failover=a["saAmfSUFailover"])
        m.sus[dn] = su
        m.nodes[node].sus.append(dn)
        inh = {k: a[k] or inherited[k] for k in _CLCCLI}
        comps = obj.child("safComp")
        if not comps:
            self.fail(obj.line, "safComp", f"{dn} needs at least one safComp")
        for c in comps:
            self.comp(c, su, sg, inh)
        if a["saAmfSUNumComponents"] is not None and a["saAmfSUNumComponents"] != len(comps):
            self.fail(obj.key_lines["saAmfSUNumComponents"], "saAmfSUNumComponents",
                      f"{a['saAmfSUNumComponents']} but {dn} has {len(comps)} components")
        su.comps = sorted(su.comps, key=lambda d: (m.comps[d].level, d.encode()))

    def command(self, obj: RawObject, a: dict, prefix: str, path: str | None, timeout: int) -> Command | None:
        """A CLC-CLI command (absolute path, split argv, timeout) or None when not configured."""
        cmd = a[f"saAmfComp{prefix}Cmd"]
        if cmd is None:
            return None
        key = f"saAmfComp{prefix}Cmd"
        if not cmd.startswith("/"):
            if not path:
                self.fail(obj.key_lines[key], key, f"relative command {cmd!r} needs a clccli_path")
            cmd = os.path.join(path, cmd)
        try:
            args = shlex.split(a[f"saAmfComp{prefix}CmdArgv"], posix=True)
        except ValueError as exc:
            self.fail(obj.key_lines.get(f"{key}Argv", obj.line), f"{key}Argv", f"cannot split: {exc}")
        return Command([cmd, *args], a[f"saAmfComp{prefix}Timeout"] or timeout)

    def comp(self, obj: RawObject, su: SU, sg: SG, inh: dict[str, Any]) -> None:
        """One ``safComp``: category, capability, commands, timeouts, environment, health-check keys."""
        m = self.model
        dn = f"safComp={obj.name},{su.dn}"
        a = self.attrs(obj, dn)
        self.children(obj)
        line = obj.key_lines.get
        cat, cap = a["saAmfCompCategory"], a["saAmfCompCapability"]
        clc = {k: a[k] or inh[k] for k in _CLCCLI}
        dflt = a["saAmfCompDefaultClcCliTimeout"]
        cb = a["saAmfCompDefaultCallbackTimeOut"]
        comp = Comp(dn, obj.name, obj.line, a, su=su.dn, category=cat, capability=cap, level=a[
            "saAmfCompInstantiationLevel"])
        if cat == "proxied":
            for key in ("saAmfCompInstantiateCmd", "saAmfCompCleanupCmd"):
                if a[key] is not None:
                    self.fail(line(key), key, "does not apply to a proxied component")
            if a["saAmfCompProxyCsi"] is None:
                self.fail(obj.line, "saAmfCompProxyCsi", f"required for the proxied component {dn}")
        else:
            if a["saAmfCompProxyCsi"] is not None:
                self.fail(line("saAmfCompProxyCsi"), "saAmfCompProxyCsi", "applies to proxied components only")
            if a["saAmfCompInstantiateCmd"] is None:
                self.fail(obj.line, "saAmfCompInstantiateCmd", f"required key missing in {dn}")
        if cat == "local":
            if a["saAmfCompTerminateCmd"] is None:
                self.fail(obj.line, "saAmfCompTerminateCmd", f"required for the local component {dn}")
            if cap != "non_preinstantiable":
                self.fail(line("saAmfCompCapability", obj.line), "saAmfCompCapability",
                          "a local component must be non_preinstantiable")
            if sg.model not in ("noredundancy", "nwayactive"):
                self.fail(line("saAmfCompCategory", obj.line), "saAmfCompCategory",
                          f"a local component cannot be in a {sg.model} SG")
        elif a["saAmfCompTerminateCmd"] is not None:
            self.fail(line("saAmfCompTerminateCmd"), "saAmfCompTerminateCmd", "applies to local components only")
        if sg.model in ("2n", "nplusm") and cap in ("x_active", "1_active", "non_preinstantiable"):
            self.fail(line("saAmfCompCapability", obj.line), "saAmfCompCapability",
                      f"{cap} cannot hold standby assignments, which {sg.model} needs")
        if sg.model == "nway" and cap != "x_active_and_y_standby":
            self.fail(line("saAmfCompCapability", obj.line), "saAmfCompCapability",
                      "nway needs x_active_and_y_standby")
        one_active = cap in ("one_active_or_y_standby", "one_active_or_one_standby", "1_active", "non_preinstantiable")
        comp.max_active = a["saAmfCompNumMaxActiveCsi"] or (1 if one_active else _UNLIMITED)
        comp.max_standby = a["saAmfCompNumMaxStandbyCsi"] or (1 if cap == "one_active_or_one_standby" else _UNLIMITED)
        if cap in ("x_active", "1_active", "non_preinstantiable"):
            comp.max_standby = -1  # never standby
        comp.cs_types = [self.ref(t, m.cs_types, f",{sg.app}", line("saAmfCompCsTypes", obj.line), "saAmfCompCsTypes",
                                  "safCSType", sg.app) for t in a["saAmfCompCsTypes"]]
        if not comp.cs_types:
            self.fail(line("saAmfCompCsTypes", obj.line), "saAmfCompCsTypes", "at least one CS type is required")
        for text in a["saAmfCompCmdEnv"]:
            name, eq, value = text.partition("=")
            if not eq or not _ENV_NAME.fullmatch(name):
                self.fail(line("saAmfCompCmdEnv", obj.line), "saAmfCompCmdEnv", f"{text!r} is not NAME=value")
            comp.env[name] = value
        comp.instantiate = self.command(obj, a, "Instantiate", clc["clccli_path"], dflt)
        comp.terminate = self.command(obj, a, "Terminate", clc["clccli_path"], dflt)
        comp.cleanup = self.command(obj, a, "Cleanup", clc["clccli_path"], dflt)
        comp.instantiate_timeout = a["saAmfCompInstantiateTimeout"] or dflt
        comp.csi_set_timeout = a["saAmfCompCSISetCallbackTimeout"] or cb
        comp.csi_remove_timeout = a["saAmfCompCSIRmvCallbackTimeout"] or cb
        comp.quiescing_timeout = a["saAmfCompQuiescingCompleteTimeout"] or cb
        comp.terminate_callback_timeout = a["saAmfCompTerminateCallbackTimeout"] or cb
        comp.max_without_delay = a["saAmfCompNumMaxInstantiateWithoutDelay"]
        comp.max_with_delay = a["saAmfCompNumMaxInstantiateWithDelay"]
        comp.delay = a["saAmfCompDelayBetweenInstantiateAttempts"]
        rec = a["saAmfCompRecoveryOnError"]
        comp.recovery = RECOVERY_VALUE.get("component_restart" if rec in ("no_recommendation", "no_recomondation")
                                           else rec, 2)
        comp.disable_restart = a["saAmfCompDisableRestart"]
        comp.user, comp.group = self.identity(obj, clc)
        for hk in obj.child("safHealthcheckKey"):
            self.children(hk)
            hdn = f"safHealthcheckKey={hk.name},{dn}"
            if len(hk.name.encode()) > 32:
                self.fail(hk.line, "safHealthcheckKey", "a health-check key is at most 32 bytes")
            ha = self.attrs(hk, hdn)
            for key in ("saAmfHealthcheckPeriod", "saAmfHealthcheckMaxDuration"):
                if ha[key] <= 0:
                    self.fail(hk.key_lines[key], key, "must be more than 0")
            comp.healthchecks[hk.name.encode()] = HealthcheckKey(hdn, hk.name, hk.line, ha,
                                                                 ha["saAmfHealthcheckPeriod"],
                                                                 ha["saAmfHealthcheckMaxDuration"])
        m.comps[dn] = comp
        su.comps.append(dn)

    def identity(self, obj: RawObject, clc: dict[str, Any]) -> tuple[str | None, str | None]:
        """The user and group the commands run as (refused when the executive cannot switch to them)."""
        user, group = clc["clccli_user"], clc["clccli_group"]
        for key, name, lookup, mine in (("clccli_user", user, pwd.getpwnam, os.geteuid()),
                                        ("clccli_group", group, grp.getgrnam, os.getegid())):
            if name is None:
                continue
            try:
                ident = lookup(name)
            except KeyError:
                self.fail(obj.key_lines.get(key, obj.line), key, f"unknown {key[7:]} {name!r}")
            num = ident.pw_uid if key == "clccli_user" else ident.gr_gid  # type: ignore[union-attr]
            if num != mine and os.geteuid() != 0:
                self.fail(obj.key_lines.get(key, obj.line), key,
                          f"running commands as {name!r} needs the executive to run as root")
        return user, group

    def si(self, obj: RawObject, app: App) -> None:
        """One ``safSi`` with its ranked SUs, dependencies and CSIs."""
        m = self.model
        dn = f"safSi={obj.name},{app.dn}"
        sg_text = obj.attrs.get("saAmfSIProtectedbySG", [("", 0)])[0][0]
        sg_dn = sg_text if "=" in sg_text else f"safSg={sg_text},{app.dn}"
        model = m.sgs[sg_dn].model if sg_dn in m.sgs else None
        a = self.attrs(obj, dn, model)
        self.children(obj)
        if a["saAmfSIProtectedbySG"] is None:
            if len(app.sgs) != 1:
                self.fail(obj.line, "saAmfSIProtectedbySG", f"required: {app.dn} has {len(app.sgs)} SGs")
            sg_dn = app.sgs[0]
        else:
            sg_dn = self.ref(a["saAmfSIProtectedbySG"], m.sgs, f",{app.dn}", obj.key_lines["saAmfSIProtectedbySG"],
                             "saAmfSIProtectedbySG", "safSg", app.dn)
        sg = m.sgs[sg_dn]
        si = SI(dn, obj.name, obj.line, a, app=app.dn, sg=sg_dn, rank=a["saAmfSIRank"],
                pref_active=a["saAmfSIPrefActiveAssignments"], pref_standby=a["saAmfSIPrefStandbyAssignments"])
        if sg.model == "nwayactive" and si.pref_active > sg.n_assigned:
            self.fail(obj.key_lines["saAmfSIPrefActiveAssignments"], "saAmfSIPrefActiveAssignments",
                      "more than NumPrefAssignedSUs")
        if sg.model == "nway" and si.pref_standby >= sg.n_assigned:
            self.fail(obj.key_lines.get("saAmfSIPrefStandbyAssignments", obj.line), "saAmfSIPrefStandbyAssignments",
                      "must be less than NumPrefAssignedSUs")
        ranked: list[tuple[int, str]] = []
        for r in obj.child("safRankedSu"):
            if sg.model not in ("nplusm", "nway", "nwayactive"):
                self.fail(r.line, "safRankedSu", f"does not apply to {sg.model}")
            ra = self.attrs(r, f"safRankedSu={r.name},{dn}")
            su_dn = self.ref(r.name, m.sus, f",{sg_dn}", r.line, "safRankedSu", "safSu", sg_dn)
            ranked.append((ra["saAmfRank"], su_dn))
        si.ranked_sus = [d for _, d in sorted(ranked)]
        for d in obj.child("safDepend"):
            da = self.attrs(d, f"safDepend={d.name},{dn}")
            si.depends[d.name] = da["saAmfToleranceTime"]
            si.a.setdefault("_depend_lines", {})[d.name] = d.line
        csis = obj.child("safCsi")
        if not csis:
            self.fail(obj.line, "safCsi", f"{dn} needs at least one safCsi")
        raw: dict[str, CSI] = {}
        for c in csis:
            cdn = f"safCsi={c.name},{dn}"
            ca = self.attrs(c, cdn)
            self.children(c)
            t = self.ref(ca["saAmfCSTypeName"], m.cs_types, f",{app.dn}", c.key_lines["saAmfCSTypeName"],
                         "saAmfCSTypeName", "safCSType", app.dn)
            csi = CSI(cdn, c.name, c.line, ca, si=dn, cs_type=t)
            allowed = m.cs_types[t]
            for at in c.child("safCSIAttr"):
                if at.name not in allowed:
                    self.fail(at.line, "safCSIAttr", f"{at.name!r} is not an attribute of {t}")
                csi.attrs.extend((at.name, v) for v, _ in at.values)
            for dep in ca["saAmfCSIDependencies"]:
                ddn = dep if "=" in dep else f"safCsi={dep},{dn}"
                if ddn not in [f"safCsi={x.name},{dn}" for x in csis]:
                    self.fail(c.key_lines["saAmfCSIDependencies"], "saAmfCSIDependencies",
                              f"no safCsi {dep!r} in {dn}")
                csi.depends.append(ddn)
            for su_dn in sg.sus:
                if not any(t in m.comps[x].cs_types for x in m.sus[su_dn].comps):
                    self.fail(c.key_lines["saAmfCSTypeName"], "saAmfCSTypeName",
                              f"{su_dn} has no component of CS type {t}")
            raw[cdn] = csi
        if a["saAmfSINumCSIs"] is not None and a["saAmfSINumCSIs"] != len(csis):
            self.fail(obj.key_lines["saAmfSINumCSIs"], "saAmfSINumCSIs", f"{dn} has {len(csis)} CSIs")
        si.csis = _topo(raw, lambda c: self.fail(raw[c].line, "saAmfCSIDependencies", "dependency cycle"))
        m.csis.update(raw)
        m.sis[dn] = si
        app.sis.append(dn)

    def finish(self) -> None:
        """Cross-object checks (SI dependencies, proxies, DN lengths) and the digest."""
        m = self.model
        for si in m.sis.values():
            resolved = {}
            for name, tol in si.depends.items():
                dn = name if "=" in name else f"safSi={name},{si.app}"
                if dn not in m.sis:
                    self.fail(si.a["_depend_lines"][name], "safDepend", f"no safSi {name!r}")
                resolved[dn] = tol
            si.depends = resolved
            si.a.pop("_depend_lines", None)
        state: dict[str, int] = {}

        def visit(dn: str) -> None:
            if state.get(dn) == 1:
                self.fail(m.sis[dn].line, "safDepend", f"dependency cycle through {dn}")
            if state.get(dn) == 2:
                return
            state[dn] = 1
            for d in m.sis[dn].depends:
                visit(d)
            state[dn] = 2

        for dn in m.sis:
            visit(dn)
        for sg in m.sgs.values():
            sg.sis = sorted((s for s in m.sis if m.sis[s].sg == sg.dn), key=lambda d: _rank_key(m.sis[d].rank, d))
        for comp in m.comps.values():
            if comp.category == "proxied":
                ref = comp.a["saAmfCompProxyCsi"]
                if ref not in m.csis:
                    self.fail(comp.line, "saAmfCompProxyCsi", f"no safCsi {ref!r} (give its full DN)")
                comp.proxy_csi = ref
        for dn in (*m.nodes, *m.sgs, *m.sus, *m.comps, *m.sis, *m.csis):
            if len(dn.encode()) > 256:
                self.fail(m.entity(dn).line, dn.split("=", 1)[0], "DN longer than 256 bytes")
        m.digest = hashlib.sha256(json.dumps(_canonical(m), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rank_key(rank: int, dn: str) -> tuple[int, bytes]:
    return (rank if rank > 0 else 1 << 62, dn.encode())


def _topo(csis: dict[str, CSI], cycle: Any) -> list[str]:
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(dn: str) -> None:
        if state.get(dn) == 1:
            cycle(dn)
        if state.get(dn) == 2:
            return
        state[dn] = 1
        for d in csis[dn].depends:
            visit(d)
        state[dn] = 2
        out.append(dn)

    for dn in sorted(csis, key=str.encode):
        visit(dn)
    return out


def _canonical(m: Model) -> dict:
    return {k: {dn: e.a for dn, e in getattr(m, k).items()} for k in ("nodes", "sgs", "sus", "comps", "sis", "csis")}


def parse(text: str, path: str) -> Model:
    """Validate amf.conf text into a Model (ConfigError at the first problem)."""
    return _Checker(path).build(parse_text(text, path))


def load(path: str) -> Model:
    """Read and validate the AMF configuration file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read AMF configuration file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, 0, "", f"not UTF-8: {exc}") from None
    return parse(text, path)
