"""The CKPT service engine (service id 3): thin glue between IPC, the ring and the replicated state.

Library requests (:mod:`plugins.ckpt.requests`) validate and multicast one
change each; every node applies each delivered change to its
:class:`~plugins.ckpt.state.CkptState` in agreed order, logs it to the
persistent store when one is configured, and the node that sent it answers
the asking connection.  ``WR_ALL_REPLICAS`` changes and ``synchronize``
barriers travel SAFE (delivered once every member has received them).
Retention and section expiration are :class:`aisexec.clustertimers.ClusterTimers`:
the lowest node decides and multicasts the deletion.  Sync rounds move the
state in chunks (:mod:`plugins.ckpt.syncround`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator
from typing import Any

from aisexec.clustertimers import ClusterTimers
from aisexec.objects import ObjectTable
from aisexec.outbox import Reassembler
from aisexec.service import ExecHandler, LibHandler, ServiceEngine
from aisexec.sync import PRIORITY_BULK
from aisexec.totem.api import ConfKind, RingId
from openais import ckpt as wire
from openais.ckpt import MAX_IO_SIZE, Callback, Request
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.ckpt import messages as m
from plugins.ckpt.local import LocalOpen, Pending, outbox
from plugins.ckpt.records import openers_record, state_records
from plugins.ckpt.requests import OK, RequestHandlers, vector
from plugins.ckpt.state import CkptState, Outcome
from plugins.ckpt.store import Store, StoreError
from plugins.ckpt.syncround import SyncRound

log = logging.getLogger("aisexec.ckpt")

#: Default ``ckpt { max_memory }`` when the engine runs without a configuration (tests).
DEFAULT_MAX_MEMORY = 1 << 30
_IO = MAX_IO_SIZE + 64 * 1024
_SMALL = 4096
_NAMED = 64 * 1024 + 4096


class CheckpointEngine(RequestHandlers, ServiceEngine):
    """CKPT (service id 3)."""

    id = wire.SERVICE_ID
    name = "CKPT"
    version = "1.0"
    #: Checkpoints may be large: CKPT synchronises after every other service, which serve meanwhile.
    sync_priority = PRIORITY_BULK

    def __init__(self) -> None:
        self.api: Any = None
        self.state = CkptState()
        self.handles: ObjectTable = ObjectTable()
        self.iters: ObjectTable = ObjectTable()
        self.pending: dict[tuple[int, int], Pending] = {}
        self.outbox: Any = None
        self.timers: Any = None
        self.store: Store | None = None
        self.mem_limit = DEFAULT_MAX_MEMORY
        self.running = False  # completed a sync round since start
        self.round: SyncRound | None = None
        self.fragments = Reassembler()
        self.merge_notes: list[str] = []
        self.allow_writes_without_quorum = False
        self.last_sync: dict = {}
        self.lib_handlers = {
            Request.OPEN: LibHandler(self._lib_open, needs_cluster=True, max_size=_SMALL),
            Request.CLOSE: LibHandler(self._lib_close, max_size=64),
            Request.UNLINK: LibHandler(self._lib_unlink, needs_cluster=True, max_size=_SMALL),
            Request.RETENTION_SET: LibHandler(self._lib_retention_set, needs_cluster=True, max_size=64),
            Request.ACTIVE_SET: LibHandler(self._lib_active_set, needs_cluster=True, max_size=64),
            Request.STATUS_GET: LibHandler(self._lib_status_get, max_size=64),
            Request.SECTION_CREATE: LibHandler(self._lib_section_create, needs_cluster=True, max_size=_IO),
            Request.SECTION_DELETE: LibHandler(self._lib_section_delete, needs_cluster=True, max_size=_NAMED),
            Request.EXPIRATION_SET: LibHandler(self._lib_expiration_set, needs_cluster=True, max_size=_NAMED),
            Request.ITER_INIT: LibHandler(self._lib_iter_init, needs_cluster=True, max_size=64),
            Request.ITER_NEXT: LibHandler(self._lib_iter_next, max_size=64),
            Request.ITER_FINALIZE: LibHandler(self._lib_iter_finalize, max_size=64),
            Request.WRITE: LibHandler(self._lib_write, needs_cluster=True, max_size=_IO),
            Request.OVERWRITE: LibHandler(self._lib_overwrite, needs_cluster=True, max_size=_IO),
            Request.READ: LibHandler(self._lib_read, needs_cluster=True, max_size=_IO),
            Request.READ_ONE: LibHandler(self._lib_read_one, needs_cluster=True, max_size=_NAMED),
            Request.SYNCHRONIZE: LibHandler(self._lib_synchronize, needs_cluster=True, max_size=64),
            Request.LIST: LibHandler(self._lib_list, max_size=0),
            Request.PEEK: LibHandler(self._lib_peek, max_size=_NAMED),
        }
        self.exec_handlers = {msg_id: ExecHandler(self._exec_change(msg_id)) for msg_id in m.DECODERS}
        self.exec_handlers[m.Exec.FRAGMENT] = ExecHandler(self._exec_fragment)
        self.exec_handlers[m.Exec.SYNC_HEADER] = ExecHandler(self._exec_sync_header)
        self.exec_handlers[m.Exec.SYNC_DATA] = ExecHandler(self._exec_sync_data)

    def may_write(self) -> bool:
        """May this partition change checkpoints?  The quorum check (quorum.md, CKPT).

        Every library request that changes a checkpoint asks here before it
        is multicast; False answers the caller TRY_AGAIN.  Without a quorum
        service every partition may write; with one, only a quorate one,
        unless ``ckpt { no_quorum_writes: allow }`` restores openais behaviour.
        """
        if self.allow_writes_without_quorum or self.api is None or not hasattr(self.api, "quorate"):
            return True
        return self.api.quorate()

    # -- lifecycle ------------------------------------------------------------------------------------

    def exec_init(self, api: Any) -> None:
        """Keep the api; read ``ckpt { }``; load the persistent store if one is configured."""
        self.api = api
        self.outbox = outbox(api, self.id)
        self.timers = ClusterTimers(api, self._expire)
        section = {}
        config = getattr(api, "config", None)
        if config is not None and hasattr(config, "section"):
            section = config.section("ckpt") or {}
        self.mem_limit = int(section.get("max_memory") or DEFAULT_MAX_MEMORY)
        self.allow_writes_without_quorum = section.get("no_quorum_writes") == "allow"
        persist = section.get("persist_dir")
        if persist:
            self.open_store(persist)

    def open_store(self, path: str) -> None:
        """Use ``path`` as this node's persistent store and load it (start-up)."""
        try:
            self.store = Store(path)
            loaded = self.store.load()
        except StoreError as exc:
            from aisexec.config.errors import ConfigError

            raise ConfigError("openais.conf", 0, "ckpt.persist_dir", str(exc)) from exc
        self.state.install(loaded, (), (0, self.api.nodeid))
        self.state.drain_timers()  # no ring yet; re-armed after the first sync
        log.info("CKPT: %d checkpoint(s) loaded from %s", len(loaded), path)

    def exec_exit(self) -> None:
        """Close the store."""
        if self.store is not None:
            self.store.close()

    def lib_init(self, conn: Any) -> None:
        """Nothing to set up per connection."""

    def lib_exit(self, conn: Any) -> None:
        """A connection went: each checkpoint it still had open is closed for the cluster."""
        self.iters.release(conn)
        for _handle, local in self.handles.release(conn):
            self.outbox.send(m.Exec.CLOSE, m.ExClose.pack(0, 0, local.uid, self._now()))

    def confchg(self, kind: Any, members: tuple[int, ...], left: tuple[int, ...], joined: tuple[int, ...],
                ring_id: Any) -> None:
        """Node loss ends its openers at once (transitional); a regular configuration moves the timer owner."""
        if kind == ConfKind.TRANSITIONAL and left:
            self.fragments.forget(left)
            self.state.nodes_left(left, members)
            if self.store is not None:
                self.store.append_nodes_left(left, members)
            self._apply_timers()
        elif kind == ConfKind.REGULAR:
            self.timers.membership(members)

    def dump(self) -> dict:
        """The local replica, for SIGUSR2 and tools."""
        return self.listing()

    # -- applying changes -----------------------------------------------------------------------------

    def _exec_change(self, msg_id: int) -> Any:
        cls = m.DECODERS[msg_id]

        def handler(sender: int, payload: bytes) -> None:
            self._apply(sender, msg_id, cls, payload)

        return handler

    def _apply(self, sender: int, msg_id: int, cls: type, payload: bytes | bytearray) -> None:
        try:
            msg = cls.decode(payload)
        except MessageError as exc:
            log.warning("CKPT: dropping a malformed cluster message %d from node %d: %s", msg_id, sender, exc)
            return
        outcome = self.state.apply(sender, msg_id, msg)
        if self.store is not None and outcome.error == OK:  # a refused change changed nothing
            self.store.append(sender, msg_id, payload)
            if self.store.wants_compaction():
                self.store.snapshot(self.state.by_uid)
        self._apply_timers()
        if sender == self.api.nodeid and getattr(msg, "conn_id", 0):
            self._answer(msg_id, msg, outcome)

    def _exec_fragment(self, sender: int, payload: bytes) -> None:
        try:
            whole = self.fragments.receive(sender, payload)
        except (MessageError, ValueError) as exc:
            log.warning("CKPT: dropping a bad fragment from node %d: %s", sender, exc)
            return
        if whole is None:
            return
        msg_id, data = whole
        cls = m.DECODERS.get(msg_id)
        if cls is None:
            log.warning("CKPT: fragments of node %d make unknown message %d", sender, msg_id)
            return
        self._apply(sender, msg_id, cls, data)

    def _answer(self, msg_id: int, msg: Any, outcome: Outcome) -> None:
        pending = self.pending.pop((msg.conn_id, msg.req_id), None)
        if msg_id == m.Exec.OPEN:
            self._answer_open(msg, outcome, pending)
            return
        if pending is None:
            return
        if pending.cancel is not None:
            pending.cancel()
        conn, request = pending.conn, pending.request
        if request == Request.SYNCHRONIZE and pending.is_async:
            conn.dispatch(self.id, Callback.SYNC_DONE, wire.SyncDone.pack(pending.invocation, outcome.error))
        elif request == Request.WRITE:
            conn.respond(self.id, request, msg.req_id, OK, vector(outcome.error, outcome.index))
        elif request == Request.SECTION_CREATE and outcome.error == OK:
            conn.respond(self.id, request, msg.req_id, OK, wire.SectionIdAnswer.pack(outcome.value))
        else:
            conn.respond(self.id, request, msg.req_id, outcome.error)

    def _answer_open(self, msg: m.ExOpen, outcome: Outcome, pending: Pending | None) -> None:
        if pending is not None and pending.cancel is not None:
            pending.cancel()
        usable = pending is not None and not pending.conn.closed and not pending.timed_out
        if outcome.error == OK and not usable:
            # the asker died or gave up: the open took effect in the cluster, so close it again
            self.outbox.send(m.Exec.CLOSE, m.ExClose.pack(0, 0, outcome.value, self._now()))
            return
        if pending is None or not usable:
            return
        conn = pending.conn
        handle = 0
        error = outcome.error
        if error == OK:
            try:
                handle = self.handles.add(conn, LocalOpen(outcome.value, msg.name, msg.open_flags))
            except OverflowError:
                self.outbox.send(m.Exec.CLOSE, m.ExClose.pack(0, 0, outcome.value, self._now()))
                error = int(SaAisError.NO_RESOURCES)
        if pending.is_async:
            conn.dispatch(self.id, Callback.OPEN_DONE, wire.OpenDone.pack(pending.invocation, error, handle))
        elif error == OK:
            conn.respond(self.id, Request.OPEN, msg.req_id, OK, wire.OpenAnswer.pack(handle))
        else:
            conn.respond(self.id, Request.OPEN, msg.req_id, error)

    # -- cluster timers ---------------------------------------------------------------------------------

    def _apply_timers(self) -> None:
        for key, deadline in self.state.drain_timers():
            if deadline is None:
                self.timers.cancel(key)
            else:
                self.timers.set(key, deadline)

    def _expire(self, key: Hashable) -> None:
        """This node owns the timers: multicast the expiry (every replica applies it on delivery)."""
        deadline = self.timers.pending.get(key)
        if deadline is None:
            return
        if key[0] == "r":  # type: ignore[index]
            self.outbox.send(m.Exec.RETENTION_EXPIRE, m.ExRetentionExpire.pack(key[1], deadline))  # type: ignore[index]
        else:
            self.outbox.send(m.Exec.SECTION_EXPIRE,
                             m.ExSectionExpire.pack(key[1], key[2], deadline))  # type: ignore[index]

    def _stamp(self) -> None:
        """The owner starts the retention clock of opener-less checkpoints that have none."""
        if not self.timers.is_owner:
            return
        for uid in self.state.unstamped():
            self.outbox.send(m.Exec.STAMP, m.ExStamp.pack(uid, self._now()))

    # -- sync -------------------------------------------------------------------------------------------

    def sync_init(self, transitional: tuple[int, ...], members: tuple[int, ...], ring_id: Any) -> None:
        """Start a round: headers first, then the lowest node of each lineage group sends its copy."""
        if self.round is not None:
            self.round.abort()
        lineage = (*self.state.epoch, self.state.version)
        self.round = SyncRound(self.api, self.id, ring_id, members, lineage, self.running,
                               lambda: state_records(self.state.by_uid), self._opener_records)

    def _opener_records(self) -> Iterator[bytes]:
        counts: dict[int, list] = {}
        for _h, _cid, local in self.handles:
            entry = counts.setdefault(local.uid, [local.name, 0])
            entry[1] += 1
        for uid, (name, count) in sorted(counts.items()):
            yield openers_record(uid, name, count)

    def sync_process(self) -> bool:
        """Send a bounded share; True while more remains."""
        return self.round.process() if self.round is not None else False

    def sync_activate(self) -> None:
        """Every share is in: install the merged replicas, remap local handles, re-arm timers, persist."""
        rnd, self.round = self.round, None
        if rnd is None:
            return
        merged, notes = rnd.result(self.state.by_uid)
        self.last_sync = {"ring": f"{rnd.ring.rep}.{rnd.ring.seq}", "sent_bytes": rnd.transfer.sent_bytes,
                          "checkpoints": len(merged), "bad_records": rnd.bad_records + rnd.receiver.errors}
        for note in notes:
            log.warning("CKPT merge: %s", note)
        self.merge_notes.extend(notes)
        replaced = set(merged) != set(self.state.by_uid) or any(
            self.state.by_uid.get(uid) is not ck for uid, ck in merged.items())
        by_name = {ck.name: ck for ck in merged.values() if not ck.unlinked}
        for _handle, _cid, local in self.handles:
            if local.uid not in merged and local.name in by_name:
                local.uid = by_name[local.name].uid
        self.state.install(merged, rnd.members, (rnd.ring.rep, rnd.ring.seq))
        self.running = True
        self.timers.clear()
        self.timers.membership(rnd.members)
        self._apply_timers()
        if self.store is not None:
            if replaced:
                self.store.snapshot(self.state.by_uid)
            else:  # our own copy kept: the log holds it; note what the round rebuilt
                self.store.append_recount(self.state.by_uid)
        self._stamp()

    def sync_abort(self) -> None:
        """The configuration changed during the round: forget it."""
        if self.round is not None:
            self.round.abort()
            self.round = None

    def _exec_sync_header(self, sender: int, payload: bytes) -> None:
        try:
            header = m.SyncHeader.decode(payload)
        except MessageError as exc:
            log.warning("CKPT: dropping a bad sync header from node %d: %s", sender, exc)
            return
        if self.round is not None:
            self.round.on_header(sender, header)

    def _exec_sync_data(self, sender: int, payload: bytes) -> None:
        if self.round is None:
            return
        try:
            self.round.on_data(sender, payload)
        except MessageError as exc:
            log.warning("CKPT: dropping a bad sync chunk from node %d: %s", sender, exc)


__all__ = ["CheckpointEngine", "RingId"]
