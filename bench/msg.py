"""MSG benchmarks on 3 real executives, with CPG measured in the same run for the ratios.

    python bench/msg.py                  # sizes 64 B .. 1 MiB, 2 s each
    python bench/msg.py --seconds 1 --sizes 64,65536
    python bench/msg.py --reps 3         # CPG beside each repetition; summary lines with median ratios
    python bench/msg.py --tests send_receive --reps 4   # only the request/reply round trip

Prints JSON lines (one per measurement) like bench/run.py:

- ``test=send_throughput``: messages stored per second in a queue opened on
  node 1 (``target=local``, the sender's node) or node 2 (``remote``), sent
  with ``message_send_async`` (no ack) from node 1 for the given seconds (or
  16 MiB), closed by a sync ``message_send`` (stored only after all the
  others); ``cpg_msgs_per_s`` is CPG ``mcast`` at the same size in the same
  cluster (bench/cpg_client.py, own deliveries) and ``ratio_vs_cpg`` the
  quotient.  ``exec_cpu_us_per_msg`` is the CPU (user + system, from
  /proc/<pid>/stat) the three executives spent per stored message over the
  run, ``cpg_exec_cpu_us_per_msg`` the same for CPG's run, and
  ``cpu_ratio_vs_cpg`` their quotient (steadier than rates on a shared host).
- ``test=send_get_throughput``: the same with a reader of 4 threads taking
  every message out (``msgs_per_s`` = messages got per second).
- ``test=send_receive``: round trip of a 64-byte ``message_send_receive``
  from node 1 to a queue on node 2 whose reader replies (median, p99 in us),
  with CPG's mcast-to-own-delivery latency and the ratio; ``exec_cpu_us_per_op``
  and ``cpg_exec_cpu_us_per_op``: executive CPU per round trip / per CPG message.
- ``test=rss_full_queue``: resident memory of node 2's executive idle and
  with one 32 MiB queue filled to ``QueueFull`` by 64 KiB messages.

The client side runs as subprocesses of this same file (``--client MODE``).
The machine may be shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree's bench package
from bench.hostinfo import host_fields
from bench.procstat import cpu_s
from bench.procstat import rss_kb as _rss_kb

HERE = Path(__file__).resolve().parent
SIZES = (64, 1024, 16 * 1024, 64 * 1024, 1 << 20)


# -- clients (run in subprocesses) -----------------------------------------------------------------


def client_drain(name: str, idle: float, threads: int = 4) -> None:
    """Open ``name`` here; ``threads`` getters take messages until none came for ``idle`` s; print totes."""
    import openais
    from openais import msg

    with msg.initialize() as h:
        attrs = msg.QueueCreationAttributes(size=(16 << 20, 0, 0, 16 << 20), retention_time=0.0)
        q = h.queue_open(name, attrs, msg.QUEUE_CREATE, timeout=30.0)
        print(json.dumps({"ready": True}), flush=True)
        lock = threading.Lock()
        totals = {"count": 0, "bytes": 0, "last": 0.0}
        started = threading.Event()

        def getter() -> None:
            while True:
                try:
                    got = q.message_get(timeout=idle if started.is_set() else 60.0)
                except openais.Timeout:
                    return
                started.set()
                with lock:
                    totals["count"] += 1
                    totals["bytes"] += len(got.message.data)
                    totals["last"] = time.monotonic()

        workers = [threading.Thread(target=getter) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(json.dumps(totals), flush=True)


def client_send(name: str, size: int, seconds: float) -> None:
    """Send ``size``-byte messages to ``name`` with message_send_async for ``seconds``."""
    import openais
    from openais import msg

    with msg.initialize() as h:
        message = msg.Message(data=b"m" * size)
        sent = 0
        first = time.monotonic()
        stop = first + seconds
        while time.monotonic() < stop:
            try:
                h.message_send_async(sent, name, message)
                sent += 1
            except (openais.TryAgain, openais.QueueFull):
                time.sleep(0.001)
        print(json.dumps({"sent": sent, "first": first}), flush=True)


def client_store(name: str, size: int, seconds: float) -> None:
    """Send async to ``name`` (nobody reads) for ``seconds`` or until 16 MiB are stored; a sync send as the
    barrier (one sender's messages are stored in order); print the rate of stored messages."""
    import openais
    from openais import msg

    budget = (16 << 20) // (size + msg.METADATA_SIZE) - 1  # the holder's 16 MiB area, the barrier included
    with msg.initialize() as h:
        message = msg.Message(data=b"s" * size)
        sent = 0
        first = time.monotonic()
        stop = first + seconds
        while time.monotonic() < stop and sent < budget:
            try:
                h.message_send_async(sent, name, message)
                sent += 1
            except openais.TryAgain:
                time.sleep(0.0005)
        while True:  # the barrier: stored after every earlier send of this handle
            try:
                h.message_send(name, message, timeout=120.0)
                break
            except openais.TryAgain:  # the executive is backed up: retry, as the contract says
                time.sleep(0.005)
        elapsed = time.monotonic() - first
        print(json.dumps({"stored": sent + 1, "seconds": elapsed}), flush=True)


def client_hold(name: str) -> None:
    """Open a 32 MiB queue ``name`` here and keep it open until stdin closes."""
    from openais import msg

    with msg.initialize() as h:
        h.queue_open(name, msg.QueueCreationAttributes(size=(0, 0, 0, 16 << 20), retention_time=0.0),
                     msg.QUEUE_CREATE, timeout=30.0)
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.read()


def client_serve(name: str) -> None:
    """Open ``name`` and reply to every request until stdin closes."""
    import openais
    from openais import msg

    with msg.initialize() as h:
        q = h.queue_open(name, msg.QueueCreationAttributes(size=(1 << 20,) * 4), msg.QUEUE_CREATE, timeout=30.0)
        print(json.dumps({"ready": True}), flush=True)
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        while not stop.is_set():
            try:
                got = q.message_get(timeout=0.5)
            except openais.Timeout:
                continue
            h.message_reply(msg.Message(data=got.message.data), got.sender_id, timeout=10.0)


def client_rtt(name: str, count: int) -> None:
    """``count`` send_receive round trips of 64 bytes to ``name``."""
    from openais import msg

    samples = []
    with msg.initialize() as h:
        message = msg.Message(data=b"r" * 64)
        for _ in range(count):
            t0 = time.perf_counter()
            h.message_send_receive(name, message, timeout=10.0)
            samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    print(json.dumps({"median_us": statistics.median(samples), "p99_us": samples[int(len(samples) * 0.99) - 1]}))


def client_fill(name: str, size: int) -> None:
    """Open a 32 MiB queue and fill it with ``size``-byte messages until QueueFull; then wait for stdin."""
    import openais
    from openais import msg

    with msg.initialize() as h:
        q = h.queue_open(name, msg.QueueCreationAttributes(size=(8 << 20,) * 4), msg.QUEUE_CREATE, timeout=30.0)
        sent = 0
        for p in range(4):
            while True:
                try:
                    h.message_send(name, msg.Message(data=b"f" * size, priority=p), timeout=30.0)
                    sent += 1
                except openais.QueueFull:
                    break
                except openais.TryAgain:
                    time.sleep(0.01)
        print(json.dumps({"filled": sent, "status": [list(u) for u in h.queue_status_get(name).queue_usage]}),
              flush=True)
        sys.stdin.read()
        q.close()


# -- orchestration -----------------------------------------------------------------------------------


def _run(cluster, index: int, *args: str, timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, __file__, "--client", *args], env=cluster.environ(index),
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"client {args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spawn(cluster, index: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--client", *args], env=cluster.environ(index),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    if not line:
        proc.kill()
        raise RuntimeError(f"client {args} on node {index} did not start")
    return proc


def _cpu_s(cluster) -> float:
    """CPU seconds (user + system) the executives used so far: per-operation cost that a shared host's
    scheduling noise does not distort the way it does wall-clock rates."""
    return sum(cpu_s(proc.pid) for proc in cluster.procs.values())


def _per_op_us(cpu_before: float, cpu_after: float, ops: int) -> float | None:
    return round((cpu_after - cpu_before) / ops * 1e6, 1) if ops else None


def _cpg(cluster, size: int, seconds: float) -> tuple[float, float | None]:
    """CPG mcast rate at ``size`` and the executives' CPU per delivered message (us)."""
    before = _cpu_s(cluster)
    out = subprocess.run([sys.executable, str(HERE / "cpg_client.py"), "send", str(size), str(seconds), "1"],
                         env=cluster.environ(1), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"cpg client failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["msgs_per_s"], _per_op_us(before, _cpu_s(cluster), result["delivered"])


def _cpg_latency(cluster) -> tuple[float, float | None]:
    """CPG mcast-to-own-delivery median (us) and the executives' CPU per message (us)."""
    before = _cpu_s(cluster)
    out = subprocess.run([sys.executable, str(HERE / "cpg_client.py"), "latency", "64", "500", "1"],
                         env=cluster.environ(1), capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_us"], _per_op_us(before, _cpu_s(cluster), 500)


TESTS = ("throughput", "send_receive", "rss")


def bench(sizes: tuple[int, ...], seconds: float, reps: int = 1, tests: tuple[str, ...] = TESTS) -> list[dict]:
    """Every measurement of ``tests`` (see :data:`TESTS`) on one fresh 3-node cluster."""
    from aisexec.localcluster import LocalCluster

    rows: list[dict] = []
    base = {"impl": "openais-py", "service": "msg", "nodes": 3, "transport": "udpu", **host_fields()}
    with tempfile.TemporaryDirectory(prefix="aisbench-msg-") as tmp, \
            LocalCluster(Path(tmp), 3, transport="udpu", secauth=True) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        serial = 0
        for size, rep in ((size, rep) for size in sizes for rep in range(1, reps + 1) if "throughput" in tests):
            secs = seconds if size < (1 << 20) else max(seconds, 3.0)
            cpg_rate, cpg_cpu = _cpg(cluster, size, secs)  # measured beside each repetition: the machine may be shared
            base["rep"] = rep
            for target, node in (("local", 1), ("remote", 2)):
                serial += 1
                holder = _spawn(cluster, node, "hold", f"store{serial}")
                before = _cpu_s(cluster)
                stored = _run(cluster, 1, "store", f"store{serial}", str(size), str(secs))
                cpu = _per_op_us(before, _cpu_s(cluster), stored["stored"])
                holder.stdin.close()  # type: ignore[union-attr]
                holder.wait(timeout=60)
                rate = stored["stored"] / stored["seconds"]
                rows.append({**base, "test": "send_throughput", "target": target, "size": size,
                             "stored": stored["stored"], "msgs_per_s": round(rate),
                             "mb_per_s": round(rate * size / 1e6, 2), "cpg_msgs_per_s": round(cpg_rate),
                             "ratio_vs_cpg": round(rate / cpg_rate, 2) if cpg_rate else None,
                             "exec_cpu_us_per_msg": cpu, "cpg_exec_cpu_us_per_msg": cpg_cpu,
                             "cpu_ratio_vs_cpg": round(cpu / cpg_cpu, 2) if cpu and cpg_cpu else None})
                print(json.dumps(rows[-1]), flush=True)
                name = f"bench{serial}"
                drain = _spawn(cluster, node, "drain", name, "2.0")
                sent = _run(cluster, 1, "send", name, str(size), str(secs))
                out, _ = drain.communicate(timeout=120)
                got = json.loads(out.strip().splitlines()[-1])
                elapsed = max(got["last"] - sent["first"], 1e-9)
                rate = got["count"] / elapsed
                rows.append({**base, "test": "send_get_throughput", "target": target, "size": size,
                             "sent": sent["sent"], "got": got["count"], "msgs_per_s": round(rate),
                             "mb_per_s": round(got["bytes"] / elapsed / 1e6, 2), "cpg_msgs_per_s": round(cpg_rate),
                             "ratio_vs_cpg": round(rate / cpg_rate, 2) if cpg_rate else None})
                print(json.dumps(rows[-1]), flush=True)
        if "send_receive" in tests:
            _send_receive(cluster, base, rows, reps)
        base["rep"] = 1
        if "rss" not in tests:
            return _summaries(rows, base, reps)
        pid = cluster.procs[2].pid
        idle = _rss_kb(pid)
        filler = _spawn(cluster, 2, "fill", "full", str(64 * 1024))
        time.sleep(1.0)
        full = _rss_kb(pid)
        filler.stdin.close()  # type: ignore[union-attr]
        filler.wait(timeout=60)
        rows.append({**base, "test": "rss_full_queue", "queue_bytes": 32 << 20, "rss_idle_kb": idle,
                     "rss_full_kb": full, "rss_growth_kb": full - idle})
        print(json.dumps(rows[-1]), flush=True)
    return _summaries(rows, base, reps)


def _send_receive(cluster, base: dict, rows: list[dict], reps: int) -> None:
    """``reps`` times: CPG's latency, then 500 send_receive round trips from node 1 to a server on node 2."""
    server = _spawn(cluster, 2, "serve", "rpc")
    for rep in range(1, reps + 1):
        base["rep"] = rep
        cpg_lat, cpg_cpu = _cpg_latency(cluster)
        before = _cpu_s(cluster)
        rtt = _run(cluster, 1, "rtt", "rpc", "500")
        cpu = _per_op_us(before, _cpu_s(cluster), 500)
        rows.append({**base, "test": "send_receive", "size": 64, "median_us": round(rtt["median_us"], 1),
                     "p99_us": round(rtt["p99_us"], 1), "cpg_median_us": round(cpg_lat, 1),
                     "ratio_vs_cpg": round(rtt["median_us"] / cpg_lat, 2),
                     "exec_cpu_us_per_op": cpu, "cpg_exec_cpu_us_per_op": cpg_cpu,
                     "cpu_ratio_vs_cpg": round(cpu / cpg_cpu, 2) if cpu and cpg_cpu else None})
        print(json.dumps(rows[-1]), flush=True)
    server.stdin.close()  # type: ignore[union-attr]
    server.wait(timeout=30)


def _summaries(rows: list[dict], base: dict, reps: int) -> list[dict]:
    """With several repetitions, print one line per test, target and size with the median ratio."""
    if reps > 1:
        groups: dict[tuple, list[float]] = {}
        for row in rows:
            if row.get("ratio_vs_cpg") is not None:
                groups.setdefault((row["test"], row.get("target"), row["size"]), []).append(row["ratio_vs_cpg"])
        for (test, target, size), ratios in groups.items():
            print(json.dumps({**base, "rep": None, "test": f"{test}_summary", "target": target, "size": size,
                              "ratio_vs_cpg_median": statistics.median(ratios), "ratios": ratios}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--client``, one client role)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        sys.path.insert(0, str(HERE.parent))
        mode, *rest = argv[1:]
        if mode == "drain":
            client_drain(rest[0], float(rest[1]))
        elif mode == "send":
            client_send(rest[0], int(rest[1]), float(rest[2]))
        elif mode == "store":
            client_store(rest[0], int(rest[1]), float(rest[2]))
        elif mode == "hold":
            client_hold(rest[0])
        elif mode == "serve":
            client_serve(rest[0])
        elif mode == "rtt":
            client_rtt(rest[0], int(rest[1]))
        elif mode == "fill":
            client_fill(rest[0], int(rest[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput size")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated message sizes")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (CPG measured beside each); "
                                                           "with more than one, summary lines give median ratios")
    parser.add_argument("--tests", default=",".join(TESTS),
                        help=f"comma-separated tests to run, of {','.join(TESTS)} (default: all)")
    args = parser.parse_args(argv)
    tests = tuple(t for t in args.tests.split(",") if t)
    unknown = set(tests) - set(TESTS)
    if unknown:
        parser.error(f"unknown tests: {', '.join(sorted(unknown))}")
    bench(tuple(int(s) for s in args.sizes.split(",")), args.seconds, args.reps, tests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
