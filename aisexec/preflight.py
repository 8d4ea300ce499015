"""Pre-flight checks: everything the start would find wrong that needs no network traffic.

``aisexec -t`` runs them all and reports every finding; the daemon runs them
before it starts the ring, so a configuration that ``-t`` passes does not fail
at start for a reason ``-t`` could have seen.  Each finding says what kind of
problem it is, because the remedy differs:

- ``config``: the configuration is wrong (exit 8, no restart helps): a
  ``bindnetaddr`` no local interface has, this node's own address missing from
  the udpu member list, a member listed twice, a non-loopback metrics address,
  a service's own configuration (amf.conf) that does not check;
- ``plugin``: a configuration interface or service fails to load (exit 21);
- ``busy``: a resource is taken right now (exit 19, a restart may succeed): a
  UDP port, the metrics port, the IPC socket of a running executive.

Findings carry file, line and dotted key where there is one.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from aisexec.config.errors import ConfigError
from aisexec.config.tree import RawSection
from aisexec.exitcodes import ExitCode

CONFIG = "config"
PLUGIN = "plugin"
BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its kind (config, plugin, busy), where it is and what it is."""

    kind: str
    message: str
    file: str = ""
    line: int = 0
    key: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        return f"{where}{self.key + ': ' if self.key else ''}{self.message}"


def exit_code(findings: list[Finding]) -> int:
    """The exit status for ``findings``: config (8) before plugin (21) before busy (19); 0 for none."""
    kinds = {f.kind for f in findings}
    if CONFIG in kinds:
        return ExitCode.CONFIG
    if PLUGIN in kinds:
        return ExitCode.PLUGIN
    if BUSY in kinds:
        return ExitCode.RESOURCE_BUSY
    return ExitCode.OK


class _Lines:
    """Finds the line of a key in the raw tree (0 when unknown)."""

    def __init__(self, raw: RawSection | None) -> None:
        self.raw = raw

    def of(self, path: list[str], key: str, value: str | None = None, nth: int = 1) -> int:
        """Line of the ``nth`` ``key`` (with ``value`` if given) in the sections at ``path``."""
        if self.raw is None:
            return 0
        sections = [self.raw]
        for name in path:
            sections = [sub for s in sections for sub in s.section(name)]
        for section in sections:
            for k in section.keys:
                if k.name == key and (value is None or _same_address(k.value, value)):
                    nth -= 1
                    if nth == 0:
                        return k.line
        return sections[0].line if sections else 0


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip()) == ipaddress.ip_address(b.strip())
    except ValueError:
        return a.strip() == b.strip()


def _probe_bind(address: tuple[str, int], reuse: bool = False, kind: int = socket.SOCK_DGRAM) -> OSError | None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


def check_interfaces(config: Any, lines: _Lines, source: str, probe_ports: bool = True) -> list[Finding]:
    """Ring 0's address is local, the udpu member list holds it once, and the ports are free."""
    from aisexec.totem.transport import TransportError, resolve_bind

    findings: list[Finding] = []
    transport = str(config.totem.get("transport") or "udp")
    for iface in config.interfaces[:1]:
        bind = str(iface["bindnetaddr"])
        try:
            local, _index = resolve_bind(bind)
        except (TransportError, OSError) as exc:
            findings.append(Finding(CONFIG, f"{exc}: give an address of this host (ip -brief address)", source,
                                    lines.of(["totem", "interface"], "bindnetaddr"), "totem.interface.bindnetaddr"))
            continue
        port = int(iface.get("mcastport") or 5405)
        if transport == "udpu":
            members = [str(m["memberaddr"]) for m in iface.get("members", [])]
            seen: dict[str, int] = {}
            for addr in members:
                norm = str(ipaddress.ip_address(addr))
                seen[norm] = seen.get(norm, 0) + 1
                if seen[norm] == 2:
                    findings.append(Finding(CONFIG, f"member {addr} is listed twice", source,
                                            lines.of(["totem", "interface", "member"], "memberaddr", addr, nth=2),
                                            "totem.interface.member.memberaddr"))
            if str(ipaddress.ip_address(local)) not in seen:
                findings.append(Finding(
                    CONFIG, f"this node's own address {local} is not in the member list: the other nodes would "
                            "not know it; add 'member { memberaddr: " + local + " }' on every node",
                    source, lines.of(["totem", "interface"], "bindnetaddr"), "totem.interface.member"))
        if not probe_ports:
            continue
        probes = [((local, port), False)]
        if transport != "udpu":
            probes.append(((local, port - 1), False))
        for address, reuse in probes:
            exc = _probe_bind(address, reuse)
            if exc is not None:
                kind = BUSY if exc.errno == errno.EADDRINUSE else CONFIG
                findings.append(Finding(kind, f"cannot bind UDP {address[0]}:{address[1]}: {exc.strerror}"
                                              + (" (another executive or program uses it)" if kind == BUSY else ""),
                                        source, lines.of(["totem", "interface"], "mcastport"),
                                        "totem.interface.mcastport"))
    return findings


def check_metrics(config: Any, lines: _Lines, source: str, probe_ports: bool = True) -> list[Finding]:
    """The metrics endpoint: loopback only, and its port free."""
    settings = config.aisexec
    port = int(settings.get("metrics_port") or 0)
    if not port:
        return []
    address = str(settings.get("metrics_address") or "127.0.0.1")
    if not ipaddress.ip_address(address).is_loopback:
        return [Finding(CONFIG, f"{address} is not a loopback address: the metrics endpoint has no "
                                "authentication, so it binds only to 127.0.0.0/8 or ::1", source,
                        lines.of(["aisexec"], "metrics_address"), "aisexec.metrics_address")]
    if probe_ports:
        exc = _probe_bind((address, port), reuse=True, kind=socket.SOCK_STREAM)
        if exc is not None:
            kind = BUSY if exc.errno == errno.EADDRINUSE else CONFIG
            return [Finding(kind, f"cannot bind TCP {address}:{port}: {exc.strerror}", source,
                            lines.of(["aisexec"], "metrics_port"), "aisexec.metrics_port")]
    return []


def check_ipc_socket(env: Any) -> list[Finding]:
    """No executive is listening on the IPC socket already (the start creates its directory)."""
    import os

    path = env.ipc_socket
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return []  # a stale socket file (nobody listens): the start replaces it
        except OSError as exc:  # a timeout or EAGAIN: an executive that is there but not accepting
            return [Finding(BUSY, f"another executive is listening on {path} but does not answer "
                                  f"({exc.strerror or exc}); not replacing it (OPENAIS_IPC_SOCKET)")]
        finally:
            with contextlib.suppress(OSError):
                probe.close()
        return [Finding(BUSY, f"another executive is listening on {path} (OPENAIS_IPC_SOCKET)")]
    return []


def check_services(config: Any, env: Any, blocked: frozenset[str]) -> tuple[list[Finding], list[Any]]:
    """Every service loads; a service's own ``config_check(config, env)`` (e.g. amf.conf) passes."""
    from aisexec import plugins

    try:
        services = plugins.load_services(blocked)
    except plugins.PluginError as exc:
        return [Finding(PLUGIN, str(exc))], []
    findings = []
    for service in services:
        try:
            service.host.hook.config_check(config=config, env=env)
        except ConfigError as exc:
            hint = f" (did you mean '{exc.suggestion}'?)" if exc.suggestion else ""
            findings.append(Finding(CONFIG, exc.message + hint, exc.file, exc.line, exc.key))
        except Exception as exc:  # a check that crashes is the plugin's fault
            findings.append(Finding(PLUGIN, f"{service.engine.name}: configuration check failed: "
                                            f"{type(exc).__name__}: {exc}"))
    return findings, services


def raw_tree(env: Any) -> RawSection | None:
    """The raw tree of the main configuration (for line numbers), or None when it cannot be read."""
    from aisexec import plugins

    try:
        return plugins.load_config_interface(env.config_iface).read(env.main_config_file)
    except Exception:
        return None


def run_all(config: Any, env: Any, blocked: frozenset[str] = frozenset(), probe_ports: bool = True,
            services: bool = True) -> list[Finding]:
    """Every check, in start-up order; all findings (an empty list: the start will get past them)."""
    lines = _Lines(raw_tree(env))
    source = getattr(config, "source", "") or env.main_config_file
    findings = check_interfaces(config, lines, source, probe_ports)
    findings += check_metrics(config, lines, source, probe_ports)
    findings += check_ipc_socket(env)
    if services:
        findings += check_services(config, env, blocked)[0]
    return findings
