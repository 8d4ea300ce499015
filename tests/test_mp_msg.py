"""MSG across three real executives: senders on every node, request/reply, group policies, tracking,
cancel, a 1 MiB message and the loss of a queue's node.

Clients are subprocesses running :data:`AGENT` (commands as JSON lines on
stdin, answers and callbacks as JSON lines on stdout); one cluster serves
the whole module, and the test that kills a node runs last.
"""

from __future__ import annotations

import itertools
import json
import queue
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster
from tests.mp_helpers import JsonLinesProcess, closing, cluster_fixture, heal, partition, tool_json

pytestmark = pytest.mark.multiprocess

AGENT = r'''
import hashlib, json, select, sys, threading, time
import openais
from openais import msg

lock = threading.Lock()
def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

def blob(n, seed):
    return (hashlib.sha256(seed.encode()).digest() * (n // 32 + 1))[:n]

h = msg.initialize(
    queue_group_track=lambda g, buf, n, err: emit({"ev": "track", "group": g, "n": n, "error": err.name,
        "notes": [[x.member, x.change.name] for x in buf.notifications]}),
    message_delivered=lambda inv, err: emit({"ev": "delivered", "inv": inv, "error": err.name}),
    message_received=lambda q: emit({"ev": "received", "queue": q.name}),
    queue_capacity_reached=lambda q, p: emit({"ev": "reached", "queue": q.name, "p": p}),
    queue_capacity_available=lambda q, p: emit({"ev": "available", "queue": q.name, "p": p}))
queues = {}

def dispatcher():
    while True:
        try:
            select.select([h], [], [], 0.5)
            h.dispatch(openais.DISPATCH_ALL)
        except openais.BadHandle:
            return
        except Exception as exc:
            emit({"ev": "dispatch-error", "error": repr(exc)}); return
threading.Thread(target=dispatcher, daemon=True).start()

def run(cmd):
    op = cmd["op"]
    if op == "open":
        attrs = None
        if cmd.get("create", True):
            attrs = msg.QueueCreationAttributes(size=tuple(cmd.get("size", [1 << 22] * 4)),
                                                retention_time=cmd.get("retention", 30.0))
        flags = (msg.QUEUE_CREATE if attrs else 0) | cmd.get("flags", 0)
        queues[cmd["name"]] = h.queue_open(cmd["name"], attrs, flags, timeout=cmd.get("wait", 20.0))
        return True
    if op == "close":
        queues.pop(cmd["name"]).close(); return True
    if op == "send_many":
        for i in range(cmd["count"]):
            while True:
                try:
                    h.message_send(cmd["dest"], msg.Message(data=f"{cmd['tag']}:{i}".encode()), timeout=20.0)
                    break
                except openais.TryAgain:
                    time.sleep(0.01)
        return cmd["count"]
    if op == "send":
        data = blob(cmd["big"], cmd["tag"]) if "big" in cmd else cmd["data"].encode()
        h.message_send(cmd["dest"], msg.Message(data=data, priority=cmd.get("priority", 3)), timeout=30.0)
        return True
    if op == "send_async":
        h.message_send_async(cmd["inv"], cmd["dest"], msg.Message(data=cmd["data"].encode()), msg.MESSAGE_DELIVERED_ACK)
        return True
    if op == "get":
        got = queues[cmd["name"]].message_get(timeout=cmd.get("wait", 20.0))
        data = got.message.data
        if cmd.get("digest"):
            return {"len": len(data), "sha": hashlib.sha256(data).hexdigest(), "sender_id": got.sender_id}
        return {"data": data.decode(), "sender_id": got.sender_id}
    if op == "get_all":
        out = []
        while True:
            try:
                out.append(queues[cmd["name"]].message_get(timeout=cmd.get("wait", 0.0)).message.data.decode())
            except openais.Timeout:
                return out
    if op == "cancel":
        queues[cmd["name"]].message_cancel(); return True
    if op == "send_receive":
        got = h.message_send_receive(cmd["dest"], msg.Message(data=cmd["data"].encode()), timeout=cmd.get("wait", 20.0))
        return {"data": got.message.data.decode(), "sender_id": got.sender_id}
    if op == "serve":
        for _ in range(cmd["count"]):
            got = queues[cmd["name"]].message_get(timeout=20.0)
            h.message_reply(msg.Message(data=b"re:" + got.message.data), got.sender_id, timeout=20.0)
        return True
    if op == "group_create":
        h.queue_group_create(cmd["group"], cmd["policy"]); return True
    if op == "group_insert":
        h.queue_group_insert(cmd["group"], cmd["queue"]); return True
    if op == "group_remove":
        h.queue_group_remove(cmd["group"], cmd["queue"]); return True
    if op == "group_delete":
        h.queue_group_delete(cmd["group"]); return True
    if op == "track":
        buf = h.queue_group_track(cmd["group"], cmd["flags"], cmd.get("buffer"))
        return None if buf is None else [[x.member, x.change.name] for x in buf.notifications]
    if op == "status":
        s = h.queue_status_get(cmd["name"])
        return {"close_time": s.close_time, "usage": [list(u) for u in s.queue_usage]}
    if op == "nodeid":
        return None
    raise ValueError(op)

def worker(cmd):
    try:
        emit({"id": cmd["id"], "ok": run(cmd)})
    except openais.AisError as exc:
        emit({"id": cmd["id"], "error": type(exc).__name__})
    except Exception as exc:
        emit({"id": cmd["id"], "error": "crash:" + repr(exc)})

emit({"ready": True})
for line in sys.stdin:
    if line.strip() == "quit":
        break
    cmd = json.loads(line)
    threading.Thread(target=worker, args=(cmd,), daemon=True).start()
h.finalize()
'''


class Agent(JsonLinesProcess):
    """One MSG client process on one node: commands with ids, their answers and the callback events apart."""

    _ids = itertools.count(1)

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        self.index = index
        self.events: list[dict] = []
        self.answers: dict[int, dict] = {}
        super().__init__([sys.executable, "-c", AGENT], cluster.environ(index), name=f"agent on node {index}")
        self._pump(lambda: any(e.get("ready") for e in self.events), 30)

    def _pump(self, done, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer in {timeout} s; events {self.events[-5:]}")
            try:
                item = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if item is None:
                raise self.exited()
            if "id" in item:
                self.answers[item["id"]] = item
            else:
                self.events.append(item)

    def start(self, op: str, **args) -> int:
        """Send one command; return its id (answer later with :meth:`result`)."""
        cid = next(self._ids)
        self.command(json.dumps({"id": cid, "op": op, **args}))
        return cid

    def result(self, cid: int, timeout: float = 60.0) -> dict:
        """The answer to command ``cid``: {"ok": value} or {"error": name}."""
        self._pump(lambda: cid in self.answers, timeout)
        return self.answers.pop(cid)

    def call(self, op: str, timeout: float = 60.0, **args):
        """Run one command and return its value; AssertionError carrying the error name otherwise."""
        answer = self.result(self.start(op, **args), timeout)
        assert "ok" in answer, f"{op} {args}: {answer}"
        return answer["ok"]

    def error(self, op: str, timeout: float = 60.0, **args) -> str | None:
        """Run one command and return its error name (None on success)."""
        return self.result(self.start(op, **args), timeout).get("error")

    def wait_event(self, predicate, timeout: float = 30.0) -> dict:
        """Wait for a callback event satisfying ``predicate`` and return it (removing it)."""
        found: list[dict] = []

        def done() -> bool:
            for e in self.events:
                if predicate(e):
                    found.append(e)
                    self.events.remove(e)
                    return True
            return False

        self._pump(done, timeout)
        return found[0]


#: Every node has a fault control file (empty: no faults) for the partition test; generous: the machine may be shared.
cluster = cluster_fixture("msg", wait=120)


def tool(cluster: LocalCluster, index: int) -> dict:
    """``openais-msgtool --json`` on node ``index``."""
    return tool_json(cluster, index, "msgtool")


@pytest.fixture
def agents(cluster):
    """One agent per node, closed at the end of the test."""
    started = [Agent(cluster, i) for i in (1, 2, 3)]
    try:
        yield started
    finally:
        closing(started)


def test_senders_on_every_node_order_and_exactly_once(agents) -> None:
    _a1, a2, _a3 = agents
    a2.call("open", name="fanin")
    count = 40
    ids = [(a, a.start("send_many", dest="fanin", tag=f"n{a.index}", count=count)) for a in agents]
    for a, cid in ids:
        assert a.result(cid)["ok"] == count
    got = a2.call("get_all", name="fanin", wait=2.0)
    assert len(got) == 3 * count
    for n in (1, 2, 3):
        mine = [g for g in got if g.startswith(f"n{n}:")]
        assert mine == [f"n{n}:{i}" for i in range(count)]
    a2.call("close", name="fanin")


def test_request_reply_across_nodes(agents) -> None:
    a1, a2, a3 = agents
    a3.call("open", name="rpc")
    serving = a3.start("serve", name="rpc", count=3)
    for a in (a1, a2, a1):
        answer = a.call("send_receive", dest="rpc", data=f"q{a.index}")
        assert answer == {"data": f"re:q{a.index}", "sender_id": 0}
    assert a3.result(serving)["ok"] is True
    assert a1.error("send_receive", dest="rpc", data="nobody", wait=1.0) == "Timeout"
    a3.call("close", name="rpc")


def test_group_policies(cluster, agents) -> None:
    a1, a2, a3 = agents
    for a in agents:
        a.call("open", name=f"pq{a.index}")
    for policy, group in ((1, "rr"), (2, "lrr"), (3, "lbq"), (4, "bc")):
        a1.call("group_create", group=group, policy=policy)
        for n in (1, 2, 3):
            a1.call("group_insert", group=group, queue=f"pq{n}")
    for i in range(6):
        a2.call("send", dest="rr", data=f"rr{i}")
    counts = [len(a.call("get_all", name=f"pq{a.index}", wait=1.0)) for a in agents]
    assert counts == [2, 2, 2]
    for i in range(4):
        a3.call("send", dest="lrr", data=f"l{i}")
        a3.call("send", dest="lbq", data=f"b{i}")
    assert len(a3.call("get_all", name="pq3", wait=1.0)) == 8
    assert a1.call("get_all", name="pq1", wait=0.5) == [] and a2.call("get_all", name="pq2", wait=0.5) == []
    a1.call("send", dest="bc", data="everyone")
    assert [a.call("get_all", name=f"pq{a.index}", wait=1.0) for a in agents] == [["everyone"]] * 3
    assert a1.error("send_receive", dest="bc", data="x") == "InvalidParam"
    a2.call("send", dest="pq1", data="fill")
    doc = tool(cluster, 2)
    queues = {q["name"]: q for q in doc["queues"]}
    assert queues["pq1"]["node"] == 1 and queues["pq1"]["opener"]["node"] == 1
    assert queues["pq1"]["areas"][3]["messages"] == 1
    groups = {g["name"]: g for g in doc["groups"]}
    assert groups["lbq"]["policy"] == "LOCAL_BEST_QUEUE"
    assert [x["queue"] for x in groups["rr"]["members"]] == ["pq1", "pq2", "pq3"]
    a1.call("get_all", name="pq1", wait=0.5)
    for group in ("rr", "lrr", "lbq", "bc"):
        a1.call("group_delete", group=group)
    for a in agents:
        a.call("close", name=f"pq{a.index}")


def test_tracking_callbacks_on_insert_and_remove(agents) -> None:
    a1, a2, a3 = agents
    a2.call("open", name="tq")
    a1.call("group_create", group="tg", policy=1)
    assert a3.call("track", group="tg", flags=1 | 2) is None
    a3.wait_event(lambda e: e.get("ev") == "track" and e["notes"] == [])
    a1.call("group_insert", group="tg", queue="tq")
    ev = a3.wait_event(lambda e: e.get("ev") == "track" and e["notes"] == [["tq", "ADDED"]])
    assert ev["n"] == 1
    a1.call("group_remove", group="tg", queue="tq")
    ev = a3.wait_event(lambda e: e.get("ev") == "track" and e["notes"] == [["tq", "REMOVED"]])
    assert ev["n"] == 0
    a1.call("group_delete", group="tg")
    a3.wait_event(lambda e: e.get("ev") == "track" and e["error"] == "NOT_EXIST")
    a2.call("close", name="tq")


def test_cancel_wakes_blocked_get(agents) -> None:
    a1 = agents[0]
    a1.call("open", name="cq")
    blocked = a1.start("get", name="cq", wait=None)
    time.sleep(0.3)
    a1.call("cancel", name="cq")
    assert a1.result(blocked)["error"] == "Interrupt"
    a1.call("close", name="cq")


def test_one_mib_message_intact(agents) -> None:
    a1, a2, _a3 = agents
    a1.call("open", name="big", size=[1 << 22] * 4)
    a2.call("send", dest="big", big=1 << 20, tag="seed")
    got = a1.call("get", name="big", digest=True)
    import hashlib

    data = (hashlib.sha256(b"seed").digest() * ((1 << 20) // 32 + 1))[: 1 << 20]
    assert got["len"] == 1 << 20 and got["sha"] == hashlib.sha256(data).hexdigest()
    a1.call("close", name="big")


def test_partition_merge_unites_groups_and_keeps_them_identical(cluster, agents) -> None:
    a1, a2, a3 = agents
    a2.call("open", name="left-q", retention=None)
    a3.call("open", name="right-q", retention=None)
    a1.call("group_create", group="mg", policy=1)
    a1.call("group_insert", group="mg", queue="left-q")
    partition(cluster, [1, 2], [3])
    try:
        cluster.wait_members([1, 2], [1, 2], timeout=60)
        cluster.wait_members([3], [3], timeout=60)
        a3.call("group_insert", group="mg", queue="right-q")  # only the right side knows
        a3.call("group_create", group="right-only", policy=4)
        a1.call("group_create", group="left-only", policy=2)
        assert a1.error("send", dest="right-q", data="x") == "QueueNotAvailable"  # its node is not here
    finally:
        heal(cluster)
    cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
    views = [tool(cluster, i) for i in (1, 2, 3)]
    groups = [{g["name"]: (g["policy"], [m["queue"] for m in g["members"]]) for g in v["groups"]} for v in views]
    assert groups[0] == groups[1] == groups[2]
    assert groups[0]["mg"] == ("ROUND_ROBIN", ["left-q", "right-q"])  # the lowest side's list, then the rest
    assert groups[0]["left-only"][0] == "LOCAL_ROUND_ROBIN" and groups[0]["right-only"][0] == "BROADCAST"
    a1.call("send", dest="right-q", data="after-merge")  # reachable again: its opener kept it on node 3
    assert a3.call("get", name="right-q")["data"] == "after-merge"
    for group in ("mg", "left-only", "right-only"):
        a1.call("group_delete", group=group)
    a2.call("close", name="left-q")
    a3.call("close", name="right-q")


def test_queue_node_killed(cluster, agents) -> None:
    a1, a2, a3 = agents
    a3.call("open", name="doomed", retention=None)
    a1.call("send", dest="doomed", data="lost")
    cluster.kill(3)
    cluster.wait_members([1, 2], [1, 2], timeout=60)
    deadline = time.monotonic() + 30
    while True:
        error = a1.error("send", dest="doomed", data="x")
        if error != "TryAgain" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert error == "QueueNotAvailable"
    a2.call("open", name="doomed", create=False)
    assert a2.error("get", name="doomed", wait=0.0) == "Timeout"
    a1.call("send", dest="doomed", data="fresh")
    assert a2.call("get", name="doomed")["data"] == "fresh"
