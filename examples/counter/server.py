"""The counter server: an SA-aware AMF component that keeps its state in a checkpoint.

AMF starts it (``python -m examples.counter.server``) with
``SA_AMF_COMPONENT_NAME`` and ``OPENAIS_IPC_SOCKET`` set, and, from the
component's ``saAmfCompCmdEnv``, ``COUNTER_ADDRESS``, ``COUNTER_PORT`` and
``COUNTER_NODE``.  It registers, and from then on does what its CSI
assignment says:

- ACTIVE: reads the checkpoint named by the CSI attribute ``checkpoint``, then
  answers ``NEXT`` requests; every change is written to the checkpoint
  (``WR_ALL_REPLICAS``: every node has it when the write returns) *before* the
  answer is sent, so a successor never hands out a number already given;
- STANDBY: follows the checkpoint (reads it a few times a second) and answers
  ``STANDBY`` so that clients look for the active server elsewhere;
- QUIESCING / QUIESCED / removed: stops serving.

When its executive dies, every call raises ``openais.Library`` and the server
exits: AMF on another node has made the standby active meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sys
import time

import openais
from examples.counter.protocol import MAX_STATE, STATE_SECTION, CounterState, parse_request
from openais import amf, ckpt

log = logging.getLogger("counter")

#: Seconds between the standby's reads of the checkpoint.
FOLLOW_INTERVAL = 0.2
CHECKPOINT_ATTRIBUTES = ckpt.CreationAttributes(
    creation_flags=ckpt.WR_ALL_REPLICAS, checkpoint_size=MAX_STATE, retention_duration=None,
    max_sections=1, max_section_size=MAX_STATE, max_section_id_size=0)
OPEN_FLAGS = ckpt.CHECKPOINT_CREATE | ckpt.CHECKPOINT_READ | ckpt.CHECKPOINT_WRITE


class CounterServer:
    """One server component: its AMF and CKPT handles, its listening socket and its clients."""

    def __init__(self, address: str, port: int, nodeid: int) -> None:
        self.nodeid = nodeid
        self.state = CounterState()
        self.ha_state: amf.HAState | None = None
        self.checkpoint_name: str | None = None
        self.checkpoint: ckpt.Checkpoint | None = None
        self._last_follow = 0.0
        self.amf = amf.initialize(csi_set=self._csi_set, csi_remove=self._csi_remove,
                                  component_terminate=self._terminate,
                                  healthcheck=lambda inv, comp, key: self.amf.response(inv))
        self.ckpt = ckpt.initialize()
        self.name = self.amf.component_name_get()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.clients: dict[socket.socket, bytearray] = {}
        self.amf.component_register(self.name)
        log.info("%s registered, serving on %s:%d", self.name, address, port)

    @property
    def active(self) -> bool:
        """True while this server holds its CSI ACTIVE."""
        return self.ha_state == amf.HAState.ACTIVE

    # -- AMF callbacks ---------------------------------------------------------------------------

    def _csi_set(self, invocation: int, comp_name: str, ha_state: amf.HAState,
                 descriptor: amf.CSIDescriptor) -> None:
        for attr in descriptor.csi_attr:
            if attr.attr_name == "checkpoint":
                self.checkpoint_name = attr.attr_value
        try:
            if ha_state in (amf.HAState.ACTIVE, amf.HAState.STANDBY):
                self._load()  # the active starts from the recorded state; the standby follows it
            self.ha_state = ha_state
            if ha_state == amf.HAState.QUIESCING:
                self.amf.csi_quiescing_complete(invocation)
                self.ha_state = amf.HAState.QUIESCED
                return
            self.amf.response(invocation, openais.SaAisError.OK)
            log.info("%s is now %s at value %d", self.name, ha_state.name, self.state.value)
        except openais.AisError as exc:
            log.warning("%s cannot take %s: %s", self.name, ha_state.name, exc)
            self.amf.response(invocation, openais.SaAisError.FAILED_OPERATION)

    def _csi_remove(self, invocation: int, comp_name: str, csi_name: str | None, csi_flags: int) -> None:
        self.ha_state = None
        self.amf.response(invocation, openais.SaAisError.OK)

    def _terminate(self, invocation: int, comp_name: str) -> None:
        self.amf.response(invocation, openais.SaAisError.OK)
        log.info("%s terminated by AMF", self.name)
        os._exit(0)

    # -- the checkpoint ----------------------------------------------------------------------------

    def _open(self) -> ckpt.Checkpoint:
        if self.checkpoint is None:
            if not self.checkpoint_name:
                raise openais.InvalidParam("the CSI has no 'checkpoint' attribute")
            self.checkpoint = self.ckpt.checkpoint_open(self.checkpoint_name, CHECKPOINT_ATTRIBUTES, OPEN_FLAGS,
                                                        timeout=10.0)
        return self.checkpoint

    def _load(self) -> None:
        [raw] = self._open().read([ckpt.IOVector(STATE_SECTION)])
        self.state = CounterState.decode(raw)
        self._last_follow = time.monotonic()

    def _follow(self) -> None:
        if self.ha_state == amf.HAState.STANDBY and time.monotonic() - self._last_follow >= FOLLOW_INTERVAL:
            with contextlib.suppress(openais.TryAgain):
                self._load()

    # -- clients ----------------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        buf = self.clients[conn]
        try:
            chunk = conn.recv(4096)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            conn.sendall(self._answer(line))

    def _answer(self, line: bytes) -> bytes:
        try:
            client, request = parse_request(line)
        except ValueError as exc:
            return f"ERR {exc}\n".encode()
        if not self.active:
            return f"STANDBY {self.nodeid}\n".encode()
        before = self.state.encode()
        value, changed = self.state.next(client, request)
        if changed:
            try:
                self._open().section_overwrite(STATE_SECTION, self.state.encode())
            except openais.AisError as exc:
                self.state = CounterState.decode(before)  # not recorded: not answered
                return f"ERR checkpoint write failed: {exc.code.name}\n".encode()
        return f"OK {request} {value} {self.nodeid}\n".encode()

    def _drop(self, conn: socket.socket) -> None:
        self.clients.pop(conn, None)
        conn.close()

    def run(self) -> None:
        """Serve until AMF terminates the component or the executive goes away."""
        amf_fd = self.amf.fileno()
        while True:
            readable, _, _ = select.select([amf_fd, self.listener, *self.clients], [], [], FOLLOW_INTERVAL / 2)
            for item in readable:
                if item == amf_fd:
                    self.amf.dispatch(openais.DISPATCH_ALL)
                elif item is self.listener:
                    with contextlib.suppress(BlockingIOError):
                        conn, _addr = self.listener.accept()
                        conn.setblocking(True)
                        conn.settimeout(5.0)
                        self.clients[conn] = bytearray()
                else:
                    self._serve(item)
            self._follow()


def main() -> int:
    """Entry point of the component process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s counter %(message)s", stream=sys.stderr)
    address = os.environ.get("COUNTER_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("COUNTER_PORT", "7500"))
    nodeid = int(os.environ.get("COUNTER_NODE", "0"))
    pidfile = os.environ.get("COUNTER_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as out:
            out.write(f"{os.getpid()}\n")
    try:
        CounterServer(address, port, nodeid).run()
    except openais.Library as exc:
        log.warning("the executive is gone (%s): exiting", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
