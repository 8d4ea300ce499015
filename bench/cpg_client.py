"""A CPG benchmark client: run by bench/run.py against one local executive.

Modes (first argument):

``send SIZE SECONDS``    multicast (agreed) messages of SIZE bytes for SECONDS,
                         retrying on TryAgain; count own deliveries; print JSON
                         (the loop of corosync-bench's ``cpgbench tput``: dispatch
                         after every 8th send, wait 1 ms for input on TryAgain)
``latency SIZE COUNT``   COUNT messages one at a time, mcast to own delivery
                         (after 100 untimed ones, as ``cpgbench lat``)
``receive``              join, count everything delivered until stdin closes
``watch``                join, print a JSON line with the monotonic time of each confchg

Prints one JSON object per result on stdout.  ``time.monotonic`` is
system-wide on Linux, so the orchestrator can compare its own timestamps.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import sys
import time

import openais
from openais import cpg

GROUP = "bench"
#: Untimed messages before a latency run, as corosync-bench's ``cpgbench lat`` sends.
LATENCY_WARMUP = 100


def _wait_members(handle: cpg.CpgHandle, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(handle.membership(GROUP)) >= count:
            return
        handle.dispatch(openais.DISPATCH_ALL)
        time.sleep(0.05)
    raise SystemExit(f"group {GROUP} did not reach {count} members")


def send(size: int, seconds: float, members: int, hold: bool = False) -> None:
    """Throughput: multicast for ``seconds``; msgs/s = own deliveries / (last own delivery - first send).

    ``hold`` (bench/cpuprof.py): print ``ready`` once the group is complete and start at a line on stdin;
    after the result, wait for stdin to close (so the caller can read this process's CPU time).
    """
    me = os.getpid()
    delivered = 0
    last = 0.0

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        nonlocal delivered, last
        if pid == me:
            delivered += 1
            last = time.monotonic()

    with cpg.initialize(deliver=deliver) as h:
        h.join(GROUP)
        _wait_members(h, members)
        payload = b"x" * size
        if hold:
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()
        sent = 0
        busy = 0
        first = time.monotonic()
        stop = first + seconds
        while time.monotonic() < stop:  # as corosync-bench's cpgbench: dispatch every 8 sends, poll 1 ms on TryAgain
            try:
                h.mcast(payload)
                sent += 1
                if not sent & 7:
                    h.dispatch(openais.DISPATCH_ALL)
            except openais.TryAgain:
                busy += 1
                select.select([h], [], [], 0.001)
                h.dispatch(openais.DISPATCH_ALL)
        drain_deadline = time.monotonic() + 30
        while delivered < sent and time.monotonic() < drain_deadline:
            select.select([h], [], [], 0.05)
            h.dispatch(openais.DISPATCH_ALL)
        elapsed = max(last - first, 1e-9)
        print(json.dumps({"sent": sent, "delivered": delivered, "seconds": elapsed, "try_again": busy,
                          "msgs_per_s": delivered / elapsed, "mb_per_s": delivered * size / elapsed / 1e6}),
              flush=True)
        if hold:
            sys.stdin.read()


def timed_mcast(h: cpg.CpgHandle, payload: bytes, got: list[bool]) -> float:
    """Microseconds from ``mcast(payload)`` to its own delivery (the deliver callback sets ``got[0]``)."""
    got[0] = False
    t0 = time.perf_counter()
    while True:
        try:
            h.mcast(payload)
            break
        except openais.TryAgain:
            time.sleep(0.0005)
    while not got[0]:
        select.select([h], [], [], 1.0)
        h.dispatch(openais.DISPATCH_ALL)
    return (time.perf_counter() - t0) * 1e6


def latency(size: int, count: int, members: int) -> None:
    """Latency: one message at a time, from mcast to own delivery."""
    me = os.getpid()
    got = [False]

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        if pid == me:
            got[0] = True

    samples: list[float] = []
    with cpg.initialize(deliver=deliver) as h:
        h.join(GROUP)
        _wait_members(h, members)
        payload = b"l" * size
        for n in range(LATENCY_WARMUP + count):
            if n == LATENCY_WARMUP:
                samples.clear()
            samples.append(timed_mcast(h, payload, got))
    samples.sort()
    print(json.dumps({"median_us": statistics.median(samples), "p99_us": samples[int(len(samples) * 0.99) - 1],
                      "count": len(samples)}))


def receive() -> None:
    """A receiver: joined, consuming everything until stdin closes."""
    counted = [0]

    def deliver(group: str, nodeid: int, pid: int, data: bytes) -> None:
        counted[0] += 1

    with cpg.initialize(deliver=deliver) as h:
        h.join(GROUP)
        print(json.dumps({"joined": True}), flush=True)
        while True:
            readable, _, _ = select.select([h, sys.stdin], [], [], 1.0)
            if sys.stdin in readable and not sys.stdin.readline():
                break
            if h in readable:
                h.dispatch(openais.DISPATCH_ALL)
    print(json.dumps({"received": counted[0]}))


def watch() -> None:
    """Print the monotonic time of every confchg with the members that left and why."""

    def confchg(group, members, left, joined) -> None:
        print(json.dumps({"t": time.monotonic(), "members": [m.nodeid for m in members],
                          "left": [[m.nodeid, m.reason.name] for m in left]}), flush=True)

    with cpg.initialize(confchg=confchg) as h:
        h.join(GROUP)
        print(json.dumps({"joined": True}), flush=True)
        while True:
            readable, _, _ = select.select([h, sys.stdin], [], [], 1.0)
            if sys.stdin in readable and not sys.stdin.readline():
                break
            if h in readable:
                try:
                    h.dispatch(openais.DISPATCH_ALL)
                except openais.Library:
                    return  # our own node was the one killed


def main() -> None:
    """Dispatch on the mode argument."""
    mode = sys.argv[1]
    if mode == "send":
        send(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), hold=sys.argv[5:6] == ["hold"])
    elif mode == "latency":
        latency(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "receive":
        receive()
    elif mode == "watch":
        watch()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
