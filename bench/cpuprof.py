"""CPU per delivered CPG message, per process: 3 executives, the sender and 2 receivers.

    flock /tmp/bench.lock python bench/cpuprof.py --sizes 1024,16384 --seconds 3
    flock /tmp/bench.lock python bench/cpuprof.py --sizes 1024 --spy /tmp/prof   # py-spy each process

Starts the same cluster as ``bench/run.py --nodes 3 --receivers 2 --crypto on``,
reads utime+stime of every process from ``/proc/<pid>/stat`` just before the
sender starts and just before it exits (the sender prints its result, then
waits on stdin), and prints one JSON line per size: msgs/s, and µs of CPU per
delivered message for each process and in total.  ``--spy DIR``: also record
each process with ``py-spy record --native`` (speedscope files in DIR; py-spy
must be on PATH or beside the interpreter).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aisexec.localcluster import LocalCluster
from bench.procstat import cpu_s as _cpu_s
from bench.procstat import sys_s as _sys_s

HERE = Path(__file__).resolve().parent
CLIENT = str(HERE / "cpg_client.py")


def _counters(pid: int) -> tuple[int, int, int]:
    """Read-type syscalls, write-type syscalls and voluntary context switches of ``pid`` so far."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    status = Path(f"/proc/{pid}/status").read_text()
    vol = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return int(io["syscr"]), int(io["syscw"]), vol


_STATS = ("import json\nfrom openais import cfg\nwith cfg.initialize() as h:\n"
          "    print(json.dumps(h.ring_status().stats))")


def _stats(cluster: LocalCluster, index: int) -> dict:
    """Node ``index``'s counters (the ``stats`` of its ring status), flattened to ``a.b`` keys."""
    out = cluster.client(index, _STATS)
    flat: dict = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix[:-1]] = value

    walk("", json.loads(out.stdout) if out.returncode == 0 else {})
    return flat


def _spawn(cluster: LocalCluster, index: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, CLIENT, *args], env=cluster.environ(index), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def main(argv: list[str] | None = None) -> int:
    """Run the sizes asked for and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,16384")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--crypto", choices=("on", "off"), default="on")
    parser.add_argument("--spy", default=None, help="directory for py-spy speedscope profiles")
    parser.add_argument("--tag", default="")
    parser.add_argument("--cprofile", default=None, help="directory: run the executives under cProfile")
    parser.add_argument("--stats", action="store_true", help="also print node 1 and 2 counters per message")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="aiscpu-") as tmp, \
            LocalCluster(Path(tmp), 3, transport="udpu", secauth=args.crypto == "on", token=1000,
                         extra_totem={"netmtu": 1500}) as cluster:
        for i in (1, 2, 3):
            cluster.start(i, env={"OPENAIS_PROFILE": f"{args.cprofile}/{args.tag}exec{i}.pstats"}
                          if args.cprofile else None)
        cluster.wait_members([1, 2, 3], [1, 2, 3], timeout=60)
        recv = [_spawn(cluster, i, "receive") for i in (2, 3)]
        for proc in recv:
            if "joined" not in proc.stdout.readline():  # type: ignore[union-attr]
                raise RuntimeError("receiver did not join")
        for size in sizes:
            wrap = ["-m", "cProfile", "-o", f"{args.cprofile}/{args.tag}sender-{size}.pstats"] if args.cprofile else []
            sender = subprocess.Popen([sys.executable, *wrap, CLIENT, "send", str(size), str(args.seconds), "3",
                                       "hold"], env=cluster.environ(1), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
            if "ready" not in sender.stdout.readline():  # type: ignore[union-attr]
                raise RuntimeError("sender not ready")
            procs = {f"exec{i}": p.pid for i, p in cluster.procs.items()}
            procs["sender"] = sender.pid
            procs["recv2"], procs["recv3"] = recv[0].pid, recv[1].pid
            spies = []
            spy = _py_spy() if args.spy else None
            if spy:
                Path(args.spy).mkdir(parents=True, exist_ok=True)
                for name, pid in procs.items():
                    out = Path(args.spy) / f"{args.tag}{name}-{size}.speedscope.json"
                    spies.append(subprocess.Popen(
                        [spy, "record", "--nonblocking", "-r", "1000", "--format", "speedscope",
                         "-o", str(out), "-p", str(pid), "-d", str(int(args.seconds) + 1)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(0.5)
            sbefore = {i: _stats(cluster, i) for i in (1, 2)} if args.stats else {}
            before = {name: _cpu_s(pid) for name, pid in procs.items()}
            sysb = {name: _sys_s(pid) for name, pid in procs.items()}
            cbefore = {name: _counters(pid) for name, pid in procs.items()}
            sender.stdin.write("go\n")  # type: ignore[union-attr]
            sender.stdin.flush()  # type: ignore[union-attr]
            result = json.loads(sender.stdout.readline())  # type: ignore[union-attr]
            after = {name: _cpu_s(pid) for name, pid in procs.items()}
            sysa = {name: _sys_s(pid) for name, pid in procs.items()}
            cafter = {name: _counters(pid) for name, pid in procs.items()}
            if args.stats:
                for i in (1, 2):
                    now = _stats(cluster, i)
                    delta = {k: round((v - sbefore[i].get(k, 0)) / max(result["delivered"], 1), 3)
                             for k, v in now.items() if v != sbefore[i].get(k, 0)}
                    print(json.dumps({"node": i, "size": size, "per_msg": delta}), flush=True)
            sender.stdin.close()  # type: ignore[union-attr]
            sender.wait(timeout=30)
            for s in spies:
                s.wait(timeout=60)
            n = max(result["delivered"], 1)
            per = {name: round((after[name] - before[name]) * 1e6 / n, 1) for name in procs}
            print(json.dumps({"tag": args.tag, "size": size, "msgs_per_s": round(result["msgs_per_s"]),
                              "mb_per_s": round(result["mb_per_s"], 2), "delivered": result["delivered"],
                              "try_again_per_msg": round(result.get("try_again", 0) / max(result["delivered"], 1), 2),
                              "us_cpu_per_msg": per, "total_us": round(sum(per.values()), 1),
                              "us_sys_per_msg": {name: round((sysa[name] - sysb[name]) * 1e6 / n, 1)
                                                 for name in procs},
                              "reads_writes_wakeups_per_msg": {
                                  name: [round((cafter[name][k] - cbefore[name][k]) / n, 2) for k in range(3)]
                                  for name in procs}}), flush=True)
        for proc in recv:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=30)
        if args.cprofile:
            cluster.stop_all()  # SIGTERM: the executives write their profiles
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
