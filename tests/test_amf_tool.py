"""openais-amftool without a cluster: usage errors, an unreachable executive, the plain listing."""

from __future__ import annotations

import io

from openais.tools import amftool
from plugins.amf import doc
from tests.amf_components.confgen import sg_conf
from tests.amf_components.sim import Sim


def test_usage_errors_exit_2(capsys):
    assert amftool.main(["lock"]) == 2
    assert "needs the DN" in capsys.readouterr().err
    assert amftool.main(["frobnicate", "x"]) == 2
    assert amftool.main(["status", "extra"]) == 2


def test_unreachable_executive_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", str(tmp_path / "none.sock"))
    assert amftool.main([]) == 2
    assert "executive unreachable" in capsys.readouterr().err
    assert amftool.main(["lock", "safSu=x,safSg=g,safApp=app", "--json"]) == 2


def test_plain_listing_shows_every_sg_su_component_and_si():
    sim = Sim(sg_conf("2n", sus=2, nodes=2), members=(1, 2))
    out = io.StringIO()
    amftool.write_status(doc.build(sim.st, 1), out)
    text = out.getvalue()
    for needle in ("safAmfCluster=demo", "SG safSg=g,safApp=app  2n", "SU safSu=su1,safSg=g,safApp=app",
                   "comp safComp=c1", "SI safSi=si1,safApp=app", "safSu=su1,safSg=g,safApp=app=ACTIVE"):
        assert needle in text, needle
    out = io.StringIO()
    amftool.write_status(doc.disabled(1), out)
    assert "not enabled" in out.getvalue()


def test_an_executive_that_refuses_exits_2_with_one_line(monkeypatch, capsys):
    from openais.errors import TryAgain

    def refuse(**_kwargs):
        raise TryAgain("busy,\n try later")

    monkeypatch.setattr(amftool.amf, "initialize", refuse)
    assert amftool.main([]) == 2
    assert capsys.readouterr().err == "openais-amftool: the executive refused: busy, try later\n"
