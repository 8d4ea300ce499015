"""``openais-cfgtool``: ring status, membership, liveness, readiness and clean shutdown of the local executive.

Options (one at a time; ``-s`` when none is given), each with ``--json``:

``-s``       the local node id and each ring's number, id, address and status;
             exit 1 when any ring is faulty.
``-m``       members of the current ring: node id and address, with the ring id
             (``rep.seq`` in hex).
``--ping``   liveness: exit 0 when the executive answers.
``--ready``  readiness: exit 0 only when the node is in a ring and service sync
             completed, 1 otherwise.
``-H``       ask the local executive to shut down cleanly.
``--dump``   the effective configuration (validated, defaults filled in, secrets
             left out) and every counter of the executive's status; plain
             output is one ``section.key = value`` line per value.

``--json`` documents (schema version 1, stable; new keys may be added, none
removed or retyped)::

    -s       {"version": 1, "nodeid": 1, "faulty": false, "state": "OPERATIONAL", "synced": true,
              "rings": [{"ringnumber": 0, "ring_id": "1.8", "address": "127.0.0.1", "status": "active"}],
              "quorum": {"quorate": true, "expected_votes": 3, "total_votes": 3, "quorum": 2}}

             (``quorum`` only with a ``quorum { }`` section.)
    -m       {"version": 1, "ring_id": "1.8", "members": [{"nodeid": 1, "address": "127.0.0.1"}]}
    --ping   {"version": 1, "alive": true, "nodeid": 1}
    --ready  {"version": 1, "ready": true, "nodeid": 1}
    -H       {"version": 1, "shutdown": "requested"}
    --dump   {"version": 1, "config": {"totem": {"token": 1000, ...}, "aisexec": {...}, ...},
              "status": {"nodeid": 1, "state": "OPERATIONAL", "members": [1], "ipc": {"accepted": 3, ...}, ...}}

Exit status 2, with a one-line error on stderr and nothing on stdout, when
the executive cannot be reached or answers with an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TextIO

from openais import cfg
from openais.errors import AisError, Library

#: Version of every ``--json`` document.
SCHEMA_VERSION = 1
EXIT_OK = 0
EXIT_FAULT = 1  #: a ring is faulty (-s) or the node is not ready (--ready)
EXIT_UNREACHABLE = 2

PROG = "openais-cfgtool"


def status_doc(status: cfg.RingStatus) -> dict:
    """The ``-s --json`` document (``quorum`` only when a ``quorum { }`` section is configured)."""
    doc = {
        "version": SCHEMA_VERSION,
        "nodeid": status.nodeid,
        "faulty": status.faulty,
        "state": status.state,
        "synced": status.synced,
        "rings": [{"ringnumber": r.ringnumber, "ring_id": r.ring_id, "address": r.address, "status": r.status}
                  for r in status.rings],
    }
    quorum = status.stats.get("quorum")
    if isinstance(quorum, dict) and quorum:
        doc["quorum"] = {key: quorum.get(key) for key in ("quorate", "expected_votes", "total_votes", "quorum")}
    return doc


def members_doc(membership: cfg.Membership) -> dict:
    """The ``-m --json`` document."""
    return {
        "version": SCHEMA_VERSION,
        "ring_id": membership.ring_id,
        "members": [{"nodeid": m.nodeid, "address": m.address} for m in membership.members],
    }


def write_status(doc: dict, out: TextIO) -> None:
    """Plain ``-s`` output (the openais 0.80 layout, plus the ring id)."""
    out.write("Printing ring status.\n")
    out.write(f"Local node ID {doc['nodeid']}\n")
    for ring in doc["rings"]:
        n = ring["ringnumber"]
        text = f"ring {n} active with no faults" if ring["status"] == cfg.RING_ACTIVE else f"ring {n} {ring['status']}"
        out.write(f"RING ID {n}\n")
        out.write(f"\tid\t= {ring['address']}\n")
        out.write(f"\tring\t= {ring['ring_id']}\n")
        out.write(f"\tstatus\t= {text}\n")
    quorum = doc.get("quorum")
    if quorum:
        state = "quorate" if quorum["quorate"] else "NOT quorate"
        out.write(f"Quorum: {state} ({quorum['total_votes']} of {quorum['expected_votes']} votes, "
                  f"quorum {quorum['quorum']})\n")


def write_members(doc: dict, out: TextIO) -> None:
    """Plain ``-m`` output: the ring id, then one ``nodeid address`` line per member."""
    out.write(f"Ring ID {doc['ring_id']}\n")
    out.write(f"{'Nodeid':>10}  Address\n")
    for member in doc["members"]:
        out.write(f"{member['nodeid']:>10}  {member['address'] or '(unknown)'}\n")


def dump_doc(dump: cfg.Dump) -> dict:
    """The ``--dump --json`` document."""
    return {"version": SCHEMA_VERSION, "config": dump.config, "status": dump.status}


def flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """``[("totem.token", 1000), ("interfaces.0.bindnetaddr", ...), ...]``: every leaf with its dotted path."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, {})] if prefix else []
        return [pair for key, item in value.items()
                for pair in flatten(item, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return [pair for i, item in enumerate(value) for pair in flatten(item, f"{prefix}.{i}")]
    return [(prefix, value)]


def write_dump(doc: dict, out: TextIO) -> None:
    """Plain ``--dump`` output: ``config.section.key = value`` and ``status.section.key = value`` lines."""
    for part in ("config", "status"):
        for key, value in flatten(doc[part], part):
            text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
            out.write(f"{key} = {text}\n")


def _emit(doc: dict, as_json: bool, plain: Callable[[dict, TextIO], None]) -> None:
    if as_json:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        plain(doc, sys.stdout)


def _run(args: argparse.Namespace) -> int:
    with cfg.initialize() as handle:
        if args.members:
            _emit(members_doc(handle.members()), args.json, write_members)
            return EXIT_OK
        if args.ping:
            nodeid, _ready = handle.state()
            _emit({"version": SCHEMA_VERSION, "alive": True, "nodeid": nodeid}, args.json,
                  lambda d, out: out.write(f"alive (node {d['nodeid']})\n"))
            return EXIT_OK
        if args.ready:
            nodeid, ready = handle.state()
            _emit({"version": SCHEMA_VERSION, "ready": ready, "nodeid": nodeid}, args.json,
                  lambda d, out: out.write(f"{'ready' if d['ready'] else 'not ready'} (node {d['nodeid']})\n"))
            return EXIT_OK if ready else EXIT_FAULT
        if args.dump:
            _emit(dump_doc(handle.dump()), args.json, write_dump)
            return EXIT_OK
        if args.shutdown:
            handle.shutdown()
            _emit({"version": SCHEMA_VERSION, "shutdown": "requested"}, args.json,
                  lambda d, out: out.write("Shutdown requested.\n"))
            return EXIT_OK
        doc = status_doc(handle.ring_status())
        _emit(doc, args.json, write_status)
        return EXIT_FAULT if doc["faulty"] else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``openais-cfgtool``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Ring status and administration of the local executive.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("-s", "--status", action="store_true", help="ring status (exit 1 if a ring is faulty)")
    action.add_argument("-m", "--members", action="store_true", help="members of the current ring")
    action.add_argument("--ping", action="store_true", help="liveness: exit 0 if the executive answers")
    action.add_argument("--ready", action="store_true", help="readiness: exit 0 only if in a ring and synced")
    action.add_argument("-H", "--shutdown", action="store_true", help="ask the local executive to shut down cleanly")
    action.add_argument("--dump", action="store_true",
                        help="the effective configuration (no secrets) and every counter of the executive")
    parser.add_argument("--json", action="store_true", help="print one JSON document (schema version 1)")
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-cfgtool``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (Library, OSError) as exc:
        sys.stderr.write(f"{PROG}: executive unreachable: {_one_line(exc)}\n")
        return EXIT_UNREACHABLE
    except AisError as exc:
        sys.stderr.write(f"{PROG}: the executive refused: {_one_line(exc)}\n")
        return EXIT_UNREACHABLE
    except cfg.CfgMessageError as exc:
        sys.stderr.write(f"{PROG}: the executive sent a malformed answer: {exc}\n")
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
