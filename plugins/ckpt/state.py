"""The replicated checkpoint state: a pure, deterministic object fed by delivered cluster messages.

Every node holds one :class:`CkptState`; the engine hands it every delivered
CKPT message (:meth:`CkptState.apply`) and every node loss
(:meth:`CkptState.nodes_left`) in agreed order, so all replicas are equal
after the same prefix of the order.  Nothing here reads a clock, does IPC or
touches the ring: times and memory limits come in the messages, and what the
engine must do besides answering is returned as effects (timers to set or
cancel, in :attr:`CkptState.timer_effects`).

Timer keys: ``("r", uid)`` a checkpoint's retention, ``("e", uid, section_id)``
a section's expiration.  The owner node (lowest nodeid) arms them and
multicasts the expiry; the state applies it only when it still matches.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

from openais.ckpt import (
    CHECKPOINT_COLLOCATED,
    CHECKPOINT_CREATE,
    TIME_END,
    WR_ALL_REPLICAS,
    WireAttributes,
    attributes_error,
    same_attributes,
)
from openais.errors import SaAisError
from plugins.ckpt import messages as m

OK = int(SaAisError.OK)
NOT_EXIST = int(SaAisError.NOT_EXIST)
EXIST = int(SaAisError.EXIST)
NO_SPACE = int(SaAisError.NO_SPACE)
NO_RESOURCES = int(SaAisError.NO_RESOURCES)
INVALID_PARAM = int(SaAisError.INVALID_PARAM)
BAD_OPERATION = int(SaAisError.BAD_OPERATION)

#: Bytes of memory accounted per checkpoint and per section beyond their data and names.
CHECKPOINT_OVERHEAD = 512
SECTION_OVERHEAD = 96


class Outcome(NamedTuple):
    """What applying one message gave: the error for the asker, the failing index, a value."""

    error: int = OK
    index: int = -1
    value: Any = None


class Section:
    """One section of a checkpoint replica (data held once, in a bytearray)."""

    __slots__ = ("data", "expiration", "last_update", "section_id")

    def __init__(self, section_id: bytes, data: bytes | bytearray | memoryview = b"", expiration: int = TIME_END,
                 last_update: int = 0) -> None:
        self.section_id = section_id
        self.data = bytearray(data)
        self.expiration = expiration
        self.last_update = last_update


class Checkpoint:
    """One checkpoint replica: attributes, sections, cluster-wide openers and retention bookkeeping."""

    __slots__ = ("active", "attrs", "changes", "closed_at", "gen", "name", "openers", "sections", "uid", "unlinked",
                 "used")

    def __init__(self, uid: int, name: str, attrs: WireAttributes, active: int | None) -> None:
        self.uid = uid
        self.name = name
        self.attrs = attrs
        self.active = active
        self.unlinked = False
        self.sections: dict[bytes, Section] = {}
        self.openers: dict[int, int] = {}  # nodeid -> open handles there
        self.changes = 0
        self.closed_at: int | None = None
        self.gen = 0
        self.used = 0  # bytes of section data

    @property
    def opener_count(self) -> int:
        """Openers in the whole cluster."""
        return sum(self.openers.values())

    @property
    def collocated(self) -> bool:
        """True when an opener chooses the active replica (active_replica_set)."""
        return bool(self.attrs.creation_flags & CHECKPOINT_COLLOCATED) and not self.all_replicas

    @property
    def all_replicas(self) -> bool:
        """True for WR_ALL_REPLICAS."""
        return bool(self.attrs.creation_flags & WR_ALL_REPLICAS)

    @property
    def no_active_replica(self) -> bool:
        """True when data calls raise NotExist (collocated, none set)."""
        return self.collocated and self.active is None

    def footprint(self) -> int:
        """Bytes this checkpoint counts against ``max_memory``."""
        return (CHECKPOINT_OVERHEAD + len(self.name) + self.used
                + sum(SECTION_OVERHEAD + len(s) for s in self.sections))


def section_cost(section_id: bytes) -> int:
    """Memory accounted for a section beyond its data."""
    return SECTION_OVERHEAD + len(section_id)


class CkptState:
    """Every checkpoint replica of one node, changed only through ``apply`` and ``nodes_left``."""

    def __init__(self) -> None:
        self.by_uid: dict[int, Checkpoint] = {}
        self.by_name: dict[str, Checkpoint] = {}  # linked checkpoints only
        self.memory = 0
        self.version = 0  #: changes applied since the epoch (lineage: equal (epoch, version) = equal state)
        self.epoch: tuple[int, int] = (0, 0)  #: ring id of the last completed sync
        self.timer_effects: list[tuple[Hashable, int | None]] = []
        self._handlers = {
            m.Exec.OPEN: self._open, m.Exec.CLOSE: self._close, m.Exec.UNLINK: self._unlink,
            m.Exec.RETENTION_SET: self._retention_set, m.Exec.ACTIVE_SET: self._active_set,
            m.Exec.SECTION_CREATE: self._section_create, m.Exec.SECTION_DELETE: self._section_delete,
            m.Exec.EXPIRATION_SET: self._expiration_set, m.Exec.WRITE: self._write,
            m.Exec.OVERWRITE: self._overwrite, m.Exec.BARRIER: self._barrier,
            m.Exec.RETENTION_EXPIRE: self._retention_expire, m.Exec.SECTION_EXPIRE: self._section_expire,
            m.Exec.STAMP: self._stamp,
        }

    # -- entry points -----------------------------------------------------------------

    def apply(self, sender: int, msg_id: int, msg: Any) -> Outcome:
        """Apply one delivered, decoded message of ``sender``; return the outcome for its asker."""
        self.version += 1
        return self._handlers[msg_id](sender, msg)

    def drain_timers(self) -> list[tuple[Hashable, int | None]]:
        """Timer effects since the last call: (key, deadline ns) to set, (key, None) to cancel."""
        out, self.timer_effects = self.timer_effects, []
        return out

    def nodes_left(self, left: tuple[int, ...] | set[int], members: tuple[int, ...]) -> list[int]:
        """Nodes left the configuration: end their openers, move active replicas; uids needing a stamp."""
        self.version += 1
        gone = set(left)
        stamp = []
        for ck in list(self.by_uid.values()):
            had = ck.opener_count
            for node in gone & set(ck.openers):
                del ck.openers[node]
            if ck.active in gone:
                ck.active = None if ck.collocated else (min(members) if members else None)
            if had and not ck.opener_count:
                if ck.unlinked:
                    self._delete(ck)
                    continue
                ck.closed_at = None
                stamp.append(ck.uid)
        return stamp

    def unstamped(self) -> list[int]:
        """Checkpoints without openers whose retention clock has not started (the owner stamps them)."""
        return [ck.uid for ck in self.by_uid.values()
                if not ck.opener_count and not ck.unlinked and ck.closed_at is None and ck.attrs.retention_ns >= 0]

    def total_memory(self) -> int:
        """Bytes accounted against max_memory."""
        return self.memory

    # -- reads (local, no change) -------------------------------------------------------

    def find(self, uid: int) -> Checkpoint | None:
        """The checkpoint ``uid`` (linked or not), or None."""
        return self.by_uid.get(uid)

    # -- install (sync, store) -------------------------------------------------------------

    def install(self, checkpoints: dict[int, Checkpoint], members: tuple[int, ...], epoch: tuple[int, int]) -> None:
        """Replace every replica (end of a sync round); timers are re-requested for everything."""
        for key in self._timer_keys():
            self.timer_effects.append((key, None))
        self.by_uid = dict(checkpoints)
        self.by_name = {ck.name: ck for ck in checkpoints.values() if not ck.unlinked}
        self.memory = sum(ck.footprint() for ck in checkpoints.values())
        self.epoch = epoch
        self.version = 0
        for ck in checkpoints.values():
            if not ck.all_replicas and ck.active is not None and ck.active not in members:
                ck.active = None if ck.collocated else (min(members) if members else None)
            if ck.opener_count:
                ck.closed_at = None
            elif ck.unlinked:
                self._delete(ck)
                continue
            self._retention_timer(ck)
            for sec in ck.sections.values():
                if sec.expiration != TIME_END:
                    self.timer_effects.append((("e", ck.uid, sec.section_id), sec.expiration))

    def _timer_keys(self) -> list[Hashable]:
        keys: list[Hashable] = []
        for ck in self.by_uid.values():
            keys.append(("r", ck.uid))
            keys.extend(("e", ck.uid, sid) for sid, sec in ck.sections.items() if sec.expiration != TIME_END)
        return keys

    # -- helpers ----------------------------------------------------------------------------

    def _delete(self, ck: Checkpoint) -> None:
        self.by_uid.pop(ck.uid, None)
        if self.by_name.get(ck.name) is ck:
            del self.by_name[ck.name]
        self.memory -= ck.footprint()
        self.timer_effects.append((("r", ck.uid), None))
        for sid, sec in ck.sections.items():
            if sec.expiration != TIME_END:
                self.timer_effects.append((("e", ck.uid, sid), None))

    def _retention_timer(self, ck: Checkpoint) -> None:
        key = ("r", ck.uid)
        if ck.opener_count or ck.unlinked or ck.closed_at is None or ck.attrs.retention_ns < 0:
            self.timer_effects.append((key, None))
        else:
            self.timer_effects.append((key, ck.closed_at + ck.attrs.retention_ns))

    def _after_last_close(self, ck: Checkpoint, time: int) -> None:
        if ck.unlinked or ck.attrs.retention_ns == 0:
            self._delete(ck)
            return
        ck.closed_at = time
        self._retention_timer(ck)

    def _delete_section(self, ck: Checkpoint, sec: Section) -> None:
        del ck.sections[sec.section_id]
        ck.used -= len(sec.data)
        self.memory -= len(sec.data) + section_cost(sec.section_id)
        if sec.expiration != TIME_END:
            self.timer_effects.append((("e", ck.uid, sec.section_id), None))

    def _set_expiration(self, ck: Checkpoint, sec: Section, expiration: int) -> None:
        sec.expiration = expiration
        key = ("e", ck.uid, sec.section_id)
        self.timer_effects.append((key, None if expiration == TIME_END else expiration))

    def _target(self, uid: int) -> tuple[Checkpoint | None, Outcome | None]:
        ck = self.by_uid.get(uid)
        if ck is None:
            return None, Outcome(NOT_EXIST)
        if ck.no_active_replica:
            return None, Outcome(NOT_EXIST)
        return ck, None

    # -- handlers -------------------------------------------------------------------------------

    def _open(self, sender: int, msg: m.ExOpen) -> Outcome:
        ck = self.by_name.get(msg.name)
        create = bool(msg.open_flags & CHECKPOINT_CREATE)
        if create and (msg.attrs is None or attributes_error(msg.attrs)):
            return Outcome(INVALID_PARAM)
        if ck is None:
            if not create:
                return Outcome(NOT_EXIST)
            cost = CHECKPOINT_OVERHEAD + len(msg.name)
            if msg.attrs.max_sections == 1:
                cost += section_cost(b"")
            if self.memory + cost > msg.mem_limit:
                return Outcome(NO_RESOURCES)
            uid = msg.uid
            while uid in self.by_uid or uid == 0:
                uid = (uid + 1) & 0xFFFFFFFFFFFFFFFF
            flags = msg.attrs.creation_flags
            active = None if flags & CHECKPOINT_COLLOCATED and not flags & WR_ALL_REPLICAS else sender
            ck = Checkpoint(uid, msg.name, msg.attrs, active)
            if msg.attrs.max_sections == 1:
                ck.sections[b""] = Section(b"", last_update=msg.time)
            self.by_uid[uid] = ck
            self.by_name[msg.name] = ck
            self.memory += cost
        elif create and not same_attributes(ck.attrs, msg.attrs):
            return Outcome(EXIST)
        ck.openers[sender] = ck.openers.get(sender, 0) + 1
        ck.changes += 1
        ck.closed_at = None
        self.timer_effects.append((("r", ck.uid), None))
        return Outcome(OK, -1, ck.uid)

    def _close(self, sender: int, msg: m.ExClose) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        if ck is None or not ck.openers.get(sender):
            return Outcome(OK)  # already ended (merge recount, node loss)
        ck.openers[sender] -= 1
        if not ck.openers[sender]:
            del ck.openers[sender]
        ck.changes += 1
        if not ck.opener_count:
            self._after_last_close(ck, msg.time)
        return Outcome(OK)

    def _unlink(self, sender: int, msg: m.ExUnlink) -> Outcome:
        ck = self.by_name.get(msg.name)
        if ck is None:
            return Outcome(NOT_EXIST)
        ck.unlinked = True
        ck.changes += 1
        del self.by_name[msg.name]
        if not ck.opener_count:
            self._delete(ck)
        else:
            self.timer_effects.append((("r", ck.uid), None))
        return Outcome(OK)

    def _retention_set(self, sender: int, msg: m.ExRetention) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        if ck is None:
            return Outcome(NOT_EXIST)
        if ck.unlinked:
            return Outcome(BAD_OPERATION)
        if msg.retention_ns < -1:
            return Outcome(INVALID_PARAM)
        ck.attrs = ck.attrs._replace(retention_ns=msg.retention_ns)
        ck.changes += 1
        if not ck.opener_count:
            self._retention_timer(ck)
        return Outcome(OK)

    def _active_set(self, sender: int, msg: m.ExActive) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        if ck is None:
            return Outcome(NOT_EXIST)
        if not ck.collocated:
            return Outcome(BAD_OPERATION)
        ck.active = sender
        ck.changes += 1
        return Outcome(OK)

    def _generate_id(self, ck: Checkpoint) -> bytes | None:
        for _ in range(len(ck.sections) + 2):
            candidate = str(ck.gen).encode("ascii")
            if len(candidate) > ck.attrs.max_section_id_size:
                ck.gen = 0
                candidate = b"0"
                if len(candidate) > ck.attrs.max_section_id_size:
                    return None
            ck.gen += 1
            if candidate not in ck.sections:
                return candidate
        return None

    def _section_create(self, sender: int, msg: m.ExSectionCreate) -> Outcome:
        ck, fail = self._target(msg.uid)
        if ck is None:
            return fail  # type: ignore[return-value]
        attrs = ck.attrs
        sid = msg.section_id
        if (sid is not None and (not sid or len(sid) > attrs.max_section_id_size)) or len(msg.data) > \
                attrs.max_section_size or (sid is None and attrs.max_section_id_size == 0):
            return Outcome(INVALID_PARAM)
        if attrs.max_sections == 1 or (sid is not None and sid in ck.sections):
            return Outcome(EXIST)
        if len(ck.sections) >= attrs.max_sections or ck.used + len(msg.data) > attrs.checkpoint_size:
            return Outcome(NO_SPACE)
        gen = ck.gen
        if sid is None:
            sid = self._generate_id(ck)
            if sid is None:
                ck.gen = gen  # a refused change changes nothing
                return Outcome(NO_SPACE)
        cost = len(msg.data) + section_cost(sid)
        if self.memory + cost > msg.mem_limit:
            ck.gen = gen
            return Outcome(NO_RESOURCES)
        sec = Section(sid, msg.data, TIME_END, msg.time)
        ck.sections[sid] = sec
        ck.used += len(sec.data)
        ck.changes += 1
        self.memory += cost
        if msg.expiration != TIME_END:
            self._set_expiration(ck, sec, msg.expiration)
        return Outcome(OK, -1, sid)

    def _section_delete(self, sender: int, msg: m.ExSectionDelete) -> Outcome:
        ck, fail = self._target(msg.uid)
        if ck is None:
            return fail  # type: ignore[return-value]
        if not msg.section_id:
            return Outcome(INVALID_PARAM)
        sec = ck.sections.get(msg.section_id)
        if sec is None:
            return Outcome(NOT_EXIST)
        self._delete_section(ck, sec)
        ck.changes += 1
        return Outcome(OK)

    def _expiration_set(self, sender: int, msg: m.ExExpiration) -> Outcome:
        ck, fail = self._target(msg.uid)
        if ck is None:
            return fail  # type: ignore[return-value]
        if not msg.section_id:
            return Outcome(INVALID_PARAM)
        sec = ck.sections.get(msg.section_id)
        if sec is None:
            return Outcome(NOT_EXIST)
        self._set_expiration(ck, sec, msg.expiration)
        ck.changes += 1
        return Outcome(OK)

    def _write(self, sender: int, msg: m.ExWrite) -> Outcome:
        ck, fail = self._target(msg.uid)
        if ck is None:
            return fail  # type: ignore[return-value]
        attrs = ck.attrs
        sizes: dict[bytes, int] = {}
        growth = 0
        for i, item in enumerate(msg.items):
            sec = ck.sections.get(item.section_id)
            if sec is None:
                return Outcome(NOT_EXIST, i)
            n = len(item.data)
            if n > attrs.max_section_size:
                return Outcome(INVALID_PARAM, i)
            if n and item.offset + n > attrs.max_section_size:
                return Outcome(NO_RESOURCES, i)
            current = sizes.get(item.section_id, len(sec.data))
            new = max(current, item.offset + n) if n else current
            growth += new - current
            sizes[item.section_id] = new
            if ck.used + growth > attrs.checkpoint_size:
                return Outcome(NO_SPACE, i)
        if growth and self.memory + growth > msg.mem_limit:
            return Outcome(NO_RESOURCES)
        for item in msg.items:
            n = len(item.data)
            if not n:
                continue
            sec = ck.sections[item.section_id]
            data = sec.data
            if item.offset > len(data):
                data.extend(bytes(item.offset - len(data)))
            data[item.offset:item.offset + n] = item.data
            sec.last_update = msg.time
        ck.used += growth
        self.memory += growth
        ck.changes += 1
        return Outcome(OK)

    def _overwrite(self, sender: int, msg: m.ExOverwrite) -> Outcome:
        ck, fail = self._target(msg.uid)
        if ck is None:
            return fail  # type: ignore[return-value]
        if len(msg.data) > ck.attrs.max_section_size:
            return Outcome(INVALID_PARAM)
        sec = ck.sections.get(msg.section_id)
        if sec is None:
            return Outcome(NOT_EXIST)
        growth = len(msg.data) - len(sec.data)
        if ck.used + growth > ck.attrs.checkpoint_size:
            return Outcome(NO_SPACE)
        if growth > 0 and self.memory + growth > msg.mem_limit:
            return Outcome(NO_RESOURCES)
        sec.data = bytearray(msg.data)
        sec.last_update = msg.time
        ck.used += growth
        self.memory += growth
        ck.changes += 1
        return Outcome(OK)

    def _barrier(self, sender: int, msg: m.ExBarrier) -> Outcome:
        ck, fail = self._target(msg.uid)
        return fail if ck is None else Outcome(OK)  # type: ignore[return-value]

    def _retention_expire(self, sender: int, msg: m.ExRetentionExpire) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        if (ck is None or ck.opener_count or ck.unlinked or ck.closed_at is None or ck.attrs.retention_ns < 0
                or ck.closed_at + ck.attrs.retention_ns != msg.deadline):
            return Outcome(NOT_EXIST)
        self._delete(ck)
        return Outcome(OK)

    def _section_expire(self, sender: int, msg: m.ExSectionExpire) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        sec = None if ck is None else ck.sections.get(msg.section_id)
        if ck is None or sec is None or sec.expiration != msg.deadline or not msg.section_id:
            return Outcome(NOT_EXIST)
        self._delete_section(ck, sec)
        ck.changes += 1
        return Outcome(OK)

    def _stamp(self, sender: int, msg: m.ExStamp) -> Outcome:
        ck = self.by_uid.get(msg.uid)
        if ck is None or ck.opener_count or ck.unlinked or ck.closed_at is not None:
            return Outcome(NOT_EXIST)
        if ck.attrs.retention_ns == 0:
            self._delete(ck)
            return Outcome(OK)
        ck.closed_at = msg.time
        self._retention_timer(ck)
        return Outcome(OK)
