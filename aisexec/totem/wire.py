"""Totem wire messages: one NamedTuple per packet type, network byte order, strict decoding.

Header (9 bytes): magic u16, version u8, type u8, flags u8 (bit0: encapsulated), sender nodeid u32.
Every decoder checks that counts agree with the packet length and raises :class:`MalformedPacket`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from aisexec.totem.config import MAX_NODES, MAX_RTR_ENTRIES

MAGIC = 0x70AC
VERSION = 1
T_ORF_TOKEN, T_MCAST, T_MERGE_DETECT, T_JOIN, T_COMMIT_TOKEN, T_HOLD_CANCEL = range(6)
FLAG_ENCAPSULATED = 1

HEADER = struct.Struct("!HBBBI")
_TOKEN = struct.Struct("!IQIIIIIIBB")  # ring rep, ring seq, token_seq, seq, aru, aru_addr, backlog, fcc, retrans, rtr n
_RTR = struct.Struct("!IQI")  # ring rep, ring seq, msg seq
_MCAST = struct.Struct("!IQIB")  # ring rep, ring seq, seq, guarantee
_RING = struct.Struct("!IQ")
_JOIN = struct.Struct("!QHH")  # ring_seq, proc count, fail count
_COMMIT = struct.Struct("!IIQBHH")  # token_seq, ring rep, ring seq, retrans_flg, memb_index, count
_MEMB_ENTRY = struct.Struct("!IQIIB")  # old ring rep, old ring seq, aru, high_delivered, received_flg
_U32 = struct.Struct("!I")
MCAST_OVERHEAD = HEADER.size + _MCAST.size
#: Header and mcast header in one go (magic, version, type, flags, sender, ring rep, ring seq, seq, guarantee).
MCAST_PREFIX = struct.Struct("!HBBBIIQIB")
#: Header and token fields in one go (the header, then the fields of ``_TOKEN``); rtr entries follow.
TOKEN_PREFIX = struct.Struct("!" + HEADER.format.lstrip("!") + _TOKEN.format.lstrip("!"))
RTR_ENTRY = _RTR


class MalformedPacket(ValueError):
    """A packet that is not a well-formed Totem message of this version."""


class OrfToken(NamedTuple):
    """The regular token: ordering, reliability and flow control state."""

    sender: int
    ring_rep: int
    ring_seq: int
    token_seq: int
    seq: int
    aru: int
    aru_addr: int
    backlog: int
    fcc: int
    retrans_flg: int
    rtr: tuple[tuple[int, int, int], ...]  # (ring rep, ring seq, msg seq)

    def encode(self) -> bytes:
        """Serialise to bytes."""
        rtr = self.rtr
        if len(rtr) > MAX_RTR_ENTRIES:
            raise ValueError("too many rtr entries")
        head = TOKEN_PREFIX.pack(MAGIC, VERSION, T_ORF_TOKEN, 0, self.sender, self.ring_rep, self.ring_seq,
                                 self.token_seq, self.seq, self.aru, self.aru_addr, self.backlog, self.fcc,
                                 self.retrans_flg, len(rtr))
        if not rtr:
            return head
        return head + b"".join(_RTR.pack(*e) for e in rtr)


class Mcast(NamedTuple):
    """A data message (or, encapsulated, a whole old-ring mcast retransmitted in recovery)."""

    sender: int
    ring_rep: int
    ring_seq: int
    seq: int
    guarantee: int
    payload: bytes
    encapsulated: bool = False

    def encode(self) -> bytes:
        """Serialise to bytes."""
        return (HEADER.pack(MAGIC, VERSION, T_MCAST, FLAG_ENCAPSULATED if self.encapsulated else 0, self.sender)
                + _MCAST.pack(self.ring_rep, self.ring_seq, self.seq, self.guarantee) + self.payload)


class MergeDetect(NamedTuple):
    """Multicast by a representative so other rings notice it."""

    sender: int
    ring_rep: int
    ring_seq: int

    def encode(self) -> bytes:
        """Serialise to bytes."""
        return HEADER.pack(MAGIC, VERSION, T_MERGE_DETECT, 0, self.sender) + _RING.pack(self.ring_rep, self.ring_seq)


class Join(NamedTuple):
    """A membership join: the sender's proc and fail sets (sender 0 means a leave)."""

    sender: int
    ring_seq: int
    proc: tuple[int, ...]
    fail: tuple[int, ...]

    def encode(self) -> bytes:
        """Serialise to bytes."""
        n = len(self.proc) + len(self.fail)
        return (HEADER.pack(MAGIC, VERSION, T_JOIN, 0, self.sender)
                + _JOIN.pack(self.ring_seq, len(self.proc), len(self.fail))
                + struct.pack(f"!{n}I", *self.proc, *self.fail))


class MembEntry(NamedTuple):
    """Per-member recovery data carried by the commit token."""

    old_ring_rep: int
    old_ring_seq: int
    aru: int
    high_delivered: int
    received_flg: int


class CommitToken(NamedTuple):
    """The commit token that installs a new ring in two rotations."""

    sender: int
    token_seq: int
    ring_rep: int
    ring_seq: int
    retrans_flg: int
    memb_index: int
    members: tuple[int, ...]
    entries: tuple[MembEntry, ...]

    def encode(self) -> bytes:
        """Serialise to bytes."""
        if len(self.members) != len(self.entries):
            raise ValueError("members and entries differ in length")
        return b"".join([
            HEADER.pack(MAGIC, VERSION, T_COMMIT_TOKEN, 0, self.sender),
            _COMMIT.pack(self.token_seq, self.ring_rep, self.ring_seq, self.retrans_flg, self.memb_index,
                         len(self.members)),
            struct.pack(f"!{len(self.members)}I", *self.members),
            *(_MEMB_ENTRY.pack(*e) for e in self.entries),
        ])


class HoldCancel(NamedTuple):
    """Tells a holding representative to release the token."""

    sender: int
    ring_rep: int
    ring_seq: int

    def encode(self) -> bytes:
        """Serialise to bytes."""
        return HEADER.pack(MAGIC, VERSION, T_HOLD_CANCEL, 0, self.sender) + _RING.pack(self.ring_rep, self.ring_seq)


Packet = OrfToken | Mcast | MergeDetect | Join | CommitToken | HoldCancel


def decode(data: bytes) -> Packet:
    """Decode one packet; raise MalformedPacket on any size, count, range or version error."""
    n = len(data)
    if n < HEADER.size:
        raise MalformedPacket("short header")
    magic, version, ptype, flags, sender = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise MalformedPacket("bad magic or version")
    if flags & ~FLAG_ENCAPSULATED or (flags and ptype != T_MCAST):
        raise MalformedPacket("bad flags")
    off = HEADER.size
    try:
        if ptype == T_MCAST:
            if n < off + _MCAST.size:
                raise MalformedPacket("short mcast")
            rep, rseq, seq, guar = _MCAST.unpack_from(data, off)
            if guar > 1:
                raise MalformedPacket("bad guarantee")
            return Mcast(sender, rep, rseq, seq, guar, bytes(data[off + _MCAST.size:]), bool(flags))
        if ptype == T_ORF_TOKEN:
            f = _TOKEN.unpack_from(data, off)
            cnt = f[9]
            if cnt > MAX_RTR_ENTRIES or n != off + _TOKEN.size + cnt * _RTR.size or f[8] > 1:
                raise MalformedPacket("bad token length")
            base = off + _TOKEN.size
            rtr = tuple(_RTR.unpack_from(data, base + i * _RTR.size) for i in range(cnt))
            return OrfToken(sender, *f[:9], rtr)
        if ptype in (T_MERGE_DETECT, T_HOLD_CANCEL):
            if n != off + _RING.size:
                raise MalformedPacket("bad length")
            cls = MergeDetect if ptype == T_MERGE_DETECT else HoldCancel
            return cls(sender, *_RING.unpack_from(data, off))
        if ptype == T_JOIN:
            ring_seq, np_, nf = _JOIN.unpack_from(data, off)
            if np_ + nf > 2 * MAX_NODES or np_ > MAX_NODES or nf > MAX_NODES:
                raise MalformedPacket("too many nodes")
            if n != off + _JOIN.size + 4 * (np_ + nf):
                raise MalformedPacket("join counts disagree with length")
            ids = struct.unpack_from(f"!{np_ + nf}I", data, off + _JOIN.size)
            return Join(sender, ring_seq, ids[:np_], ids[np_:])
        if ptype == T_COMMIT_TOKEN:
            tseq, rep, rseq, retrans, idx, cnt = _COMMIT.unpack_from(data, off)
            if cnt == 0 or cnt > MAX_NODES or idx > cnt or retrans > 1:
                raise MalformedPacket("bad commit token counts")
            base = off + _COMMIT.size
            if n != base + cnt * (4 + _MEMB_ENTRY.size):
                raise MalformedPacket("commit token counts disagree with length")
            members = struct.unpack_from(f"!{cnt}I", data, base)
            base += 4 * cnt
            entries = tuple(MembEntry(*_MEMB_ENTRY.unpack_from(data, base + i * _MEMB_ENTRY.size)) for i in range(cnt))
            return CommitToken(sender, tseq, rep, rseq, retrans, idx, members, entries)
    except struct.error as exc:
        raise MalformedPacket(str(exc)) from None
    raise MalformedPacket(f"unknown type {ptype}")
