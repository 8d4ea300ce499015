"""The documentation is true against the running product: examples run, metric names exist, options exist.

What is checked, and the conventions the docs follow for it:

* **Python blocks.** Every ```` ```python ```` block of ``docs/services.md`` is
  executed in a fresh module namespace and must not raise.  The block that
  defines a service engine (it has an ``openais_service_engine`` hook) is
  also loaded as a plugin, run on three nodes of
  :class:`aisexec.testing.ServiceCluster` and sent a request.  Every python
  block of a service page (``docs/services-*.md``) is a complete client
  program: it runs as a client of a live executive (its environment points
  the ``openais`` library at it) and must exit 0 or, if it is a watcher that
  blocks in ``dispatch``, still run after a few seconds with nothing on
  stderr.  In ``README.md`` and the other ``docs/*.md`` a python block whose
  first line is a comment starting with ``# runs:`` is meant to run and runs
  the same way; unmarked blocks there are fragments (a method body, a test
  sketch) and are not run.  The README's library example loops forever: it
  runs as a client until its ``deliver`` callback prints, then it is stopped.
* **Metric names.** Every concrete ``openais_*`` name in ``docs/operations.md``
  is read from the ``/metrics`` endpoint of a real executive started with
  :class:`aisexec.localcluster.LocalCluster` with a ``quorum { }`` section (so
  the quorum gauges exist), after a packet sealed with a wrong key was sent to
  it (so ``openais_crypto_stats_auth_failures_total`` is above 0 and the
  documented alert fires).  A name ending in ``_total`` must be a counter, any
  other a gauge.  Patterns (``openais_stats_*_total``) must match a live name;
  the ``faults`` section exists only under the test fault layer and is
  checked against the renderer.
* **Command lines.** Every option written after ``aisexec``, ``ais-keygen``,
  ``openais-demo`` or an ``openais-*tool`` in inline code, in a command block
  (fenced without a language or as ``sh``, or indented) or in a table row whose
  first cell names the tool must appear in that tool's ``--help`` (a
  subcommand's help when the command names one).
* **Operations.** ``kill -USR2 "$(cat $OPENAIS_STATE_DIR/aisexec.lock)"`` as
  documented reaches the executive and writes the blackbox; the live
  executive runs with ``--debug`` and its log has the debug lines the
  "Debug messages" table promises; ``aisexec { user }`` gets its notice.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import importlib.util
import io
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest

from aisexec import hookspecs
from aisexec.localcluster import LocalCluster
from aisexec.metrics import render_status
from aisexec.service import EngineHost, ServiceEngine
from aisexec.testing import ServiceCluster
from tests.test_metrics import parse_exposition

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNS_MARK = "# runs:"
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.S | re.M)
METRIC = re.compile(r"\bopenais_[a-z0-9_]*[a-z0-9](?![a-z0-9_*])")
PATTERN = re.compile(r"\bopenais_[a-z0-9_]*\*[a-z0-9_*]*")
#: Metric names that exist only under conditions the live executive of this module does not create.
CONDITIONAL_SECTIONS = {"openais_faults_": {"faults": {"dropped": 1, "delayed": 2}}}


def blocks(path: Path) -> list[tuple[str, str]]:
    """(info, text) of every fenced code block of ``path``."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def python_blocks(path: Path) -> list[str]:
    """The text of every ```` ```python ```` block of ``path``."""
    return [text for info, text in blocks(path) if info == "python"]


def run_block(text: str, name: str) -> types.ModuleType:
    """Execute ``text`` as the body of a fresh module called ``name``; return the module."""
    module = types.ModuleType(name)
    module.__file__ = name
    exec(compile(text, name, "exec"), module.__dict__)  # the documentation's own examples
    return module


# -- python examples ---------------------------------------------------------------------------------------


def test_docs_have_the_blocks_this_module_checks():
    assert python_blocks(ROOT / "docs" / "services.md"), "docs/services.md lost its python examples"
    assert any("openais_service_engine" in b for b in python_blocks(ROOT / "docs" / "services.md"))


@pytest.mark.parametrize("index", range(len(python_blocks(ROOT / "docs" / "services.md"))))
def test_every_python_block_of_services_md_runs(index):
    run_block(python_blocks(ROOT / "docs" / "services.md")[index], f"services_md_block_{index}")


def engine_example() -> str:
    """The service-engine example of docs/services.md."""
    (text,) = [b for b in python_blocks(ROOT / "docs" / "services.md") if "openais_service_engine" in b]
    return text


def load_example_plugin(tmp_path: Path) -> Callable[[], ServiceEngine]:
    """Import the example as a module file and get its engine factory through pluggy, as the loader does."""
    path = tmp_path / "mysvc_example.py"
    path.write_text(engine_example())
    spec = importlib.util.spec_from_file_location("mysvc_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.ServiceDiscoverySpec)
    pm.register(module, name="openais.services:mysvc")
    pm.check_pending()

    def factory() -> ServiceEngine:
        return pm.hook.openais_service_engine()

    return factory


def test_engine_example_loads_as_a_service_engine_and_answers_a_request(tmp_path):
    from openais import SaAisError

    factory = load_example_plugin(tmp_path)
    engine = factory()
    assert isinstance(engine, ServiceEngine) and engine.id >= 64 and engine.name == "MYSVC"
    EngineHost(engine)  # the hooks fit the contract (argument names checked by pluggy)
    cluster = ServiceCluster([factory], nodes=[1, 2, 3])
    cluster.run()
    conn = cluster.connect(2, engine.id)
    request_id = cluster.request(conn, 1, b"blue")
    cluster.run()
    assert conn.response(request_id) == (SaAisError.OK, b"blue")
    assert [cluster.engine(n, engine.id).value for n in (1, 2, 3)] == [b"blue"] * 3
    bad = cluster.request(conn, 1, b"")
    assert conn.response(bad)[0] == SaAisError.INVALID_PARAM
    cluster.disconnect(conn)


# -- a live executive ----------------------------------------------------------------------------------------


def free_tcp_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    """One real executive (udpu, secauth on, a quorum section, metrics on, ``--debug``) and its metrics port."""
    port = free_tcp_port()
    sections = {"aisexec": {"metrics_port": port}, "quorum": {"provider": "votequorum"}}
    with LocalCluster(tmp_path_factory.mktemp("docs"), 1, first_address=61, sections=sections) as cluster:
        cluster.start(1, "--debug")
        try:
            cluster.wait_members([1], [cluster.nodes[0].nodeid], timeout=60)
        except TimeoutError as exc:
            raise AssertionError(f"the executive did not come up: {exc}\n{cluster.log(1)[-4000:]}") from None
        yield cluster, port
        cluster.stop_all()


def scrape(port: int) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """The parsed exposition of the live executive."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return parse_exposition(answer.read().decode())


def send_wrong_key_packet(cluster: LocalCluster) -> None:
    """A datagram sealed by a stranger with another key, to the node's Totem port (an ``Invalid digest``)."""
    from aisexec.totem.crypto import PacketCrypto

    node = cluster.nodes[0]
    stranger = PacketCrypto(2, os.urandom(128))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((node.address, 0))  # from a member's address: others are refused before decryption (SenderGuard)
        s.sendto(stranger.seal(b"\x00" * 64), (node.address, int(cluster.options["port"])))


def documented_metric_names() -> set[str]:
    """Every concrete ``openais_*`` metric name of docs/operations.md."""
    names: set[str] = set()
    names |= set(METRIC.findall((ROOT / "docs" / "operations.md").read_text()))
    return names


def test_every_documented_metric_is_exported_with_its_type(live):
    cluster, port = live
    names = documented_metric_names()
    assert "openais_crypto_stats_auth_failures_total" in names and "openais_ring_members" in names
    send_wrong_key_packet(cluster)
    deadline = time.monotonic() + 20
    fams = scrape(port)
    while value(fams, "openais_crypto_stats_auth_failures_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        send_wrong_key_packet(cluster)
        fams = scrape(port)
    assert value(fams, "openais_crypto_stats_auth_failures_total") >= 1, "the documented alert would not fire"
    missing = sorted(n for n in names if n not in fams)
    assert not missing, f"documented in docs/operations.md but not exported: {missing}"
    for name in names:
        expected = "counter" if name.endswith("_total") else "gauge"
        assert fams[name][0] == expected, f"{name} is a {fams[name][0]}, not a {expected}"


def value(fams: dict, name: str) -> float:
    """The single sample value of ``name`` (0 when absent)."""
    if name not in fams:
        return 0.0
    (_, sample), = fams[name][1]
    return sample


def test_every_documented_metric_pattern_matches(live):
    _cluster, port = live
    fams = scrape(port)
    patterns = set(PATTERN.findall((ROOT / "docs" / "operations.md").read_text()))
    assert "openais_stats_*_total" in patterns
    for pattern in patterns:
        rx = re.compile(re.escape(pattern).replace(r"\*", "[a-z0-9_]+") + "$")
        prefix = pattern.split("*", 1)[0]
        if prefix in CONDITIONAL_SECTIONS:
            exported = parse_exposition(render_status(CONDITIONAL_SECTIONS[prefix]))
        else:
            exported = fams
        matches = [n for n in exported if rx.match(n)]
        assert matches, f"no exported metric matches {pattern}"
        if pattern.endswith("_total"):
            assert all(exported[n][0] == "counter" for n in matches), pattern


def test_statistics_are_counters_and_levels_gauges_live(live):
    _cluster, port = live
    fams = scrape(port)
    counter_prefixes = ("openais_stats_", "openais_transport_stats_", "openais_crypto_stats_",
                        "openais_routing_", "openais_driver_", "openais_ipc_")
    levels = {"openais_ipc_connections", "openais_ipc_queued_bytes", "openais_driver_max_pause_ms"}
    for name, (kind, _) in fams.items():
        if name.startswith(counter_prefixes):
            assert kind == ("gauge" if name in levels else "counter"), name
        assert (kind == "counter") == name.endswith("_total"), name


def client_examples(doc: Path) -> list[str]:
    """The blocks of ``doc`` that run as clients: all of a service page, the ``# runs:`` ones elsewhere."""
    if doc.name.startswith("services-"):
        return python_blocks(doc)
    return [text for text in python_blocks(doc) if text.lstrip().startswith(RUNS_MARK)]


def test_service_pages_have_client_examples():
    assert sum(len(client_examples(d)) for d in DOCS if d.name.startswith("services-")) >= 4


#: Seconds a client example that does not exit (a dispatch loop) must keep running without an error.
LONG_RUNNING_GRACE = 8.0


def run_client(cluster: LocalCluster, text: str) -> tuple[int | None, str]:
    """Run ``text`` as a client of node 1: (exit status, stderr); status None if it still ran after the grace."""
    proc = subprocess.Popen([sys.executable, "-c", text], env=cluster.environ(1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=LONG_RUNNING_GRACE)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        return None, err


@pytest.mark.parametrize("doc", [d for d in DOCS if d.name != "services.md"], ids=lambda d: d.name)
def test_client_examples_run_against_an_executive(doc, live):
    cluster, _port = live
    for text in client_examples(doc):
        status, err = run_client(cluster, text)
        if status is None:  # a watcher blocked in dispatch: fine as long as nothing went wrong
            assert not err.strip(), f"{doc.name}: example failed:\n{text}\n{err}"
        else:
            assert status == 0, f"{doc.name}: example failed (exit {status}):\n{text}\n{err}"


def test_readme_library_example_delivers(live):
    cluster, _port = live
    (example,) = [b for b in python_blocks(ROOT / "README.md") if "cpg.initialize" in b]
    proc = subprocess.Popen([sys.executable, "-u", "-c", example], env=cluster.environ(1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "b'hello' from node" in line:
                break
        assert any("b'hello' from node" in line for line in lines), (lines, proc.poll())
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_sigusr2_through_the_lock_file_writes_the_blackbox(live):
    cluster, _port = live
    state_dir = cluster.nodes[0].state_dir
    pid = cluster.procs[1].pid
    assert (state_dir / "aisexec.lock").read_text().strip() == str(pid)
    env = cluster.environ(1)
    subprocess.run(["sh", "-c", 'kill -USR2 "$(cat "$OPENAIS_STATE_DIR/aisexec.lock")"'], env=env, check=True,
                   timeout=10)
    dump = state_dir / f"aisexec-blackbox.{pid}.log"
    deadline = time.monotonic() + 20
    while f"to {dump}" not in cluster.log(1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"to {dump}" in cluster.log(1), cluster.log(1)[-2000:]
    assert "services: " in dump.read_text()


#: What docs/operations.md ("Debug messages") says ``--debug`` shows, as lines of a live executive's log.
DEBUG_LINES = [
    r"debug   \[MAIN  \] logging to stderr, file \S+; debug on for every subsystem",
    r"debug   \[MAIN  \] environment: state dir \S+, IPC socket \S+, authkey \S+, config interface default",
    r"debug   \[SERV  \] service CPG \(id 8, version \S+\) loaded from entry point 'cpg = plugins.cpg'",
    r"debug   \[SERV  \] configuration interface default loaded from",
    r"debug   \[SERV  \] REGULAR configuration of ring 1\.[0-9a-f]+: members \[1\], left \[\], joined \[",
    r"debug   \[SYNC  \] sync round of ring 1\.[0-9a-f]+ starts \(services [A-Z, ]*CPG",
    r"debug   \[SYNC  \] sync of ring 1\.[0-9a-f]+: CPG starts \(members \[1\], transitional \[",
    r"debug   \[SYNC  \] sync of ring 1\.[0-9a-f]+: CPG activated",
    r"debug   \[SYNC  \] sync round of ring 1\.[0-9a-f]+ complete",
    r"debug   \[SERV  \] library connection \d+ \(pid \d+, uid \d+\) opened to service CFG",
    r"debug   \[SERV  \] library connection \d+ \(pid \d+, uid \d+\) closed from service CFG",
]


def test_debug_shows_what_the_docs_say(live):
    cluster, _port = live
    text = (ROOT / "docs" / "operations.md").read_text()
    for phrase in ("sync round of ring R starts", "activated", "aborted by a configuration change",
                   "REGULAR configuration of ring R", "library connection opened and closed"):
        assert phrase in text.replace("`", ""), phrase
    log = cluster.log(1)
    missing = [rx for rx in DEBUG_LINES if not re.search(rx, log)]
    assert not missing, f"--debug lines missing from the log: {missing}"


def test_aisexec_user_other_than_default_is_a_notice():
    from aisexec.main import DEFAULT_USER, user_notice

    assert user_notice(types.SimpleNamespace(aisexec={"user": DEFAULT_USER})) is None
    notice = user_notice(types.SimpleNamespace(aisexec={"user": "hacluster"}))
    assert notice is not None and "hacluster" in notice and "no effect" in notice


# -- command-line options ---------------------------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    """Console script name -> ``module:function`` from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = cfg["options.entry_points"]["console_scripts"]
    return {name.strip(): target.strip() for name, _, target in
            (line.partition("=") for line in entries.strip().splitlines()) if target}


TOOLS = console_scripts()
TOOL = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(t) for t in sorted(TOOLS, key=len, reverse=True)) +
                  r")(?=[ \t]|$)((?:[ \t]+[^\s`|#;)]+)*)")
OPTION = re.compile(r"^\[?(--?[A-Za-z][\w-]*)")


def help_text(tool: str, *args: str) -> str | None:
    """``tool [args] --help`` run in-process (argparse prints and exits); None if it did not succeed."""
    module, _, function = TOOLS[tool].partition(":")
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [tool, *args, "--help"]
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                code = main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved
    return out.getvalue() if code in (0, None) and "usage" in out.getvalue() else None


def snippets(text: str) -> Iterator[str]:
    """Inline code spans, the lines of command blocks (fenced or indented), and table rows (one snippet each)."""
    for info, body in FENCE.findall(text):
        if info in ("", "sh", "bash", "console", "shell"):
            yield from body.splitlines()
    stripped = FENCE.sub("", text)
    yield from re.findall(r"^(?: {4}|\t)(.+)$", stripped, re.M)  # indented code blocks
    yield from (span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", stripped))
    for row in re.findall(r"^\|.*\|$", stripped, re.M):
        first = row.split("|")[1]
        tool = TOOL.search(first.replace("`", " "))
        if tool:
            spans = re.findall(r"`([^`\n]+)`", row)
            yield tool.group(1) + " " + " ".join(s for s in spans if s.startswith("-"))


def documented_commands() -> list[tuple[str, str, str, list[str]]]:
    """(doc, tool, subcommand or '', options) of every command line the docs write."""
    found = []
    for doc in DOCS:
        for snippet in snippets(doc.read_text()):
            for match in TOOL.finditer(snippet):
                tool, rest = match.group(1), match.group(2).split()
                options = [m.group(1) for m in map(OPTION.match, rest) if m]
                sub = rest[0].strip("[]") if rest and re.fullmatch(r"\[?[a-z][a-z-]*\]?", rest[0]) else ""
                if options:
                    found.append((doc.name, tool, sub, options))
    return found


def test_documented_commands_are_found():
    tools = {tool for _doc, tool, _sub, _opts in documented_commands()}
    assert {"aisexec", "openais-cfgtool", "openais-cpgtool", "openais-quorumtool"} <= tools


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_documented_option_is_in_the_tools_help(tool):
    wrong = []
    for doc, name, sub, options in documented_commands():
        if name != tool:
            continue
        text = help_text(tool) or ""
        if sub:
            text += help_text(tool, sub) or ""
        assert text, f"{tool} --help failed"
        for option in options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                wrong.append(f"{doc}: {tool} {sub} {option}".replace("  ", " "))
    assert not wrong, "options the docs name that the tool does not have:\n" + textwrap.indent("\n".join(wrong), "  ")


def test_pidof_is_not_what_the_docs_tell_operators():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert "$(pidof aisexec)" not in text
    assert "aisexec.lock" in text and "systemctl kill -s USR2 aisexec" in text
