"""AMF library handles bridged into an in-process ServiceCluster, and a fake CLC-CLI runner."""

from __future__ import annotations

from aisexec.testing import ServiceCluster
from openais import amf
from openais.errors import AisError, SaAisError
from plugins.amf.messages import Exec, LcDone


class BridgedHandle(amf.AmfHandle):
    """An AmfHandle whose requests go to one node of a ServiceCluster (no socket)."""

    def __init__(self, cluster: ServiceCluster, nodeid: int, pid: int = 1000, **callbacks) -> None:
        self._callbacks = {k: callbacks.get(k) for k in ("healthcheck", "component_terminate", "csi_set",
                                                         "csi_remove", "protection_group_track",
                                                         "proxied_component_instantiate",
                                                         "proxied_component_cleanup")}
        self._finalized = False
        self._dead = False
        self.pump = None  # called while waiting for an answer (lets fake components answer callbacks)
        self.cluster = cluster
        self.conn = cluster.connect(nodeid, amf.SERVICE_ID, pid=pid)
        mask = sum(1 << i for i, k in enumerate(self._callbacks) if self._callbacks[k] is not None)
        self._call(amf.Request.HELLO, amf.Hello.pack(mask))

    def _call(self, msg_id: int, payload: bytes, timeout: float | None = None) -> bytes:
        self._check()
        rid = self.cluster.request(self.conn, msg_id, payload)
        for _ in range(1000):
            try:
                error, answer = self.conn.response(rid)
                break
            except KeyError:
                if not self.cluster.step():
                    self.cluster.run()
                    if self.pump is not None:
                        self.pump()
        else:
            raise AssertionError("no answer")
        if error != SaAisError.OK:
            raise AisError.from_code(error)
        return answer

    def run_callbacks(self) -> int:
        """Run every queued callback; return how many ran."""
        pending, self.conn.dispatched[:] = list(self.conn.dispatched), []
        for msg_id, payload in pending:
            self._on_dispatch(msg_id, payload)
        return len(pending)

    def finalize(self) -> None:
        """Close (the engine sees the connection go)."""
        super()._check()
        self._finalized = True
        self.cluster.disconnect(self.conn)


class FakeLifecycle:
    """Records instantiations; cleanups and terminations succeed at once."""

    instances: list[FakeLifecycle] = []

    def __init__(self, model, send, ipc_socket, call_later) -> None:
        self.model = model
        self.send = send
        self.started: list[tuple[str, int]] = []
        self.cleaned: list[str] = []
        self.fail_cleanup: set[str] = set()
        FakeLifecycle.instances.append(self)

    def instantiate(self, dn: str, epoch: int, delay_ms: int) -> None:
        """Record the instantiation (the test registers the component)."""
        self.started.append((dn, epoch))

    def cleanup(self, dn: str, epoch: int, pid: int) -> None:
        """Succeed at once (or fail for components in ``fail_cleanup``)."""
        self.cleaned.append(dn)
        self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "clean", 0 if dn in self.fail_cleanup else 1))

    def instantiate_local(self, dn: str, epoch: int, attrs) -> None:
        """Record a local component's instantiation (it succeeds)."""
        self.local = [*getattr(self, "local", []), (dn, attrs)]
        self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "inst", 1))

    def terminate_command(self, dn: str, epoch: int) -> None:
        """A local component's TERMINATE succeeds."""
        self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "term", 1))

    def terminate_wait(self, dn: str, epoch: int, closed) -> None:
        """The terminated component is gone at once."""
        self.send(Exec.LC_DONE, LcDone.pack(dn, epoch, "term", 1))

    def registered(self, dn: str) -> None:
        """Nothing to cancel."""
        pass

    def pm_start(self, dn: str, pid: int, depth: int, errors: int, recovery: int) -> str | None:
        """Watch nothing, but answer like the real one (Exist, no such process)."""
        watched = self.__dict__.setdefault("watched", set())
        if pid == 999999:
            return "noproc"
        if (dn, pid) in watched:
            return "exist"
        watched.add((dn, pid))
        return None

    def pm_stop(self, *args) -> bool:
        """Always found."""
        return True

    def stop_monitoring(self, dn: str) -> None:
        """Nothing to stop."""
        pass

    def shutdown(self) -> None:
        """Nothing to kill."""
        pass


class Components:
    """Fake components: every instantiation registers a BridgedHandle that answers callbacks OK."""

    def __init__(self, cluster: ServiceCluster) -> None:
        self.cluster = cluster
        self.handles: dict[str, BridgedHandle] = {}
        self.events: list[tuple] = []
        self.mute: set[str] = set()
        self._seen: dict[int, int] = {}

    def lc(self, nodeid: int) -> FakeLifecycle:
        """The fake life cycle of ``nodeid``'s engine."""
        return self.cluster.engine(nodeid, amf.SERVICE_ID).lc

    def _make(self, nodeid: int, dn: str) -> BridgedHandle:
        holder: list[BridgedHandle] = []

        def proxied_instantiate(inv, comp):
            self.events.append(("proxied_instantiate", dn, comp))
            holder[0].response(inv)
            holder[0].component_register(comp, dn)

        def proxied_cleanup(inv, comp):
            self.events.append(("proxied_cleanup", dn, comp))
            holder[0].response(inv)

        def csi_set(inv, comp, ha, desc):
            self.events.append(("set", comp, ha, desc))
            if comp not in self.mute:
                holder[0].response(inv)
                if ha == amf.HAState.QUIESCING:
                    holder[0].csi_quiescing_complete(inv)

        def csi_remove(inv, comp, csi, flags):
            self.events.append(("remove", comp, csi))
            if comp not in self.mute:
                holder[0].response(inv)

        def terminate(inv, comp):
            self.events.append(("terminate", comp))
            holder[0].response(inv)

        h = BridgedHandle(self.cluster, nodeid, csi_set=csi_set, csi_remove=csi_remove, component_terminate=terminate,
                          healthcheck=lambda inv, comp, key: holder[0].response(inv),
                          protection_group_track=lambda *a: self.events.append(("pg", *a)),
                          proxied_component_instantiate=proxied_instantiate,
                          proxied_component_cleanup=proxied_cleanup)
        holder.append(h)
        return h

    def settle(self, rounds: int = 200) -> None:
        """Run the cluster, register what was instantiated, answer callbacks, until quiet."""
        for _ in range(rounds):
            self.cluster.run()
            busy = False
            for nodeid in sorted(self.cluster._live):
                lc = self.lc(nodeid)
                if lc is None:
                    continue
                new = lc.started[self._seen.get(id(lc), 0):]
                self._seen[id(lc)] = len(lc.started)
                for dn, _epoch in new:
                    old = self.handles.pop(dn, None)
                    if old is not None and not old._finalized and not old.conn.closed:
                        old._finalized = True
                        old.cluster.disconnect(old.conn)
                    h = self._make(nodeid, dn)
                    self.handles[dn] = h
                    h.component_register(dn)
                    busy = True
            for h in list(self.handles.values()):
                if not h.conn.closed and h.run_callbacks():
                    busy = True
            if not busy and not self.cluster._queue:
                return
        raise AssertionError("AMF did not settle")

    def kill(self, dn: str) -> None:
        """The component's process dies (its connection closes)."""
        h = self.handles.pop(dn)
        h._finalized = True
        self.cluster.disconnect(h.conn)
