"""``openais-msgtool``: the message queues and queue groups of the cluster.

Plain output lists every queue (status, node, opener, fill per priority area)
and every group with its policy and members; ``--json`` prints one object::

    {"nodeid": 1,
     "queues": [{"name": "orders", "status": "open", "node": 2, "opener": {"node": 2, "pid": 4242},
                 "persistent": false, "retention": 10.0, "close_time": 0, "held_here": 0,
                 "areas": [{"priority": 0, "size": 65536, "used": 0, "messages": 0,
                            "capacity_reached": 65536, "capacity_available": 0, "reached": false}, ...]}],
     "groups": [{"name": "workers", "policy": "ROUND_ROBIN",
                 "members": [{"queue": "orders", "eligible": true, "node": 2}]}]}

``-q`` lists queues only, ``-g`` groups only.  The view is the local
executive's replica, identical on every node; ``held_here`` counts the
messages this node's executive keeps.  Exit status 0 on success, 2 when the
executive cannot be reached.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import TextIO

from openais import msg
from openais.tools._common import EXIT_UNREACHABLE, print_document, reach, tool_parser

PROG = "openais-msgtool"


def listing(dump: dict) -> dict:
    """The ``--json`` document for one engine dump (queues and groups as lists, sorted by name)."""
    return {
        "nodeid": dump.get("nodeid", 0),
        "queues": [{"name": name, **info} for name, info in sorted(dump.get("queues", {}).items())],
        "groups": [{"name": name, **info} for name, info in sorted(dump.get("groups", {}).items())],
    }


def _fill(area: dict) -> str:
    size = area["size"]
    pct = 100.0 * area["used"] / size if size else 0.0
    return f"p{area['priority']} {area['messages']} msg {area['used']}/{size} B ({pct:.0f}%)"


def write_plain(doc: dict, out: TextIO, queues: bool = True, groups: bool = True) -> None:
    """Write the plain listing of ``doc`` (as built by :func:`listing`)."""
    if queues:
        out.write(f"queues ({len(doc['queues'])}):\n")
        for q in doc["queues"]:
            opener = q["opener"]
            who = f"open by pid {opener['pid']} on node {opener['node']}" if opener else q["status"]
            where = f"node {q['node']}" if q["node"] else "no node"
            flags = "persistent" if q["persistent"] else f"retention {q['retention']} s"
            out.write(f"    {q['name']}: {who}; {where}; {flags}\n")
            out.write("        " + "; ".join(_fill(a) for a in q["areas"]) + "\n")
    if groups:
        out.write(f"groups ({len(doc['groups'])}):\n")
        for g in doc["groups"]:
            out.write(f"    {g['name']} ({g['policy']})\n")
            for member in g["members"]:
                state = "eligible" if member["eligible"] else "not eligible"
                node = f"node {member['node']}" if member["node"] else "no node"
                out.write(f"        {member['queue']}: {state}, {node}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-msgtool``; returns the exit status."""
    parser = tool_parser(PROG, "List MSG queues and queue groups.",
                         json_help="print JSON: {nodeid, queues: [...], groups: [...]}")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("-q", "--queues", action="store_true", help="queues only")
    only.add_argument("-g", "--groups", action="store_true", help="groups only")
    args = parser.parse_args(argv)
    dump = reach(PROG, _dump)
    if dump is None:
        return EXIT_UNREACHABLE
    doc = listing(dump)
    if args.groups:
        doc.pop("queues")
    if args.queues:
        doc.pop("groups")
    return print_document(doc, args.json, partial(write_plain, queues="queues" in doc, groups="groups" in doc))


def _dump() -> dict:
    """The local executive's MSG dump."""
    with msg.initialize() as handle:
        return handle.dump()


if __name__ == "__main__":
    sys.exit(main())
