"""EVT across three real executives: filters, exactly-once, priorities, retention, lost events, partitions.

One cluster serves the whole module (tests that break it put it back).
Clients are agent processes driven by command lines on stdin; they print
JSON lines (deliveries and answers).
"""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import time

import pytest

from aisexec.localcluster import LocalCluster
from tests.mp_helpers import JsonLinesProcess, agent_pool, cluster_fixture, heal, partition, start_node

pytestmark = pytest.mark.multiprocess

AGENT = r'''
import hashlib, json, os, select, sys
import openais
from openais import evt

F = {"prefix": evt.PREFIX_FILTER, "suffix": evt.SUFFIX_FILTER, "exact": evt.EXACT_FILTER, "all": evt.PASS_ALL_FILTER}
out = lambda **kw: print(json.dumps(kw), flush=True)

def deliver(sid, event, size):
    a = event.attributes_get()
    data = event.data_get()
    big = len(data) >= 1024
    out(ev="deliver", sid=sid, id=a.event_id, patterns=[p.decode() for p in a.patterns][:4 if big else None],
        prio=a.priority, data=data[:16].decode() if big else data.decode(), size=size, npat=len(a.patterns),
        sha=hashlib.sha256(data + b"".join(a.patterns)).hexdigest(), name=a.publisher_name)
    event.free()

h = evt.initialize(event_deliver=deliver)
channels = {}
paused = False
out(ok="init")
pending = b""
lines = []
while True:
    if not lines:
        readable, _, _ = select.select([0] + ([] if paused else [h]), [], [], 1.0)
        if h in readable:
            h.dispatch(openais.DISPATCH_ALL)
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            break
        pending += chunk
        *whole, pending = pending.split(b"\n")
        lines += [w.decode() for w in whole if w.strip()]
        continue
    line = lines.pop(0)
    if line.strip() == "quit":
        break
    cmd, *args = line.split()
    try:
        if cmd == "open":
            channels[args[0]] = h.channel_open(args[0], int(args[1]), timeout=20.0)
        elif cmd == "sub":
            filters = [evt.EventFilter(F[k], v.encode()) for k, _, v in (a.partition(":") for a in args[2:])]
            channels[args[0]].event_subscribe(filters, int(args[1]))
        elif cmd == "pub":  # pub CHANNEL COUNT PRIO RETENTION PATTERN,PATTERN TAG
            ch, count, prio, retention, patterns, tag = args
            e = channels[ch].event_allocate()
            e.attributes_set([p.encode() for p in patterns.split(",") if p], int(prio), float(retention), "agent")
            ids = []
            for i in range(int(count)):
                while True:
                    try:
                        ids.append(e.publish(f"{tag}:{i}".encode()))
                        break
                    except openais.TryAgain:
                        import time; time.sleep(0.05)
            e.free()
            out(ok="pub", ids=ids)
            continue
        elif cmd == "big":  # big CHANNEL COUNT: events of the largest size, most patterns, longest names
            e = channels[args[0]].event_allocate()
            e.attributes_set([chr(65 + i % 26).encode() * evt.MAX_PATTERN_SIZE for i in range(evt.MAX_NUM_PATTERNS)],
                             evt.HIGHEST_PRIORITY, 0.0, "n" * 256)
            ids = [e.publish(bytes((i + k) % 251 for k in range(evt.MAX_EVT_SIZE))) for i in range(int(args[1]))]
            e.free()
            out(ok="big", ids=ids)
            continue
        elif cmd == "pause":
            paused = True
        elif cmd == "resume":
            paused = False
        out(ok=cmd)
    except openais.AisError as exc:
        out(error=type(exc).__name__, cmd=cmd)
h.finalize()
'''

ALL = 7
SUB = 2 | 4
PUB = 1 | 4


class Agent(JsonLinesProcess):
    """One EVT client process on one node: deliveries and answers kept apart."""

    def __init__(self, cluster: LocalCluster, index: int) -> None:
        self.index = index
        self.delivered: list[dict] = []
        self.answers: list[dict] = []
        super().__init__([sys.executable, "-c", AGENT], cluster.environ(index), name=f"agent on node {index}")
        self.wait(lambda a: a.get("ok") == "init")

    def _pump(self, timeout: float) -> bool:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if item is None:
            raise self.exited()
        (self.delivered if item.get("ev") == "deliver" else self.answers).append(item)
        return True

    def wait(self, predicate, timeout: float = 40.0) -> dict:
        """The first answer satisfying ``predicate`` (consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, answer in enumerate(self.answers):
                if predicate(answer):
                    return self.answers.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {self.index}: no matching answer; have {self.answers[-5:]}")
            self._pump(0.2)

    def do(self, line: str, timeout: float = 40.0) -> dict:
        """Run one command and return its answer (raise on an error answer)."""
        self.command(line)
        answer = self.wait(lambda a: "ok" in a or "error" in a, timeout)
        if "error" in answer:
            raise AssertionError(f"agent {self.index}: {line!r} -> {answer}")
        return answer

    def collect(self, count: int, timeout: float = 40.0) -> list[dict]:
        """Wait until ``count`` deliveries arrived in all; return and forget them."""
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            self._pump(0.2)
        got, self.delivered = self.delivered, []
        return got

    def settle(self, seconds: float = 1.0) -> list[dict]:
        """Everything delivered within ``seconds`` (forgotten afterwards)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._pump(0.1)
        got, self.delivered = self.delivered, []
        return got


cluster = cluster_fixture("evt", wait=40)


@pytest.fixture
def agents(cluster):
    yield from agent_pool(cluster, Agent)


def test_filters_exactly_once_and_one_order_on_every_node(agents):
    subs = [agents(i) for i in (1, 2, 3)]
    specs = ["prefix:disk", "all:", "suffix:.full"]
    for agent, spec in zip(subs, specs, strict=True):
        agent.do(f"open order {ALL}")
        agent.do(f"sub order 1 {spec}")
    pub1, pub3 = agents(1), agents(3)
    for p in (pub1, pub3):
        p.do(f"open order {PUB}")
    for p, tag in ((pub1, "a"), (pub3, "b")):
        p.proc.stdin.write(f"pub order 20 3 0 disk.full {tag}\n")
        p.proc.stdin.write(f"pub order 20 3 0 net.full {tag}n\n")
        p.proc.stdin.write(f"pub order 20 3 0 disk.slow {tag}s\n")
        p.proc.stdin.flush()
    for p in (pub1, pub3):
        for _ in range(3):
            p.wait(lambda a: a.get("ok") == "pub")
    got = [subs[0].collect(80), subs[1].collect(120), subs[2].collect(80)]
    counts = [len(g) for g in got]
    assert counts == [80, 120, 80]
    for g in got:
        assert len({d["id"] for d in g}) == len(g)  # exactly once
    assert all(d["patterns"][0].startswith("disk") for d in got[0])
    assert all(d["patterns"][0].endswith(".full") for d in got[2])
    order = [d["id"] for d in got[1]]
    for g in (got[0], got[2]):
        ids = {d["id"] for d in g}
        assert [d["id"] for d in g] == [i for i in order if i in ids]  # one agreed order everywhere
    for tag in ("a", "b"):  # each publisher's events in its publish order
        assert [d["data"] for d in got[1] if d["data"].split(":")[0] == tag] == [f"{tag}:{i}" for i in range(20)]
    assert all(s.settle(0.5) == [] for s in subs)  # and nothing more


def wait_waiting(cluster: LocalCluster, index: int, count: int, timeout: float = 40.0) -> None:
    """Wait until a connection on node ``index`` has ``count`` events waiting (openais-evttool list)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "openais.tools.evttool", "list", "--json"],
                             env=cluster.environ(index), capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and any(q["waiting"] >= count for q in json.loads(out.stdout)["queues"].values()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no queue on node {index} reached {count} waiting events")


def test_priority_order_for_a_subscriber_that_lets_events_wait(cluster, agents):
    sub, pub = agents(2), agents(3)
    sub.do(f"open prio {SUB}")
    sub.do("sub prio 1")
    sub.do("pause")
    pub.do(f"open prio {PUB}")
    for prio in (3, 1, 0, 2):
        pub.do(f"pub prio 3 {prio} 0 p p{prio}")
    wait_waiting(cluster, 2, 11)  # node 2 has queued them all (the first one went out at once)
    sub.do("resume")
    got = sub.collect(12)
    # the first event went out at once (nothing waited); the ones that waited come highest priority first
    assert got[0]["data"] == "p3:0"
    assert [d["prio"] for d in got[1:]] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 2
    assert [d["data"] for d in got[1:4]] == ["p0:0", "p0:1", "p0:2"]


def test_lost_event_under_a_flood_with_the_default_queue(cluster, agents):
    sub, pub = agents(1), agents(2)
    sub.do(f"open flood {SUB}")
    sub.do("sub flood 9")
    sub.do("pause")
    pub.do(f"open flood {PUB}")
    pub.do("pub flood 1100 3 0 f f", timeout=120)
    wait_waiting(cluster, 1, 1001)  # the queue is full (and holds the notice)
    sub.do("resume")
    got = sub.collect(1002, timeout=60)
    got += sub.settle(1.0)
    lost = [d for d in got if d["id"] == 1]
    assert len(lost) == 1 and lost[0]["sid"] == 9 and lost[0]["patterns"] == ["SA_EVT_LOST_EVENT_PATTERN"]
    assert got[0]["data"] == "f:0" and got[1]["id"] == 1  # f:0 went out at once; the notice leads the rest
    # delivery_queue_size (1000) waiting events and the notice: memory stays bounded
    assert [d["data"] for d in got[2:]] == [f"f:{i}" for i in range(1, 1001)]


def test_retention_to_a_late_subscriber_and_across_a_node_restart(cluster, agents):
    pub = agents(3)
    pub.do(f"open keep {PUB}")
    kept = pub.do("pub keep 1 0 600 kept k")["ids"][0]
    pub.do("pub keep 1 0 0 plain p")
    late = agents(1)
    late.do(f"open keep {SUB}")
    late.do("sub keep 1")
    assert [d["id"] for d in late.collect(1)] == [kept]
    pub.close()
    cluster.kill(3)
    cluster.wait_members([1, 2], [1, 2], timeout=40)
    start_node(cluster, 3)
    cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
    again = agents(3)
    again.do(f"open keep {SUB}")
    again.do("sub keep 4 prefix:ke")
    got = again.collect(1)
    assert [(d["id"], d["sid"], d["data"]) for d in got] == [(kept, 4, "k:0")]
    assert late.settle(0.5) == []  # nobody gets it twice


def test_partition_and_merge_unite_retained_events_once(cluster, agents):
    left, right = agents(1), agents(3)
    for a in (left, right):
        a.do(f"open split {ALL}")
        a.do("sub split 1")
    partition(cluster, [1, 2], [3])
    try:
        cluster.wait_members([1, 2], [1, 2], timeout=40)
        cluster.wait_members([3], [3], timeout=40)
        lid = left.do("pub split 1 0 600 left L")["ids"][0]
        rid = right.do("pub split 1 0 600 right R")["ids"][0]
        right.do("pub split 1 0 0 gone G")
        assert [d["id"] for d in left.collect(1)] == [lid]
        assert [d["data"] for d in right.collect(2)] == ["R:0", "G:0"]
    finally:
        heal(cluster)
    cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
    assert [d["id"] for d in left.collect(1)] == [rid]
    assert [d["id"] for d in right.collect(1)] == [lid]
    assert left.settle(1.0) == [] and right.settle(0.1) == []
    witness = agents(2)
    witness.do(f"open split {SUB}")
    witness.do("sub split 1")
    assert sorted(d["id"] for d in witness.collect(2)) == sorted([lid, rid])


def test_evttool_lists_publishes_and_subscribes(cluster):
    env = cluster.environ(2)
    tool = [sys.executable, "-m", "openais.tools.evttool"]
    sub = subprocess.Popen([*tool, "subscribe", "tooling", "--create", "-f", "prefix:t", "--count", "1",
                            "--seconds", "40"], env=cluster.environ(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert "subscribed" in sub.stderr.readline()
        out = subprocess.run([*tool, "publish", "tooling", "-p", "tool", "--data", "hi", "--retention", "300",
                              "--json"], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        event_id = json.loads(out.stdout)["event_id"]
        line = json.loads(sub.stdout.readline())
        assert (line["event_id"], line["data"], line["patterns"]) == (event_id, "hi", ["tool"])
        assert sub.wait(timeout=20) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    listing = subprocess.run([*tool, "list", "--json"], env=env, capture_output=True, text=True, timeout=30)
    doc = json.loads(listing.stdout)
    chan = next(c for c in doc["channels"] if c["name"] == "tooling")
    assert [e["event_id"] for e in chan["retained"]] == [event_id]
    plain = subprocess.run(tool, env=env, capture_output=True, text=True, timeout=30)
    assert plain.returncode == 0 and "tooling" in plain.stdout


def test_a_killed_client_closes_its_channels_cluster_wide(cluster, agents):
    victim = agents(3)
    victim.do(f"open doomed {ALL}")
    victim.do("sub doomed 1")
    observer = agents(1)
    observer.do(f"open doomed {PUB}")
    observer.do("pub doomed 1 0 600 keep k")
    assert len(victim.collect(1)) == 1
    subprocess.run([sys.executable, "-m", "openais.tools.evttool", "publish", "doomed", "--data", "x"],
                   env=cluster.environ(2), check=True, capture_output=True, timeout=30)
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    deadline = time.monotonic() + 40
    while True:
        out = subprocess.run([sys.executable, "-m", "openais.tools.evttool", "list", "--json"],
                             env=cluster.environ(2), capture_output=True, text=True, timeout=30)
        chan = next(c for c in json.loads(out.stdout)["channels"] if c["name"] == "doomed")
        if chan["openers"] == {"1": 1}:
            break
        assert time.monotonic() < deadline, chan
        time.sleep(0.2)
    assert chan["subscriptions"] == {"1": 0} and len(chan["retained"]) == 1


def test_largest_events_arrive_whole_over_real_sockets(cluster, agents):
    sub, pub = agents(3), agents(1)
    sub.do(f"open big {SUB}")
    sub.do("sub big 1")
    pub.do(f"open big {PUB}")
    ids = pub.do("big big 40", timeout=120)["ids"]  # 40 x ~80 KiB: the window and the queue both in use
    got = sub.collect(40, timeout=60)
    patterns = b"".join(chr(65 + i % 26).encode() * 256 for i in range(64))
    want = [hashlib.sha256(bytes((i + k) % 251 for k in range(65536)) + patterns).hexdigest() for i in range(40)]
    assert [d["id"] for d in got] == ids  # in publish order
    assert [d["sha"] for d in got] == want
    assert all(d["size"] == 65536 and d["npat"] == 64 and d["name"] == "n" * 256 for d in got)


def test_a_subscriber_killed_mid_delivery_is_cleaned_up(cluster, agents):
    dying, other, pub = agents(2), agents(2), agents(1)
    for a in (dying, other):
        a.do(f"open gone {SUB}")
        a.do("sub gone 1")
    dying.do("pause")  # stops reading: events pile up on their way and in its queue
    pub.do(f"open gone {PUB}")
    pub.do("pub gone 300 3 0 g g", timeout=120)
    wait_waiting(cluster, 2, 100)
    dying.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "openais.tools.evttool", "list", "--json"],
                             env=cluster.environ(2), capture_output=True, text=True, timeout=30)
        doc = json.loads(out.stdout)
        if out.returncode == 0 and not any(q["waiting"] for q in doc["queues"].values()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the dead subscriber's queue was not released")
    chan = next(c for c in doc["channels"] if c["name"] == "gone")
    assert chan["subscriptions"].get("2") == 1  # only the other subscriber is left on node 2
    got = other.collect(300, timeout=60)
    assert [d["data"] for d in got] == [f"g:{i}" for i in range(300)]
    pub.do("pub gone 1 3 0 g after")
    assert [d["data"] for d in other.collect(1)] == ["after:0"]


PIPELINED = r'''
import json, sys
import openais
from openais import evt
h = evt.initialize()
ch = h.channel_open("piped", evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER, timeout=20.0)
e = ch.event_allocate()
e.attributes_set([b"piped"], evt.LOWEST_PRIORITY, 0.0, "pipe")
ids = [e.publish(str(i).encode(), wait=False) for i in range(500)]
h.flush()  # every event applied by the local node
# one more, named with an id the executive never reserved for it (as a library that bypassed its checks)
h._send_pipelined(evt.Request.PUBLISH_NOWAIT, evt.PublishRequest.pack(ch.object_id, 5000, 0, 0, 0, "pipe", [], b"bad"))
try:
    h.finalize()
    outcome = "finalized"
except openais.AisError as exc:
    outcome = type(exc).__name__
print(json.dumps({"ids": ids, "finalize": outcome}))
'''


def test_pipelined_publish_delivers_in_order_and_the_last_refusal_reaches_finalize(cluster, agents):
    sub = agents(2)
    sub.do(f"open piped {ALL}")
    sub.do("sub piped 1")
    run = subprocess.run([sys.executable, "-c", PIPELINED], env=cluster.environ(1), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["finalize"] == "InvalidParam"  # the refusal of the last message was not lost at finalize
    ids = result["ids"]
    assert ids == sorted(ids) and len(set(ids)) == 500
    got = sub.collect(500)
    assert [d["id"] for d in got] == ids  # in publish order, exactly once
    assert [d["data"] for d in got] == [str(i) for i in range(500)]
    assert sub.settle(0.5) == []  # and not the refused one
    assert cluster.log(1).count("refusing pipelined request") >= 1
