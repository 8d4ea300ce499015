"""Stateful failover as a client sees it: interruption after a component kill and after a node kill.

Runs the counter demo (``examples.counter.demo``: 3 executives, the counter in
2N, a client asking without pause) for ``--rounds`` kills, alternating the
active component process and its whole executive, and prints JSON lines::

    {"bench": "failover", "kind": "component", "rounds": 20, "median_ms": ..., "p99_ms": ..., "max_ms": ...}
    {"bench": "failover", "kind": "node", ...}
    {"bench": "failover", "kind": "summary", "state_lost": 0, "answered_twice": 0, "served": ..., "rss_kb": {...}}

``--plot FILE.png`` draws the timeline (answers over time, coloured by the
answering node, failovers marked) when matplotlib is installed (the optional
``plot`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from examples.counter.demo import run


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def plot(summary: dict, path: str) -> None:
    """Draw the timeline to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [t for t, _n in summary["timeline"]]
    nodes = [n for _t, n in summary["timeline"]]
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.scatter(times, nodes, s=2)
    for t, kill in zip(summary["kill_times"], summary["kills"], strict=False):
        ax.axvline(t, color="red" if kill["kind"] == "node" else "orange", linewidth=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("answering node")
    ax.set_title("counter service: answers over time (orange: component killed, red: node killed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="kills in all, alternating kinds (default 40)")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between kills (default 3)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the timeline (needs matplotlib)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ais-failover-") as root:
        summary = run(args.rounds, args.interval, Path(root), as_json=True)
    for kind in ("component", "node"):
        gaps = [k["interruption_ms"] for k in summary["kills"] if k["kind"] == kind]
        if gaps:
            print(json.dumps({"bench": "failover", "kind": kind, "rounds": len(gaps),
                              "median_ms": statistics.median(gaps), "p99_ms": percentile(gaps, 0.99),
                              "max_ms": max(gaps)}))
    print(json.dumps({"bench": "failover", "kind": "summary", "state_lost": summary["state_lost"],
                      "answered_twice": summary["answered_twice"], "served": summary["served"],
                      "errors": summary["errors"], "rss_kb": summary["rss_kb"]}))
    if args.plot:
        try:
            plot(summary, args.plot)
        except ImportError:
            print("bench/failover.py: --plot needs matplotlib (pip install 'openais-py[plot]')", file=sys.stderr)
            return 2
    return 0 if summary["state_lost"] == 0 and summary["answered_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
