"""``aisexec``: the executive's command line, start-up sequence, signals and shutdown.

Start-up order: refuse setuid/setgid, read the environment, load the
configuration interface and the configuration, check the authentication key
(``-t`` stops here), configure logging, daemonize (unless ``-f``), take the
single-instance lock, load the services, start the :class:`Executive`, and
wait for a signal.  Every failure before the executive runs is one line
``aisexec: error: ...`` on stderr (the daemon's parent prints it) and an exit
code from :mod:`aisexec.exitcodes`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aisexec import __version__, keys, lockfile, logsys, notify, plugins
from aisexec.env import Environment
from aisexec.exitcodes import ExitCode

PROG = "aisexec"
#: The configspec default of ``aisexec { user }``, a key kept for openais.conf compatibility only.
DEFAULT_USER = "ais"
log = logging.getLogger("aisexec.main")


class StartupError(Exception):
    """A start-up failure: one line for the operator and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message


def build_parser() -> argparse.ArgumentParser:
    """The ``aisexec`` argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description="The openais cluster executive (Totem ring, AIS services).")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground (systemd, debugging)")
    parser.add_argument("-t", "--test-config", action="store_true",
                        help="check the configuration and the authentication key, then exit (no network)")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="main configuration file (overrides $OPENAIS_MAIN_CONFIG_FILE)")
    parser.add_argument("-p", "--pidfile", metavar="PIDFILE",
                        help="pid file in daemon mode (default STATE_DIR/aisexec.pid)")
    parser.add_argument("--debug", action="store_true", help="log debug messages of every subsystem")
    parser.add_argument("-r", "--realtime", dest="realtime", action="store_true", default=False,
                        help="run with round-robin realtime scheduling at the highest priority, as corosync's -r "
                             "(keeps the token moving on a loaded host; small-message batching suffers)")
    parser.add_argument("-n", "--no-realtime", dest="realtime", action="store_false",
                        help="keep the normal scheduling class (the default)")
    parser.add_argument("--embedded", metavar="DIR",
                        help="run the embedded default: one node on 127.0.0.1 with its config, generated authkey, "
                             "socket, state and log under DIR (created if missing; no root needed)")
    parser.add_argument("-v", "--version", action="store_true",
                        help="print the version, config interfaces and services")
    return parser


def check_not_setuid() -> None:
    """Raise StartupError when the process runs setuid or setgid."""
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        raise StartupError(ExitCode.SETUID, "refusing to run setuid/setgid (real and effective ids differ); "
                                            "start aisexec directly as the user it should run as")


def user_notice(config: Any) -> str | None:
    """The start-up notice for an ``aisexec { user }`` other than the default (the key changes nothing), or None."""
    user = (getattr(config, "aisexec", None) or {}).get("user")
    if not user or str(user) == DEFAULT_USER:
        return None
    import pwd

    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    return (f"aisexec {{ user: {user} }} has no effect (kept for openais.conf compatibility): the executive runs "
            f"as the user that started it ({me}); library clients are admitted by aisexec {{ group }} and "
            f"uidgid {{ }}")


def describe_service(service: plugins.LoadedService) -> str:
    """``CPG 8 (openais-py 0.1.0)``."""
    return f"{service.engine.name} {service.engine.id} ({service.origin.dist} {service.origin.dist_version})"


def describe_iface(name: str) -> str:
    """``default (openais-py 0.1.0)`` for an installed configuration interface."""
    origin = plugins.config_interfaces().get(name)
    return f"{name} ({origin.dist} {origin.dist_version})" if origin else name


def version_text() -> str:
    """The ``-v`` output: version, configuration interfaces and services."""
    lines = [f"openais-py aisexec {__version__}"]
    ifaces = plugins.config_interfaces()
    lines.append("config interfaces: " + (", ".join(f"{n} ({o.dist} {o.dist_version})" for n, o in ifaces.items())
                                          or "none"))
    try:
        services = plugins.load_services(plugins.blocked_services())
        lines.append("services: " + (", ".join(describe_service(s) for s in services) or "none"))
    except plugins.PluginError as exc:
        lines.append(f"services: cannot load: {exc}")
    return "\n".join(lines)


def load_checked_config(env: Environment) -> Any:
    """Load and validate the main configuration; StartupError on any problem."""
    from aisexec.config.errors import ConfigError
    from aisexec.config.validated import load_config

    try:
        return load_config(env.config_iface, env.main_config_file)
    except plugins.PluginError as exc:
        raise StartupError(ExitCode.PLUGIN, str(exc)) from None
    except ConfigError as exc:
        raise StartupError(ExitCode.CONFIG, str(exc)) from None


def authkey_path(config: Any, env: Environment) -> str:
    """``totem.keyfile`` if set, else ``$OPENAIS_TOTEM_AUTHKEY_FILE``."""
    return (config.totem.get("keyfile") if isinstance(config.totem, dict) else None) or env.totem_authkey_file


def load_key_if_needed(config: Any, env: Environment) -> bytes | None:
    """The authentication key when ``totem.secauth`` is on (None otherwise); StartupError if unusable."""
    if not config.totem.get("secauth", True):
        return None
    try:
        return keys.load_authkey(authkey_path(config, env))
    except keys.KeyFileError as exc:
        raise StartupError(ExitCode.KEY, str(exc)) from None


@dataclass(slots=True)
class Prepared:
    """Everything checked before the daemon starts."""

    args: argparse.Namespace
    env: Environment
    config: Any
    authkey: bytes | None


def prepare(args: argparse.Namespace) -> Prepared:
    """Steps up to the key check; ``-t`` and the start then run :mod:`aisexec.preflight` (service configs too)."""
    check_not_setuid()
    env = Environment.from_environ()
    if args.config:
        env = dataclasses.replace(env, main_config_file=args.config)
    config = load_checked_config(env)
    authkey = load_key_if_needed(config, env)
    return Prepared(args, env, config, authkey)


@dataclass(slots=True)
class Daemon:
    """The running executive: lock, services, executive and the signal-driven shutdown."""

    prepared: Prepared
    lock: lockfile.InstanceLock | None = None
    pidfile: str | None = None
    realtime: bool = False
    services: list = field(default_factory=list)
    executive: Any = None
    exit_code: int = ExitCode.OK
    stop_event: Any = None
    signal_handlers: list = field(default_factory=list)
    heartbeat: Any = None
    metrics: Any = None

    def start(self) -> None:
        """Lock, load services, log the banner and start the executive (StartupError on failure)."""
        import gevent.event

        self.stop_event = gevent.event.Event()
        env = self.prepared.env
        try:
            self.lock = lockfile.acquire(env.state_dir)
        except lockfile.AlreadyRunningError as exc:
            raise StartupError(ExitCode.ALREADY_RUNNING, str(exc)) from None
        except OSError as exc:
            raise StartupError(ExitCode.DAEMONIZE, f"cannot lock {env.state_dir}: {exc.strerror or exc}") from None
        if self.pidfile:
            try:
                lockfile.write_pidfile(self.pidfile)
            except OSError as exc:
                raise StartupError(ExitCode.DAEMONIZE, f"cannot write pid file {self.pidfile}: {exc}") from None
        from aisexec import preflight

        findings, self.services = preflight.check_services(self.prepared.config, env, plugins.blocked_services())
        findings = preflight.run_all(self.prepared.config, env, services=False) + findings
        if findings:
            for extra in findings[1:]:
                log.error("%s", extra)
            raise StartupError(preflight.exit_code(findings), str(findings[0]))
        log.log(logsys.NOTICE, "openais-py aisexec %s starting; config interface %s from %s; services: %s",
                __version__, describe_iface(env.config_iface), env.main_config_file,
                ", ".join(describe_service(s) for s in self.services) or "none")
        log.debug("environment: state dir %s, IPC socket %s, authkey %s, config interface %s",
                  env.state_dir, env.ipc_socket, authkey_path(self.prepared.config, env), env.config_iface)
        notice = user_notice(self.prepared.config)
        if notice:
            log.log(logsys.NOTICE, "%s", notice)
        if self.realtime:
            set_realtime_scheduling()
        notify.status("starting")
        try:
            from aisexec.executive import Executive

            self.executive = Executive(self.prepared.config, env, self.services, authkey=self.prepared.authkey,
                                       logger=log)
            listeners = getattr(self.executive, "membership_listeners", None)
            if listeners is not None:
                listeners.append(self._membership_status)
            self.executive.start()
            self._start_metrics()
        except StartupError:
            raise
        except OSError as exc:
            import errno

            if exc.errno != errno.EADDRINUSE:
                log.debug("service engine initialisation failed", exc_info=True)
                raise StartupError(ExitCode.SERVICE_INIT,
                                   f"service initialisation failed: {type(exc).__name__}: {exc}") from None
            raise StartupError(ExitCode.RESOURCE_BUSY, f"IPC socket: {exc.strerror or exc}") from None
        except Exception as exc:
            log.debug("service engine initialisation failed", exc_info=True)
            raise StartupError(ExitCode.SERVICE_INIT,
                               f"service initialisation failed: {type(exc).__name__}: {exc}") from None
        self._install_signals()
        self.heartbeat = self.watch(self._heartbeat)
        self.watch(self._wait_ready)
        stop_requested = getattr(self.executive, "stop_requested", None)
        if stop_requested is not None:
            self.watch(lambda: (stop_requested.wait(), self.request_stop("shutdown requested")))

    def watch(self, fn) -> Any:
        """Spawn ``fn`` as a long-lived greenlet whose crash stops the daemon with ExitCode.RUNTIME."""
        import gevent

        greenlet = gevent.spawn(fn)
        greenlet.link_exception(self.on_greenlet_failure)
        return greenlet

    def on_greenlet_failure(self, greenlet: Any) -> None:
        """``link_exception`` callback: log the crash and stop with ExitCode.RUNTIME."""
        log.critical("internal task %s died: %r; stopping", greenlet, greenlet.exception)
        self.exit_code = ExitCode.RUNTIME
        self.stop_event.set()

    def request_stop(self, why: str) -> None:
        """Begin a clean stop."""
        log.log(logsys.NOTICE, "%s: stopping", why)
        self.stop_event.set()

    def _heartbeat(self) -> None:
        """Keep the hub alive for the signal watchers and feed the systemd watchdog (``$WATCHDOG_USEC``)."""
        import gevent

        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        owner = os.environ.get("WATCHDOG_PID")
        feed = usec > 0 and (not owner or owner == str(os.getpid()))
        interval = usec / 2e6 if feed else 1.0
        while True:
            gevent.sleep(interval)
            if feed:
                notify.watchdog()

    def _membership_status(self, change: Any) -> None:
        """Tell systemd about every regular configuration (``STATUS=``)."""
        if change.kind.name == "REGULAR":
            members = ",".join(str(m) for m in change.members)
            notify.status(f"ring {change.ring_id}: {len(change.members)} member(s) [{members}]; synchronising")

    def _wait_ready(self) -> None:
        self.executive.ready_event.wait()
        layer = getattr(self.executive, "layer", None)
        if layer is not None and layer.quorum_holds_readiness() and not layer.quorate():
            import gevent.event

            quorate = gevent.event.Event()
            layer.on_quorum_change(lambda q: quorate.set() if q else None)
            notify.status("waiting for quorum (wait_for_all)")
            quorate.wait()
        notify.ready(f"ready; node {getattr(self.executive, 'nodeid', '?')} providing service")

    def _install_signals(self) -> None:
        import gevent

        self.signal_handlers = [
            gevent.signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM"),
            gevent.signal_handler(signal.SIGINT, self.request_stop, "SIGINT"),
            gevent.signal_handler(signal.SIGHUP, self.on_sighup),
            gevent.signal_handler(signal.SIGUSR2, self.on_sigusr2),
        ]

    def on_sighup(self) -> None:
        """Reopen log files."""
        count = logsys.reopen()
        log.log(logsys.NOTICE, "SIGHUP: reopened %d log file(s)", count)

    def on_sigusr2(self) -> str:
        """Dump the blackbox and every service's ``dump`` hook into the state directory; return the path."""
        state_dir = self.prepared.env.state_dir
        path = os.path.join(state_dir, f"aisexec-blackbox.{os.getpid()}.log")
        count = logsys.dump_blackbox(path)
        dumps = {}
        for service in self.services:
            try:
                dumps[service.engine.name] = service.host.hook.dump()
            except Exception as exc:  # a broken dump hook must not kill the daemon
                dumps[service.engine.name] = f"dump failed: {type(exc).__name__}: {exc}"
        with open(path, "a", encoding="utf-8") as out:
            out.write("services: " + json.dumps(dumps, default=repr, sort_keys=True) + "\n")
        log.log(logsys.NOTICE, "SIGUSR2: wrote %d blackbox records and %d service dumps to %s",
                count, len(dumps), path)
        return path

    def run(self) -> int:
        """Wait for a stop request, then stop cleanly; return the exit code."""
        self.stop_event.wait()
        self.shutdown()
        return self.exit_code

    def _start_metrics(self) -> None:
        """Serve Prometheus metrics on loopback when ``aisexec { metrics_port }`` is set."""
        settings = self.prepared.config.aisexec
        if not settings.get("metrics_port"):
            return
        from aisexec.metrics import MetricsAddressError, MetricsServer

        try:
            self.metrics = MetricsServer(str(settings["metrics_address"]), int(settings["metrics_port"]),
                                         self.executive.layer.ring_status)
            self.metrics.start()
        except MetricsAddressError as exc:
            raise StartupError(ExitCode.CONFIG, f"metrics endpoint: {exc}") from None
        except OSError as exc:
            import errno

            code = ExitCode.RESOURCE_BUSY if exc.errno == errno.EADDRINUSE else ExitCode.CONFIG
            raise StartupError(code, f"metrics endpoint: {exc}") from None
        log.info("metrics on %s", self.metrics.url)

    def shutdown(self) -> None:
        """Stop the executive (exec_exit hooks, socket removed), remove the pid file, drop the lock."""
        notify.stopping("stopping")
        if self.metrics is not None:
            self.metrics.stop()
        for handler in self.signal_handlers:
            handler.cancel()
        self.signal_handlers.clear()
        if self.heartbeat is not None:
            self.heartbeat.kill(block=False)
        try:
            if self.executive is not None:
                self.executive.stop()
        finally:
            if self.pidfile:
                lockfile.remove_pidfile(self.pidfile)
            if self.lock is not None:
                self.lock.release()
        if self.executive is not None:
            log.log(logsys.NOTICE, "aisexec stopped")


def set_realtime_scheduling() -> bool:
    """Ask for SCHED_RR at the highest priority (``-r``, as corosync's), so the token is never kept waiting
    behind ordinary processes; without the privilege, log it and carry on at normal priority."""
    try:
        priority = os.sched_get_priority_max(os.SCHED_RR)
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.log(logsys.NOTICE, "Could not set SCHED_RR at priority max (%s); running with normal scheduling",
                getattr(exc, "strerror", None) or exc)
        return False
    log.info("Running with SCHED_RR realtime scheduling at priority %d", priority)
    return True


def use_embedded(directory: str) -> None:
    """Lay out (or reuse) the embedded single-node default under ``directory`` and point the environment at it."""
    from aisexec.embedded import single_node

    node = single_node(Path(directory))
    os.environ.update(node.environ())
    print(f"{PROG}: embedded single node under {node.root}\n"
          f"  config  {node.config_file}\n  socket  {node.socket}   (export OPENAIS_IPC_SOCKET={node.socket})\n"
          f"  log     {node.log_file}\n  stop    Ctrl-C, or kill -TERM {os.getpid()}", file=sys.stderr, flush=True)


def _fail(exc: StartupError) -> int:
    print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    return exc.code


def _test_config(prepared: Prepared) -> int:
    """``-t``: every check the start runs that needs no network traffic; one line per finding."""
    from aisexec import preflight

    findings = preflight.run_all(prepared.config, prepared.env, plugins.blocked_services())
    for finding in findings:
        sys.stderr.write(f"{PROG}: {'error' if finding.kind != preflight.BUSY else 'busy'}: {finding}\n")
    code = preflight.exit_code(findings)
    if code == ExitCode.OK:
        print(f"Configuration OK: {prepared.env.main_config_file} (iface {prepared.env.config_iface})")
    return code


def main(argv: list[str] | None = None) -> int:
    """Run ``aisexec`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    if args.version:
        print(version_text())
        return ExitCode.OK
    if args.embedded:
        use_embedded(args.embedded)
    try:
        prepared = prepare(args)
    except StartupError as exc:
        return _fail(exc)
    if args.test_config:
        return _test_config(prepared)
    try:
        logsys.configure_logging(prepared.config.logging, prepared.config.logger_subsys,
                                 foreground=args.foreground, force_debug=args.debug)
    except OSError as exc:
        return _fail(StartupError(ExitCode.LOGGING, f"cannot open log destination: {exc}"))
    log.debug("%s", logsys.describe_destinations())
    pipe = None
    daemon = Daemon(prepared)
    daemon.realtime = args.realtime
    if not args.foreground:
        from aisexec.daemonize import daemonize

        daemon.pidfile = args.pidfile or lockfile.default_pidfile(prepared.env.state_dir)
        pipe = daemonize(PROG)
    try:
        daemon.start()
    except StartupError as exc:
        if pipe is not None:  # the daemon's stderr is /dev/null: keep the reason in its log too
            log.error("%s", exc.message)
        if daemon.lock is not None:
            daemon.shutdown()
        if pipe is not None:
            pipe.failed(exc.code, exc.message)
            return exc.code
        return _fail(exc)
    if pipe is not None:
        pipe.started()
    profile_to = os.environ.get("OPENAIS_PROFILE")
    if not profile_to:
        return daemon.run()
    import cProfile  # developers: where does the executive spend its time (pstats file, written at stop)

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(daemon.run)
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main())
