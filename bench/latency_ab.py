"""CPG latency alone, for A/B runs across trees (bench/run.py --quick's latency row, plus counters).

Run from the root of the tree under test, with that tree's interpreter, so an older commit
can be measured with this script:

    cd /work/wt-base && flock /tmp/bench.lock .venv/bin/python /work/wt-lat/bench/latency_ab.py base 3
    flock /tmp/bench.lock .venv/bin/python bench/latency_ab.py main-l0 3 token_linger=0

Like ``bench/run.py --quick`` (3 nodes, udpu, secauth off, receivers on nodes 2 and 3), it first
runs the same throughput warm-up (1 s per size, ``warm=0`` skips it), then RUNS latency runs of
2000 x 64 B from node 1 (``bench/cpg_client.py latency``).  Further ``KEY=INT`` arguments are
totem keys.  One JSON line per run, then a summary line: the executives' CPU per message and per
token visit over the latency runs, and each node's totem counters for them (token visits,
lingers, unanswered lingers, time lingered), read through the CFG library.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))
sys.path.insert(0, str(Path.cwd() / "bench"))
# the tree in the working directory: its bench/run.py (same client and warm-up) and its executive
import run as benchrun
from procstat import cpu_s  # this script's own directory (the tree measured may predate it)

from aisexec.localcluster import LocalCluster

COUNTERS = ("tokens_received", "messages_originated", "token_lingers", "token_lingers_unanswered",
            "token_linger_us", "hold_cancels_sent", "token_retransmits")
_PROBE = ("import json\nfrom openais import cfg\nwith cfg.initialize() as h:\n"
          "    st = h.ring_status().stats or {}\n    print(json.dumps(st.get('totem', st)))\n")


def _counters(cluster: LocalCluster) -> dict[int, dict]:
    """Each node's totem counters (empty when the CFG call fails)."""
    out = {}
    for i in cluster.procs:
        done = cluster.client(i, _PROBE)
        try:
            out[i] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            out[i] = {}
    return out


def _cpu_s(cluster: LocalCluster) -> float:
    """User + system CPU seconds of all executives so far."""
    return sum(cpu_s(proc.pid) for proc in cluster.procs.values())


def main(argv: list[str]) -> int:
    """``LABEL RUNS [KEY=INT ...]``: see the module docstring."""
    label, runs = argv[0], int(argv[1])
    totem = {k: int(v) for k, v in (a.split("=", 1) for a in argv[2:])}
    warm = totem.pop("warm", 1)
    count = 2000
    with tempfile.TemporaryDirectory(prefix="aislat-") as tmp, \
            LocalCluster(Path(tmp), 3, transport="udpu", secauth=False, token=1000,
                         extra_totem={"netmtu": 1500, **totem}) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        recv = [benchrun._spawn(cluster, i, "receive") for i in (2, 3)]
        if warm:
            for size in benchrun.SIZES:
                benchrun._client(cluster, 1, "send", str(size), "1.0", "3")
        before, cpu0 = _counters(cluster), _cpu_s(cluster)
        for r in range(runs):
            lat = benchrun._client(cluster, 1, "latency", "64", str(count), "3")
            print(json.dumps({"side": label, "run": r + 1, "warm": warm, **totem, "test": "latency", "size": 64,
                              "median_us": round(lat["median_us"], 1), "p99_us": round(lat["p99_us"], 1)}),
                  flush=True)
        cpu = _cpu_s(cluster) - cpu0
        after = _counters(cluster)
        delta = {i: {k: after[i].get(k, 0) - before[i].get(k, 0) for k in COUNTERS} for i in after}
        visits = sum(d["tokens_received"] for d in delta.values())
        print(json.dumps({"side": label, "summary": True, "warm": warm, **totem, "exec_cpu_s": round(cpu, 2),
                          "exec_cpu_us_per_msg": round(cpu * 1e6 / (count * runs), 1),
                          "us_per_visit": round(cpu * 1e6 / max(visits, 1), 1), "counters": delta}), flush=True)
        for proc in recv:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
