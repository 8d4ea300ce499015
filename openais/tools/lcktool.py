"""``openais-lcktool``: list the cluster's lock resources with their holders and waiters.

Plain output is one block per resource: its name and number of open handles,
then one line per granted lock (``held``) and per queued request
(``waits``, in queue order) with node, pid, mode, lock id and since when::

    accounts  (2 open)
        held   node 1  pid 4242  EX  lock 4294967297  since 2026-12-01 20:31:07.123
        waits  node 3  pid 5151  PR  lock 12884901889  since 2026-12-01 20:31:08.456

``--json`` prints one object with a stable schema::

    {"nodeid": 1, "locks": 2, "max_locks": 65536, "resource_count": 1, "truncated": false,
     "resources": [{"name": "accounts", "openers": 2,
                    "holders": [{"lock_id", "node", "owner_node", "pid", "mode", "flags", "orphan", "since"}],
                    "waiters": [...]}]}

``node`` is the node the request came from; ``owner_node`` is null for an
orphan lock; ``since`` is nanoseconds since the epoch.  Exit status 0 on
success, 1 when the executive cannot be reached.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from openais import lck
from openais.tools._common import EXIT_UNREACHABLE, print_document, reach, tool_parser

PROG = "openais-lcktool"


def _since(ns: int) -> str:
    seconds = ns / 1e9
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(ns % 1_000_000_000) // 1_000_000:03d}"


def _line(kind: str, item: dict) -> str:
    who = "orphan" if item["orphan"] else f"pid {item['pid']}"
    return (f"    {kind:<6} node {item['node']}  {who}  {item['mode']}  lock {item['lock_id']}  "
            f"since {_since(item['since'])}\n")


def write_plain(doc: dict, out: TextIO) -> None:
    """Write the plain listing of ``doc`` (the executive's table dump)."""
    for res in doc["resources"]:
        out.write(f"{res['name']}  ({res['openers']} open)\n")
        for item in res["holders"]:
            out.write(_line("held", item))
        for item in res["waiters"]:
            out.write(_line("waits", item))
    if doc.get("truncated"):
        out.write(f"... {doc['resource_count'] - len(doc['resources'])} more resources (use --limit)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-lcktool``; returns the exit status."""
    parser = tool_parser(PROG, "List LCK resources with their holders and waiters.",
                         json_help="print the table as JSON")
    parser.add_argument("--limit", type=int, default=1000, help="list at most this many resources (by name)")
    parser.add_argument("--prefix", default="", help="only resources whose name starts with this")
    args = parser.parse_args(argv)
    if not 0 <= args.limit <= 0xFFFFFFFF:
        parser.error("--limit must be 0..4294967295")

    def dump() -> dict:
        with lck.initialize() as handle:
            return handle.dump(limit=args.limit, prefix=args.prefix)

    doc = reach(PROG, dump)
    return EXIT_UNREACHABLE if doc is None else print_document(doc, args.json, write_plain)


if __name__ == "__main__":
    sys.exit(main())
