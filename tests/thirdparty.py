"""Build and install throwaway third-party distributions that plug into the executive.

Each distribution is written into a temporary folder outside the repository
with its own ``setup.cfg`` and installed with pip into a target folder that
the test puts on ``PYTHONPATH`` of the processes it starts, so the
executive discovers it through entry points exactly as an operator's
``pip install`` would make it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SERVICE_MODULE = '''
"""A third party's service: ECHO3P echoes requests, counts cluster messages and has a config section."""

from aisexec.config.sections import ConfigSection
from aisexec.hookspecs import hookimpl
from aisexec.service import ExecHandler, LibHandler, ServiceEngine

ECHO = 1
COUNT = 2
GREETING = 3


class EchoEngine(ServiceEngine):
    """Echo the request payload back, reversed, to show the handler ran."""

    id = 200
    name = "ECHO3P"
    version = "9.9.9"

    def __init__(self):
        self.delivered = 0
        self.api = None
        self.lib_handlers = {
            ECHO: LibHandler(self.echo),
            COUNT: LibHandler(self.count, needs_cluster=True),
            GREETING: LibHandler(self.greeting),
        }
        self.exec_handlers = {COUNT: ExecHandler(self.on_count)}
        self.waiting = {}

    def exec_init(self, api):
        self.api = api

    def echo(self, conn, request_id, payload):
        conn.respond(self.id, ECHO, request_id, 1, bytes(reversed(payload)))

    def greeting(self, conn, request_id, payload):
        section = self.api.config.section("echo3p")
        conn.respond(self.id, GREETING, request_id, 1, (section["greeting"] * section["times"]).encode())

    def count(self, conn, request_id, payload):
        self.waiting[(conn.id, request_id)] = conn
        self.api.mcast(self.id, COUNT, conn.id.to_bytes(8, "big") + request_id.to_bytes(4, "big"))

    def on_count(self, sender, payload):
        self.delivered += 1
        conn = self.waiting.pop((int.from_bytes(payload[:8], "big"), int.from_bytes(payload[8:12], "big")), None)
        if conn is not None and sender == self.api.nodeid:
            conn.respond(self.id, COUNT, int.from_bytes(payload[8:12], "big"), 1, self.delivered.to_bytes(4, "big"))


@hookimpl
def openais_service_engine():
    return EchoEngine()


def _check(section, context):
    if section.values["times"] > 1 and not section.given:
        raise section.error("times", "cannot happen: a default of 1")
    if len(section.values["greeting"]) * section.values["times"] > 40:
        raise section.error("times", "greeting x times is over 40 characters")
    return dict(section.values)


@hookimpl
def openais_config_sections():
    return [ConfigSection("echo3p", "greeting = string(min=1, max=32, default=hello)\\n"
                                    "times = integer(min=1, max=10, default=1)", _check)]
'''

CONFIG_MODULE = '''
"""A third party's configuration parser: JSON objects, lists for repeated sections."""

import json

from aisexec.config.tree import RawKey, RawSection
from aisexec.hookspecs import hookimpl


def _build(name, obj, path, line):
    section = RawSection(name=name, line=line, file=path)
    for key, value in obj.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                section.sections.append(_build(key, item, path, line))
            else:
                section.keys.append(RawKey(key, str(item), line))
    return section


@hookimpl
def openais_config_read(path):
    with open(path, encoding="utf-8") as f:
        return _build("", json.load(f), path, 1)


@hookimpl
def openais_config_describe():
    return "JSON configuration (third-party test plugin)"
'''

BROKEN_MODULE = '''
"""A plugin whose import fails."""

import module_that_does_not_exist  # noqa: F401
'''

CLASH_MODULE = '''
"""A service claiming the id of the ECHO3P service."""

from aisexec.hookspecs import hookimpl
from aisexec.service import ServiceEngine


class Clash(ServiceEngine):
    id = 200
    name = "CLASH"


@hookimpl
def openais_service_engine():
    return Clash()
'''


def write_distribution(root: Path, dist: str, package: str, modules: dict[str, str], entry_points: str) -> Path:
    """Write a minimal setuptools project with its own setup.cfg; return its folder."""
    project = root / dist
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text('"""Third-party test distribution."""\n')
    for name, text in modules.items():
        (project / package / f"{name}.py").write_text(textwrap.dedent(text))
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (project / "setup.cfg").write_text(
        textwrap.dedent(
            f"""\
            [metadata]
            name = {dist}
            version = 1.2.3

            [options]
            packages = {package}

            [options.entry_points]
            """
        )
        + entry_points
    )
    return project


def install(project: Path, target: Path) -> None:
    """pip-install ``project`` into ``target`` (no network, no build isolation)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(project)],
        check=True,
        capture_output=True,
    )


def build_echo_distribution(root: Path, target: Path) -> None:
    """The well-behaved third party: a service (ECHO3P) and a config parser (json)."""
    project = write_distribution(
        root,
        "ais-thirdparty",
        "ais_thirdparty",
        {"service": SERVICE_MODULE, "jsonconf": CONFIG_MODULE},
        "openais.services =\n    echo3p = ais_thirdparty.service\n"
        "openais.config =\n    json = ais_thirdparty.jsonconf\n",
    )
    install(project, target)


def build_bad_distributions(root: Path, target: Path) -> None:
    """A plugin that cannot be imported and one that claims a taken service id."""
    install(
        write_distribution(root, "ais-broken", "ais_broken", {"plugin": BROKEN_MODULE},
                           "openais.services =\n    broken = ais_broken.plugin\n"),
        target,
    )
    install(
        write_distribution(root, "ais-clash", "ais_clash", {"plugin": CLASH_MODULE},
                           "openais.services =\n    clash = ais_clash.plugin\n"),
        target,
    )
