"""Run every benchmark and print JSON lines that can stand beside corosync's figures.

    python bench/run.py                 # the full matrix
    python bench/run.py --quick         # 1 s per size, fewer configurations
    python bench/run.py --nodes 3 --receivers 2 --crypto on --transport udpu
    python bench/run.py --nodes 3 --receivers 2 --crypto on --cipher aes256    # AES-256-GCM envelopes
    python bench/run.py --quick --totem max_messages=17 --totem window_size=50   # corosync's flow control

Each line has: impl, nodes, transport, crypto, cipher, receivers, test (throughput,
latency, confchg_after_kill, rss), size, msgs_per_s, mb_per_s, median_us,
p99_us, cpg_confchg_ms, token_ms, consensus_ms, netmtu, max_messages,
window_size, sched, rss_kb, rep.  ``crypto`` and ``cipher`` both name the AEAD
that sealed the packets (``none`` with ``--crypto off``); each run checks the
executive's own start-up line for it.  Executives run
as real processes on 127.0.0.1..N (udpu or udp), clients through the openais
library over each node's socket.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aisexec.localcluster import LocalCluster
from aisexec.totem.config import CRYPTO_CIPHERS, TotemConfig, resolve_crypto_cipher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree's bench package
from bench.hostinfo import host_fields
from bench.procstat import rss_kb as _rss_kb

HERE = Path(__file__).resolve().parent
CLIENT = str(HERE / "cpg_client.py")
SIZES = (64, 1024, 16 * 1024, 64 * 1024)


def _row(base: dict, **fields: object) -> dict:
    row = {"impl": "openais-py", "size": None, "msgs_per_s": None, "mb_per_s": None, "median_us": None,
           "p99_us": None, "cpg_confchg_ms": None, "rss_kb": None, "rep": 1}
    row.update(base)
    row.update(fields)
    return row


def _client(cluster: LocalCluster, index: int, *args: str, timeout: float = 120) -> dict:
    out = subprocess.run([sys.executable, CLIENT, *args], env=cluster.environ(index), capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"client {args} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spawn(cluster: LocalCluster, index: int, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, CLIENT, mode], env=cluster.environ(index), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if "joined" not in line:
        raise RuntimeError(f"{mode} client on node {index} did not join")
    return proc


def run_config(nodes: int, receivers: int, crypto: bool, transport: str, seconds: float, rep: int,
               token: int, netmtu: int = 1500, realtime: bool = False,
               totem: dict[str, int] | None = None, cipher: str | None = None) -> list[dict]:
    """One cluster configuration: throughput per size, latency, RSS, and (3 nodes) confchg after kill.

    ``cipher``: a ``totem.crypto_cipher`` value (None: the executive's default).
    """
    extra: dict[str, object] = dict(totem or {})
    flow = TotemConfig(**{k: v for k, v in (totem or {}).items() if k in ("max_messages", "window_size")})
    aead = resolve_crypto_cipher(cipher) if crypto else "none"
    if crypto and cipher is not None:
        extra["crypto_cipher"] = cipher
    base = {"nodes": nodes, "transport": transport, "crypto": aead, "cipher": aead,
            "receivers": receivers, "token_ms": token, "consensus_ms": int(token * 1.2), "netmtu": netmtu,
            "max_messages": flow.max_messages, "window_size": flow.window_size,
            "sched": "rr" if realtime else "other", "rep": rep, **host_fields()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="aisbench-") as tmp, \
            LocalCluster(Path(tmp), nodes, transport=transport, secauth=crypto, token=token,
                         extra_totem={"netmtu": netmtu, **extra}, realtime=realtime) as cluster:
        cluster.start_all()
        cluster.wait_members(list(range(1, nodes + 1)), list(range(1, nodes + 1)), timeout=60)
        if f"Initializing transmit/receive security: {aead}" not in cluster.log(1):
            raise RuntimeError(f"node 1 does not report sealing with {aead}: {cluster.log(1)[-2000:]}")
        pids = {i: p.pid for i, p in cluster.procs.items()}
        rows.append(_row(base, test="rss", rss_kb=_rss_kb(pids[1]), phase="idle"))
        recv = [_spawn(cluster, i, "receive") for i in range(2, 2 + receivers)]
        members = 1 + receivers
        peak = 0
        for size in SIZES:
            result = _client(cluster, 1, "send", str(size), str(seconds), str(members))
            peak = max(peak, _rss_kb(pids[1]))
            rows.append(_row(base, test="throughput", size=size, msgs_per_s=round(result["msgs_per_s"]),
                             mb_per_s=round(result["mb_per_s"], 2)))
        lat = _client(cluster, 1, "latency", "64", "2000", str(members))
        rows.append(_row(base, test="latency", size=64, median_us=round(lat["median_us"], 1),
                         p99_us=round(lat["p99_us"], 1)))
        rows.append(_row(base, test="rss", rss_kb=max(peak, _rss_kb(pids[1])), phase="load"))
        for proc in recv:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=30)
        if nodes >= 3:
            watchers = {i: _spawn(cluster, i, "watch") for i in (1, 2, 3)}
            time.sleep(1.0)
            killed_at = time.monotonic()
            cluster.kill(3, signal.SIGKILL)
            seen = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = watchers[1].stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
                event = json.loads(line)
                if any(n == 3 and why == "NODEDOWN" for n, why in event.get("left", [])):
                    seen = event["t"]
                    break
            rows.append(_row(base, test="confchg_after_kill",
                             cpg_confchg_ms=None if seen is None else round((seen - killed_at) * 1000, 1)))
            for proc in watchers.values():
                proc.kill()
                proc.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the matrix, print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s per size and the headline configuration only")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput size")
    parser.add_argument("--nodes", type=int, choices=(1, 3))
    parser.add_argument("--receivers", type=int, choices=(0, 2))
    parser.add_argument("--crypto", choices=("on", "off"))
    parser.add_argument("--transport", choices=("udpu", "udp"), default="udpu")
    parser.add_argument("--cipher", choices=tuple(CRYPTO_CIPHERS),
                        help="totem.crypto_cipher with --crypto on (default: the executive's, aes-256-gcm)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--token", type=int, default=1000)
    parser.add_argument("--netmtu", type=int, default=1500, help="totem netmtu (corosync 3's knet finds ~64 KiB "
                                                                  "on loopback; 1500 is the openais default)")
    parser.add_argument("--realtime", action="store_true",
                        help="run the executives with -r (SCHED_RR, as corosync 3 does by default)")
    parser.add_argument("--totem", action="append", default=[], metavar="KEY=INT",
                        help="any other integer totem key, e.g. --totem max_messages=17 --totem window_size=50 "
                             "(corosync's defaults); repeatable")
    args = parser.parse_args(argv)
    try:
        totem = {key.strip(): int(value) for key, value in (item.split("=", 1) for item in args.totem)}
    except ValueError:
        parser.error("--totem takes KEY=INTEGER")
    matrix = [(1, 0, False), (1, 0, True), (3, 0, False), (3, 2, False), (3, 2, True)]
    if args.quick:
        matrix = [(3, 2, False)]
        args.seconds = min(args.seconds, 1.0)
    matrix = [m for m in matrix
              if (args.nodes is None or m[0] == args.nodes)
              and (args.receivers is None or m[1] == args.receivers)
              and (args.crypto is None or m[2] == (args.crypto == "on"))]
    for rep in range(1, args.reps + 1):
        for nodes, receivers, crypto in matrix:
            for row in run_config(nodes, receivers, crypto, args.transport, args.seconds, rep, args.token,
                                  args.netmtu, args.realtime, totem, args.cipher):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
