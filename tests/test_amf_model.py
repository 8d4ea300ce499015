"""amf.conf: the parser and the information model, and its refusal at start (``aisexec -t``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aisexec.config.errors import ConfigError
from plugins.amf import model
from tests.amf_components.confgen import sg_conf

EXAMPLE = Path("/work/shared/reference/api/amf.md")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        model.parse(text, "/etc/ais/amf.conf")
    return str(err.value)


def test_generated_models_parse_with_defaults():
    m = model.parse(sg_conf("2n", sus=3, nodes=3), "x")
    sg = m.sgs["safSg=g,safApp=app"]
    assert sg.n_inservice == 3 and sg.comp_restart_max == 10 and sg.sus[0] == "safSu=su1,safSg=g,safApp=app"
    comp = m.comps["safComp=c1,safSu=su1,safSg=g,safApp=app"]
    assert comp.instantiate.argv == ["/bin/true"] and comp.csi_set_timeout == 10000 and comp.recovery == 2
    assert comp.healthchecks[b"alive"].period == 500
    assert m.csis["safCsi=csi1,safSi=si1,safApp=app"].attrs == [("a", "v1")]
    assert model.parse(sg_conf("2n", sus=3, nodes=3), "y").digest == m.digest


@pytest.mark.parametrize("old,new,expect", [
    ("saAmfSGRedundancyModel = 2n", "saAmfSGRedundancyModel = 3n",
     ":11: saAmfSGRedundancyModel: '3n' is not one of 2n, nplusm, nway, nwayactive, noredundancy"),
    ("saAmfSUHostedByNode = n2", "saAmfSUHostedByNode = n9",
     "saAmfSUHostedByNode: no safAmfNode 'n9' in safAmfCluster=demo"),
    ("saAmfSURank = 1", "saAmfSURankk = 1", "saAmfSURankk: unknown key in safSu=su1,safSg=g,safApp=app "
                                            "(did you mean 'saAmfSURank'?)"),
    ("saAmfSURank = 1", "saAmfSURank = x", "saAmfSURank: 'x' is not an integer"),
    ("saAmfSURank = 1", "saAmfSURank = 1\n saAmfSURank = 2", "saAmfSURank: given twice"),
    ("saAmfCompInstantiateCmd = /bin/true", "saAmfCompInstantiateCmd = true",
     "relative command 'true' needs a clccli_path"),
    ("saAmfHealthcheckPeriod = 500", "saAmfHealthcheckPeriod = 0", "saAmfHealthcheckPeriod: must be more than 0"),
    ("saAmfCSTypeName = t", "saAmfCSTypeName = nope", "saAmfCSTypeName: no safCSType 'nope'"),
    ("saAmfCompCapability = x_active_and_y_standby", "saAmfCompCapability = x_active",
     "x_active cannot hold standby assignments, which 2n needs"),
    ("saAmfClusterStartupTimeout = 3000", "saAmfClusterStartupTimeout = 3000\n    bogus line",
     "cannot parse 'bogus line'"),
    ("safCSType = t {", "safCSTyp = t {", "safCSTyp: unknown class inside safApp"),
    ("saAmfCompInstantiateCmd = /bin/true", "saAmfCompInstantiateCmd = /bin/true\nsaAmfCompAmStartCmd = /x",
     "saAmfCompAmStartCmd: external active monitors (AM_START/AM_STOP) are not supported"),
])
def test_errors_name_file_line_and_key(old, new, expect):
    text = sg_conf("2n", sus=2, nodes=2).replace(old, new, 1)
    message = _error(text)
    assert message.startswith("/etc/ais/amf.conf:") and expect in message


def test_missing_required_key_reported_at_its_object():
    text = sg_conf("2n", sus=2, nodes=2).replace("saAmfSGRedundancyModel = 2n\n", "")
    assert "saAmfSGRedundancyModel: required key missing in safSg=g,safApp=app" in _error(text)


def test_consistency_checks():
    assert "2n needs at least 2 in-service SUs" in _error(sg_conf("2n", sus=1, nodes=1))
    text = sg_conf("nwayactive", sus=2, sg_extra="saAmfSGNumPrefStandbySUs = 1")
    assert "does not apply to nwayactive" in _error(text)
    assert "more than NumPrefInserviceSUs" in _error(
        sg_conf("nplusm", sus=2, sg_extra="saAmfSGNumPrefActiveSUs = 2\nsaAmfSGNumPrefStandbySUs = 1"))
    assert "exactly one of saAmfNodeClmNode" in _error(sg_conf().replace("saAmfNodeClmNodeId = 1", ""))
    text = sg_conf("2n", sus=2, nodes=2, si_extra="safDepend = si1 {\n}")
    assert "dependency cycle" in _error(text)


def test_contract_example_parses():
    if not EXAMPLE.exists():
        pytest.skip("contract page not available")
    doc = EXAMPLE.read_text()
    start = doc.index("```\n# amf.conf: the counter service")
    text = doc[start + 4: doc.index("```", start + 4)]
    m = model.parse(text, "example")
    comp = m.comps["safComp=server,safSu=su-a,safSg=counter-2n,safApp=counter"]
    assert comp.instantiate.argv == ["/opt/counter/bin/counter-server", "--log", "/var/log/counter/su-a.log"]
    assert comp.env == {"PATH": "/usr/bin:/bin", "COUNTER_TICK_MS": "50"}
    assert m.csis["safCsi=counter-csi,safSi=counter-si,safApp=counter"].attrs == [("checkpoint",
                                                                                   "safCkpt=counter-state")]


def test_unreadable_file():
    with pytest.raises(ConfigError) as err:
        model.load("/nonexistent/amf.conf")
    assert str(err.value) == ("/nonexistent/amf.conf: cannot read AMF configuration file: "
                              "No such file or directory")


def _aisexec_t(tmp_path: Path, amf_text: str | None, mode: str = "enabled") -> subprocess.CompletedProcess:
    from aisexec.embedded import local_cluster

    node = local_cluster(tmp_path, 1, sections={"amf": {"mode": mode}})[0]
    env = dict(__import__("os").environ)
    env.update(node.environ())
    conf = tmp_path / "amf.conf"
    if amf_text is not None:
        conf.write_text(amf_text)
    env["OPENAIS_AMF_CONFIG_FILE"] = str(conf)
    return subprocess.run([sys.executable, "-m", "aisexec.main", "-t"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_aisexec_t_refuses_a_bad_amf_conf(tmp_path):
    bad = sg_conf("2n", sus=2, nodes=2).replace("saAmfSGCompRestartMax", "x", 0)
    bad = bad.replace("saAmfSGRedundancyModel = 2n", "saAmfSGRedundancyModel = 2n\n saAmfSGCompRestartMaxx = 1")
    out = _aisexec_t(tmp_path, bad)
    assert out.returncode == 8
    assert out.stderr.strip().startswith(f"aisexec: error: {tmp_path}/amf.conf:12: saAmfSGCompRestartMaxx: unknown key")
    assert "did you mean 'saAmfSGCompRestartMax'?" in out.stderr


def test_aisexec_t_refuses_a_missing_amf_conf_but_not_when_disabled(tmp_path):
    out = _aisexec_t(tmp_path / "a", None)
    assert out.returncode == 8 and "cannot read AMF configuration file: No such file or directory" in out.stderr
    assert _aisexec_t(tmp_path / "b", None, mode="disabled").returncode == 0
    assert _aisexec_t(tmp_path / "c", sg_conf()).returncode == 0
