"""The node-local component life cycle: CLC-CLI commands, registration timeouts, passive monitoring.

Everything here happens on the executive of the node that hosts a
component, under gevent.  Results go back to the replicated state only as
cluster messages (through ``send``): an instantiation failure, a cleanup or
termination done, an error found by passive monitoring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import gevent
import gevent.subprocess

from plugins.amf.messages import Error, Exec, InstFailed, LcDone
from plugins.amf.model import Command, Comp, Model

log = logging.getLogger("aisexec.amf")

PM_ZERO_EXIT, PM_NON_ZERO_EXIT, PM_ABNORMAL_END = 1, 2, 4
#: Seconds between passive-monitoring polls of processes that are not the executive's children.
PM_POLL = 0.1
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Running:
    """The INSTANTIATE process of one component and what watches it."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.pgid = 0
        self.epoch = 0
        self.reg_timer: Callable[[], None] | None = None
        self.registered = False
        self.pm: list[list[Any]] = []  # [pid, depth, errors, recovery, known pids]
        self.pm_greenlet: Any = None
        self.exit_status: int | None = None


def _pids_under(root: int, depth: int) -> set[int]:
    """``root`` and its descendants down to ``depth`` generations (-1: all), from /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {root}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        if rest[0] == b"Z":
            continue
        children.setdefault(int(rest[1]), []).append(int(name))
    out = {root}
    frontier = [root]
    level = 0
    while frontier and (depth < 0 or level < depth):
        frontier = [c for p in frontier for c in children.get(p, [])]
        out.update(frontier)
        level += 1
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


class Lifecycle:
    """Runs the CLC-CLI commands of this node's components and watches their processes."""

    def __init__(self, model: Model, send: Callable[[int, bytes], None], ipc_socket: str,
                 call_later: Callable[[float, Callable[[], None]], Callable[[], None]]) -> None:
        self.model = model
        self.send = send
        self.ipc_socket = ipc_socket
        self.call_later = call_later
        self.running: dict[str, _Running] = {}

    def _env(self, comp: Comp, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"SA_AMF_COMPONENT_NAME": comp.dn, "OPENAIS_IPC_SOCKET": self.ipc_socket}
        env.update(comp.env)
        env.update(extra or {})
        return env

    def _spawn(self, comp: Comp, cmd: Command, what: str, extra: dict[str, str] | None = None) -> Any:
        kwargs: dict[str, Any] = {}
        if comp.user and os.geteuid() == 0:
            kwargs["user"] = comp.user
        if comp.group and os.geteuid() == 0:
            kwargs["group"] = comp.group
        proc = gevent.subprocess.Popen(cmd.argv, env=self._env(comp, extra), cwd="/", stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                       close_fds=True, **kwargs)
        gevent.spawn(self._pump_output, proc, comp.dn, what)
        return proc

    @staticmethod
    def _pump_output(proc: Any, dn: str, what: str) -> None:
        with contextlib.suppress(Exception):
            for line in proc.stdout:
                log.info("%s %s: %s", dn, what, line.decode(errors="replace").rstrip())

    # -- instantiate --------------------------------------------------------------------------

    def instantiate(self, dn: str, epoch: int, delay_ms: int) -> None:
        """Run INSTANTIATE; a failure (exit before registration, timeout) is reported as INST_FAILED."""
        comp = self.model.comps[dn]
        run = self.running.setdefault(dn, _Running())
        run.epoch, run.registered, run.exit_status = epoch, False, None
        gevent.spawn_later(delay_ms / 1000.0, self._do_instantiate, dn, comp, epoch)

    def _do_instantiate(self, dn: str, comp: Comp, epoch: int) -> None:
        run = self.running[dn]
        if run.epoch != epoch:
            return
        assert comp.instantiate is not None
        try:
            proc = self._spawn(comp, comp.instantiate, "instantiate")
        except OSError as exc:
            self._fail(dn, epoch, f"cannot run {comp.instantiate.argv[0]}: {exc.strerror or exc}")
            return
        run.proc, run.pgid = proc, proc.pid
        log.info("instantiating %s: %s (pid %d)", dn, " ".join(comp.instantiate.argv), proc.pid)
        run.reg_timer = self.call_later(comp.instantiate_timeout / 1000.0,
                                        lambda: self._reg_timeout(dn, epoch))
        gevent.spawn(self._watch_instantiate, dn, proc, epoch)

    def _watch_instantiate(self, dn: str, proc: Any, epoch: int) -> None:
        status = proc.wait()
        run = self.running.get(dn)
        if run is None or run.proc is not proc:
            return
        run.exit_status = status
        if run.epoch == epoch and not run.registered and status != 0:
            self._fail(dn, epoch, f"INSTANTIATE exited with status {status}")

    def _reg_timeout(self, dn: str, epoch: int) -> None:
        run = self.running.get(dn)
        if run is not None and run.epoch == epoch and not run.registered:
            self._fail(dn, epoch, "no registration within the instantiate timeout")

    def _fail(self, dn: str, epoch: int, reason: str) -> None:
        run = self.running.get(dn)
        if run is not None and run.reg_timer is not None:
            run.reg_timer()
            run.reg_timer = None
        self.send(Exec.INST_FAILED, InstFailed.pack(dn, epoch, reason))

    def registered(self, dn: str) -> None:
        """The component registered: its instantiation succeeded."""
        run = self.running.setdefault(dn, _Running())
        run.registered = True
        if run.reg_timer is not None:
            run.reg_timer()
            run.reg_timer = None

    # -- cleanup, termination -------------------------------------------------------------------

    def _kill(self, dn: str, reg_pid: int) -> None:
        run = self.running.get(dn)
        if run is not None:
            if run.reg_timer is not None:
                run.reg_timer()
                run.reg_timer = None
            if run.pgid:
                with contextlib.suppress(OSError):
                    os.killpg(run.pgid, signal.SIGKILL)
            for entry in run.pm:
                for pid in entry[4]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            self.stop_monitoring(dn)
        if reg_pid and reg_pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(reg_pid, signal.SIGKILL)

    def cleanup(self, dn: str, epoch: int, reg_pid: int) -> None:
        """CLEANUP command (if any), then SIGKILL the process group and monitored processes."""
        comp = self.model.comps[dn]
        run = self.running.setdefault(dn, _Running())
        run.epoch = epoch
        if comp.cleanup is None:
            self._kill(dn, reg_pid)
            self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "clean", 1))
            return
        gevent.spawn(self._run_cleanup, dn, comp, epoch, reg_pid)

    def _run_cmd(self, comp: Comp, cmd: Command, what: str, extra: dict[str, str] | None = None,
                 run: _Running | None = None) -> bool:
        try:
            proc = self._spawn(comp, cmd, what, extra)
        except OSError as exc:
            log.error("%s: cannot run %s: %s", comp.dn, cmd.argv[0], exc.strerror or exc)
            return False
        if run is not None:
            run.proc, run.pgid = proc, proc.pid
        try:
            status = proc.wait(timeout=cmd.timeout / 1000.0)
        except gevent.subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.error("%s: %s did not finish within %d ms", comp.dn, what, cmd.timeout)
            return False
        if status != 0:
            log.error("%s: %s exited with status %s", comp.dn, what, status)
        return status == 0

    def _run_cleanup(self, dn: str, comp: Comp, epoch: int, reg_pid: int) -> None:
        assert comp.cleanup is not None
        ok = self._run_cmd(comp, comp.cleanup, "cleanup")
        self._kill(dn, reg_pid)
        self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "clean", int(ok)))

    def instantiate_local(self, dn: str, epoch: int, attrs: list[tuple[str, str]]) -> None:
        """A local component's INSTANTIATE with the CSI attributes in its environment; exit 0 = instantiated."""
        comp = self.model.comps[dn]
        run = self.running.setdefault(dn, _Running())
        run.epoch = epoch
        extra = {k: v for k, v in attrs if _ENV_NAME.fullmatch(k)}

        def go() -> None:
            assert comp.instantiate is not None
            cmd = Command(comp.instantiate.argv, comp.instantiate_timeout)
            ok = self._run_cmd(comp, cmd, "instantiate", extra, run)
            self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "inst", int(ok)))

        gevent.spawn(go)

    def terminate_command(self, dn: str, epoch: int) -> None:
        """A local component's TERMINATE command."""
        comp = self.model.comps[dn]

        def run() -> None:
            ok = comp.terminate is not None and self._run_cmd(comp, comp.terminate, "terminate")
            self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "term", int(ok)))

        gevent.spawn(run)

    def terminate_wait(self, dn: str, epoch: int, closed: Callable[[], bool]) -> None:
        """After an OK to component_terminate: wait for the exit (its handle closed), then kill the group."""
        comp = self.model.comps[dn]

        def run() -> None:
            waited = 0.0
            limit = comp.terminate_callback_timeout / 1000.0
            while waited < limit and not closed():
                gevent.sleep(0.02)
                waited += 0.02
            ok = closed()
            self._kill(dn, 0)
            self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "term", int(ok)))

        gevent.spawn(run)

    # -- passive monitoring ---------------------------------------------------------------------

    def pm_start(self, dn: str, pid: int, depth: int, errors: int, recovery: int) -> str | None:
        """Watch ``pid``; return None, or 'exist' / 'noproc'."""
        run = self.running.setdefault(dn, _Running())
        if not _alive(pid):
            return "noproc"
        for entry in run.pm:
            if entry[0] == pid and entry[2] & errors:
                return "exist"
        run.pm.append([pid, depth, errors, recovery, _pids_under(pid, depth)])
        if run.pm_greenlet is None:
            run.pm_greenlet = gevent.spawn(self._pm_loop, dn, run)
        return None

    def pm_stop(self, dn: str, qualifier: int, pid: int, errors: int) -> bool:
        """Stop watching; False when nothing matched."""
        run = self.running.get(dn)
        if run is None:
            return False
        before = len(run.pm)
        run.pm = [e for e in run.pm if not ((qualifier == 3 or e[0] == pid) and e[2] & errors)]
        return len(run.pm) != before

    def _pm_loop(self, dn: str, run: _Running) -> None:
        while run.pm:
            gevent.sleep(PM_POLL)
            for entry in list(run.pm):
                pid, depth, errors, recovery, known = entry
                gone = {p for p in known if not _alive(p)}
                if depth != 0 and _alive(pid):
                    entry[4] = _pids_under(pid, depth) | (known - gone)
                if not gone:
                    continue
                kind = PM_ABNORMAL_END
                if run.proc is not None and run.proc.pid in gone:
                    status = run.proc.poll()
                    kind = PM_ZERO_EXIT if status == 0 else PM_NON_ZERO_EXIT if status and status > 0 \
                        else PM_ABNORMAL_END
                entry[4] = known - gone
                if kind & errors:
                    log.warning("passive monitoring: process %s of %s ended (%d)", sorted(gone), dn, kind)
                    run.pm = []
                    self.send(Exec.ERROR, Error.pack(dn, recovery, _now_ns(), "passive monitoring"))
                    break
        run.pm_greenlet = None

    def stop_monitoring(self, dn: str) -> None:
        """End every passive monitor of ``dn``."""
        run = self.running.get(dn)
        if run is not None:
            run.pm = []

    def shutdown(self) -> None:
        """Kill every component this node started (executive stop)."""
        for dn in list(self.running):
            self._kill(dn, 0)


def _now_ns() -> int:
    import time

    return time.time_ns()
