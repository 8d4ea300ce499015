"""LCK benchmark: lock latency, lock/unlock pairs per second and memory, with CPG measured in the same run.

    python bench/lck.py                  # the full set (3 nodes, udpu, crypto on)
    python bench/lck.py --quick          # shorter runs, 10,000 resources for the RSS row
    python bench/lck.py --quick --only pairs --clients 16 --contended no   # just the headline row (and CPG's rate)

Rows (JSON lines, like bench/run.py): ``test`` is one of

``cpg_latency``      CPG mcast-to-own-delivery latency, 64 B (the reference for lock latency)
``cpg_throughput``   CPG 64 B messages per second from one sender to 3 members
``lock_latency``     uncontended lock (EX) latency, ``where`` = local (resource used only here) or
                     remote (the resource is also open and used from another node); plus unlock latency
``pairs``            lock+unlock pairs per second with ``clients`` clients (one process each, each
                     waiting for every answer) spread round-robin over the 3 nodes, ``contended`` false
                     (one resource each) or true (all on one resource); ``exec_cpu_us_per_pair``: each
                     executive's CPU time per pair (nodes 1..3); ``client_cpu_us_per_pair``: the clients'
                     own CPU per pair (``client_sys_us_per_pair``: the kernel's share of it;
                     ``client_try_again``: TryAgain answers they retried); ``exec_sys_us_per_pair``:
                     the kernel's share of each executive's; ``exec_ctx_switches_per_pair``: each
                     executive's context switches (voluntary + involuntary) per pair;
                     ``machine_idle_pct``: the whole machine's idle share meanwhile
                     (near 0: CPU-bound); ``ring_rotations_per_s`` and ``ring_msgs_per_rotation``: how
                     many LCK messages (2 per pair) each turn of the token carried
``pairs_ipc_only``   the same 16 (``--clients``) pairs clients against one stub executive: the real IPC
                     server with an engine that answers every request at once (no ring, no lock
                     table), started once the cluster rows are done.  The ceiling of the synchronous
                     call layer alone on this machine: ``ratio_vs_cpg`` against the same run's CPG rate,
                     ``server_cpu_us_per_pair`` and ``client_cpu_us_per_pair``
``rss``              executive RSS (node 1 and node 2) idle and with ``resources`` open resources

Each LCK row carries ``ratio_vs_cpg``: lock latency median / CPG latency median, and pair rate / CPG 64 B
message rate.  The machine is shared: figures are noisy; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from aisexec.localcluster import LocalCluster  # noqa: E402
from bench.hostinfo import host_fields  # noqa: E402
from bench.procstat import cpu_s as _cpu_s  # noqa: E402
from bench.procstat import ctx_switches as _ctx_switches  # noqa: E402
from bench.procstat import rss_kb as _rss_kb  # noqa: E402
from bench.procstat import sys_s as _sys_s  # noqa: E402

CPG_CLIENT = str(HERE / "cpg_client.py")


# -- client modes (run in their own process against one node) ---------------------------------------


#: TryAgain answers a client retried (reported by the pairs clients).
_RETRIES = [0]


def _retry(fn, *args, **kwargs):
    import openais

    while True:
        try:
            return fn(*args, **kwargs)
        except openais.TryAgain:
            _RETRIES[0] += 1
            time.sleep(0.001)


def client_latency(name: str, count: int) -> None:
    """Lock EX + unlock ``count`` times on ``name``; print lock and unlock latency percentiles."""
    from openais import lck

    lock_us, unlock_us = [], []
    with lck.initialize() as h:
        res = _retry(h.resource_open, name, lck.RESOURCE_CREATE)
        for _ in range(count):
            t0 = time.perf_counter()
            lock = _retry(res.lock, lck.LockMode.EX)
            t1 = time.perf_counter()
            lock.unlock()
            t2 = time.perf_counter()
            lock_us.append((t1 - t0) * 1e6)
            unlock_us.append((t2 - t1) * 1e6)
    lock_us.sort()
    unlock_us.sort()
    print(json.dumps({"median_us": statistics.median(lock_us), "p99_us": lock_us[int(len(lock_us) * 0.99) - 1],
                      "unlock_median_us": statistics.median(unlock_us)}))


def client_pairs(name: str, seconds: float) -> None:
    """Print ready, read the start time (monotonic) on stdin, then lock EX + unlock for ``seconds``."""
    from openais import lck

    with lck.initialize() as h:
        res = _retry(h.resource_open, name, lck.RESOURCE_CREATE)
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        while time.monotonic() < start_at:
            time.sleep(0.001)
        pairs = 0
        stop = start_at + seconds
        cpu0 = time.process_time()
        times0 = os.times()
        while time.monotonic() < stop:
            lock = _retry(res.lock, lck.LockMode.EX)
            _retry(lock.unlock)
            pairs += 1
        times1 = os.times()
        print(json.dumps({"pairs": pairs, "seconds": time.monotonic() - start_at,
                          "cpu_s": time.process_time() - cpu0, "user_s": times1.user - times0.user,
                          "sys_s": times1.system - times0.system, "retries": _RETRIES[0]}))


def client_hold(name: str) -> None:
    """Open ``name`` and use it once, then keep it open until stdin closes (the 'remote' user)."""
    from openais import lck

    with lck.initialize() as h:
        res = _retry(h.resource_open, name, lck.RESOURCE_CREATE)
        res.lock(lck.LockMode.EX).unlock()
        print("ready", flush=True)
        sys.stdin.read()


def client_open_many(prefix: str, count: int) -> None:
    """Open ``count`` resources with resource_open_async (pipelined), wait for every callback, stay open."""
    import select

    import openais
    from openais import lck

    done = [0]

    def opened(invocation, resource, error):
        done[0] += 1

    h = lck.initialize(resource_open=opened)
    sent = 0
    while sent < count:
        try:
            h.resource_open_async(sent, f"{prefix}{sent}", lck.RESOURCE_CREATE)
            sent += 1
        except openais.TryAgain:
            time.sleep(0.005)
        if sent % 256 == 0:
            h.dispatch(openais.DISPATCH_ALL)
    while done[0] < count:
        select.select([h], [], [], 1.0)
        h.dispatch(openais.DISPATCH_ALL)
    print(json.dumps({"opened": done[0]}), flush=True)
    sys.stdin.read()


# -- orchestration ------------------------------------------------------------------------------------


def _env(cluster: LocalCluster, index: int) -> dict[str, str]:
    env = cluster.environ(index)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(cluster: LocalCluster, index: int, *args: str, timeout: float = 600) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=_env(cluster, index), capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"client {args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spawn(cluster: LocalCluster, index: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], env=_env(cluster, index), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc


def _cpg(cluster: LocalCluster, *args: str) -> dict:
    out = subprocess.run([sys.executable, CPG_CLIENT, *args], env=cluster.environ(1), capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"cpg client {args} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine_cpu() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the whole machine (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


_RING_PROBE = """
import json
from openais import cfg
with cfg.initialize() as h:
    print(json.dumps(h.ring_status().stats.get("totem", {}).get("tokens_received", 0)))
"""


def _tokens(cluster: LocalCluster) -> int:
    """Tokens node 1 has received (one per rotation of the ring)."""
    out = subprocess.run([sys.executable, "-c", _RING_PROBE], env=_env(cluster, 1), capture_output=True, text=True,
                         timeout=60)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def _drive(procs: list[subprocess.Popen], seconds: float) -> dict:
    """Start ready pairs clients together, let them run ``seconds`` and add up what they report.

    Returns the pairs done, the clients' CPU and kernel CPU seconds, their TryAgain retries and the
    machine's idle share meanwhile (in percent).
    """
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("a pairs client did not start")
    start_at = time.monotonic() + 0.2
    for proc in procs:
        proc.stdin.write(f"{start_at}\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    time.sleep(max(0.0, start_at - time.monotonic()))
    machine0 = _machine_cpu()
    time.sleep(seconds)
    machine1 = _machine_cpu()
    done = {"pairs": 0, "cpu_s": 0.0, "sys_s": 0.0, "retries": 0}
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        result = json.loads(out.strip().splitlines()[-1])
        for key in done:
            done[key] += result[key]
    done["idle_pct"] = round(100 * (machine1[1] - machine0[1]) / max(1, machine1[0] - machine0[0]), 1)
    return done


def pairs(cluster: LocalCluster, clients: int, contended: bool, seconds: float) -> tuple[float, dict]:
    """Lock+unlock pairs per second of ``clients`` clients (one process each) spread over nodes 1..3.

    Also returns what the run cost: the clients' own CPU per pair, the machine's idle share while
    they ran, and ring rotations (tokens node 1 received) per second.
    """
    procs = []
    for i in range(clients):
        name = "contended" if contended else f"own-{clients}-{i}"
        procs.append(_spawn(cluster, 1 + i % 3, "pairs", name, str(seconds)))
    tokens0 = _tokens(cluster)
    result = _drive(procs, seconds)
    total = result["pairs"]
    rotations = (_tokens(cluster) - tokens0) / seconds
    done = max(total, 1)
    return total / seconds, {
        "client_cpu_us_per_pair": round(result["cpu_s"] / done * 1e6, 1),
        "client_sys_us_per_pair": round(result["sys_s"] / done * 1e6, 1),
        "client_try_again": result["retries"],
        "machine_idle_pct": result["idle_pct"],
        "ring_rotations_per_s": round(rotations),
        "ring_msgs_per_rotation": round(2 * total / seconds / rotations, 2) if rotations else None,
    }


def stub_server(path: str) -> None:
    """Serve LCK's IPC at ``path`` with a stub engine that answers every request at once (no ring, no table).

    Print ``up`` once listening; stop when stdin closes.  Only what the pairs clients call is served:
    resource_open, lock (always GRANTED, a fresh lock id), unlock and resource_close.
    """
    import gevent
    import gevent.os

    from aisexec.ipc.auth import Authorizer
    from aisexec.ipc.server import IpcServer
    from aisexec.service import EngineHost, LibHandler, ServiceEngine
    from openais import lck

    ok, granted = 1, int(lck.LockStatus.GRANTED)
    answer = lck.LockAnswer.fixed
    assert answer is not None
    service = lck.SERVICE_ID

    class Stub(ServiceEngine):
        """LCK's requests answered at once."""

        id = service
        name = "LCK"
        version = "1.0"

        def __init__(self) -> None:
            self.lock_ids = 0
            self.lib_handlers = {
                lck.Request.RESOURCE_OPEN: LibHandler(self.open, needs_cluster=True),
                lck.Request.RESOURCE_CLOSE: LibHandler(self.close, needs_cluster=True),
                lck.Request.LOCK: LibHandler(self.lock, needs_cluster=True),
                lck.Request.UNLOCK: LibHandler(self.unlock, needs_cluster=True),
            }
            self.exec_handlers = {}

        def open(self, conn: Any, request_id: int, payload: bytes) -> None:
            conn.respond(service, lck.Request.RESOURCE_OPEN, request_id, ok, lck.OpenAnswer.pack(1))

        def close(self, conn: Any, request_id: int, payload: bytes) -> None:
            conn.respond(service, lck.Request.RESOURCE_CLOSE, request_id, ok)

        def lock(self, conn: Any, request_id: int, payload: bytes) -> None:
            self.lock_ids += 1
            conn.respond(service, lck.Request.LOCK, request_id, ok, answer.pack(self.lock_ids, granted))

        def unlock(self, conn: Any, request_id: int, payload: bytes) -> None:
            conn.respond(service, lck.Request.UNLOCK, request_id, ok)

    class Router:
        """The stub engine, always ready, always room."""

        def __init__(self, engine: ServiceEngine) -> None:
            self.entry = (engine, EngineHost(engine))

        def engine_for(self, service_id: int) -> Any:
            return self.entry if service_id == service else None

        def cluster_ready(self, service_id: int | None = None) -> bool:
            return True

        def has_room(self, size: int) -> bool:
            return True

    server = IpcServer(path, Router(Stub()), Authorizer())
    server.start()
    print("up", flush=True)
    while gevent.os.tp_read(0, 4096):
        pass
    server.stop()


def stub_pairs(clients: int, seconds: float) -> tuple[float, dict]:
    """Pairs per second of ``clients`` pairs clients against :func:`stub_server` (the call layer alone)."""
    with tempfile.TemporaryDirectory(prefix="lckstub-") as tmp:
        path = str(Path(tmp) / "lck.sock")
        env = dict(os.environ, OPENAIS_IPC_SOCKET=path)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        server = subprocess.Popen([sys.executable, __file__, "stub_server", path], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            if server.stdout.readline().strip() != "up":  # type: ignore[union-attr]
                raise RuntimeError("the stub executive did not start")
            procs = [subprocess.Popen([sys.executable, __file__, "pairs", f"stub-{i}", str(seconds)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                     for i in range(clients)]
            cpu0 = _cpu_s(server.pid)
            result = _drive(procs, seconds)
            server_cpu = _cpu_s(server.pid) - cpu0
        finally:
            server.stdin.close()  # type: ignore[union-attr]
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    done = max(result["pairs"], 1)
    return result["pairs"] / seconds, {
        "server_cpu_us_per_pair": round(server_cpu / done * 1e6, 1),
        "client_cpu_us_per_pair": round(result["cpu_s"] / done * 1e6, 1),
        "client_sys_us_per_pair": round(result["sys_s"] / done * 1e6, 1),
        "machine_idle_pct": result["idle_pct"],
    }


#: The groups of rows ``--only`` can pick (``latency`` brings its CPG reference, ``pairs`` CPG's rate).
GROUPS = ("latency", "pairs", "rss")


def run(quick: bool, only: tuple[str, ...] = GROUPS, clients_list: tuple[int, ...] = (1, 4, 16),
        contended_list: tuple[bool, ...] = (False, True)) -> Iterator[dict]:
    """The rows of the benchmark on one 3-node cluster, as each is measured (``only``: these groups)."""
    seconds = 2.0 if quick else 5.0
    count = 500 if quick else 2000
    resources = 10_000 if quick else 100_000
    fixed = {"impl": "openais-py", "nodes": 3, "transport": "udpu", "crypto": "on", **host_fields()}
    with tempfile.TemporaryDirectory(prefix="lckbench-") as tmp, \
            LocalCluster(Path(tmp), 3, transport="udpu", secauth=True) as cluster:
        cluster.start_all()
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        pids = {i: p.pid for i, p in cluster.procs.items()}

        def base() -> dict:
            """The fixed fields plus the machine's 1-minute load average as the row is made (noise)."""
            return {**fixed, "load_avg": round(os.getloadavg()[0], 1)}

        if "latency" in only:
            yield from _latency_rows(cluster, count, base)
        if "pairs" in only:
            yield from _pairs_rows(cluster, seconds, base, pids, clients_list, contended_list)
        if "rss" in only:
            yield from _rss_rows(cluster, resources, base, pids)


def _latency_rows(cluster: LocalCluster, count: int, base: Any) -> Iterator[dict]:
    """CPG's 64 B latency, then uncontended lock latency with the resource used here only and from node 2."""
    cpg_lat = _cpg(cluster, "latency", "64", str(count), "1")
    yield {**base(), "test": "cpg_latency", "size": 64, "median_us": round(cpg_lat["median_us"], 1),
                 "p99_us": round(cpg_lat["p99_us"], 1)}
    local = _run(cluster, 1, "latency", "lat-local", str(count))
    yield {**base(), "test": "lock_latency", "where": "local", "median_us": round(local["median_us"], 1),
                 "p99_us": round(local["p99_us"], 1), "unlock_median_us": round(local["unlock_median_us"], 1),
                 "ratio_vs_cpg": round(local["median_us"] / cpg_lat["median_us"], 2)}
    holder = _spawn(cluster, 2, "hold", "lat-remote")
    holder.stdout.readline()  # type: ignore[union-attr]
    remote = _run(cluster, 1, "latency", "lat-remote", str(count))
    holder.stdin.close()  # type: ignore[union-attr]
    holder.wait(timeout=30)
    yield {**base(), "test": "lock_latency", "where": "remote", "median_us": round(remote["median_us"], 1),
                 "p99_us": round(remote["p99_us"], 1), "unlock_median_us": round(remote["unlock_median_us"], 1),
                 "ratio_vs_cpg": round(remote["median_us"] / cpg_lat["median_us"], 2)}


def _pairs_rows(cluster: LocalCluster, seconds: float, base: Any, pids: dict[int, int],
                clients_list: tuple[int, ...], contended_list: tuple[bool, ...]) -> Iterator[dict]:
    """CPG's 64 B message rate, then lock+unlock pairs per second for each client count and contention."""
    receivers = [subprocess.Popen([sys.executable, CPG_CLIENT, "receive"], env=cluster.environ(i),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in (2, 3)]
    for proc in receivers:
        proc.stdout.readline()  # type: ignore[union-attr]
    cpg_rate = _cpg(cluster, "send", "64", str(seconds), "3")["msgs_per_s"]
    for proc in receivers:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)
    yield {**base(), "test": "cpg_throughput", "size": 64, "msgs_per_s": round(cpg_rate)}
    time.sleep(2.0)  # let the ring drain the CPG burst before the next rows
    for contended in contended_list:
        for clients in clients_list:
            cpu0 = {i: (_cpu_s(pid), _sys_s(pid), _ctx_switches(pid)) for i, pid in pids.items()}
            rate, cost = pairs(cluster, clients, contended, seconds)
            done = max(rate * seconds, 1.0)
            nodes = sorted(pids)
            yield {**base(), "test": "pairs", "clients": clients, "contended": contended,
                         "pairs_per_s": round(rate), "ratio_vs_cpg": round(rate / cpg_rate, 3),
                         "exec_cpu_us_per_pair": [round((_cpu_s(pids[i]) - cpu0[i][0]) / done * 1e6, 1)
                                                  for i in nodes],
                         "exec_sys_us_per_pair": [round((_sys_s(pids[i]) - cpu0[i][1]) / done * 1e6, 1)
                                                  for i in nodes],
                         "exec_ctx_switches_per_pair": [round((_ctx_switches(pids[i]) - cpu0[i][2]) / done, 2)
                                                        for i in nodes], **cost}
    if False in contended_list:  # the uncontended case, the one the call layer is compared with
        clients = max(clients_list)
        rate, cost = stub_pairs(clients, seconds)
        yield {**base(), "test": "pairs_ipc_only", "clients": clients, "contended": False,
               "pairs_per_s": round(rate), "ratio_vs_cpg": round(rate / cpg_rate, 3), **cost}


def _rss_rows(cluster: LocalCluster, resources: int, base: Any, pids: dict[int, int]) -> Iterator[dict]:
    """Executive RSS idle and with ``resources`` open resources (node 1 opens them, node 2 replicates)."""
    yield {**base(), "test": "rss", "resources": 0, "rss_kb_node1": _rss_kb(pids[1]),
                 "rss_kb_node2": _rss_kb(pids[2])}
    openers = []
    per = resources // 4
    for i in range(4):
        openers.append(_spawn(cluster, 1, "open_many", f"m{i}-", str(per)))
    for proc in openers:
        proc.stdout.readline()  # type: ignore[union-attr]
    yield {**base(), "test": "rss", "resources": per * 4, "rss_kb_node1": _rss_kb(pids[1]),
                 "rss_kb_node2": _rss_kb(pids[2])}
    for proc in openers:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    """Entry point: orchestrate (no mode) or run one client mode."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("latency", "pairs", "hold", "open_many", "stub_server"):
        mode, args = argv[0], argv[1:]
        if mode == "latency":
            client_latency(args[0], int(args[1]))
        elif mode == "pairs":
            client_pairs(args[0], float(args[1]))
        elif mode == "stub_server":
            stub_server(args[0])
        elif mode == "hold":
            client_hold(args[0])
        else:
            client_open_many(args[0], int(args[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 10,000 resources for the RSS row")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="comma-separated row groups to run: latency (with cpg_latency), pairs (with "
                             "cpg_throughput), rss (default: all)")
    parser.add_argument("--clients", default="1,4,16", help="client counts of the pairs rows (default 1,4,16)")
    parser.add_argument("--contended", choices=("no", "yes", "both"), default="both",
                        help="pairs rows on one resource each (no), all on one (yes) or both (default)")
    args = parser.parse_args(argv)
    only = tuple(g.strip() for g in args.only.split(",") if g.strip())
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"unknown row groups {sorted(unknown)}: choose from {', '.join(GROUPS)}")
    clients = tuple(int(c) for c in args.clients.split(","))
    contended = {"no": (False,), "yes": (True,), "both": (False, True)}[args.contended]
    for row in run(args.quick, only, clients, contended):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
