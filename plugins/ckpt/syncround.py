"""One CKPT sync round: lineage headers, who sends what, chunked transfer, and the merge at the end.

Every member first multicasts a :class:`~plugins.ckpt.messages.SyncHeader`
with its state's *lineage* (the ring id of its last completed sync and the
number of changes applied since; fresh nodes have a lineage of their own).
Members with equal lineage hold equal state, so once every header is in,
only the lowest node of each lineage group sends its checkpoints (in bounded
records through :class:`aisexec.statesync.StateTransfer`); every member also
sends the number of handles it has open per checkpoint.  A joining node thus
receives one copy, and the nodes that already have it skip those records.

The transfer is *paced* (:class:`PacedApi`): this node keeps at most
:data:`SYNC_WINDOW` bytes of its share in flight (multicast, not yet
delivered back to it), so the services released before CKPT (CKPT syncs
last, see ``aisexec.sync.PRIORITY_BULK``; CPG above all) keep getting their
messages onto the ring while the checkpoints stream; the service layer, for
its part, keeps new requests from filling the whole send queue meanwhile
(``aisexec.servicelayer.BULK_RESERVE``), so neither side starves the other.

At the end (:meth:`SyncRound.result`) the copies of the different groups are
merged (:func:`plugins.ckpt.records.merge`); if any group had completed a sync
before (``running``), copies of groups that never did (nodes fresh from their
store) are dropped, so a node restarting into a running cluster never brings
back old data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aisexec.statesync import StateTransfer
from aisexec.totem.api import QueueFull, RingId
from openais.message import MessageError
from plugins.ckpt.messages import Exec, RecOpeners, SyncHeader
from plugins.ckpt.records import RecordBuilder, merge
from plugins.ckpt.state import Checkpoint
from plugins.ckpt.syncrx import SyncReceiver

#: Most bytes of this node's share in flight at once (sent, not yet delivered back).
SYNC_WINDOW = 2 << 20


class PacedApi:
    """The api a round's :class:`StateTransfer` sends through: raises QueueFull past the window."""

    def __init__(self, api: Any, window: int = SYNC_WINDOW) -> None:
        self._api = api
        self.window = window
        self.in_flight = 0
        self.paced = 0  #: chunks held back by the window (tools, tests)

    def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Multicast one chunk, or raise QueueFull (the transfer keeps it and retries on the next pump)."""
        size = len(payload)
        if self.in_flight and self.in_flight + size > self.window:
            self.paced += 1
            raise QueueFull()
        self._api.mcast(service, msg_id, payload, safe)
        self.in_flight += size

    def delivered(self, size: int) -> None:
        """One of this node's chunks came back (agreed order): it is off the ring."""
        self.in_flight = max(0, self.in_flight - size)


class SyncRound:
    """The CKPT share of one sync round on one node."""

    def __init__(self, api: Any, service_id: int, ring_id: Any, members: tuple[int, ...],
                 lineage: tuple[int, int, int], running: bool,
                 own_records: Callable[[], Iterable[bytes]], opener_records: Callable[[], Iterable[bytes]]) -> None:
        self.api = api
        self.service_id = service_id
        self.ring = RingId(*ring_id)
        self.members = tuple(members)
        self.me = api.nodeid
        self.lineage = lineage
        self.running = running
        self._own_records = own_records
        self._opener_records = opener_records
        self.headers: dict[int, SyncHeader] = {}
        self._header_sent = False
        self.paced = PacedApi(api)
        self.transfer = StateTransfer(self.paced, service_id, Exec.SYNC_DATA)
        self.transfer.start(self.ring, self._records())
        self.receiver = SyncReceiver(self.ring)
        self.builders: dict[int, RecordBuilder] = {}
        self.openers: list[tuple[int, RecOpeners]] = []
        self.bad_records = 0

    # -- lineage groups ---------------------------------------------------------------------------

    @staticmethod
    def _lineage_of(h: SyncHeader) -> tuple[int, int, int]:
        return (h.epoch_rep, h.epoch_seq, h.version)

    def _group_sender(self, node: int) -> int:
        """The lowest member with the same lineage as ``node``."""
        mine = self._lineage_of(self.headers[node])
        return min(n for n, h in self.headers.items() if self._lineage_of(h) == mine)

    @property
    def complete_headers(self) -> bool:
        """True once every member's header is in."""
        return all(n in self.headers for n in self.members)

    def _records(self) -> Iterator[bytes]:
        # Runs lazily inside process(), only after every header is in.
        if self._group_sender(self.me) == self.me:
            yield from self._own_records()
        yield from self._opener_records()

    # -- sending ------------------------------------------------------------------------------------

    def process(self) -> bool:
        """Send the header, wait for every header, then this node's share; True while more remains."""
        if not self._header_sent:
            epoch_rep, epoch_seq, version = self.lineage
            try:
                self.api.mcast(self.service_id, Exec.SYNC_HEADER,
                               SyncHeader.pack(self.ring.rep, self.ring.seq, epoch_rep, epoch_seq, version,
                                               int(self.running)))
            except QueueFull:
                return True
            self._header_sent = True
        if not self.complete_headers:
            return True
        return self.transfer.process()

    # -- receiving ----------------------------------------------------------------------------------

    def on_header(self, sender: int, header: SyncHeader) -> None:
        """A member's header (another round's is ignored)."""
        if (header.ring_rep, header.ring_seq) == (self.ring.rep, self.ring.seq) and sender in self.members:
            self.headers[sender] = header

    def on_data(self, sender: int, payload: bytes | memoryview) -> None:
        """A chunk of ``sender``'s share: its records go to that sender's copy (unless it is ours)."""
        if sender == self.me:
            self.paced.delivered(len(payload))
        own = sender in self.headers and self.me in self.headers and \
            self._group_sender(sender) == self._group_sender(self.me)
        builder = None if own else self.builders.get(sender)
        if builder is None and not own:
            builder = self.builders[sender] = RecordBuilder()
        try:
            records = self.receiver.receive(sender, payload, builder)
        except MessageError:
            self.bad_records += 1
            raise
        for record in records:  # OPENERS: every member's, own group or not
            try:
                self.openers.append((sender, RecOpeners.decode(memoryview(record)[1:])))
            except MessageError:
                self.bad_records += 1

    # -- the end ------------------------------------------------------------------------------------

    def result(self, own: dict[int, Checkpoint]) -> tuple[dict[int, Checkpoint], list[str]]:
        """Merge the copies of every lineage group; rebuild openers from every member's counts."""
        parts: dict[int, dict[int, Checkpoint]] = {}
        running: dict[int, bool] = {}
        for node in self.members:
            if node not in self.headers:
                continue
            sender = self._group_sender(node)
            if sender in parts:
                continue
            running[sender] = bool(self.headers[sender].running)
            if sender == self._group_sender(self.me):
                parts[sender] = own
            else:
                builder = self.builders.get(sender)
                parts[sender] = builder.checkpoints if builder is not None else {}
        notes: list[str] = []
        if any(running.values()):
            for sender in [s for s, r in running.items() if not r]:
                if parts[sender]:
                    notes.append(f"node {sender} joined a running cluster: its {len(parts[sender])} stored "
                                 "checkpoint(s) are replaced by the cluster's")
                del parts[sender]
        merged, merge_notes = merge(parts)
        notes.extend(merge_notes)
        by_name = {ck.name: ck for ck in merged.values() if not ck.unlinked}
        for ck in merged.values():
            ck.openers = {}
        for node, rec in self.openers:
            target = merged.get(rec.uid)
            if target is None:
                target = by_name.get(rec.name)
            if target is not None and rec.count:
                target.openers[node] = target.openers.get(node, 0) + rec.count
        return merged, notes

    def abort(self) -> None:
        """Forget the round."""
        self.transfer.abort()
        self.receiver.abort()
