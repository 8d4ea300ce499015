"""CKPT benchmark: JSON lines like bench/run.py, with CPG measured in the same run for ratios.

    python bench/ckpt.py                  # 1 and 3 nodes, every size, both update modes, sync of 100 MB
    python bench/ckpt.py --quick          # 1 s per point, 3 nodes, sync of 20 MB
    python bench/ckpt.py --nodes 3 --sync-mb 100 --seconds 2

Rows (``test``):

``write``     writes/s and MB/s by section size (64 B, 1 KiB, 16 KiB, 64 KiB) for WR_ALL_REPLICAS and
              WR_ACTIVE_REPLICA; ``--writers`` handles write concurrently (each call is synchronous: it
              returns once applied), ``cpg_msgs_per_s`` is CPG ``mcast`` at the same size in the same
              cluster and ``ratio`` writes/s over it
``read``      median and p99 of a local 64-byte read, with a CPG ``membership`` round trip of the same
              process (``cpg_median_us``) and ``ratio`` of the medians
``sync``      seconds from restarting node 3 until its replica holds a checkpoint of ``--sync-mb`` MB
              (``seconds_from_join``: from its first 3-node ring), once without and once with a CPG sender
              on node 1; with it, the sender's deliveries per second before the restart
              (``cpg_before_msgs_per_s``) and between the join and the replica's completion
              (``cpg_during_sync_msgs_per_s``), the longest stretch of that window without a delivery
              (``cpg_during_sync_longest_gap_s``) and the lowest rate of one 0.1 s bucket in it
``rss``       RSS of each executive after the sync, and its peak (``VmHWM``: node 3 restarted for the last
              sync, so its peak is that sync's), above its idle RSS, against the checkpoint's size

The machine running this may be shared: the figures are noisy; compare ratios.
The script is also its own client (``python bench/ckpt.py client MODE ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aisexec.localcluster import LocalCluster  # noqa: E402
from bench.hostinfo import host_fields  # noqa: E402
from bench.procstat import rss_kb as _rss_kb  # noqa: E402

SIZES = (64, 1024, 16 * 1024, 64 * 1024)
CPG_CLIENT = str(HERE / "cpg_client.py")


# -- the client side ---------------------------------------------------------------------------------


def _retry(fn, *args, **kwargs):
    import openais

    for _ in range(2000):
        try:
            return fn(*args, **kwargs)
        except openais.TryAgain:
            time.sleep(0.002)
    raise RuntimeError("TryAgain for too long")


def client_write(mode: str, size: int, seconds: float, writers: int) -> dict:
    """``writers`` handles writing sections of ``size`` bytes for ``seconds``; writes/s and MB/s."""
    import openais
    from openais import ckpt

    flags = ckpt.WR_ALL_REPLICAS if mode == "all" else ckpt.WR_ACTIVE_REPLICA
    attrs = ckpt.CreationAttributes(creation_flags=flags, checkpoint_size=writers * size, max_sections=writers + 1,
                                    max_section_size=size, max_section_id_size=8)
    name = f"bench-{mode}-{size}-{os.getpid()}"
    rwc = ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE | ckpt.CHECKPOINT_CREATE
    counts = [0] * writers
    payload = b"w" * size
    ready = threading.Barrier(writers + 1)
    go = threading.Event()
    stop = [0.0]

    def run(i: int) -> None:
        with ckpt.initialize() as h:
            c = _retry(h.checkpoint_open, name, attrs, rwc, timeout=10)
            sid = str(i).encode()
            _retry(c.section_create, ckpt.SectionCreationAttributes(sid))
            vec = [ckpt.IOVector(sid, payload)]
            ready.wait()
            go.wait()
            while time.monotonic() < stop[0]:
                try:
                    c.write(vec)
                    counts[i] += 1
                except openais.TryAgain:
                    time.sleep(0.001)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.monotonic()
    stop[0] = t0 + seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = sum(counts)
    return {"writes": total, "seconds": elapsed, "writes_per_s": total / elapsed,
            "mb_per_s": total * size / elapsed / 1e6}


def client_read(count: int) -> dict:
    """Median/p99 of a local 64-byte read, and of a CPG membership round trip, in one process."""
    from openais import ckpt, cpg

    attrs = ckpt.CreationAttributes(checkpoint_size=64, max_section_size=64)
    rwc = ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE | ckpt.CHECKPOINT_CREATE
    with ckpt.initialize() as h, cpg.initialize() as g:
        c = _retry(h.checkpoint_open, f"bench-read-{os.getpid()}", attrs, rwc, timeout=10)
        _retry(c.write, [ckpt.IOVector(b"", b"r" * 64)])
        vec = [ckpt.IOVector(b"")]
        g.join("bench-read")
        samples, cpg_samples = [], []
        for _ in range(count):
            t0 = time.perf_counter()
            c.read(vec)
            t1 = time.perf_counter()
            g.membership("bench-read")
            t2 = time.perf_counter()
            samples.append((t1 - t0) * 1e6)
            cpg_samples.append((t2 - t1) * 1e6)
    samples.sort()
    cpg_samples.sort()
    p99 = int(len(samples) * 0.99) - 1
    return {"median_us": statistics.median(samples), "p99_us": samples[p99],
            "cpg_median_us": statistics.median(cpg_samples), "cpg_p99_us": cpg_samples[p99]}


def client_fill(megabytes: int) -> dict:
    """Create ``bench-sync`` holding ``megabytes`` MB (1 MiB writes into 4 MiB sections)."""
    from openais import ckpt

    total = megabytes << 20
    section = 4 << 20
    attrs = ckpt.CreationAttributes(checkpoint_size=total, max_sections=max(1, total // section),
                                    max_section_size=section, max_section_id_size=8)
    rwc = ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE | ckpt.CHECKPOINT_CREATE
    piece = os.urandom(1 << 20)
    t0 = time.monotonic()
    with ckpt.initialize() as h:
        c = _retry(h.checkpoint_open, "bench-sync", attrs, rwc, timeout=30)
        for s in range(total // section):
            sid = str(s).encode()
            _retry(c.section_create, ckpt.SectionCreationAttributes(sid))
            for off in range(0, section, 1 << 20):
                _retry(c.write, [ckpt.IOVector(sid, piece, offset=off)])
    return {"seconds": time.monotonic() - t0, "bytes": total}


#: Width of the buckets in which the CPG client counts its deliveries (seconds).
CPG_BUCKET = 0.1


def client_cpg_count(seconds: float) -> dict:
    """Multicast 1 KiB CPG messages for ``seconds``; count own deliveries (the ring serving CPG).

    Deliveries are also counted per :data:`CPG_BUCKET` of ``time.monotonic()``
    (the clock every process of the host shares), so the orchestrator can give
    the CPG rate inside the sync window and its longest gap.
    """
    import openais
    from openais import cpg

    me = os.getpid()
    got = [0]
    start = time.monotonic()
    buckets: dict[int, int] = {}
    try_again = [0]

    def deliver(group, nodeid, pid, data):
        if pid == me:
            got[0] += 1
            b = int((time.monotonic() - start) / CPG_BUCKET)
            buckets[b] = buckets.get(b, 0) + 1

    def pump() -> None:
        try:
            h.dispatch(openais.DISPATCH_ALL)
        except openais.TryAgain:  # a pipelined mcast refused earlier (the ring was full)
            try_again[0] += 1

    import signal

    stop_now = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop_now.__setitem__(0, True))
    with cpg.initialize(deliver=deliver) as h:
        h.join("bench-during-sync")
        stop = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < stop and not stop_now[0]:
            try:
                h.mcast(b"c" * 1024)
                sent += 1
            except openais.TryAgain:
                try_again[0] += 1
                select.select([h], [], [], 0.005)
            pump()
        drain = time.monotonic() + 10
        while got[0] < sent - try_again[0] and time.monotonic() < drain:
            select.select([h], [], [], 0.05)
            pump()
    return {"sent": sent, "delivered": got[0], "try_again": try_again[0], "start": start, "bucket": CPG_BUCKET,
            "buckets": [buckets.get(i, 0) for i in range(max(buckets, default=-1) + 1)]}


def cpg_window(cpg: dict, t_from: float, t_to: float) -> dict:
    """CPG deliveries inside [t_from, t_to] (monotonic): msgs/s, and the longest run of empty buckets (s)."""
    width = cpg["bucket"]
    first = max(0, int((t_from - cpg["start"]) / width))
    last = int((t_to - cpg["start"]) / width)
    counts = [cpg["buckets"][i] if i < len(cpg["buckets"]) else 0 for i in range(first, last + 1)]
    gap = run = 0
    for n in counts:
        run = run + 1 if n == 0 else 0
        gap = max(gap, run)
    span = max(t_to - t_from, 1e-9)
    return {"msgs": sum(counts), "msgs_per_s": round(sum(counts) / span), "longest_gap_s": round(gap * width, 2),
            "min_per_s": round(min(counts, default=0) / width)}


def client_wait_sync(name: str, expected: int, members: int) -> dict:
    """On the joining node: monotonic times when it is in a ring of ``members`` and when its replica is complete."""
    import openais
    from openais import cfg, ckpt

    joined = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with cfg.initialize() as c, ckpt.initialize() as h:
                while time.monotonic() < deadline:
                    if joined is None and len(c.ring_status().members) >= members:
                        joined = time.monotonic()
                    doc = h.listing()
                    if any(k["name"] == name and k["size"] == expected for k in doc["checkpoints"]):
                        return {"joined": joined, "done": time.monotonic()}
                    time.sleep(0.02)
        except openais.AisError:
            time.sleep(0.05)  # the executive is not up yet
    raise SystemExit("the replica never completed")


def client_main(argv: list[str]) -> int:
    """``client MODE ARGS``: run one measurement and print its JSON."""
    mode = argv[0]
    if mode == "write":
        result = client_write(argv[1], int(argv[2]), float(argv[3]), int(argv[4]))
    elif mode == "read":
        result = client_read(int(argv[1]))
    elif mode == "fill":
        result = client_fill(int(argv[1]))
    elif mode == "cpg":
        result = client_cpg_count(float(argv[1]))
    elif mode == "waitsync":
        result = client_wait_sync(argv[1], int(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown client mode {mode}")
    print(json.dumps(result), flush=True)
    return 0


# -- the orchestrator ------------------------------------------------------------------------------------


def _run(cluster: LocalCluster, index: int, *args: str, script: str = __file__, timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, script, *args], env=cluster.environ(index), capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: The AEAD the executives seal with, as node 1 reports it at start-up (set by :func:`run_nodes`).
_CRYPTO = ["unknown"]


def _row(**fields: object) -> dict:
    row = {"impl": "openais-py", "service": "ckpt", "transport": "udpu", "crypto": _CRYPTO[0], **host_fields()}
    row.update(fields)
    return row


def _replica_bytes(cluster: LocalCluster, index: int, name: str) -> int:
    out = subprocess.run([sys.executable, "-m", "openais.tools.ckpttool", "--json"], env=cluster.environ(index),
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return -1
    for c in json.loads(out.stdout)["checkpoints"]:
        if c["name"] == name:
            return c["size"]
    return 0


def run_nodes(nodes: int, seconds: float, writers: int, sync_mb: int, emit, tests: set[str]) -> None:
    """Every measurement on a cluster of ``nodes``."""
    with tempfile.TemporaryDirectory(prefix="ckptbench-") as tmp, \
            LocalCluster(Path(tmp), nodes, transport="udpu", secauth=True) as cluster:
        cluster.start_all()
        everyone = list(range(1, nodes + 1))
        cluster.wait_members(everyone, everyone, timeout=60)
        found = re.search(r"Initializing transmit/receive security: (\S+)", cluster.log(1))
        _CRYPTO[0] = found.group(1) if found else "unknown"
        idle = {i: _rss_kb(p.pid) for i, p in sorted(cluster.procs.items())}
        for size in SIZES if "write" in tests else ():
            cpg = _run(cluster, 1, "send", str(size), str(seconds), "1", script=CPG_CLIENT)
            for mode in ("all", "active"):
                w = _run(cluster, 1, "client", "write", mode, str(size), str(seconds), str(writers))
                emit(_row(nodes=nodes, test="write", mode=mode, size=size, writers=writers,
                          writes_per_s=round(w["writes_per_s"]), mb_per_s=round(w["mb_per_s"], 2),
                          cpg_msgs_per_s=round(cpg["msgs_per_s"]),
                          ratio=round(w["writes_per_s"] / max(cpg["msgs_per_s"], 1e-9), 3)))
        if "read" in tests:
            r = _run(cluster, 1, "client", "read", "2000")
            emit(_row(nodes=nodes, test="read", size=64, median_us=round(r["median_us"], 1),
                      p99_us=round(r["p99_us"], 1), cpg_median_us=round(r["cpg_median_us"], 1),
                      cpg_p99_us=round(r["cpg_p99_us"], 1), ratio=round(r["median_us"] / r["cpg_median_us"], 3)))
        if nodes < 3 or not sync_mb or "sync" not in tests:
            return
        fill = _run(cluster, 1, "client", "fill", str(sync_mb), timeout=900)
        emit(_row(nodes=nodes, test="fill", megabytes=sync_mb, seconds=round(fill["seconds"], 2),
                  mb_per_s=round(sync_mb * 1.048576 / fill["seconds"], 2)))
        expected = sync_mb << 20
        for with_cpg in (False, True):
            cluster.kill(3)
            cluster.wait_members([1, 2], [1, 2], timeout=60)
            cpg_proc = None
            if with_cpg:
                cpg_proc = subprocess.Popen([sys.executable, __file__, "client", "cpg", "600"],
                                            env=cluster.environ(1), stdout=subprocess.PIPE, text=True)
                time.sleep(1.0)
            t0 = time.monotonic()
            cluster.start(3)
            waited = _run(cluster, 3, "client", "waitsync", "bench-sync", str(expected), "3", timeout=600)
            cpg_out = None
            if cpg_proc is not None:
                cpg_proc.terminate()
                cpg_out = json.loads(cpg_proc.communicate(timeout=60)[0].strip().splitlines()[-1])
            joined = waited["joined"]
            row = _row(nodes=nodes, test="sync", megabytes=sync_mb, cpg_traffic=with_cpg,
                       seconds_from_start=round(waited["done"] - t0, 2),
                       seconds_from_join=None if joined is None else round(waited["done"] - joined, 2))
            if cpg_out is not None:
                row.update(cpg_sent=cpg_out["sent"], cpg_delivered=cpg_out["delivered"],
                           cpg_try_again=cpg_out["try_again"])
                before = cpg_window(cpg_out, cpg_out["start"] + 0.2, t0)
                row["cpg_before_msgs_per_s"] = before["msgs_per_s"]
                if joined is not None:
                    during = cpg_window(cpg_out, joined, waited["done"])
                    row.update(cpg_during_sync_msgs_per_s=during["msgs_per_s"],
                               cpg_during_sync_longest_gap_s=during["longest_gap_s"],
                               cpg_during_sync_min_per_s=during["min_per_s"])
            emit(row)
        base = min(idle.values())
        for i, proc in sorted(cluster.procs.items()):
            rss, peak = _rss_kb(proc.pid), _rss_kb(proc.pid, "VmHWM")
            emit(_row(nodes=nodes, test="rss", node=i, rss_kb=rss, peak_rss_kb=peak, idle_rss_kb=idle.get(i, base),
                      checkpoint_kb=expected >> 10, ratio=round((rss - idle.get(i, base)) / (expected >> 10), 3),
                      peak_ratio=round((peak - idle.get(i, base)) / (expected >> 10), 3)))


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print one JSON line per measurement."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "client":
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s per point, 3 nodes, a 20 MB sync")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--nodes", type=int, choices=(1, 3))
    parser.add_argument("--writers", type=int, default=32, help="concurrent writer handles (one process)")
    parser.add_argument("--sync-mb", type=int, default=100)
    parser.add_argument("--tests", default="write,read,sync", help="comma list of write, read, sync")
    args = parser.parse_args(argv)
    nodes = [args.nodes] if args.nodes else [1, 3]
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
        args.sync_mb = min(args.sync_mb, 20)
        nodes = [args.nodes or 3]

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    for n in nodes:
        run_nodes(n, args.seconds, args.writers, args.sync_mb, emit, set(args.tests.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
