"""``openais-cpgtool``: list the closed process groups of the cluster and their members.

Plain output is one block per group: the group name, then one ``nodeid pid``
line per member, indented.  ``-d DELIM`` prints one machine-readable line per
member (``name DELIM nodeid DELIM pid``), ``-n`` only the group names, and
``--json`` one object with a stable schema (version 1, as the other tools'; new keys may be
added, none removed or retyped)::

    {"version": 1, "groups": [{"name": "workers", "members": [{"nodeid": 1, "pid": 4242}]}]}

Exit status 0 on success, 1 when the executive cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from openais import cpg
from openais.errors import AisError

#: Version of the ``--json`` document.
SCHEMA_VERSION = 1


def listing(groups: dict[str, list[cpg.Member]]) -> dict:
    """The ``--json`` document for ``groups`` (groups by name, members by nodeid and pid)."""
    return {
        "version": SCHEMA_VERSION,
        "groups": [
            {"name": name, "members": [{"nodeid": m.nodeid, "pid": m.pid} for m in sorted(members)]}
            for name, members in sorted(groups.items())
        ]
    }


def write_plain(doc: dict, out: TextIO) -> None:
    """Write the plain-text listing of ``doc`` (as built by :func:`listing`)."""
    for group in doc["groups"]:
        out.write(f"{group['name']}\n")
        for member in group["members"]:
            out.write(f"    {member['nodeid']} {member['pid']}\n")


def write_delimited(doc: dict, out: TextIO, delimiter: str) -> None:
    """Write one ``name<d>nodeid<d>pid`` line per member of every group in ``doc``."""
    for group in doc["groups"]:
        for member in group["members"]:
            out.write(f"{group['name']}{delimiter}{member['nodeid']}{delimiter}{member['pid']}\n")


def write_names(doc: dict, out: TextIO) -> None:
    """Write the group names of ``doc``, one a line."""
    for group in doc["groups"]:
        out.write(f"{group['name']}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-cpgtool``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="openais-cpgtool", description="List CPG groups and their members.")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="print JSON: {version: 1, groups: [{name, members: [{nodeid, pid}]}]}")
    form.add_argument("-d", "--delimiter", metavar="DELIM", help="one 'name DELIM nodeid DELIM pid' line per member")
    form.add_argument("-n", "--names", action="store_true", help="print group names only")
    args = parser.parse_args(argv)
    try:
        groups = cpg.groups()
    except (AisError, OSError) as exc:
        sys.stderr.write(f"openais-cpgtool: cannot reach the executive: {exc}\n")
        return 1
    doc = listing(groups)
    if args.json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    elif args.delimiter is not None:
        write_delimited(doc, sys.stdout, args.delimiter)
    elif args.names:
        write_names(doc, sys.stdout)
    else:
        write_plain(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
