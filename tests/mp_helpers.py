"""What the multi-process tests share: fault-file partitions, node start, JSON-line client processes, clusters.

Partitions are made through the fault layer: every node started with
:func:`start_node` polls its own fault control file (``OPENAIS_FAULTS_FILE``
in the node's directory), and :func:`partition` writes ``block=`` lines so
that each side stops hearing the other; :func:`heal` empties the files.

Client processes print one JSON object per line: :class:`JsonLinesProcess`
reads them on a thread, :class:`Agent` keeps them and waits for the one a
test expects.  :func:`running_cluster` brings up nodes that form one ring,
:func:`cluster_fixture` makes the module-scoped ``cluster`` fixture of a test
module from it; :func:`agent_pool` (an ``agents`` fixture's body) and
:func:`closing` end every agent a test made.  :func:`run_tool` and
:func:`tool_json` run an ``openais-*tool`` as a client of one node.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aisexec.localcluster import LocalCluster

#: The repository root (for ``python -m tests....`` clients).
ROOT = str(Path(__file__).resolve().parent.parent)


# -- the fault layer --------------------------------------------------------------------------------


def fault_file(cluster: LocalCluster, index: int) -> Path:
    """Node ``index``'s fault control file (the fault layer polls it)."""
    return cluster.nodes[index - 1].root / "faults"


def fault_env(cluster: LocalCluster, index: int) -> dict[str, str]:
    """Environment giving node ``index`` its fault control file."""
    return {"OPENAIS_FAULTS_FILE": str(fault_file(cluster, index))}


def start_node(cluster: LocalCluster, *indexes: int) -> None:
    """Start nodes ``indexes`` with their fault control files enabled."""
    for index in indexes:
        cluster.start(index, env=fault_env(cluster, index))


def block(cluster: LocalCluster, index: int, nodes: Iterable[int]) -> None:
    """Node ``index`` stops hearing ``nodes`` (none: hears everyone again)."""
    nodes = list(nodes)
    fault_file(cluster, index).write_text("block=" + "+".join(map(str, nodes)) if nodes else "")


def partition(cluster: LocalCluster, *sides: Iterable[int]) -> None:
    """Split the cluster into ``sides`` (lists of node indexes): each node blocks every node of the other sides."""
    groups = [list(side) for side in sides]
    everyone = [i for side in groups for i in side]
    for side in groups:
        for index in side:
            block(cluster, index, [i for i in everyone if i not in side])


def heal(cluster: LocalCluster, indexes: Iterable[int] = (1, 2, 3)) -> None:
    """Empty the fault files of ``indexes``: the partition merges."""
    for index in indexes:
        block(cluster, index, [])


@contextlib.contextmanager
def running_cluster(root: Path, nodes: int = 3, *, wait: float = 60.0,
                    prepare: Callable[[LocalCluster], None] | None = None,
                    **options: Any) -> Iterator[LocalCluster]:
    """``nodes`` executives (udpu, secauth unless ``options`` say otherwise) started and in one ring.

    ``prepare(cluster)`` runs before the first start (extra configuration).
    """
    options = {"transport": "udpu", "secauth": True, **options}
    with LocalCluster(root, nodes, **options) as cluster:
        if prepare is not None:
            prepare(cluster)
        everyone = list(range(1, nodes + 1))
        start_node(cluster, *everyone)
        cluster.wait_members(everyone, everyone, timeout=wait)
        yield cluster


def cluster_fixture(name: str, *, wait: float = 60.0, prepare: Callable[[LocalCluster], None] | None = None,
                    **options: Any) -> Any:
    """A module-scoped ``cluster`` fixture: :func:`running_cluster` under a temporary directory ``name``.

    One cluster serves the whole module (tests that break it put it back)::

        cluster = cluster_fixture("evt", wait=40)
    """

    @pytest.fixture(scope="module", name="cluster")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
        with running_cluster(tmp_path_factory.mktemp(name), wait=wait, prepare=prepare, **options) as c:
            yield c

    return cluster


# -- client processes -------------------------------------------------------------------------------


class JsonLinesProcess:
    """A client process whose stdout lines are JSON objects, read on a thread into :attr:`lines`."""

    def __init__(self, argv: list[str], env: dict[str, str], *, name: str, cwd: str | None = None,
                 line_buffered: bool = True) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd,
                                     **({"bufsize": 1} if line_buffered else {}))
        self.lines: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue
        self.lines.put(None)

    def exited(self) -> RuntimeError:
        """The error for a process that ended while a test waited for it (with its stderr's tail)."""
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return RuntimeError(f"{self.name} exited: {err[-2000:]}")

    def command(self, text: str) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Ask it to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


class Agent(JsonLinesProcess):
    """A client process on node ``index`` whose lines are kept in :attr:`events`, each taken at most once."""

    def __init__(self, cluster: LocalCluster, index: int, argv: list[str], *, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.index = index
        self.events: list[dict] = []
        super().__init__(argv, env if env is not None else cluster.environ(index), name=f"agent on node {index}",
                         cwd=cwd)

    def wait_for(self, predicate: Callable[[dict], Any], timeout: float = 20.0) -> dict:
        """Collect events until one (not taken before) satisfies ``predicate``; take it and return it."""
        for event in self.events:
            if not event.get("_taken") and predicate(event):
                event["_taken"] = True
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                raise self.exited()
            self.events.append(event)
            if predicate(event):
                event["_taken"] = True
                return event
        raise TimeoutError(f"{self.name}: no matching event; last: {self.events[-5:]}")

    def has(self, predicate: Callable[[dict], Any], wait: float = 0.0) -> bool:
        """True when an event satisfying ``predicate`` comes within ``wait`` seconds (it is taken)."""
        try:
            self.wait_for(predicate, timeout=wait)
        except TimeoutError:
            return False
        return True

    def drain(self, seconds: float = 0.0) -> None:
        """Move already-printed events into ``events`` (waiting up to ``seconds``)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                event = self.lines.get(timeout=max(0.0, deadline - time.monotonic()) or 0.001)
            except queue.Empty:
                return
            if event is None:
                return
            self.events.append(event)


def pythonpath_env(cluster: LocalCluster, index: int) -> dict[str, str]:
    """Node ``index``'s client environment with the repository on ``PYTHONPATH`` (``-m tests....``)."""
    env = cluster.environ(index)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def agent_pool(cluster: LocalCluster, factory: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """The body of an ``agents`` fixture: ``make(*args)`` is ``factory(cluster, *args)``, each closed at the end::

        @pytest.fixture
        def agents(cluster):
            yield from agent_pool(cluster, EvtAgent)
    """
    started: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        agent = factory(cluster, *args, **kwargs)
        started.append(agent)
        return agent

    try:
        yield make
    finally:
        closing(started)


def closing(started: list[Any]) -> None:
    """End every process in ``started`` (close, and kill whatever still runs)."""
    for agent in started:
        try:
            agent.close()
        finally:
            agent.kill()


# -- the tools --------------------------------------------------------------------------------------


def run_tool(cluster: LocalCluster, index: int, tool: str, *args: str,
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m openais.tools.<tool> args`` as a client of node ``index``, its output captured as text."""
    return subprocess.run([sys.executable, "-m", f"openais.tools.{tool}", *args], env=cluster.environ(index),
                          capture_output=True, text=True, timeout=timeout)


def tool_json(cluster: LocalCluster, index: int, tool: str, *args: str, timeout: float = 30.0) -> Any:
    """The document ``<tool> --json args`` prints on node ``index`` (it must exit 0)."""
    out = run_tool(cluster, index, tool, "--json", *args, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


__all__ = [
    "ROOT", "Agent", "JsonLinesProcess", "agent_pool", "block", "closing", "cluster_fixture", "fault_env",
    "fault_file", "heal", "partition", "pythonpath_env", "run_tool", "running_cluster", "start_node", "tool_json",
]
