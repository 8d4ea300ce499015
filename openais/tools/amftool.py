"""``openais-amftool``: the state of AMF and its administrative operations.

::

    openais-amftool [status] [--json]
    openais-amftool OPERATION DN [--timeout SECONDS] [--json]
        OPERATION: lock | unlock | lock-instantiation | unlock-instantiation |
                   shutdown | restart | si-swap | repaired

``status`` prints every node, SG (with its SUs, their states, assignments and
components) and SI; ``--json`` prints the schema-1 document of
``AmfHandle.cluster_state()``.  An operation retries ``TryAgain`` every 0.5 s
and returns when it completed.  Exit status: 0 done; 1 refused
(BadOperation); 2 usage error, executive unreachable or AMF not enabled;
3 no such entity; 4 failed or not complete within the timeout.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from openais import amf
from openais.errors import AisError, BadOperation, FailedOperation, NotExist, Timeout, TryAgain
from openais.tools._common import EXIT_OK, EXIT_USAGE, executive_error, print_document, tool_parser

PROG = "openais-amftool"
#: Exit statuses beside EXIT_OK (0) and EXIT_USAGE (2, also: unreachable, refused, AMF not enabled).
EXIT_REFUSED, EXIT_NOT_EXIST, EXIT_FAILED = 1, 3, 4
OPERATIONS = {
    "lock": amf.AdminOperation.LOCK, "unlock": amf.AdminOperation.UNLOCK,
    "lock-instantiation": amf.AdminOperation.LOCK_INSTANTIATION,
    "unlock-instantiation": amf.AdminOperation.UNLOCK_INSTANTIATION, "shutdown": amf.AdminOperation.SHUTDOWN,
    "restart": amf.AdminOperation.RESTART, "si-swap": amf.AdminOperation.SI_SWAP,
    "repaired": amf.AdminOperation.REPAIRED,
}


def _assignments(items: list[dict], key: str) -> str:
    return ", ".join(f"{a[key]}={a['ha_state']}" for a in items) or "-"


def write_status(doc: dict, out: TextIO) -> None:
    """A readable listing of the status document (not for parsing)."""
    if not doc.get("enabled"):
        out.write("AMF is not enabled on this node\n")
        return
    cl = doc["cluster"]
    out.write(f"{cl['name']}  started={'yes' if cl['started'] else 'no'}  local node {doc['local_node_id']}\n")
    out.write("Nodes:\n")
    for n in doc["nodes"]:
        out.write(f"  {n['name']}  node {n['clm_node_id']}  {'member' if n['member'] else 'not a member'}  "
                  f"{n['admin_state']} {n['oper_state']}\n")
    sus = {s["name"]: s for s in doc["sus"]}
    comps: dict[str, list[dict]] = {}
    for c in doc["components"]:
        comps.setdefault(c["su"], []).append(c)
    for g in doc["sgs"]:
        out.write(f"SG {g['name']}  {g['redundancy_model']}  {g['admin_state']}\n")
        for name in g["sus"]:
            s = sus[name]
            out.write(f"  SU {name}  rank {s['rank']}  on {s['node'].split(',')[0]}  {s['admin_state']} "
                      f"{s['oper_state']} {s['presence_state']} {s['readiness_state']}  "
                      f"restarts {s['restart_count']}  [{_assignments(s['assignments'], 'si')}]\n")
            for c in comps.get(name, []):
                out.write(f"    comp {c['name'].split(',')[0]}  {c['presence_state']} {c['readiness_state']}  "
                          f"pid {c['pid'] if c['registered'] else '-'}  restarts {c['restart_count']}  "
                          f"[{_assignments(c['assignments'], 'csi')}]\n")
    out.write("SIs:\n")
    for s in doc["sis"]:
        out.write(f"  SI {s['name']}  {s['admin_state']} {s['assignment_state']}  "
                  f"[{_assignments(s['assignments'], 'su')}]\n")


def _operation(h: amf.AmfHandle, op: str, target: str, timeout: float) -> tuple[int, str]:
    try:
        h.admin_operation(target, OPERATIONS[op], timeout=timeout)
    except BadOperation:
        return EXIT_REFUSED, "BAD_OPERATION"
    except NotExist:
        return EXIT_NOT_EXIST, "NOT_EXIST"
    except (FailedOperation, Timeout, TryAgain) as exc:
        return EXIT_FAILED, exc.code.name
    return EXIT_OK, "OK"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-amftool``; returns the exit status."""
    parser = tool_parser(PROG, "AMF state and administrative operations.", json_help="print JSON (schema version 1)")
    parser.add_argument("operation", nargs="?", default="status", choices=["status", *OPERATIONS])
    parser.add_argument("target", nargs="?", help="DN of the SU, SG, node or SI")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for completion (default 30)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    if args.operation != "status" and not args.target:
        sys.stderr.write(f"{PROG}: {args.operation} needs the DN of its target\n")
        return EXIT_USAGE
    if args.operation == "status" and args.target:
        sys.stderr.write(f"{PROG}: status takes no target\n")
        return EXIT_USAGE
    try:
        with amf.initialize() as h:
            doc = h.cluster_state()
            enabled = bool(doc.get("enabled"))
            if args.operation == "status" and (args.json or enabled):
                print_document(doc, args.json, write_status)
            if not enabled:
                sys.stderr.write(f"{PROG}: AMF is not enabled on this node\n")
                return EXIT_USAGE
            if args.operation == "status":
                return EXIT_OK
            code, result = _operation(h, args.operation, args.target, args.timeout)
    except (AisError, OSError) as exc:
        return executive_error(PROG, exc, EXIT_USAGE)
    if args.json:
        json.dump({"version": 1, "operation": args.operation, "target": args.target, "result": result}, sys.stdout)
        sys.stdout.write("\n")
    elif code != EXIT_OK:
        sys.stderr.write(f"{PROG}: {args.operation} {args.target}: {result}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
