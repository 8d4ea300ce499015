"""Raw ring benchmark: Totem and totempg only, without services, IPC or client library.

    python bench/ring.py                        # 1 and 3 nodes, secauth off and on
    python bench/ring.py --nodes 3 --crypto off --seconds 3

Each node is a separate process running :class:`aisexec.totemlink.TotemLink` (transport,
driver, SRP core, packing) from a configuration laid out as ``LocalCluster`` does, on
127.0.0.1..N.  Node 1 multicasts (agreed) messages of 64 B, 1 KiB, 16 KiB and 64 KiB for a
few seconds each, as fast as the ring takes them, and counts its own deliveries: msgs/s =
delivered / (last own delivery - first send).  Latency: 2,000 messages of 64 B one at a
time, from ``mcast`` to own delivery.  Every other node receives everything.  Prints JSON
lines with the fields of ``bench/run.py`` plus ``"layer": "totem"``.
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
from pathlib import Path

SIZES = (64, 1024, 16384, 65536)
LATENCY_COUNT = 2000


def node_main(count: int, seconds: float) -> None:
    """One ring member (run with the node's environment); node 1 measures, the others receive."""
    import gevent
    import gevent.event

    from aisexec.env import Environment
    from aisexec.main import load_checked_config, load_key_if_needed
    from aisexec.totem.api import ConfigChange, ConfKind, QueueFull
    from aisexec.totemlink import TotemLink, resolve_nodeid

    env = Environment.from_environ()
    config = load_checked_config(env)
    nodeid = resolve_nodeid(config)
    formed = gevent.event.Event()
    room = gevent.event.Event()
    own = {"count": 0, "last": 0.0}
    arrived = gevent.event.Event()

    def on_message(sender: int, message: bytes) -> None:
        if sender == nodeid:
            own["count"] += 1
            own["last"] = time.perf_counter()
            arrived.set()

    def on_config(change: ConfigChange) -> None:
        if change.kind is ConfKind.REGULAR and len(change.members) == count:
            formed.set()

    link = TotemLink(config, env, nodeid, load_key_if_needed(config, env), on_message=on_message,
                     on_config=on_config, on_room=room.set)
    link.start()
    if nodeid != 1:
        gevent.get_hub().threadpool.spawn(sys.stdin.read).get()  # until the orchestrator closes stdin
        link.stop()
        return
    if not formed.wait(30):
        raise SystemExit("the ring did not form")
    gevent.sleep(0.5)
    for size in SIZES:
        payload = os.urandom(size)
        own["count"], sent = 0, 0
        first = time.perf_counter()
        stop = first + seconds
        while time.perf_counter() < stop:
            try:
                link.mcast(payload)
                sent += 1
            except QueueFull:
                room.clear()
                room.wait(0.01)
            if sent % 16 == 0:
                gevent.sleep(0)  # let the hub run the ring between bursts
        deadline = time.perf_counter() + 30
        while own["count"] < sent and time.perf_counter() < deadline:
            gevent.sleep(0.01)
        elapsed = max(own["last"] - first, 1e-9)
        print(json.dumps({"test": "throughput", "size": size, "msgs_per_s": round(own["count"] / elapsed),
                          "mb_per_s": round(own["count"] * size / elapsed / 1e6, 2), "sent": sent}), flush=True)
    samples = []
    for _ in range(LATENCY_COUNT):
        arrived.clear()
        t0 = time.perf_counter()
        link.mcast(b"l" * 64)
        arrived.wait(5)
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    print(json.dumps({"test": "latency", "size": 64, "median_us": round(statistics.median(samples), 1),
                      "p99_us": round(samples[int(len(samples) * 0.99) - 1], 1)}), flush=True)
    link.leave()
    link.stop()


def run_config(nodes: int, crypto: bool, transport: str, seconds: float, netmtu: int) -> list[dict]:
    """Start ``nodes`` ring processes, collect node 1's rows."""
    from aisexec.localcluster import LocalCluster

    base = {"impl": "openais-py", "layer": "totem", "nodes": nodes, "transport": transport,
            "crypto": "chacha20-poly1305" if crypto else "none", "receivers": nodes - 1, "netmtu": netmtu}
    rows = []
    with tempfile.TemporaryDirectory(prefix="aisring-") as tmp, \
            LocalCluster(Path(tmp), nodes, transport=transport, secauth=crypto, extra_totem={"netmtu": netmtu}) as c:
        procs = []
        try:
            for i in range(nodes, 0, -1):  # receivers first, node 1 (the sender) last
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "node", str(nodes), str(seconds)], env=c.environ(i),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE if i == 1 else subprocess.DEVNULL, text=True))
            sender = procs[-1]
            for line in sender.stdout:  # type: ignore[union-attr]
                rows.append({**base, **json.loads(line)})
            sender.wait(timeout=60)
        finally:
            for proc in procs:
                if proc.stdin:
                    proc.stdin.close()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the matrix (or one node process, when called with ``node``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "node":
        node_main(int(argv[1]), float(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, choices=(1, 3))
    parser.add_argument("--crypto", choices=("on", "off"))
    parser.add_argument("--transport", choices=("udpu", "udp"), default="udpu")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--netmtu", type=int, default=1500)
    args = parser.parse_args(argv)
    for nodes in (1, 3):
        for crypto in (False, True):
            if args.nodes not in (None, nodes) or args.crypto not in (None, "on" if crypto else "off"):
                continue
            for row in run_config(nodes, crypto, args.transport, args.seconds, args.netmtu):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
