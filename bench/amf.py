"""AMF benchmark: failover times, instantiate time and executive RSS, as JSON lines.

    python bench/amf.py                 # 20 component kills, 5 health-check hangs, 3 executive kills
    python bench/amf.py --kills 40 --node-kills 5

Lines (``test``):
``amf_component_failover``  SIGKILL of the ACTIVE component -> its standby's ``csi_set(ACTIVE)`` answered
                            (2N, ``component_failover``; passive detection by connection loss): median/p99 ms;
                            ``cpg_median_us`` is CPG's 64-byte mcast->delivery latency in the same cluster and
                            ``ratio`` the failover median over it
``amf_healthcheck_failover`` the ACTIVE stops answering an AMF-invoked health check (period 300 ms, max 500 ms)
                            -> standby ACTIVE answered, counted from the last answered check
``amf_node_failover``       SIGKILL of the executive hosting the ACTIVE -> standby ACTIVE on another node;
                            ``cpg_confchg_ms`` is CPG's NODEDOWN after the same kill, ``ratio`` = failover/confchg
``amf_instantiate``         component process start -> its registration answered (median ms)
``amf_rss``                 executive RSS (kB) with 100 components registered, and without AMF (``rss_kb_no_amf``)

Executives run as real processes on 127.0.0.x (udpu, token 1000 ms, consensus 1200 ms).  The machine may
be shared: the figures are noisy; compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from aisexec.localcluster import LocalCluster  # noqa: E402
from bench.hostinfo import host_fields  # noqa: E402
from bench.procstat import rss_kb as _rss_kb  # noqa: E402
from openais import amf  # noqa: E402
from tests.amf_components.confgen import multi_conf  # noqa: E402

COMP = str(ROOT / "tests" / "amf_components" / "comp.py")
CPG_CLIENT = str(HERE / "cpg_client.py")
HUB = str(ROOT / "tests" / "amf_components" / "hub.py")
TOKEN, CONSENSUS = 1000, 1200


def _row(test: str, **fields: object) -> dict:
    row = {"impl": "openais-py", **host_fields(), "test": test, "nodes": 3, "transport": "udpu", "token_ms": TOKEN,
           "consensus_ms": CONSENSUS}
    row.update(fields)
    return row


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    """A 3-node cluster with a 2N group (connection-loss failover) and a 2N group with health checks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.events = root / "events.jsonl"
        fo = "saAmfCompRecoveryOnError = component_failover"
        groups = [dict(name="fo", model="2n", sus=2, sis=1, comp_extra=fo),
                  dict(name="hc", model="2n", sus=2, sis=1, comp_extra=fo, env={"AMF_TEST_HC": "amf"})]
        conf = root / "amf.conf"
        conf.write_text(multi_conf(groups, command=sys.executable, argv=COMP,
                                   env={"AMF_TEST_EVENTS": str(self.events), "PYTHONPATH": str(ROOT)},
                                   node_extra="saAmfNodeSuFailoverMax = 100000"))
        self.cluster = LocalCluster(root, 3, sections={"amf": {"mode": "enabled"}}, token=TOKEN,
                                    consensus=CONSENSUS, env={"OPENAIS_AMF_CONFIG_FILE": str(conf)})
        self.offset = 0

    def state(self, index: int) -> dict:
        """cluster_state() of node ``index``."""
        with amf.initialize(path=str(self.cluster.nodes[index - 1].socket)) as h:
            return h.cluster_state()

    def roles(self, g: str, index: int) -> dict[str, str]:
        """SU -> HA state of SG ``g``'s SI."""
        doc = self.state(index)
        si = next(s for s in doc["sis"] if s["name"] == f"safSi={g}-si1,safApp=app")
        return {a["su"].split(",")[0][6:]: a["ha_state"] for a in si["assignments"]}

    def wait(self, pred, what: str, timeout: float = 60.0):
        """Poll ``pred`` until true (RuntimeError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                got = pred()
                if got:
                    return got
            time.sleep(0.05)
        raise RuntimeError(f"timed out: {what}")

    def new_events(self) -> list[dict]:
        """Component events appended since the last call."""
        data = self.events.read_bytes() if self.events.exists() else b""
        chunk, self.offset = data[self.offset:], len(data)
        return [json.loads(line) for line in chunk.decode().splitlines() if line.strip()]

    def stable(self, g: str, index: int) -> dict[str, str]:
        """Wait until SG ``g`` has an ACTIVE and a STANDBY; return its roles."""
        return self.wait(lambda: (r := self.roles(g, index)) and sorted(r.values()) == ["ACTIVE", "STANDBY"] and r,
                         f"{g} ACTIVE+STANDBY")

    def pid(self, g: str, su: str, index: int) -> int:
        """Registered pid of the component of ``su`` in SG ``g``."""
        return next(c["pid"] for c in self.state(index)["components"] if c["name"] == f"safComp=c1,safSu={su},"
                    f"safSg={g},safApp=app")

    def await_active(self, g: str, su: str, since: float, timeout: float = 30.0) -> float:
        """Time (epoch s) at which ``su`` of SG ``g`` answered csi_set(ACTIVE), after ``since``."""
        comp = f"safComp=c1,safSu={su},safSg={g},safApp=app"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.new_events():
                if e["event"] == "csi_set" and e["comp"] == comp and e["ha"] == "ACTIVE" and e["t"] >= since:
                    return e["t"]
            time.sleep(0.005)
        raise RuntimeError(f"{comp} never became ACTIVE")


def component_failovers(b: Bench, kills: int) -> list[float]:
    """SIGKILL the ACTIVE component ``kills`` times; ms until the standby answered ACTIVE."""
    out = []
    for _ in range(kills):
        roles = b.stable("fo", 1)
        active = next(u for u, h in roles.items() if h == "ACTIVE")
        standby = next(u for u, h in roles.items() if h == "STANDBY")
        pid = b.pid("fo", active, 1)
        b.new_events()
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        out.append((b.await_active("fo", standby, t0) - t0) * 1000)
    return out


def healthcheck_failovers(b: Bench, reps: int) -> list[float]:
    """Hang the ACTIVE's health check ``reps`` times; ms until the standby answered ACTIVE."""
    out = []
    for _ in range(reps):
        roles = b.stable("hc", 1)
        active = next(u for u, h in roles.items() if h == "ACTIVE")
        standby = next(u for u, h in roles.items() if h == "STANDBY")
        pid = b.pid("hc", active, 1)
        b.new_events()
        t0 = time.time()
        Path(f"{b.events}.hang.{pid}").touch()
        out.append((b.await_active("hc", standby, t0) - t0) * 1000)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return out


def node_failovers(b: Bench, reps: int) -> list[tuple[float, float | None]]:
    """SIGKILL the executive of the ACTIVE ``reps`` times; (AMF failover ms, CPG NODEDOWN ms)."""
    out = []
    for _ in range(reps):
        roles = b.stable("fo", 3)
        active = next(u for u, h in roles.items() if h == "ACTIVE")
        standby = next(u for u, h in roles.items() if h == "STANDBY")
        victim = int(active[2:])  # su1 on node 1, su2 on node 2
        watchers = [subprocess.Popen([sys.executable, CPG_CLIENT, "watch"], env=b.cluster.environ(i),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in (3, victim)]
        for w in watchers:
            w.stdout.readline()  # type: ignore[union-attr]  # joined
        watcher = watchers[0]
        time.sleep(1.0)
        b.new_events()
        t0, m0 = time.time(), time.monotonic()
        b.cluster.kill(victim, signal.SIGKILL)
        amf_ms = (b.await_active("fo", standby, t0) - t0) * 1000
        cpg_ms = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and cpg_ms is None:
            line = watcher.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            event = json.loads(line)
            if any(n == victim for n, _why in event.get("left", [])):
                cpg_ms = (event["t"] - m0) * 1000
        for w in watchers:
            w.kill()
            w.wait()
        out.append((amf_ms, cpg_ms))
        b.cluster.start(victim)
        b.wait(lambda su=active: b.roles("fo", 3).get(su) == "STANDBY", "victim back as standby")
    return out


def instantiate_times(b: Bench) -> list[float]:
    """ms from each component process's start to its registration."""
    ticks = os.sysconf("SC_CLK_TCK")
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime"))
    out = []
    for e in [json.loads(x) for x in b.events.read_text().splitlines() if x.strip()]:
        if e["event"] != "registered" or "start" not in e:
            continue
        start = btime + e["start"] / ticks
        out.append((e["t"] - start) * 1000)
    return out


def cpg_latency(b: Bench) -> float:
    """CPG's 64-byte mcast-to-delivery median latency (us) in the same cluster."""
    out = subprocess.run([sys.executable, CPG_CLIENT, "latency", "64", "500", "1"], env=b.cluster.environ(1),
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_us"]


def rss_with_components(root: Path, count: int = 100) -> tuple[int, int]:
    """RSS of a one-node executive with ``count`` registered components, and of one without AMF."""
    queue = root / "rss-queue"
    queue.write_text("")
    argv = f'-c "echo \\"$SA_AMF_COMPONENT_NAME\\" >> {queue}"'
    conf = root / "rss-amf.conf"
    conf.write_text(multi_conf([dict(name="many", model="noredundancy", sus=count, sis=count,
                                     capability="x_active")], nodes=1, command="/bin/sh", argv=argv))
    results = []
    for mode in ("enabled", "disabled"):
        with LocalCluster(root / f"rss-{mode}", 1, sections={"amf": {"mode": mode}},
                          env={"OPENAIS_AMF_CONFIG_FILE": str(conf)}) as c:
            proc = c.start(1)
            c.wait_members([1], [1], timeout=60)
            hub = None
            if mode == "enabled":
                hub = subprocess.Popen([sys.executable, HUB, str(queue)], env=c.environ(1))
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    with amf.initialize(path=str(c.nodes[0].socket)) as h:
                        doc = h.cluster_state()
                    if sum(1 for x in doc["components"] if x["registered"]) == count and all(
                            s["assignment_state"] != "UNASSIGNED" for s in doc["sis"]):
                        break
                    time.sleep(0.5)
                else:
                    raise RuntimeError("100 components did not come up")
            time.sleep(1.0)
            results.append(_rss_kb(proc.pid))
            if hub is not None:
                hub.kill()
                hub.wait()
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    """Run the AMF benchmark; print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--hc", type=int, default=5)
    parser.add_argument("--node-kills", type=int, default=3)
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="amf-bench-") as tmp:
        root = Path(tmp)
        b = Bench(root)
        with b.cluster:
            b.cluster.start_all()
            b.cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
            b.stable("fo", 1)
            b.stable("hc", 1)
            cpg_us = cpg_latency(b)
            comp = component_failovers(b, args.kills)
            med = statistics.median(comp)
            print(json.dumps(_row("amf_component_failover", kills=len(comp), median_ms=round(med, 1),
                                  p99_ms=round(_pct(comp, 0.99), 1), max_ms=round(max(comp), 1),
                                  cpg_median_us=round(cpg_us, 1), ratio=round(med * 1000 / cpg_us, 1))), flush=True)
            hc = healthcheck_failovers(b, args.hc)
            print(json.dumps(_row("amf_healthcheck_failover", reps=len(hc), median_ms=round(statistics.median(hc), 1),
                                  p99_ms=round(_pct(hc, 0.99), 1), period_ms=300, max_duration_ms=500)), flush=True)
            inst = instantiate_times(b)
            if inst:
                print(json.dumps(_row("amf_instantiate", count=len(inst), median_ms=round(statistics.median(inst), 1),
                                      p99_ms=round(_pct(inst, 0.99), 1))), flush=True)
            nodes = node_failovers(b, args.node_kills)
            amf_ms = [a for a, _ in nodes]
            cpg_ms = [c for _, c in nodes if c is not None]
            med = statistics.median(amf_ms)
            cmed = statistics.median(cpg_ms) if cpg_ms else None
            print(json.dumps(_row("amf_node_failover", reps=len(nodes), median_ms=round(med, 1),
                                  max_ms=round(max(amf_ms), 1), cpg_confchg_ms=cmed and round(cmed, 1),
                                  ratio=cmed and round(med / cmed, 3),
                                  target_ms=TOKEN + CONSENSUS + 200)), flush=True)
        if not args.no_rss:
            with_amf, without = rss_with_components(root)
            print(json.dumps(_row("amf_rss", nodes=1, components=100, rss_kb=with_amf, rss_kb_no_amf=without,
                                  ratio=round(with_amf / without, 2))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
