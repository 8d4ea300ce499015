"""amf.conf text for tests and benchmarks: one application, one SG of SUs spread over nodes."""

from __future__ import annotations


def sg_conf(model: str = "2n", sus: int = 2, nodes: int = 2, sis: int = 1, command: str = "/bin/true",
            argv: str = "", comp_extra: str = "", sg_extra: str = "", si_extra: str = "", su_ranks: bool = True,
            env: dict[str, str] | None = None, cluster_extra: str = "", node_extra: str = "",
            capability: str = "x_active_and_y_standby", comps_per_su: int = 1, csis_per_si: int = 1) -> str:
    """A cluster ``demo`` with nodes n1..nN (CLM node ids 1..N) and SG ``g`` of SUs su1..suK on them."""
    out = ["safAmfCluster = demo {", "    saAmfClusterStartupTimeout = 3000", cluster_extra]
    for n in range(1, nodes + 1):
        out += [f"    safAmfNode = n{n} {{", f"        saAmfNodeClmNodeId = {n}", node_extra, "    }"]
    out += ["    safApp = app {", "        safSg = g {", f"            saAmfSGRedundancyModel = {model}",
            sg_extra]
    for u in range(1, sus + 1):
        out += [f"            safSu = su{u} {{", f"                saAmfSUHostedByNode = n{(u - 1) % nodes + 1}"]
        if su_ranks:
            out.append(f"                saAmfSURank = {u}")
        for c in range(1, comps_per_su + 1):
            out += [f"                safComp = c{c} {{",
                    f"                    saAmfCompInstantiateCmd = {command}",
                    f"                    saAmfCompInstantiateCmdArgv = {argv}",
                    f"                    saAmfCompCapability = {capability}", comp_extra,
                    "                    saAmfCompCsTypes {", "                        t", "                    }"]
            if env:
                out += ["                    saAmfCompCmdEnv {"] + [f"                        {k}={v}"
                                                                    for k, v in env.items()]
                out.append("                    }")
            out += ["                    safHealthcheckKey = alive {",
                    "                        saAmfHealthcheckPeriod = 500",
                    "                        saAmfHealthcheckMaxDuration = 1000", "                    }",
                    "                }"]
        out.append("            }")
    out.append("        }")
    for s in range(1, sis + 1):
        out += [f"        safSi = si{s} {{", f"            saAmfSIRank = {s}", si_extra]
        for i in range(1, csis_per_si + 1):
            out += [f"            safCsi = csi{i} {{", "                saAmfCSTypeName = t",
                    "                safCSIAttr = a {", f"                    v{s}", "                }",
                    "            }"]
        out.append("        }")
    out += ["        safCSType = t {", "            safAmfCSAttrName = a", "        }", "    }", "}"]
    return "\n".join(line for line in out if line) + "\n"


def dn(kind: str, *names: str) -> str:
    """DNs of the generated model: dn('su', 'su1'), dn('comp', 'su1'), dn('si', 'si1'), dn('csi', 'si1')."""
    if kind == "su":
        return f"safSu={names[0]},safSg=g,safApp=app"
    if kind == "comp":
        return f"safComp={names[1] if len(names) > 1 else 'c1'},safSu={names[0]},safSg=g,safApp=app"
    if kind == "si":
        return f"safSi={names[0]},safApp=app"
    if kind == "csi":
        return f"safCsi={names[1] if len(names) > 1 else 'csi1'},safSi={names[0]},safApp=app"
    if kind == "node":
        return f"safAmfNode={names[0]},safAmfCluster=demo"
    if kind == "sg":
        return "safSg=g,safApp=app"
    raise ValueError(kind)


def multi_conf(groups: list[dict], nodes: int = 3, command: str = "/bin/true", argv: str = "",
               env: dict[str, str] | None = None, node_extra: str = "", startup_ms: int = 5000) -> str:
    """One application ``app`` with several SGs; each group dict: name, model, sus, sis, and optional
    sg_extra, comp_extra, si_extra, capability, env (per-group additions to the environment)."""
    out = ["safAmfCluster = demo {", f"    saAmfClusterStartupTimeout = {startup_ms}"]
    for n in range(1, nodes + 1):
        out += [f"    safAmfNode = n{n} {{", f"        saAmfNodeClmNodeId = {n}", node_extra, "    }"]
    out.append("    safApp = app {")
    for g in groups:
        name = g["name"]
        out += [f"        safSg = {name} {{", f"            saAmfSGRedundancyModel = {g['model']}",
                g.get("sg_extra", "")]
        for u in range(1, g["sus"] + 1):
            out += [f"            safSu = su{u} {{", f"                saAmfSUHostedByNode = n{(u - 1) % nodes + 1}",
                    f"                saAmfSURank = {u}", "                safComp = c1 {",
                    f"                    saAmfCompInstantiateCmd = {command}",
                    f"                    saAmfCompInstantiateCmdArgv = {argv}",
                    f"                    saAmfCompCapability = {g.get('capability', 'x_active_and_y_standby')}",
                    g.get("comp_extra", ""), "                    saAmfCompCsTypes {", "                        t",
                    "                    }"]
            genv = dict(env or {})
            genv.update(g.get("env", {}))
            if genv:
                out += ["                    saAmfCompCmdEnv {", *(f"                        {k}={v}"
                                                                  for k, v in genv.items()), "                    }"]
            out += ["                    safHealthcheckKey = alive {",
                    "                        saAmfHealthcheckPeriod = 300",
                    "                        saAmfHealthcheckMaxDuration = 500", "                    }",
                    "                }", "            }"]
        out.append("        }")
        for s in range(1, g["sis"] + 1):
            out += [f"        safSi = {name}-si{s} {{", f"            saAmfSIProtectedbySG = {name}",
                    f"            saAmfSIRank = {s}", g.get("si_extra", ""), "            safCsi = csi1 {",
                    "                saAmfCSTypeName = t", "            }", "        }"]
    out += ["        safCSType = t {", "        }", "    }", "}"]
    return "\n".join(line for line in out if line) + "\n"
