"""A deterministic driver of the pure AMF state for tests: effects answered at once, like healthy nodes."""

from __future__ import annotations

from plugins.amf import model
from plugins.amf.messages import Admin, Error, Exec, InstFailed, LcDone, Register, Response, Startup
from plugins.amf.state import AmfState


class Sim:
    """AmfState plus an executor: instantiation registers, cleanup succeeds, callbacks answer OK."""

    def __init__(self, text: str, members: tuple[int, ...] = (1, 2, 3), start: bool = True) -> None:
        self.st = AmfState(model.parse(text, "test.conf"))
        self.queue: list[tuple[int, int, object]] = []
        self.sent: list[tuple[str, object]] = []
        self.answers: list[tuple] = []
        self.fail_inst: set[str] = set()
        self.hold: set[str] = set()  # components whose callbacks are not answered
        self.held: list[tuple[str, object]] = []
        self.adjusts: list[tuple] = []
        self.cleans: list[str] = []
        self.conn = 100
        self.now = 10**18
        self.run(self.st.membership(members))
        if start:
            self.deliver(min(members), Exec.STARTUP, Startup(self.now))

    def deliver(self, sender: int, kind: int, msg: object) -> None:
        """Deliver one message and everything it causes."""
        self.queue.append((sender, kind, msg))
        self._drain()

    def _drain(self) -> None:
        while self.queue:
            sender, kind, msg = self.queue.pop(0)
            self.run(self.st.apply(sender, kind, msg), drain=False)

    def run(self, effects: list[tuple], drain: bool = True) -> None:
        """Carry out effects the way healthy nodes would."""
        for e in effects:
            kind = e[0]
            if kind == "answer":
                self.answers.append(e)
                continue
            if kind in ("pg", "stopped"):
                continue
            if kind in ("adjust", "dep"):
                self.adjusts.append(e)
                continue
            comp = e[1]
            host = self.st.host(comp)
            if kind == "inst":
                if comp in self.fail_inst:
                    self.queue.append((host, Exec.INST_FAILED, InstFailed(comp, e[2], "test")))
                else:
                    self.conn += 1
                    self.queue.append((host, Exec.REGISTER, Register(comp, self.conn, 0, 4000, None)))
            elif kind == "inst_local":
                ok = 0 if comp in self.fail_inst else 1
                self.queue.append((host, Exec.LC_DONE, LcDone(comp, e[2], "inst", ok)))
            elif kind == "clean":
                self.cleans.append(comp)
                self.queue.append((host, Exec.LC_DONE, LcDone(comp, e[2], "clean", 1)))
            elif kind in ("term", "term_wait"):
                self.queue.append((host, Exec.LC_DONE, LcDone(comp, e[2], "term", 1)))
            elif kind == "send":
                op = e[2]
                host = self.st.rt.comps[comp].reg_node or host  # a proxied component answers through its proxy
                self.sent.append((comp, op))
                if comp in self.hold:
                    self.held.append((comp, op))
                    continue
                self.queue.append((host, Exec.RESPONSE, Response(op.invocation, 1)))
                if op.kind == "proxied_inst":  # the proxy registers the proxied component
                    pr = self.st.rt.comps[comp]
                    self.queue.append((pr.reg_node, Exec.REGISTER, Register(op.other, pr.reg_conn, 0, 4000, comp)))
                if op.kind == "set" and op.ha == 4:
                    self.queue.append((host, Exec.QUIESCING_COMPLETE, Response(op.invocation, 1)))
        if drain:
            self._drain()

    def release(self) -> None:
        """Answer every held callback."""
        held, self.held = self.held, []
        for comp, op in held:
            self.hold.discard(comp)
            host = self.st.host(comp)
            self.queue.append((host, Exec.RESPONSE, Response(op.invocation, 1)))
        self._drain()

    def error(self, comp: str, recovery: int = 0, dt: float = 0.0) -> None:
        """An error of ``comp`` (``dt`` seconds after the previous one)."""
        self.now += int(dt * 1e9)
        self.deliver(self.st.host(comp) or 1, Exec.ERROR, Error(comp, recovery, self.now, "test"))

    def admin(self, target: str, op: int, node: int = 1) -> int:
        """Run an admin operation; return its answer's error code (None while under way)."""
        self.conn += 1
        conn = self.conn
        self.deliver(node, Exec.ADMIN, Admin(target, op, conn, 7, self.now))
        for a in self.answers:
            if a[2] == conn:
                return a[5]
        return None

    def leave(self, members: tuple[int, ...]) -> None:
        """A new (smaller or larger) membership."""
        self.run(self.st.membership(members))

    def roles(self, si: str = "safSi=si1,safApp=app") -> dict[str, int]:
        """su -> HA state for ``si``."""
        sg = self.st.m.sgs[self.st.m.sis[si].sg]
        return {u.split(",")[0][6:]: h for u in sg.sus if (h := self.st.su_ha(u, si)) is not None}
