"""``openais-evttool``: event channels, subscriptions and retained events; publish and subscribe.

Subcommands (``list`` when none is given)::

    openais-evttool [list] [--json]        channels (openers and subscriptions per node), retained events,
                                           and the handles of the node the tool talks to
    openais-evttool publish CHANNEL [-p PATTERN ...] [--priority 0-3] [--retention SECONDS]
                    [--publisher NAME] [--create] [--data TEXT | --data-file PATH] [--json]
    openais-evttool subscribe CHANNEL [-f TYPE:TEXT ...] [--count N] [--seconds S] [--create]

``subscribe`` prints one JSON object per delivered event on its own line
(``subscription_id``, ``event_id``, ``patterns``, ``priority``,
``retention_time``, ``publisher_name``, ``publish_time``, ``data`` as UTF-8
with ``data_hex`` beside it); a filter is ``prefix:TEXT``, ``suffix:TEXT``,
``exact:TEXT`` or ``all``.  The ``list --json`` document::

    {"nodeid": 1, "channels": [{"id": .., "name": "alarms", "unlinked": false, "open": 2,
      "openers": {"1": 1, "2": 1}, "subscriptions": {"2": 1},
      "retained": [{"event_id": .., "priority": 0, "patterns": ["hex"], "publisher_name": "..",
                    "publish_time": .., "retention_time": 60.0, "deadline_ns": .., "size": 3}]}],
     "retained_events": 1, "retained_bytes": 259, "handles": [...], "queues": {...}}

Exit status 0 on success, 2 when the executive cannot be reached, a call fails, or on bad usage.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from typing import TextIO

import openais
from openais import evt
from openais.errors import AisError
from openais.tools._common import EXIT_OK, EXIT_UNREACHABLE, print_document, tool_parser

PROG = "openais-evttool"

_FILTERS = {"prefix": evt.PREFIX_FILTER, "suffix": evt.SUFFIX_FILTER, "exact": evt.EXACT_FILTER,
            "all": evt.PASS_ALL_FILTER}


def parse_filter(text: str) -> evt.EventFilter:
    """``prefix:TEXT``, ``suffix:TEXT``, ``exact:TEXT`` or ``all`` as an EventFilter."""
    kind, _, rest = text.partition(":")
    if kind.lower() not in _FILTERS:
        raise argparse.ArgumentTypeError(f"filter {text!r}: use prefix:TEXT, suffix:TEXT, exact:TEXT or all")
    return evt.EventFilter(_FILTERS[kind.lower()], rest.encode())


def event_json(subscription_id: int, event: evt.Event) -> dict:
    """One delivered event as the JSON object ``subscribe`` prints."""
    a = event.attributes_get()
    data = event.data_get()
    return {"subscription_id": subscription_id, "event_id": a.event_id,
            "patterns": [p.decode("utf-8", "backslashreplace") for p in a.patterns], "priority": a.priority,
            "retention_time": a.retention_time, "publisher_name": a.publisher_name, "publish_time": a.publish_time,
            "data": data.decode("utf-8", "backslashreplace"), "data_hex": data.hex()}


def write_plain(doc: dict, out: TextIO) -> None:
    """The plain listing of a dump document."""
    out.write(f"node {doc['nodeid']}: {len(doc['channels'])} channels, {doc['retained_events']} retained events "
              f"({doc['retained_bytes']} bytes)\n")
    for chan in doc["channels"]:
        flag = " (unlinked)" if chan["unlinked"] else ""
        out.write(f"{chan['name']}{flag}  id {chan['id']:#x}  open {chan['open']}\n")
        for node, count in chan["openers"].items():
            out.write(f"    node {node}: {count} open, {chan['subscriptions'].get(node, 0)} subscriptions\n")
        for e in chan["retained"]:
            patterns = ",".join(bytes.fromhex(p).decode("utf-8", "backslashreplace") for p in e["patterns"])
            out.write(f"    retained {e['event_id']:#x} prio {e['priority']} [{patterns}] {e['size']} bytes "
                      f"from {e['publisher_name']!r}, {e['retention_time']:g} s\n")


def _list(args: argparse.Namespace) -> int:
    with evt.initialize() as h:
        doc = json.loads(h.dump())
    return print_document(doc, args.json, write_plain)


def _publish(args: argparse.Namespace) -> int:
    if args.data_file:
        with open(args.data_file, "rb") as f:
            data = f.read()
    else:
        data = (args.data or "").encode()
    flags = evt.CHANNEL_PUBLISHER | (evt.CHANNEL_CREATE if args.create else 0)
    with evt.initialize() as h, h.channel_open(args.channel, flags, timeout=args.timeout) as ch, \
            ch.event_allocate() as e:
        e.attributes_set([p.encode() for p in args.pattern], args.priority, args.retention, args.publisher)
        event_id = e.publish(data)
    if args.json:
        sys.stdout.write(json.dumps({"channel": args.channel, "event_id": event_id}) + "\n")
    else:
        sys.stdout.write(f"{event_id}\n")
    return 0


def _subscribe(args: argparse.Namespace) -> int:
    count = 0

    def deliver(subscription_id: int, event: evt.Event, size: int) -> None:
        nonlocal count
        sys.stdout.write(json.dumps(event_json(subscription_id, event)) + "\n")
        sys.stdout.flush()
        event.free()
        count += 1

    flags = evt.CHANNEL_SUBSCRIBER | (evt.CHANNEL_CREATE if args.create else 0)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    with evt.initialize(event_deliver=deliver) as h, h.channel_open(args.channel, flags, timeout=args.timeout) as ch:
        ch.event_subscribe(args.filter or [], args.id)
        sys.stderr.write(f"openais-evttool: subscribed to {args.channel} as {args.id}\n")
        sys.stderr.flush()
        while (not args.count or count < args.count) and (deadline is None or time.monotonic() < deadline):
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            readable, _, _ = select.select([h], [], [], wait)
            if readable:
                h.dispatch(openais.DISPATCH_ONE if args.count else openais.DISPATCH_ALL)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``openais-evttool``; returns the exit status."""
    parser = tool_parser(PROG, "EVT channels: list, publish, subscribe.", json_help="print JSON (list, publish)")
    sub = parser.add_subparsers(dest="command")
    ls = sub.add_parser("list", help="channels, subscriptions per node, retained events")
    ls.add_argument("--json", action="store_true", dest="json_sub", help="print JSON")
    pub = sub.add_parser("publish", help="publish one event")
    pub.add_argument("channel")
    pub.add_argument("-p", "--pattern", action="append", default=[], help="a pattern (repeat for more)")
    pub.add_argument("--priority", type=int, default=evt.LOWEST_PRIORITY, choices=range(4))
    pub.add_argument("--retention", type=float, default=0.0, help="seconds to retain the event")
    pub.add_argument("--publisher", default="openais-evttool")
    pub.add_argument("--create", action="store_true", help="create the channel if it does not exist")
    pub.add_argument("--data", help="the event data as text")
    pub.add_argument("--data-file", help="read the event data from a file")
    pub.add_argument("--timeout", type=float, default=10.0)
    pub.add_argument("--json", action="store_true", dest="json_sub", help=argparse.SUPPRESS)
    sb = sub.add_parser("subscribe", help="print delivered events as JSON lines")
    sb.add_argument("channel")
    sb.add_argument("-f", "--filter", action="append", type=parse_filter, help="prefix:T, suffix:T, exact:T or all")
    sb.add_argument("--id", type=int, default=1, help="subscription id")
    sb.add_argument("--count", type=int, default=0, help="exit after this many events")
    sb.add_argument("--seconds", type=float, default=0.0, help="exit after this many seconds")
    sb.add_argument("--create", action="store_true", help="create the channel if it does not exist")
    sb.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    args.json = args.json or getattr(args, "json_sub", False)
    command = {"publish": _publish, "subscribe": _subscribe}.get(args.command or "list", _list)
    try:
        return command(args)
    except AisError as exc:
        sys.stderr.write(f"{PROG}: {type(exc).__name__}: {exc}\n")
        return EXIT_UNREACHABLE
    except OSError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
