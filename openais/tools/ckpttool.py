"""``openais-ckpttool``: list the cluster's checkpoints, or dump one section.

Plain output is one block per checkpoint: its name with size, openers and
flags, then one line per section (id, size, expiration).  ``--json`` prints
the local replica as one object::

    {"nodeid": 1, "memory": 1234, "max_memory": 1073741824,
     "checkpoints": [{"name": "safCkpt=demo", "uid": "…", "unlinked": false,
                      "attributes": {"creation_flags": 1, "checkpoint_size": 4096, ...},
                      "sections": [{"id": "636667", "id_text": "cfg", "size": 2,
                                    "expiration_time": 9223372036854775807, "last_update": 1700000000000000000}],
                      "size": 2, "openers": 1, "openers_by_node": {"1": 1}, "replicas": [1, 2, 3],
                      "active_replica": null, "retention_started": null, "changes": 3}]}

``-s NAME SECTION`` writes the bytes of one section to stdout (``SECTION``
as text; ``-x`` takes it as hex, ``--hex`` prints hex).  Reading the tool's
way opens nothing, so it never changes openers or retention.

Exit status 0 on success, 1 when the checkpoint or section does not exist, 2
when the executive cannot be reached (as every openais tool).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from openais import ckpt
from openais.errors import NotExist
from openais.tools._common import EXIT_OK, EXIT_UNREACHABLE, print_document, reach, tool_parser

PROG = "openais-ckpttool"
#: Exit status: the checkpoint or section does not exist.
EXIT_NOT_EXIST = 1

_MODES = {ckpt.WR_ALL_REPLICAS: "all-replicas", ckpt.WR_ACTIVE_REPLICA: "active-replica",
          ckpt.WR_ACTIVE_REPLICA_WEAK: "active-replica-weak"}


def describe_flags(flags: int) -> str:
    """The update mode of ``creation_flags`` in words (``active-replica,collocated``)."""
    words = [_MODES.get(flags & ~ckpt.CHECKPOINT_COLLOCATED, f"{flags:#x}")]
    if flags & ckpt.CHECKPOINT_COLLOCATED:
        words.append("collocated")
    return ",".join(words)


def write_plain(doc: dict, out: TextIO) -> None:
    """Write the plain listing of ``doc`` (the ``--json`` document)."""
    for c in doc["checkpoints"]:
        a = c["attributes"]
        state = " (unlinked)" if c["unlinked"] else ""
        retention = "forever" if a["retention_duration"] is None else f"{a['retention_duration']:g}s"
        out.write(f"{c['name']}{state}\n")
        out.write(f"    {describe_flags(a['creation_flags'])}  size {c['size']}/{a['checkpoint_size']}  "
                  f"sections {len(c['sections'])}/{a['max_sections']}  openers {c['openers']}  "
                  f"retention {retention}  replicas {','.join(map(str, c['replicas']))}"
                  f"{'' if c['active_replica'] is None else '  active ' + str(c['active_replica'])}\n")
        for s in c["sections"]:
            expiry = "never" if s["expiration_time"] == ckpt.TIME_END else str(s["expiration_time"])
            out.write(f"        {s['id_text'] or '(default)'!s:24} {s['size']:>12}  expires {expiry}\n")


def _section(args: argparse.Namespace) -> int:
    """Write the bytes of one section to stdout; 2 when it does not exist."""
    name, raw = args.section
    section_id = bytes.fromhex(raw) if args.x else raw.encode()
    with ckpt.initialize() as handle:
        try:
            pieces = [handle.peek(name, section_id)]
            while len(pieces[-1]) == ckpt.MAX_IO_SIZE:  # larger sections come in pieces
                pieces.append(handle.peek(name, section_id, offset=ckpt.MAX_IO_SIZE * len(pieces)))
            data = b"".join(pieces)
        except NotExist:
            sys.stderr.write(f"{PROG}: no section {raw!r} in checkpoint {name!r}\n")
            return EXIT_NOT_EXIST
        if args.hex:
            sys.stdout.write(data.hex() + "\n")
        else:
            sys.stdout.buffer.write(data)
        return EXIT_OK


def _listing() -> dict:
    with ckpt.initialize() as handle:
        return handle.listing()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-ckpttool``; returns the exit status."""
    parser = tool_parser(PROG, "List checkpoints or dump a section.", json_help="print the listing as JSON")
    parser.add_argument("-s", "--section", nargs=2, metavar=("NAME", "SECTION"),
                        help="write the bytes of one section of checkpoint NAME to stdout")
    parser.add_argument("-x", action="store_true", help="SECTION is given in hex")
    parser.add_argument("--hex", action="store_true", help="print the section's bytes as hex")
    args = parser.parse_args(argv)
    if args.section:
        status = reach(PROG, lambda: _section(args))
        return EXIT_UNREACHABLE if status is None else status
    doc = reach(PROG, _listing)
    return EXIT_UNREACHABLE if doc is None else print_document(doc, args.json, write_plain)


if __name__ == "__main__":
    sys.exit(main())
