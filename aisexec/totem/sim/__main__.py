"""Soak CLI: ``python -m aisexec.totem.sim --seeds N --start S --nodes 2-16``.

Prints a summary (with how often the runs reached the hard cases: SAFE messages in transitional
configurations, holes, pg chains cut at changes, stale tokens replayed); on failure the seed
(``SEED=<n>``), the one command that replays it, the violations and a trace excerpt.
Exit status 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter

from aisexec.totem.sim.runner import run_seed


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv: list[str] | None = None) -> int:
    """Run the soak and return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m aisexec.totem.sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="number of seeded scenarios")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--nodes", type=_range, default=(2, 16), help="node count range, e.g. 2-16")
    parser.add_argument("--no-faults", action="store_true", help="fault-free scenarios only")
    parser.add_argument("--pg", choices=("mixed", "on", "off"), default="mixed", help="route traffic through totempg")
    parser.add_argument("--max-failures", type=int, default=5, help="stop after this many failing seeds")
    parser.add_argument("--check-determinism", action="store_true", help="run every seed twice and compare hashes")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--progress", type=int, default=0, metavar="N", help="print a line every N seeds")
    args = parser.parse_args(argv)
    use_pg = {"mixed": None, "on": True, "off": False}[args.pg]
    try:
        import aisexec.totem.srp  # noqa: F401
    except ImportError as exc:
        print(f"cannot load the Totem core: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a soak stopped early still prints what it ran
    failures: list[int] = []
    kinds: Counter[str] = Counter()
    delivered = events = 0
    ran = 0
    coverage: Counter[str] = Counter()
    try:
        ran, delivered, events = _soak(args, use_pg, failures, kinds, coverage, started)
    except KeyboardInterrupt:
        ran, delivered, events = _progress["ran"], _progress["delivered"], _progress["events"]
        print(f"interrupted after {ran} seeds", flush=True)
    elapsed = time.monotonic() - started
    print(
        f"ran {ran} scenarios in {elapsed:.1f}s ({ran / max(elapsed, 1e-9):.1f}/s), "
        f"{events} events, {delivered} deliveries, {len(failures)} failed"
    )
    if not args.quiet or not failures:
        print("reached: " + ", ".join(f"{k} {n}" for k, n in sorted(coverage.items())))
    if failures:
        print("failed seeds: " + " ".join(map(str, failures)))
        print("violations: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
    return 1 if failures else 0


_progress = {"ran": 0, "delivered": 0, "events": 0}


def _soak(args: argparse.Namespace, use_pg: bool | None, failures: list[int], kinds: Counter[str],
          coverage: Counter[str], started: float) -> tuple[int, int, int]:
    """Run the seeds; returns ``(ran, delivered, events)`` (also kept in ``_progress`` as it goes)."""
    ran = delivered = events = 0
    for seed in range(args.start, args.start + args.seeds):
        result = run_seed(seed, args.nodes, faults=not args.no_faults, use_pg=use_pg)
        ran += 1
        delivered += result.delivered
        events += result.events
        _progress.update(ran=ran, delivered=delivered, events=events)
        coverage.update(result.coverage)
        if args.progress and ran % args.progress == 0:
            print(f"progress: {ran} seeds ({seed}), {len(failures)} failed, {time.monotonic() - started:.0f}s",
                  flush=True)
        if args.check_determinism and result.ok:
            again = run_seed(seed, args.nodes, faults=not args.no_faults, use_pg=use_pg)
            if again.trace_hash != result.trace_hash:
                print(f"SEED={seed} [21 determinism] trace hash {result.trace_hash} != {again.trace_hash}",
                      flush=True)
                failures.append(seed)
        if result.ok:
            continue
        failures.append(seed)
        kinds.update({v.invariant for v in result.violations})
        print(f"SEED={seed} nodes={result.nodes} FAILED: {len(result.violations)} violation(s); replay: "
              f"python -m aisexec.totem.sim --seeds 1 --start {seed} --nodes {args.nodes[0]}-{args.nodes[1]}"
              + (" --no-faults" if args.no_faults else "") + (f" --pg {args.pg}" if args.pg != "mixed" else ""))
        for violation in result.violations[:8]:
            print(f"  {violation}")
            if violation.context and not args.quiet:
                print("    " + violation.context.strip().replace("\n", "\n    ")[-2000:])
        if not args.quiet:
            print("  trace excerpt (last events):")
            for line in result.log[-25:]:
                print(f"    {line}")
        sys.stdout.flush()
        if len(failures) >= args.max_failures:
            break
    return ran, delivered, events


if __name__ == "__main__":
    sys.exit(main())
