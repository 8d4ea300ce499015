"""A CPG client process driven by the multi-process tests over stdin/stdout.

Commands, one per line on stdin:

``join GROUP``          join (prints {"ok": "join"})
``send COUNT TAG``      multicast COUNT messages ``TAG:i`` to the joined group, retrying on TryAgain
``members GROUP``       print the current membership
``quit``                finalize and exit

Every delivery and configuration change is printed as one JSON line as it
is dispatched: {"ev": "deliver", "nodeid", "pid", "data"} and
{"ev": "confchg", "members", "left", "joined"} (members as [nodeid, pid,
reason]).
"""

from __future__ import annotations

import json
import select
import sys
import time

import openais
from openais import cpg


def emit(obj: dict) -> None:
    """Print one JSON line."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _members(items) -> list[list]:
    return [[m.nodeid, m.pid, m.reason.name] for m in items]


def main() -> None:
    """Serve commands until quit or end of input."""

    def deliver(group, nodeid, pid, data):
        emit({"ev": "deliver", "group": group, "nodeid": nodeid, "pid": pid, "data": data.decode()})

    def confchg(group, members, left, joined):
        emit({"ev": "confchg", "group": group, "members": _members(members), "left": _members(left),
              "joined": _members(joined)})

    handle = cpg.initialize(deliver=deliver, confchg=confchg)
    emit({"ok": "init", "nodeid": handle.local_nodeid()})
    group = None
    while True:
        readable, _, _ = select.select([handle, sys.stdin], [], [], 1.0)
        if handle in readable:
            handle.dispatch(openais.DISPATCH_ALL)
        if sys.stdin not in readable:
            continue
        line = sys.stdin.readline()
        if not line:
            break
        words = line.split()
        if not words:
            continue
        if words[0] == "join":
            group = words[1]
            handle.join(group)
            emit({"ok": "join"})
        elif words[0] == "send":
            count, tag = int(words[1]), words[2]
            for i in range(count):
                while True:
                    try:
                        handle.mcast(f"{tag}:{i}".encode())
                        break
                    except openais.TryAgain:
                        handle.dispatch(openais.DISPATCH_ALL)
                        time.sleep(0.001)
            emit({"ok": "send"})
        elif words[0] == "members":
            emit({"ok": "members", "members": _members(handle.membership(words[1]))})
        elif words[0] == "quit":
            break
    handle.finalize()


if __name__ == "__main__":
    main()
