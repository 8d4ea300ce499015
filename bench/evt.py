"""EVT benchmark: publish throughput and publish-to-deliver latency, with CPG measured in the same run.

    python bench/evt.py                  # 3 nodes, 1 and 2 remote subscribers, 64 B .. 64 KiB, 3 s per size
    python bench/evt.py --quick          # 1 s per size
    python bench/evt.py --procs 1 --publishers 1   # one publishing thread only

Prints JSON lines.  ``test`` is ``throughput`` (``events_per_s``, ``mb_per_s``,
and ``cpg_msgs_per_s``/``ratio_vs_cpg`` for CPG ``mcast`` at the same size and
receiver count; ``exec_cpu_us_per_event`` and ``cpg_exec_cpu_us_per_msg``: each
executive's CPU time, nodes 1..3, per event and per CPG message, from
``/proc/<pid>/stat``: steadier than rates on a shared machine;
``clients_cpu_us_per_event`` and ``cpg_clients_cpu_us_per_msg``: the
publishers' CPU while they published (their own count, start-up left out)
and the CPG sender's (start-up included), then each subscriber's or
receiver's; ``total_cpu_us_per_event``/``cpg_total_cpu_us_per_msg``: all of
them, executives included: the machine's cost of one event, which bounds the
rate when the cores are busy; ``cpu_ratio_vs_cpg``, CPG's total over EVT's,
is the ``ratio_vs_cpg`` a CPU-bound machine allows, and scatters less),
``latency`` (a row per ``publish`` mode, ``wait`` and ``nowait`` as below:
``median_us``/``p99_us`` from ``publish`` to the publisher's own delivery,
``remote_median_us``/``remote_p99_us`` from ``publish`` to the delivery on
node 2, with CPG's mcast-to-own-delivery beside them; the EVT probes and
CPG's alternate in rounds, ``rounds_median_us`` and ``cpg_rounds_median_us``
the median of each) and
``rss`` (node 1's executive, idle and after the load).  Executives run as real
processes on 127.0.0.1..3 (udpu, crypto off), clients through the openais
library.  Every throughput figure is measured both ways, a row each
(``publish``): ``wait``, the contract's ``publish``, which returns only once
the local node has handled the event, so one publishing thread is bound by
one ring rotation per event: ``--procs P --publishers N`` runs P publishing
processes on node 1 of N threads each, every thread with its own handle
(``concurrency`` = P x N), and the size is also measured with one single
publishing thread (``single_events_per_s``); and ``nowait``, one thread
publishing with ``publish(data, wait=False)`` (pipelined, as CPG's
``mcast``; the run ends with ``flush``).  Subscribers count what they receive, and
lost-event notices, so a row also says whether the subscribers kept up.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aisexec.localcluster import LocalCluster  # noqa: E402
from bench.hostinfo import host_fields  # noqa: E402
from bench.procstat import cpu_s as _cpu_s  # noqa: E402
from bench.procstat import rss_kb as _rss_kb  # noqa: E402

SIZES = (64, 1024, 16 * 1024, 64 * 1024)
CHANNEL = "bench"
CPG_CLIENT = str(HERE / "cpg_client.py")
#: The latency probes: payload size, untimed warm-up per probe, alternating rounds and samples per round.
LATENCY_SIZE = 64
LATENCY_WARMUP = 100
LATENCY_ROUNDS = 5
LATENCY_SAMPLES = 400


# -- clients (run as ``bench/evt.py --client MODE ...`` against one node) ----------------------------------


def client_publish(size: int, seconds: float, publishers: int, wait: bool = True) -> dict:
    """``publishers`` threads publish events of ``size`` bytes for ``seconds``; count what returned.

    ``wait=False``: pipelined publishes (``publish(data, wait=False)``); each thread flushes at
    the end, so the run lasts until the local node has handled every event counted.
    """
    import openais
    from openais import evt

    counts = [0] * publishers
    start = threading.Barrier(publishers + 1)
    stop = [0.0]

    def run(index: int) -> None:
        with evt.initialize() as h:
            ch = h.channel_open(CHANNEL, evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER, timeout=30)
            e = ch.event_allocate()
            e.attributes_set([b"bench", b"x"], evt.LOWEST_PRIORITY, 0.0, "bench")
            payload = b"x" * size
            start.wait()
            while time.monotonic() < stop[0]:
                try:
                    e.publish(payload, wait=wait)
                    counts[index] += 1
                except openais.TryAgain:
                    time.sleep(0.0005)
            h.flush()  # pipelined publishes: the run ends when the local node has handled every event

    threads = [threading.Thread(target=run, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    stop[0] = time.monotonic() + 3600
    start.wait()
    first = time.monotonic()
    cpu0 = time.process_time()
    stop[0] = first + seconds
    for t in threads:
        t.join()
    elapsed = time.monotonic() - first
    cpu = time.process_time() - cpu0  # the publishing itself: not the start-up, imports and channel opens
    total = sum(counts)
    return {"events": total, "seconds": elapsed, "events_per_s": total / elapsed,
            "mb_per_s": total * size / elapsed / 1e6, "cpu_s": cpu}


def _probe_rounds(one: Any, warmup: int) -> None:
    """Serve latency rounds on stdin: ``warmup`` untimed probes, ``ready``, then a line ``N`` per round.

    Each round answers with a JSON line of its ``N`` samples (microseconds, in the order taken); the
    round ends when stdin closes.  ``one()`` takes one sample.  The orchestrator alternates the EVT and
    the CPG probe round by round, so slow drift of the host hits both alike.
    """
    for _ in range(warmup):
        one()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"samples": [one() for _ in range(int(line))]}), flush=True)


def client_latency(size: int, warmup: int, wait: bool = True) -> dict:
    """One event at a time, in rounds (:func:`_probe_rounds`): from ``publish`` to the publisher's own delivery.

    ``wait``: the contract's ``publish``, which returns once the local node has handled the event;
    False: ``publish(data, wait=False)``, which returns once the event is on its way (as CPG's ``mcast``).
    """
    import openais
    from openais import evt

    got = [0]

    def deliver(sid: int, event: evt.Event, n: int) -> None:
        got[0] += 1
        event.free()

    with evt.initialize(event_deliver=deliver) as h:
        ch = h.channel_open(CHANNEL, evt.CHANNEL_CREATE | evt.CHANNEL_PUBLISHER | evt.CHANNEL_SUBSCRIBER, timeout=30)
        ch.event_subscribe([evt.EventFilter(evt.EXACT_FILTER, b"latency")], 1)
        e = ch.event_allocate()
        e.attributes_set([b"latency"], evt.HIGHEST_PRIORITY, 0.0, "bench")

        def one() -> float:
            want = got[0] + 1
            t0 = time.perf_counter()
            payload = time.monotonic_ns().to_bytes(8, "big").ljust(size, b"l")  # remote subscribers time it
            while True:
                try:
                    e.publish(payload, wait=wait)
                    break
                except openais.TryAgain:
                    time.sleep(0.0005)
            while got[0] < want:
                select.select([h], [], [], 1.0)
                h.dispatch(openais.DISPATCH_ALL)
            return (time.perf_counter() - t0) * 1e6

        _probe_rounds(one, warmup)
    return {}


def client_cpg_latency(size: int, warmup: int, members: int) -> dict:
    """CPG's probe beside :func:`client_latency`: one message at a time, from ``mcast`` to own delivery.

    Joins the group of ``bench/cpg_client.py`` (whose receivers run on the other nodes) and waits
    for ``members`` members; the payload has the same size and is built the same way per message.
    """
    from bench.cpg_client import GROUP, _wait_members, timed_mcast
    from openais import cpg

    me = os.getpid()
    got = [False]

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        if pid == me:
            got[0] = True

    with cpg.initialize(deliver=deliver) as h:
        h.join(GROUP)
        _wait_members(h, members)

        def one() -> float:
            return timed_mcast(h, time.monotonic_ns().to_bytes(8, "big").ljust(size, b"l"), got)

        _probe_rounds(one, warmup)
    return {}


def client_subscribe() -> dict:
    """Subscribe to everything on the channel; count deliveries and lost-event notices until stdin closes."""
    import openais
    from openais import evt

    counts = {"received": 0, "lost": 0}
    latencies: list[float] = []

    def deliver(sid: int, event: evt.Event, n: int) -> None:
        # As little work per event as CPG's receiver (which only counts): the attributes are read only
        # for an event without data, which a lost-event notice is (every benchmark event has data).
        if sid == 2 and n:  # a latency probe: its data starts with the publisher's monotonic clock (system-wide)
            latencies.append((time.monotonic_ns() - int.from_bytes(event.data_get()[:8], "big")) / 1e3)
        elif not n and event.attributes_get().event_id == evt.EVENTID_LOST:
            counts["lost"] += 1
        else:
            counts["received"] += 1
        event.free()

    with evt.initialize(event_deliver=deliver) as h:
        ch = h.channel_open(CHANNEL, evt.CHANNEL_CREATE | evt.CHANNEL_SUBSCRIBER, timeout=30)
        ch.event_subscribe([evt.EventFilter(evt.PREFIX_FILTER, b"bench")], 1)
        ch.event_subscribe([evt.EventFilter(evt.EXACT_FILTER, b"latency")], 2)
        print(json.dumps({"subscribed": True}), flush=True)
        while True:
            readable, _, _ = select.select([h, sys.stdin], [], [], 1.0)
            if h in readable:
                h.dispatch(openais.DISPATCH_ALL)
            if sys.stdin in readable:
                line = sys.stdin.readline()
                if not line:
                    break
                report = dict(counts)
                if latencies:
                    ordered = sorted(latencies)
                    report["latency_median_us"] = statistics.median(ordered)
                    report["latency_p99_us"] = ordered[max(0, int(len(ordered) * 0.99) - 1)]
                print(json.dumps(report), flush=True)  # "report" on demand
    return counts


# -- orchestration ---------------------------------------------------------------------------------------


def _run(cluster: LocalCluster, index: int, args: list[str], timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, *args], env=cluster.environ(index), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spawn(cluster: LocalCluster, index: int, args: list[str], ready: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], env=cluster.environ(index), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if ready not in line:
        raise RuntimeError(f"{args} on node {index} did not start: {line!r}")
    return proc


def _report(proc: subprocess.Popen) -> dict:
    proc.stdin.write("report\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    return json.loads(proc.stdout.readline())  # type: ignore[union-attr]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _per_op_us(pids: list[int], before: list[float], ops: int) -> list[float]:
    """Executive CPU per operation since ``before``, in microseconds, node by node."""
    return [round((_cpu_s(p) - b) / max(ops, 1) * 1e6, 1) for p, b in zip(pids, before, strict=True)]


def _children_cpu_s() -> float:
    """User + system CPU seconds of the child processes waited for so far."""
    times = os.times()
    return times.children_user + times.children_system


def _wait_quiet(subs: list[subprocess.Popen], expected: int, timeout: float = 60.0) -> list[dict]:
    """Wait until every subscriber received ``expected`` more events (or lost some, or time runs out)."""
    deadline = time.monotonic() + timeout
    reports = [_report(p) for p in subs]
    while time.monotonic() < deadline and any(r["received"] + r["lost"] < expected for r in reports):
        time.sleep(0.2)
        reports = [_report(p) for p in subs]
    return reports


def _publish(cluster: LocalCluster, me: str, size: int, seconds: float, procs: int, publishers: int,
             mode: str = "wait") -> dict:
    """``procs`` publishing processes of ``publishers`` threads on node 1, side by side; their sum."""
    args = [sys.executable, me, "--client", "publish", str(size), str(seconds), str(publishers), mode]
    running = [subprocess.Popen(args, env=cluster.environ(1), stdout=subprocess.PIPE, text=True)
               for _ in range(procs)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in running]
    events = sum(r["events"] for r in results)
    rate = sum(r["events_per_s"] for r in results)
    return {"events": events, "events_per_s": rate, "mb_per_s": rate * size / 1e6,
            "cpu_s": sum(r["cpu_s"] for r in results)}


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def _latency(cluster: LocalCluster, me: str, remote_sub: subprocess.Popen) -> list[dict]:
    """EVT's latency probes (both ``publish`` modes) and CPG's on node 1, in alternating rounds.

    The three probes start first (each with the same untimed warm-up), then take ``LATENCY_ROUNDS``
    rounds of ``LATENCY_SAMPLES`` samples each in turn (EVT wait, EVT nowait, CPG, EVT wait, ...).
    One row per EVT mode (``publish``), each with CPG's figures beside it.  The medians and p99s are
    over every sample of each probe; ``rounds_median_us``/``cpg_rounds_median_us``: the median of each
    round, in the order taken.  ``remote_*`` (``publish: wait`` row): publish-to-deliver times at the
    subscriber on node 2, over every probe of both modes, warm-up too.
    """
    warm = str(LATENCY_WARMUP)
    size = str(LATENCY_SIZE)
    probes = [_spawn(cluster, 1, [me, "--client", "latency", size, warm], "ready"),
              _spawn(cluster, 1, [me, "--client", "latency", size, warm, "nowait"], "ready"),
              _spawn(cluster, 1, [me, "--client", "cpg-latency", size, warm, "3"], "ready")]
    rounds: list[list[list[float]]] = [[], [], []]
    try:
        for _ in range(LATENCY_ROUNDS):
            for which, proc in enumerate(probes):
                proc.stdin.write(f"{LATENCY_SAMPLES}\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                rounds[which].append(json.loads(proc.stdout.readline())["samples"])  # type: ignore[union-attr]
    finally:
        _stop(probes)
    remote = _report(remote_sub)
    cpg_all = sorted(s for r in rounds[2] for s in r)
    cpg_median = statistics.median(cpg_all)
    rows = []
    for mode, evt_rounds in (("wait", rounds[0]), ("nowait", rounds[1])):
        evt_all = sorted(s for r in evt_rounds for s in r)
        evt_median = statistics.median(evt_all)
        rows.append({"publish": mode, "median_us": round(evt_median, 1), "p99_us": round(_p99(evt_all), 1),
                     **({"remote_median_us": round(remote.get("latency_median_us", 0), 1),
                         "remote_p99_us": round(remote.get("latency_p99_us", 0), 1)} if mode == "wait" else {}),
                     "cpg_median_us": round(cpg_median, 1), "cpg_p99_us": round(_p99(cpg_all), 1),
                     "ratio_vs_cpg": round(evt_median / max(cpg_median, 1e-9), 3),
                     "rounds": LATENCY_ROUNDS, "samples_per_round": LATENCY_SAMPLES, "warmup": LATENCY_WARMUP,
                     "rounds_median_us": [round(statistics.median(r), 1) for r in evt_rounds],
                     "cpg_rounds_median_us": [round(statistics.median(r), 1) for r in rounds[2]],
                     "rounds_ratio_vs_cpg": [round(statistics.median(a) / max(statistics.median(b), 1e-9), 3)
                                             for a, b in zip(evt_rounds, rounds[2], strict=True)]})
    return rows


def run(seconds: float, procs: int, publishers: int, sizes: tuple[int, ...]) -> list[dict]:
    """Both receiver counts on one 3-node cluster; EVT and CPG alternate per size."""
    me = str(Path(__file__).resolve())
    rows = []
    base = {"impl": "openais-py", "service": "evt", "nodes": 3, "transport": "udpu", "crypto": "none",
            **host_fields()}
    with tempfile.TemporaryDirectory(prefix="evtbench-") as tmp, \
            LocalCluster(Path(tmp), 3, transport="udpu", secauth=False) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        pid1 = cluster.procs[1].pid
        pids = [cluster.procs[i].pid for i in (1, 2, 3)]
        rows.append({**base, "test": "rss", "phase": "idle", "rss_kb": _rss_kb(pid1)})
        peak = 0
        for receivers in (1, 2):
            subs = [_spawn(cluster, i, [me, "--client", "subscribe"], "subscribed") for i in range(2, 2 + receivers)]
            cpg_recv = [_spawn(cluster, i, [CPG_CLIENT, "receive"], "joined") for i in range(2, 2 + receivers)]
            try:
                for size in sizes:
                    measured = {}
                    for mode, (n_procs, n_threads) in (("wait", (procs, publishers)), ("nowait", (1, 1))):
                        before = [_report(p) for p in subs]
                        cpu0 = [_cpu_s(p) for p in pids]
                        sub0 = [_cpu_s(p.pid) for p in subs]
                        result = _publish(cluster, me, size, seconds, n_procs, n_threads, mode)
                        after = _wait_quiet(subs, result["events"] + min(b["received"] for b in before))
                        evt_cpu = _per_op_us(pids, cpu0, result["events"])
                        evt_clients = [round(result["cpu_s"] / max(result["events"], 1) * 1e6, 1),
                                       *_per_op_us([p.pid for p in subs], sub0, result["events"])]
                        peak = max(peak, _rss_kb(pid1))
                        measured[mode] = (n_procs * n_threads, result, before, after, evt_cpu, evt_clients)
                    single = _run(cluster, 1, [me, "--client", "publish", str(size), str(seconds), "1"])
                    _wait_quiet(subs, 0)
                    cpu0 = [_cpu_s(p) for p in pids]
                    sub0 = [_cpu_s(p.pid) for p in cpg_recv]
                    sender0 = _children_cpu_s()
                    cpg = _run(cluster, 1, [CPG_CLIENT, "send", str(size), str(seconds), str(1 + receivers)])
                    cpg_cpu = _per_op_us(pids, cpu0, cpg["delivered"])
                    cpg_clients = [round((_children_cpu_s() - sender0) / max(cpg["delivered"], 1) * 1e6, 1),
                                   *_per_op_us([p.pid for p in cpg_recv], sub0, cpg["delivered"])]
                    for mode, (concurrency, result, before, after, evt_cpu, evt_clients) in measured.items():
                        rows.append({**base, "test": "throughput", "publish": mode, "concurrency": concurrency,
                                     "receivers": receivers, "size": size, "seconds": seconds,
                                     "events": result["events"], "events_per_s": round(result["events_per_s"]),
                                     "mb_per_s": round(result["mb_per_s"], 2),
                                     **({"single_events_per_s": round(single["events_per_s"])} if mode == "wait"
                                        else {}),
                                     "cpg_msgs_per_s": round(cpg["msgs_per_s"]),
                                     "cpg_mb_per_s": round(cpg["mb_per_s"], 2),
                                     "ratio_vs_cpg": round(result["events_per_s"] / max(cpg["msgs_per_s"], 1e-9), 3),
                                     "exec_cpu_us_per_event": evt_cpu, "cpg_exec_cpu_us_per_msg": cpg_cpu,
                                     "clients_cpu_us_per_event": evt_clients,
                                     "cpg_clients_cpu_us_per_msg": cpg_clients,
                                     "total_cpu_us_per_event": round(sum(evt_cpu) + sum(evt_clients), 1),
                                     "cpg_total_cpu_us_per_msg": round(sum(cpg_cpu) + sum(cpg_clients), 1),
                                     "cpu_ratio_vs_cpg": round((sum(cpg_cpu) + sum(cpg_clients))
                                                               / max(sum(evt_cpu) + sum(evt_clients), 1e-9), 3),
                                     "subscribers_received": [a["received"] - b["received"]
                                                              for a, b in zip(after, before, strict=True)],
                                     "subscribers_lost_notices": [a["lost"] - b["lost"]
                                                                  for a, b in zip(after, before, strict=True)]})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if receivers == 2:
                    rows.extend({**base, "test": "latency", "receivers": receivers, "size": LATENCY_SIZE, **row}
                                for row in _latency(cluster, me, subs[0]))
            finally:
                _stop(subs + cpg_recv)
        rows.append({**base, "test": "rss", "phase": "load", "rss_kb": max(peak, _rss_kb(pid1))})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--client``, one client) and print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 s per size")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--procs", type=int, default=4, help="publishing processes on node 1")
    parser.add_argument("--publishers", type=int, default=8, help="publishing threads per process (own handles)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated event sizes")
    args = parser.parse_args(argv)
    if args.client:
        mode, *rest = args.client
        if mode == "publish":
            result = client_publish(int(rest[0]), float(rest[1]), int(rest[2]), wait=rest[3:] != ["nowait"])
        elif mode == "latency":
            result = client_latency(int(rest[0]), int(rest[1]), wait=rest[2:] != ["nowait"])
        elif mode == "cpg-latency":
            result = client_cpg_latency(int(rest[0]), int(rest[1]), int(rest[2]))
        else:
            result = client_subscribe()
        print(json.dumps(result), flush=True)
        return 0
    seconds = 1.0 if args.quick else args.seconds
    for row in run(seconds, args.procs, args.publishers, tuple(int(s) for s in args.sizes.split(","))):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
