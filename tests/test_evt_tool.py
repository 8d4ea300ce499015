"""openais-evttool without an executive: argument parsing, the plain listing, and the unreachable case."""

from __future__ import annotations

import argparse
import io

import pytest

from aisexec.testing import ServiceCluster
from openais import evt
from openais.tools import evttool
from plugins.evt.engine import EventEngine
from tests.test_evt_library import Bridged


def test_filters_parse():
    assert evttool.parse_filter("prefix:disk") == evt.EventFilter(evt.PREFIX_FILTER, b"disk")
    assert evttool.parse_filter("SUFFIX:.full") == evt.EventFilter(evt.SUFFIX_FILTER, b".full")
    assert evttool.parse_filter("exact:") == evt.EventFilter(evt.EXACT_FILTER, b"")
    assert evttool.parse_filter("all") == evt.EventFilter(evt.PASS_ALL_FILTER, b"")
    with pytest.raises(argparse.ArgumentTypeError):
        evttool.parse_filter("regex:.*")


def test_plain_listing_of_a_dump():
    import json

    cluster = ServiceCluster([EventEngine])
    cluster.run()
    h = Bridged(cluster, 1)
    ch = h.channel_open("alarms", 7, timeout=1.0)
    with ch.event_allocate() as e:
        e.attributes_set([b"disk", b"n7"], 1, 30.0, "mon")
        e.publish(b"97%")
    out = io.StringIO()
    evttool.write_plain(json.loads(h.dump()), out)
    text = out.getvalue()
    assert "alarms" in text and "node 1: 1 open, 0 subscriptions" in text and "[disk,n7]" in text


def test_unreachable_executive_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", str(tmp_path / "none.sock"))
    assert evttool.main(["list"]) == 2
    assert "openais-evttool" in capsys.readouterr().err
    assert evttool.main(["publish", "c", "--data", "x"]) == 2
