"""Mutation testing of the Totem core: does the suite catch small injected bugs?

Each mutant is one small source edit (a line or two of the real code replaced by a plausible
bug) tied to the guarantee of totem.md §9 it breaks.  For each mutant this script copies the
tree to a temporary directory, applies the edit there (the real source is never touched), and
runs the relevant tests against the copy (``PYTHONPATH`` puts the copy first).  A mutant is
*killed* when a test fails and *survives* when the whole selection passes.

    .venv/bin/python bench/mutants.py                  # every mutant, report on stdout
    .venv/bin/python bench/mutants.py --out bench/results-mutants.txt
    .venv/bin/python bench/mutants.py --only safe-one-visit,stale-token-rep-only

The simulator slice runs ``--sim-seeds`` seeds from ``--sim-start`` (fixed, so a report can be
reproduced; CI draws fresh ones).  Tests that already fail on the unmutated tree are found by a
baseline run and deselected, so a mutant is never "killed" by somebody else's work in progress.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The Totem suite, cheap files first (``-x`` stops at the first failure).
CORE_TESTS = (
    "tests/totem/test_srp_ring.py",
    "tests/totem/test_srp_membership.py",
    "tests/totem/test_srp_timers.py",
    "tests/totem/test_wire.py",
    "tests/totem/test_pg.py",
    "tests/totem/test_sim_fake.py",
    "tests/totem/test_guarantees.py",
    "tests/totem/test_sim_core.py",
)


@dataclass(frozen=True)
class Mutant:
    """One injected bug: ``old`` (exactly once in ``path``) becomes ``new``."""

    name: str
    guarantee: str  # the totem.md §9 item (or SAFE) it breaks
    path: str
    old: str
    new: str
    tests: tuple[str, ...] = CORE_TESTS


MUTANTS: tuple[Mutant, ...] = (
    Mutant("dup-after-hole", "§9.1 no duplicates", "aisexec/totem/srp_recovery.py",
           "for seq in range(delivered + 1, high + 1):  # step 4",
           "for seq in range(delivered, high + 1):  # step 4"),
    Mutant("reverse-transitional-order", "§9.2 total order", "aisexec/totem/srp_recovery.py",
           "for seq in range(delivered + 1, high + 1):  # step 4",
           "for seq in range(high, delivered, -1):  # step 4"),
    Mutant("pending-lifo", "§9.3 per-sender FIFO", "aisexec/totem/srp_ordering.py",
           "                else:\n                    payload, guarantee = queue.popleft()\n",
           "                else:\n                    payload, guarantee = queue.pop()\n"),
    Mutant("regular-members-from-proc-set", "§9.4 configuration agreement", "aisexec/totem/srp_recovery.py",
           "members = tuple(sorted(self.my_memb))", "members = tuple(sorted(self.proc_set | set(self.my_memb)))"),
    Mutant("transitional-without-me", "§9.5 self inclusion", "aisexec/totem/srp_recovery.py",
           "trans = tuple(sorted(set(self.transitional) | {me}))",
           "trans = tuple(sorted(set(self.transitional) - {me}))"),
    Mutant("no-transitional", "§9.6 alternation", "aisexec/totem/srp_recovery.py",
           "if self.regular_delivered:  # a node's very first", "if False:  # a node's very first"),
    Mutant("ring-seq-not-persisted", "§9.7 monotone ring ids", "aisexec/totem/srp_membership.py",
           "self.out.ring_seq_to_persist = new_ring.seq", "self.out.ring_seq_to_persist = None"),
    Mutant("old-message-in-new-ring", "§9.8 delivery configuration", "aisexec/totem/srp_recovery.py",
           "self.emit(Delivery(m[0], m[2], self.old_ring_id, seq, m[1]))",
           "self.emit(Delivery(m[0], m[2], self.ring_id, seq, m[1]))"),
    Mutant("safe-cut-from-own-view", "§9.9 virtual synchrony", "aisexec/totem/srp_recovery.py",
           "stable = self.trans_high_delivered", "stable = self.old_high_delivered"),
    Mutant("pg-drop-all-at-transitional", "§9.9 virtual synchrony (pg)", "aisexec/totem/pg.py",
           "gone = [s for s in self._partial if s not in change.members]", "gone = list(self._partial)"),
    Mutant("pg-requeue-at-transitional", "§9.9 virtual synchrony (pg)", "aisexec/totem/pg.py",
           "        if change.kind == ConfKind.TRANSITIONAL:\n            return\n        if self._withdraw",
           "        if self._withdraw"),
    Mutant("withdraw-loses-frames", "§9.10 self delivery", "aisexec/totem/srp.py",
           "frames = list(self.pending)\n", "frames = []\n"),
    Mutant("post-hole-after-regular", "§9.11 transitional before regular", "aisexec/totem/srp_recovery.py",
           "                self.deliver_old(m, seq)\n        members = tuple(sorted(self.my_memb))\n"
           "        self.emit(ConfigChange(ConfKind.REGULAR, members, (), tuple(sorted(set(members) - set(trans))), "
           "self.ring_id))\n",
           "                self.__dict__.setdefault('late', []).append((m, seq))\n"
           "        members = tuple(sorted(self.my_memb))\n"
           "        self.emit(ConfigChange(ConfKind.REGULAR, members, (), tuple(sorted(set(members) - set(trans))), "
           "self.ring_id))\n"
           "        for m, seq in self.__dict__.pop('late', []):\n"
           "            self.deliver_old(m, seq)\n"),
    Mutant("gap-rule-ignored", "§9.12 gap rule", "aisexec/totem/srp_recovery.py",
           "elif not holed or m[0] in self.deliver_set:", "else:"),
    Mutant("window-ignored", "§9.13 flow control (window)", "aisexec/totem/srp_ordering.py",
           "allowed = min(cfg.max_messages, window - tok_fcc)", "allowed = cfg.max_messages"),
    Mutant("retransmits-not-counted", "§9.13 flow control (per visit)", "aisexec/totem/srp_ordering.py",
           "if rrep == rep and rrseq == rseq and seq in sq and sent < allowed:",
           "if rrep == rep and rrseq == rseq and seq in sq:"),
    Mutant("release-one-visit", "§9.14 buffer release", "aisexec/totem/srp_ordering.py",
           "release_to = min(safe_aru, self.my_high_delivered)", "release_to = min(tok_aru, self.my_high_delivered)"),
    Mutant("release-undelivered", "§9.14 buffer release", "aisexec/totem/srp_ordering.py",
           "release_to = min(safe_aru, self.my_high_delivered)", "release_to = safe_aru"),
    Mutant("stale-token-rep-only", "§9.15 stale token (older ring, same rep)", "aisexec/totem/srp_ordering.py",
           "if t_rep != rep or t_rseq != rseq:\n            self.count(\"tokens_foreign\")",
           "if t_rep != rep:\n            self.count(\"tokens_foreign\")"),
    Mutant("duplicate-token-accepted", "§9.15 stale token (duplicate)", "aisexec/totem/srp_ordering.py",
           "if token_seq <= self.my_token_seq:", "if token_seq < self.my_token_seq:"),
    Mutant("consensus-never-fails", "§9.16 liveness", "aisexec/totem/srp_membership.py",
           "self.fail_set |= cands - self.consensus_set", "self.fail_set |= set()"),
    Mutant("no-merge-detect", "§9.17 merge", "aisexec/totem/srp_membership.py",
           "self.send(MULTICAST, MergeDetect(self._nodeid, self.ring_id.rep, self.ring_id.seq).encode())",
           "pass"),
    Mutant("activate-before-barrier", "§9.18 sync", "aisexec/sync.py",
           "if self.phase is Phase.BARRIER and len(self._barriers) == len(self.members):",
           "if self.phase is Phase.BARRIER:", ("tests/test_sync.py",)),
    Mutant("fragment-off-by-one", "§9.19 fragmentation", "aisexec/totem/pg.py",
           "memoryview(chain.message)[start : start + chain.chunk]),",
           "memoryview(chain.message)[start : start + chain.chunk - 1]),"),
    Mutant("replay-window-off", "§9.20 security", "aisexec/totem/crypto.py",
           "if offset >= 0 and (offset >= REPLAY_WINDOW or window.seen >> offset & 1):",
           "if False:", ("tests/totem/test_crypto.py",)),
    Mutant("send-join-unseeded", "§9.21 determinism", "aisexec/totem/srp_membership.py",
           "self.rng.uniform(0, limit)", "__import__('random').uniform(0, limit)"),
    Mutant("safe-not-waited", "SAFE delivery (§1.6)", "aisexec/totem/srp_ordering.py",
           "if guarantee == _SAFE and seq > safe_aru:", "if guarantee == _SAFE and seq > aru:"),
    Mutant("safe-one-visit", "SAFE delivery (§1.6)", "aisexec/totem/srp_ordering.py",
           "safe_aru = tok_aru if tok_aru < last_aru else last_aru", "safe_aru = tok_aru"),
    Mutant("safe-in-old-regular", "SAFE delivery across a change (§2.8)", "aisexec/totem/srp_recovery.py",
           "(delivered + 1 <= stable or osq[delivered + 1][1] != _SAFE)", "True"),
    Mutant("guarantee-dropped", "SAFE delivery (guarantee kept)", "aisexec/totem/srp_ordering.py",
           "                else:\n                    payload, guarantee = queue.popleft()\n",
           "                else:\n                    payload, guarantee = queue.popleft()[0], 0\n"),
)


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".git", "run", "*.egg-info")
    for name in ("aisexec", "tests", "plugins", "openais"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "ruff.toml"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


def _pytest(tree: Path, tests: tuple[str, ...], args: argparse.Namespace, deselect: list[str],
            stop_first: bool) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), SIM_SEED_START=str(args.sim_start), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--timeout", "600",
           f"--sim-seeds={args.sim_seeds}", f"--sim-start={args.sim_start}", *tests]
    if stop_first:
        cmd.insert(4, "-x")
    for test_id in deselect:
        cmd += ["--deselect", test_id]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=args.timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _failed_ids(output: str) -> list[str]:
    return re.findall(r"^FAILED (\S+)", output, flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    """Run the mutants; print (and optionally write) the table; exit 1 when one survived."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated mutant names")
    parser.add_argument("--sim-seeds", type=int, default=300, help="seeds in the simulator slice")
    parser.add_argument("--sim-start", type=int, default=424242, help="first seed of the slice")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutant")
    parser.add_argument("--out", default="", help="also write the report to this file")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.guarantee:45} {m.path}")
        return 0
    lines = [f"# bench/mutants.py: {len(chosen)} mutants, simulator slice {args.sim_seeds} seeds from "
             f"{args.sim_start}, {time.strftime('%Y-%m-%d %H:%M')}", ""]
    print("\n".join(lines), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        base = Path(tmp) / "base"
        _copy_tree(base)
        deselect: dict[tuple[str, ...], list[str]] = {}
        for tests in sorted({m.tests for m in chosen}):
            code, output = _pytest(base, tests, args, [], stop_first=False)
            deselect[tests] = _failed_ids(output)
            note = f"baseline {' '.join(tests) if len(tests) < 3 else 'totem suite'}: exit {code}"
            if deselect[tests]:
                note += f", deselected (failing before any mutation): {' '.join(deselect[tests])}"
            print(note, flush=True)
            lines.append(note)
        lines.append("")
        for mutant in chosen:
            tree = Path(tmp) / mutant.name
            shutil.copytree(base, tree)
            target = tree / mutant.path
            source = target.read_text()
            if source.count(mutant.old) != 1:
                verdict, detail, took = "NOT APPLIED", f"snippet found {source.count(mutant.old)} times", 0.0
            else:
                target.write_text(source.replace(mutant.old, mutant.new))
                started = time.monotonic()
                try:
                    code, output = _pytest(tree, mutant.tests, args, deselect[mutant.tests], stop_first=True)
                except subprocess.TimeoutExpired:
                    code, output = 1, "FAILED (timeout)"
                took = time.monotonic() - started
                failed = _failed_ids(output)
                if code == 0:
                    verdict, detail = "SURVIVED", "every selected test passed"
                elif failed:
                    verdict, detail = "killed", failed[0]
                else:
                    verdict, detail = "killed", output.strip().splitlines()[-1][:100] if output.strip() else "?"
            shutil.rmtree(tree, ignore_errors=True)
            results.append((mutant, verdict))
            line = f"{verdict:11} {mutant.name:30} {mutant.guarantee:42} {took:6.0f}s  {detail}"
            print(line, flush=True)
            lines.append(line)
    killed = sum(1 for _, v in results if v == "killed")
    guarantees = sorted({m.guarantee.split(" (")[0] for m, v in results if v == "killed"})
    summary = [
        "",
        f"{killed}/{len(results)} mutants killed; survived: "
        + (", ".join(m.name for m, v in results if v == "SURVIVED") or "none")
        + "; not applied: " + (", ".join(m.name for m, v in results if v == "NOT APPLIED") or "none"),
        "guarantees with a killed mutant: " + ", ".join(guarantees),
    ]
    print("\n".join(summary))
    lines += summary
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
