"""openais-msgtool's output from an engine dump (the live tool runs in tests/test_mp_msg.py)."""

from __future__ import annotations

import io
import json

from aisexec.testing import ServiceCluster
from openais.msg import QueueGroupPolicy, Request
from openais.tools import msgtool
from plugins.msg.engine import MessageEngine
from tests.test_msg_engine import MSG, ask, group, open_queue, send


def test_listing_and_plain_output() -> None:
    c = ServiceCluster([MessageEngine], nodes=[1, 2])
    c.run()
    conn = c.connect(2, MSG, pid=4242)
    open_queue(c, conn, "orders")
    send(c, c.connect(1, MSG), "orders", b"x" * 10)
    group(c, conn, Request.GROUP_CREATE, "workers", QueueGroupPolicy.ROUND_ROBIN)
    group(c, conn, Request.GROUP_INSERT, "workers", queue="orders")
    doc = msgtool.listing(json.loads(json.dumps(c.engine(1, MSG).dump())))
    assert doc["queues"][0]["name"] == "orders" and doc["queues"][0]["opener"] == {"node": 2, "pid": 4242}
    assert doc["queues"][0]["areas"][3]["used"] == 74
    assert doc["groups"] == [{"name": "workers", "policy": "ROUND_ROBIN",
                              "members": [{"queue": "orders", "eligible": True, "node": 2}]}]
    out = io.StringIO()
    msgtool.write_plain(doc, out)
    text = out.getvalue()
    assert "orders: open by pid 4242 on node 2" in text and "p3 1 msg 74/4096 B" in text
    assert "workers (ROUND_ROBIN)" in text and "orders: eligible, node 2" in text
    assert ask is not None


def test_unreachable_executive(monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAIS_IPC_SOCKET", "/nonexistent/sock")
    assert msgtool.main(["--json"]) == 2
    assert "cannot reach" in capsys.readouterr().err
