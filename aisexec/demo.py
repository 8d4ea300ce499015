"""``openais-demo``: a local cluster of executives on 127.0.0.1..N to watch and break.

Starts N executives (default 3) as separate processes, shows every node's
view of the ring once a second, and reads commands from standard input:

    k N     SIGKILL node N's executive
    r N     restart node N
    q       stop everything and exit (Ctrl-C does the same)

``openais-demo failover`` runs the stateful failover demo instead
(:mod:`examples.counter.demo`).

Everything lives in a temporary directory (or ``--dir``) and every process
the demo started is stopped when it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

from aisexec.localcluster import LocalCluster


def render(cluster: LocalCluster) -> str:
    """One status table: a row per node with its state, ring id and members."""
    lines = [f"{'node':<6}{'address':<12}{'pid':<9}{'state':<14}{'ring':<12}members"]
    for index, node in enumerate(cluster.nodes, start=1):
        proc = cluster.procs.get(index)
        if proc is None or proc.poll() is not None:
            lines.append(f"{index:<6}{node.address:<12}{'-':<9}{'down':<14}{'-':<12}-")
            continue
        status = cluster.status(index)
        if status is None:
            lines.append(f"{index:<6}{node.address:<12}{proc.pid:<9}{'starting':<14}{'-':<12}-")
            continue
        state = status.get("state", "?") + ("" if status.get("synced") else " (sync)")
        members = ",".join(str(m) for m in status.get("members", []))
        lines.append(f"{index:<6}{node.address:<12}{proc.pid:<9}{state:<14}{status.get('ring_id', '-'):<12}{members}")
    return "\n".join(lines)


def _command(cluster: LocalCluster, line: str) -> bool:
    words = line.split()
    if not words:
        return True
    if words[0] in ("q", "quit", "exit"):
        return False
    if words[0] in ("k", "kill", "r", "restart") and len(words) == 2 and words[1].isdigit():
        index = int(words[1])
        if not 1 <= index <= len(cluster.nodes):
            print(f"no node {index}")
        elif words[0].startswith("k"):
            cluster.kill(index, signal.SIGKILL)
            print(f"node {index} killed (SIGKILL)")
        else:
            cluster.kill(index, signal.SIGKILL)
            cluster.start(index)
            print(f"node {index} restarted")
        return True
    print("commands: k N (kill), r N (restart), q (quit)")
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the demo until 'q', end of input or Ctrl-C (``openais-demo failover``: the failover demo)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["failover"]:
        from examples.counter.demo import main as failover_main

        return failover_main(argv[1:])
    parser = argparse.ArgumentParser(prog="openais-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--nodes", type=int, default=3, help="number of executives (1..9, default 3)")
    parser.add_argument("--dir", help="keep the cluster's files here instead of a temporary directory")
    parser.add_argument("--transport", choices=("udpu", "udp"), default="udpu")
    parser.add_argument("--once", action="store_true", help="print one status table once the ring formed, then stop")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 9:
        parser.error("--nodes must be between 1 and 9")
    with contextlib.ExitStack() as stack:
        root = Path(args.dir) if args.dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ais-")))
        cluster = stack.enter_context(LocalCluster(root, args.nodes, transport=args.transport))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        cluster.start_all()
        print(f"started {args.nodes} executives under {root}; logs in {root}/node*/stdout.log")
        if args.once:
            everyone = list(range(1, args.nodes + 1))
            cluster.wait_members(everyone, everyone, timeout=30)
            print(render(cluster))
            return 0
        print("commands: k N (kill), r N (restart), q (quit); Ctrl-C stops everything")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop everything below
            while True:
                print(render(cluster), flush=True)
                print()
                readable, _, _ = select.select([sys.stdin], [], [], 1.0)
                if readable:
                    line = sys.stdin.readline()
                    if not line or not _command(cluster, line):
                        break
                time.sleep(0.1)
        print("stopping every executive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
