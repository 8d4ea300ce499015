"""``openais-quorumtool``: quorum status (like ``corosync-quorumtool``) and setting expected votes.

``-s`` (the default) prints the status::

    Quorate:          Yes
    Expected votes:   3
    Highest expected: 3
    Total votes:      2
    Quorum:           2
    Flags:            Quorate WaitForAll
        Nodeid  Votes
             1      1
             2      1

``--json`` prints one document (schema version 1)::

    {"version": 1, "quorate": true, "expected_votes": 3, "highest_expected": 3, "total_votes": 2,
     "quorum": 2, "flags": ["Quorate"], "nodes": [{"node_id": 1, "votes": 1}, ...]}

``-e N`` sets the expected votes (root only).  Exit status: 0 quorate (or
``-e`` done), 1 not quorate, 2 executive unreachable, no quorum configured,
or the call failed (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from openais import quorum
from openais.errors import AisError, Library, NotExist

SCHEMA_VERSION = 1
EXIT_QUORATE = 0
EXIT_NOT_QUORATE = 1
EXIT_ERROR = 2
PROG = "openais-quorumtool"


def status_doc(info: quorum.QuorumInfo) -> dict:
    """The ``--json`` document of ``info``."""
    return {
        "version": SCHEMA_VERSION,
        "quorate": info.quorate,
        "expected_votes": info.expected_votes,
        "highest_expected": info.highest_expected,
        "total_votes": info.total_votes,
        "quorum": info.quorum,
        "flags": sorted(info.flags),
        "nodes": [{"node_id": n, "votes": v} for n, v in sorted(info.node_votes.items())],
    }


def write_status(doc: dict, out: TextIO) -> None:
    """The plain status of ``doc`` (as built by :func:`status_doc`)."""
    out.write(f"Quorate:          {'Yes' if doc['quorate'] else 'No'}\n")
    out.write(f"Expected votes:   {doc['expected_votes']}\n")
    out.write(f"Highest expected: {doc['highest_expected']}\n")
    out.write(f"Total votes:      {doc['total_votes']}\n")
    out.write(f"Quorum:           {doc['quorum']}\n")
    out.write(f"Flags:            {' '.join(doc['flags'])}\n")
    out.write(f"{'Nodeid':>10}  {'Votes':>5}\n")
    for node in doc["nodes"]:
        out.write(f"{node['node_id']:>10}  {node['votes']:>5}\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-quorumtool``; returns the exit status."""
    parser = argparse.ArgumentParser(prog=PROG, description="Show quorum status or set expected votes.")
    parser.add_argument("-s", "--status", action="store_true", help="show quorum status (the default)")
    parser.add_argument("-e", "--expected", type=int, metavar="N", help="set expected votes to N (root only)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (schema version 1)")
    args = parser.parse_args(argv)
    try:
        with quorum.initialize() as handle:
            if args.expected is not None:
                handle.set_expected(args.expected)
                if not args.status:
                    return EXIT_QUORATE
            info = handle.info()
    except NotExist:
        sys.stderr.write(f"{PROG}: no quorum is configured (openais.conf has no 'quorum {{ }}' section)\n")
        return EXIT_ERROR
    except (Library, OSError) as exc:
        sys.stderr.write(f"{PROG}: executive unreachable: {_one_line(exc)}\n")
        return EXIT_ERROR
    except AisError as exc:
        sys.stderr.write(f"{PROG}: {_one_line(exc)}\n")
        return EXIT_ERROR
    doc = status_doc(info)
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        write_status(doc, sys.stdout)
    return EXIT_QUORATE if info.quorate else EXIT_NOT_QUORATE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
