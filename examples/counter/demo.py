"""``openais-demo failover``: the headline, live — stateful failover of the counter service.

Starts three executives on 127.0.0.1..3 with AMF enabled and the counter
server in a 2N service group (one SU per node: active, standby, spare), runs
a client that asks for the next number without pause, and every few seconds
kills the active server — alternately the component process (SIGKILL) and
its whole executive (SIGKILL, restarted a moment later) — while it shows who
is active, how many requests were served, and how long the client waited at
each failover.  At the end it checks the promise:

- ``state_lost``: answers whose number was not above every number given
  before (a successor that started from an older state would give one again);
- ``answered_twice``: after each failover the client asks the last answered
  request again; the new active must give the same number (from the checkpoint);
- the median and longest interruption the client saw.

``--rounds N`` stops after N kills (Ctrl-C stops at once); ``--json`` prints
one JSON line at the end with ``rounds``, ``state_lost``, ``answered_twice``,
``median_interruption_ms`` and ``max_interruption_ms``.  Every process the
demo started is stopped when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aisexec.localcluster import LocalCluster
from examples.counter.client import CounterClient, NoServer
from examples.counter.config import amf_conf

NODES = 3


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Record:
    """What the client saw: every answer (time, value, node) and the failover checks."""

    answers: list[tuple[float, int, int]] = field(default_factory=list)
    state_lost: int = 0
    answered_twice: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def served(self) -> int:
        """Requests answered so far."""
        return len(self.answers)

    def active_node(self) -> int | None:
        """The node that answered last."""
        with self.lock:
            return self.answers[-1][2] if self.answers else None


class ClientLoop(threading.Thread):
    """The client: asks without pause, checks every answer against the ones before."""

    def __init__(self, addresses: list[str], port: int, record: Record) -> None:
        super().__init__(daemon=True, name="counter-client")
        self.client = CounterClient(addresses, port, client_id="demo", patience=120.0)
        self.record = record
        self.stop = threading.Event()

    def run(self) -> None:
        """Ask until told to stop."""
        highest = 0
        last_node = None
        try:
            while not self.stop.is_set():
                answer = self.client.next()
                now = time.monotonic()
                with self.record.lock:
                    if answer.value <= highest:
                        self.record.state_lost += 1
                    highest = max(highest, answer.value)
                    self.record.answers.append((now, answer.value, answer.nodeid))
                if last_node is not None and answer.nodeid != last_node:
                    # a failover happened: the new active must answer the same request the same way
                    again = self.client.ask(answer.request)
                    if again.value != answer.value:
                        with self.record.lock:
                            self.record.answered_twice += 1
                last_node = answer.nodeid
        except NoServer as exc:
            self.record.errors.append(str(exc))
        finally:
            self.client.close()


def interruptions(record: Record, kills: list[float]) -> list[float]:
    """Per kill: the longest gap between two answers from the kill to the next kill (seconds)."""
    times = [t for t, _v, _n in record.answers]
    gaps = []
    bounds = [*kills, float("inf")]
    for start, end in itertools.pairwise(bounds):
        window = [t for t in times if start <= t < end]
        before = [t for t in times if t < start]
        if not window:
            continue
        points = ([before[-1]] if before else []) + window
        gaps.append(max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0)
    return gaps


def _pid_of(pid_dir: Path, nodeid: int) -> int | None:
    try:
        return int((pid_dir / f"counter-{nodeid}.pid").read_text())
    except (OSError, ValueError):
        return None


def _kill_components(pid_dir: Path) -> None:
    """SIGKILL every server still alive (their executives are gone; a late starter writes its pid too)."""
    for attempt in range(3):
        for nodeid in range(1, NODES + 1):
            pid = _pid_of(pid_dir, nodeid)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if attempt < 2:
            time.sleep(0.3)


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_of(cluster: LocalCluster, pid_dir: Path) -> dict[str, int]:
    """RSS (KiB) of every executive and server process alive now."""
    out = {}
    for index, proc in cluster.procs.items():
        rss = _rss_kb(proc.pid)
        if rss is not None:
            out[f"aisexec-{index}"] = rss
    for nodeid in range(1, NODES + 1):
        pid = _pid_of(pid_dir, nodeid)
        rss = _rss_kb(pid) if pid else None
        if rss is not None:
            out[f"server-{nodeid}"] = rss
    return out


def run(rounds: int | None, interval: float, root: Path, as_json: bool, out=sys.stdout) -> dict:
    """Run the demo; return the summary document (``kills``: the kind and interruption of each kill)."""
    port = _free_tcp_port()
    pid_dir = root / "pids"
    pid_dir.mkdir(parents=True, exist_ok=True)
    addresses = [f"127.0.0.{i}" for i in range(1, NODES + 1)]
    conf = root / "amf.conf"
    conf.write_text(amf_conf(list(enumerate(addresses, start=1)), port, pid_dir=str(pid_dir)))
    record = Record()
    kills: list[float] = []
    kinds: list[str] = []
    rss: dict[str, int] = {}
    say = (lambda *a: None) if as_json else (lambda text: print(text, file=out, flush=True))
    with contextlib.ExitStack() as stack:
        stack.callback(_kill_components, pid_dir)  # last: after the executives, so AMF restarts nothing
        cluster = stack.enter_context(LocalCluster(root / "cluster", NODES, transport="udpu", secauth=True,
                                                   env={"OPENAIS_AMF_CONFIG_FILE": str(conf)},
                                                   sections={"amf": {"mode": "enabled"}}))
        cluster.start_all()
        everyone = list(range(1, NODES + 1))
        cluster.wait_members(everyone, everyone, timeout=60)
        say(f"3 executives up under {root}; the counter service listens on port {port} of 127.0.0.1..3")
        loop = ClientLoop(addresses, port, record)
        loop.start()
        stack.callback(loop.join, 10)
        stack.callback(loop.stop.set)
        deadline = time.monotonic() + 90
        while record.served == 0 and time.monotonic() < deadline and loop.is_alive():
            time.sleep(0.1)
        if record.served == 0:
            raise RuntimeError(f"the counter service never answered: {record.errors}")
        say(f"node {record.active_node()} is active; client running")
        done = 0
        served = record.served
        restart_at: dict[int, float] = {}
        with contextlib.suppress(KeyboardInterrupt):
            while rounds is None or done < rounds:
                end = time.monotonic() + interval
                while time.monotonic() < end:
                    time.sleep(0.1)
                    for index, when in list(restart_at.items()):
                        if time.monotonic() >= when:
                            cluster.start(index)
                            del restart_at[index]
                active = record.active_node()
                if active is None or not loop.is_alive():
                    break
                if done % 2 == 0:
                    pid = _pid_of(pid_dir, active)
                    what = f"the server process (pid {pid}) on node {active}"
                    kills.append(time.monotonic())
                    kinds.append("component")
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                else:
                    what = f"the executive of node {active}"
                    rss = rss_of(cluster, pid_dir) or rss
                    kills.append(time.monotonic())
                    kinds.append("node")
                    cluster.kill(active)
                    restart_at[active] = time.monotonic() + interval / 2
                done += 1
                wait_until = time.monotonic() + 60
                while record.active_node() == active and time.monotonic() < wait_until and loop.is_alive():
                    time.sleep(0.02)
                gap = interruptions(record, kills)[-1] if record.answers else 0.0
                say(f"round {done}: killed {what}; node {record.active_node()} took over; "
                    f"client waited {gap * 1000:.0f} ms; served {record.served} ({record.served - served} this round)")
                served = record.served
        rss = rss_of(cluster, pid_dir) or rss
        loop.stop.set()
        loop.join(30)
    gaps = interruptions(record, kills)
    summary = {
        "rounds": len(kills),
        "served": record.served,
        "state_lost": record.state_lost,
        "answered_twice": record.answered_twice,
        "median_interruption_ms": round(statistics.median(gaps) * 1000, 1) if gaps else None,
        "max_interruption_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "errors": record.errors,
        "kills": [{"kind": kind, "interruption_ms": round(gap * 1000, 1)} for kind, gap in zip(kinds, gaps,
                                                                                              strict=False)],
        "rss_kb": rss,
        "timeline": [(round(t - record.answers[0][0], 4), n) for t, _v, n in record.answers[::50]]
        if record.answers else [],
        "kill_times": [round(t - record.answers[0][0], 3) for t in kills] if record.answers else [],
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    """``openais-demo failover``: exit 0 when the promise held (no state lost, nothing answered twice)."""
    parser = argparse.ArgumentParser(prog="openais-demo failover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="stop after N kills (default: until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between kills (default 4)")
    parser.add_argument("--dir", help="keep the cluster's files here instead of a temporary directory")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = Path(args.dir) if args.dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ais-")))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        summary = run(args.rounds, args.interval, root, args.json)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k not in ("timeline", "kill_times")}))
    else:
        ok = summary["state_lost"] == 0 and summary["answered_twice"] == 0
        print(f"\n{summary['rounds']} failovers, {summary['served']} requests served; "
              f"state lost: {summary['state_lost']}; answered twice: {summary['answered_twice']}; "
              f"interruption median {summary['median_interruption_ms']} ms, max {summary['max_interruption_ms']} ms"
              f" — {'the promise held' if ok else 'THE PROMISE WAS BROKEN'}")
    return 0 if summary["state_lost"] == 0 and summary["answered_twice"] == 0 and not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
