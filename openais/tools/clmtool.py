"""``openais-clmtool``: list the nodes of the cluster (CLM view).

Plain output is a table, one line per member node::

    View 3
        Nodeid  Address          Name       Initial view  Boot time
             1  127.0.0.1        host-a                1  2026-11-23T08:00:00Z

``--json`` prints one document (schema version 1, stable; new keys may be
added, none removed or retyped)::

    {"version": 1, "view_number": 3,
     "nodes": [{"node_id": 1, "address": "127.0.0.1", "name": "host-a", "member": true,
                "boot_timestamp": 1795000000000000000, "initial_view_number": 1}]}

``boot_timestamp`` is nanoseconds since the epoch.  Exit status 0 on
success, 2 with a one-line error on stderr when the executive cannot be
reached or answers with an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TextIO

from openais import clm
from openais.errors import AisError, Library

SCHEMA_VERSION = 1
EXIT_OK = 0
EXIT_UNREACHABLE = 2
PROG = "openais-clmtool"


def nodes_doc(buffer: clm.NotificationBuffer) -> dict:
    """The ``--json`` document for ``buffer`` (nodes in node id order)."""
    nodes = sorted((n.node for n in buffer.notifications), key=lambda node: node.node_id)
    return {
        "version": SCHEMA_VERSION,
        "view_number": buffer.view_number,
        "nodes": [
            {"node_id": node.node_id, "address": node.node_address, "name": node.node_name, "member": node.member,
             "boot_timestamp": node.boot_timestamp, "initial_view_number": node.initial_view_number}
            for node in nodes
        ],
    }


def _boot_time(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_table(doc: dict, out: TextIO) -> None:
    """Plain table of ``doc`` (as built by :func:`nodes_doc`)."""
    out.write(f"View {doc['view_number']}\n")
    out.write(f"{'Nodeid':>10}  {'Address':<16} {'Name':<20} {'Initial view':>12}  Boot time\n")
    for node in doc["nodes"]:
        out.write(f"{node['node_id']:>10}  {node['address']:<16} {node['name']:<20} "
                  f"{node['initial_view_number']:>12}  {_boot_time(node['boot_timestamp'])}\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-clmtool``; returns the exit status."""
    parser = argparse.ArgumentParser(prog=PROG, description="List the nodes of the cluster.")
    parser.add_argument("--json", action="store_true", help="print one JSON document (schema version 1)")
    args = parser.parse_args(argv)
    try:
        buffer = clm.cluster_nodes()
    except (Library, OSError) as exc:
        sys.stderr.write(f"{PROG}: executive unreachable: {_one_line(exc)}\n")
        return EXIT_UNREACHABLE
    except AisError as exc:
        sys.stderr.write(f"{PROG}: the executive refused: {_one_line(exc)}\n")
        return EXIT_UNREACHABLE
    except clm.ClmMessageError as exc:
        sys.stderr.write(f"{PROG}: the executive sent a malformed answer: {exc}\n")
        return EXIT_UNREACHABLE
    doc = nodes_doc(buffer)
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        write_table(doc, sys.stdout)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
