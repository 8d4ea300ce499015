"""Size limits across real executives: the documented maximum is delivered intact, one byte more is TooBig,
and an error the executive answers for a pipelined message reaches the caller (CPG and EVS)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from aisexec.localcluster import LocalCluster

pytestmark = pytest.mark.multiprocess

#: The payload both sides build: a seeded pseudo-random message of the library's maximum size.
PAYLOAD = "random.Random(11).randbytes({mod}.MAX_MESSAGE)"

RECEIVER = {
    "cpg": """
        from openais import cpg as mod
        got = []
        h = mod.initialize(deliver=lambda group, nodeid, pid, data: got.append(data))
        h.join("limits")
    """,
    "evs": """
        from openais import evs as mod
        got = []
        h = mod.initialize(deliver=lambda nodeid, data: got.append(data))
        h.join(["limits"])
    """,
}

SENDER = {
    "cpg": """
        from openais import cpg as mod
        got = []
        h = mod.initialize(deliver=lambda group, nodeid, pid, data: got.append(data))
        h.join("limits")
        send = h.mcast
    """,
    "evs": """
        from openais import evs as mod
        got = []
        h = mod.initialize(deliver=lambda nodeid, data: got.append(data))
        h.join(["limits"])
        send = h.mcast_joined
    """,
}

WAIT_AND_REPORT = """
    deadline = time.monotonic() + 90
    while not got and time.monotonic() < deadline:
        select.select([h], [], [], 0.5)
        h.dispatch(openais.DISPATCH_ALL)
    data = got[0] if got else b""
    result.update(len=len(data), intact=data == expected, deliveries=len(got))
    h.finalize()
    print(json.dumps(result), flush=True)
"""

PRELUDE = """
    import hashlib, json, random, select, sys, time
    import openais
    from openais.errors import TooBig
    result = {}
"""


def _code(*parts: str) -> str:
    return "\n".join(textwrap.dedent(p) for p in parts)


@pytest.fixture(scope="module")
def cluster2(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("limits"), 2, transport="udpu", secauth=True) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2], [1, 2], timeout=30)
        yield cluster


@pytest.mark.parametrize("service", ["cpg", "evs"])
def test_the_largest_message_is_delivered_intact_and_one_byte_more_is_too_big(cluster2, service):
    receiver_code = _code(PRELUDE, RECEIVER[service], f"expected = {PAYLOAD.format(mod='mod')}",
                          "print('joined', flush=True)", WAIT_AND_REPORT)
    receiver = subprocess.Popen([sys.executable, "-c", receiver_code], env=cluster2.environ(2),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "joined"  # type: ignore[union-attr]
        sender_code = _code(PRELUDE, SENDER[service], f"expected = {PAYLOAD.format(mod='mod')}", """
            try:
                send(expected + b"!")
            except TooBig:
                result["too_big"] = True
            send(expected)
            h.flush()  # an error the executive answered for the message would be raised here
        """, WAIT_AND_REPORT)
        sent = cluster2.client(1, sender_code, timeout=120)
        assert sent.returncode == 0, sent.stderr
        mine = json.loads(sent.stdout.strip().splitlines()[-1])
        theirs = json.loads(receiver.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert mine == {"too_big": True, "len": 1024 * 1024, "intact": True, "deliveries": 1}
    assert theirs == {"len": 1024 * 1024, "intact": True, "deliveries": 1}


REFUSED = {
    # A request the library never builds (guarantee 7): the executive answers INVALID_PARAM later.
    "cpg": """
        from openais import cpg as mod
        h = mod.initialize()
        h.join("limits-refused")
        bad = lambda: h._send_pipelined(mod.Request.MCAST, b"\\x07bad")
        good = lambda: h.mcast(b"fine")
    """,
    "evs": """
        from openais import evs as mod
        h = mod.initialize()
        h.join(["limits-refused"])
        bad = lambda: h._send_pipelined(mod.Request.MCAST_JOINED, b"\\x07bad")
        good = lambda: h.mcast_joined(b"fine")
    """,
}


@pytest.mark.parametrize("service", ["cpg", "evs"])
def test_an_error_on_the_last_pipelined_message_reaches_finalize_and_dispatch(cluster2, service):
    code = _code(PRELUDE, "from openais.errors import InvalidParam", REFUSED[service], """
        good()
        bad()
        try:
            h.finalize()
        except InvalidParam:
            result["finalize"] = "InvalidParam"
        result["closed"] = h._finalized
    """, REFUSED[service], """
        good()  # a second handle: dispatch raises the error too
        bad()
        time.sleep(0.5)
        try:
            h.dispatch(openais.DISPATCH_ALL)
        except InvalidParam:
            result["dispatch"] = "InvalidParam"
        h.dispatch(openais.DISPATCH_ALL)  # raised once
        h.finalize()
        print(json.dumps(result), flush=True)
    """)
    before = cluster2.log(1).count("refusing pipelined request")
    out = cluster2.client(1, code, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"finalize": "InvalidParam", "closed": True,
                                                               "dispatch": "InvalidParam"}
    assert cluster2.log(1).count("refusing pipelined request") == before + 2  # once per connection
