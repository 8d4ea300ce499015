"""EVS invariants of totem.md §9, checked on the recorded per-node traces."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aisexec.totem.api import ConfKind

if TYPE_CHECKING:
    from aisexec.totem.sim.runner import Simulation


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its name (``"2 total order"``...) and what was seen."""

    invariant: str
    detail: str
    context: str = ""

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.detail}"


@dataclass
class Stream:
    """The events of one node incarnation, in order."""

    node: int
    incarnation: int
    persisted: bool
    events: list[tuple]
    crashed: bool

    @property
    def name(self) -> str:
        """``n<id>.<incarnation>``."""
        return f"n{self.node}.{self.incarnation}"

    def messages(self) -> list[tuple[int, int]]:
        """Delivered message ids in order."""
        return [e[2] for e in self.events if e[0] == "msg"]


def streams_of(sim: Simulation) -> list[Stream]:
    """Split every node's trace into incarnations."""
    out: list[Stream] = []
    for nodeid in sorted(sim.nodes):
        current: Stream | None = None
        for entry in sim.nodes[nodeid].trace:
            if entry[0] == "start":
                current = Stream(nodeid, entry[1], entry[3], [], False)
                out.append(current)
            elif entry[0] == "crash":
                assert current is not None
                current.crashed = True
            else:
                assert current is not None
                current.events.append(entry)
    return out


def ring_key(entry: tuple) -> tuple[Any, int]:
    """``(ring_id, epoch)`` of a ``conf`` or ``msg`` trace entry.

    A ring id is unique only while its rep keeps its ring-id file (totem.md §2.6): a rep restarted without the file
    may legitimately mint an id it used before, so ids are compared within one ring-id epoch of the rep.
    """
    if entry[0] == "conf":
        return entry[2].ring_id, entry[3] if len(entry) > 3 else 0
    return entry[3], entry[6] if len(entry) > 6 else 0


def _segments(stream: Stream) -> list[tuple[Any, list, Any, list]]:
    """Split a stream into ``(regular_key, msgs_in_regular, transitional|None, msgs_in_transitional)``."""
    segs: list[tuple[Any, list, Any, list]] = []
    reg, in_reg, trans, in_trans = None, [], None, []
    for entry in stream.events:
        if entry[0] != "conf":
            if entry[0] == "msg":
                (in_trans if trans is not None else in_reg).append(entry[2])
            continue
        change = entry[2]
        if change.kind == ConfKind.TRANSITIONAL:
            trans = change
        else:
            if reg is not None:
                segs.append((reg, in_reg, trans, in_trans))
            reg, in_reg, trans, in_trans = ring_key(entry), [], None, []
    if reg is not None:
        segs.append((reg, in_reg, trans, in_trans))
    return segs


def check_stream(
    stream: Stream, submitted: set[tuple[int, int]], safe: set[tuple[int, int]] | None = None
) -> list[Violation]:
    """Invariants 1, 3, 5, 6, 7 (within the incarnation), 8, bad payloads and guarantees on one stream.

    ``safe``: ids submitted with SAFE delivery; each message must arrive with the guarantee it was
    sent with.  The gap rule (12) needs the holes, which only the frames show: it is checked online
    (:mod:`aisexec.totem.sim.online`), as is the SAFE delivery rule itself.
    """
    out: list[Violation] = []
    seen: set[tuple[int, int]] = set()
    last_counter: dict[int, int] = {}
    prev_reg = None
    trans = None
    last_kind = None
    last_seq = -1
    for entry in stream.events:
        if entry[0] == "bad":
            out.append(Violation("19 fragmentation", f"{stream.name} delivered a corrupt message from n{entry[2]}"))
            continue
        if entry[0] == "msg":
            mid, ring_id, frame_sender = entry[2], entry[3], entry[5]
            if mid in seen:
                out.append(Violation("1 no duplicates", f"{stream.name} delivered {mid} twice"))
            seen.add(mid)
            if mid not in submitted:
                out.append(Violation("1 no creation", f"{stream.name} delivered {mid}, never accepted"))
            if mid[0] != frame_sender:
                out.append(Violation("1 no creation", f"{stream.name} got {mid} from frame sender n{frame_sender}"))
            if last_counter.get(mid[0], -1) >= mid[1]:
                out.append(Violation("3 FIFO", f"{stream.name} delivered {mid} after counter {last_counter[mid[0]]}"))
            last_counter[mid[0]] = max(last_counter.get(mid[0], -1), mid[1])
            if prev_reg is None:
                out.append(Violation("8 delivery configuration", f"{stream.name} delivered {mid} before any REGULAR"))
            elif ring_id != prev_reg.ring_id:
                out.append(
                    Violation(
                        "8 delivery configuration", f"{stream.name} {mid} of ring {ring_id} in {prev_reg.ring_id}"
                    )
                )
            if safe is not None and len(entry) > 7 and entry[7] != (1 if mid in safe else 0):
                out.append(Violation("safe delivery", f"{stream.name} got {mid} with guarantee {entry[7]}"))
            continue
        change = entry[2]
        where = f"{stream.name} {change.kind.name} {change.ring_id}"
        if stream.node not in change.members:
            out.append(Violation("5 self inclusion", f"{where} members {change.members}"))
        if list(change.members) != sorted(set(change.members)):
            out.append(Violation("4 configuration agreement", f"{where} members not sorted/unique {change.members}"))
        if change.kind == ConfKind.REGULAR:
            if change.left:
                out.append(Violation("6 alternation", f"{where} regular with left={change.left}"))
            if prev_reg is not None:
                if last_kind != ConfKind.TRANSITIONAL:
                    out.append(Violation("6 alternation", f"{where} follows a REGULAR"))
                elif trans is not None:
                    if not set(trans.members) <= set(change.members):
                        out.append(Violation("6 alternation", f"{where} trans {trans.members} not in new"))
                    if set(change.joined) != set(change.members) - set(trans.members):
                        out.append(Violation("6 alternation", f"{where} joined {change.joined} vs trans"))
            if change.ring_id.seq <= last_seq:
                out.append(Violation("7 monotone ring ids", f"{where} after seq {last_seq:#x}"))
            last_seq = change.ring_id.seq
            prev_reg, trans = change, None
        else:
            if change.joined:
                out.append(Violation("6 alternation", f"{where} transitional with joined={change.joined}"))
            if last_kind != ConfKind.REGULAR or prev_reg is None:
                out.append(Violation("6 alternation", f"{where} not after a REGULAR"))
            else:
                if not set(change.members) <= set(prev_reg.members):
                    out.append(Violation("6 alternation", f"{where} trans {change.members} not in {prev_reg.members}"))
                if set(change.left) != set(prev_reg.members) - set(change.members):
                    out.append(Violation("6 alternation", f"{where} left {change.left} vs {prev_reg.members}"))
            trans = change
        last_kind = change.kind
    return out


def check_across(streams: list[Stream]) -> list[Violation]:
    """Invariants 2 (total order), 4 (agreement), 7 (across restarts), 9 (virtual synchrony)."""
    out: list[Violation] = []
    placed: dict[tuple[int, int], tuple[Any, int, str]] = {}
    regulars: dict[Any, tuple[tuple, str]] = {}
    vs: dict[tuple, tuple[list, list, str]] = {}
    for stream in streams:
        for entry in stream.events:
            if entry[0] == "msg":
                mid, ring_id, seq = entry[2], ring_key(entry), entry[4]
                first = placed.setdefault(mid, (ring_id, seq, stream.name))
                if first[:2] != (ring_id, seq):
                    out.append(
                        Violation(
                            "2 total order", f"{mid} at {ring_id}/{seq} on {stream.name}, {first[:2]} on {first[2]}"
                        )
                    )
            elif entry[0] == "conf" and entry[2].kind == ConfKind.REGULAR:
                change = entry[2]
                first_reg = regulars.setdefault(ring_key(entry), (change.members, stream.name))
                if first_reg[0] != change.members:
                    out.append(
                        Violation(
                            "4 configuration agreement",
                            f"ring {change.ring_id}: {change.members} on {stream.name}, "
                            f"{first_reg[0]} on {first_reg[1]}",
                        )
                    )
        segs = _segments(stream)
        for (reg, in_reg, trans, in_trans), nxt in itertools.pairwise(segs):
            key = (reg, trans.members if trans else None, nxt[0])
            other = vs.setdefault(key, (in_reg, in_trans, stream.name))
            if other[0] != in_reg or other[1] != in_trans:
                out.append(
                    Violation(
                        "9 virtual synchrony",
                        f"{stream.name} and {other[2]} went {reg[0]}->{nxt[0][0]} delivering "
                        f"{len(in_reg)}+{len(in_trans)} vs {len(other[0])}+{len(other[1])} messages",
                    )
                )
    for i, a in enumerate(streams):
        order_a = a.messages()
        set_a = set(order_a)
        for b in streams[i + 1 :]:
            order_b = b.messages()
            common = set_a.intersection(order_b)
            if not common:
                continue
            if [m for m in order_a if m in common] != [m for m in order_b if m in common]:
                out.append(Violation("2 total order", f"{a.name} and {b.name} disagree on order"))
    by_node: dict[int, list[Stream]] = {}
    for stream in streams:
        by_node.setdefault(stream.node, []).append(stream)
    for node, its in by_node.items():
        last = -1
        for stream in its:
            if not stream.persisted:
                last = -1
            for entry in stream.events:
                if entry[0] == "conf" and entry[2].kind == ConfKind.REGULAR:
                    if entry[2].ring_id.seq <= last:
                        out.append(
                            Violation("7 monotone ring ids", f"n{node} reinstalled seq {entry[2].ring_id.seq:#x}")
                        )
                    last = entry[2].ring_id.seq
    return out


def check_liveness(sim: Simulation, streams: list[Stream]) -> list[Violation]:
    """Invariants 10 (self delivery), 16 (liveness) and 17 (merge) at the end of the stable period."""
    out: list[Violation] = []
    live = [s for s in streams if not s.crashed and sim.nodes[s.node].alive]
    members = tuple(sorted(s.node for s in live))
    finals = []
    for stream in live:
        confs = [e[2] for e in stream.events if e[0] == "conf"]
        final = confs[-1] if confs else None
        finals.append(final)
        if final is None or final.kind != ConfKind.REGULAR or final.members != members:
            desc = f"{final.kind.name} {final.members}" if final else "nothing"
            out.append(Violation("16/17 liveness+merge", f"{stream.name} ends in {desc}, live nodes {members}"))
    if len({f.ring_id for f in finals if f is not None}) > 1:
        out.append(
            Violation(
                "16/17 liveness+merge", f"live nodes end in rings {sorted({str(f.ring_id) for f in finals if f})}"
            )
        )
    for stream in live:
        node = sim.nodes[stream.node]
        delivered = set(stream.messages())
        missing = [m for m in node.accepted if m not in delivered]
        if missing or node.outbox:
            out.append(
                Violation(
                    "10 self delivery",
                    f"{stream.name} never delivered {len(missing)} own messages e.g. {missing[:3]}, "
                    f"outbox {len(node.outbox)}",
                )
            )
    return out


def check_all(sim: Simulation) -> list[Violation]:
    """Every invariant the simulator can observe; an empty list means the run is clean."""
    streams = streams_of(sim)
    out: list[Violation] = []
    for stream in streams:
        out.extend(check_stream(stream, sim.accepted_all, sim.safe_ids))
    out.extend(check_across(streams))
    out.extend(check_liveness(sim, streams))
    return out
