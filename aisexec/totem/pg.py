"""totempg, sans-IO: packing small messages into frames and cutting large ones into fragments.

Layering: services -> ``Packer``/``Assembler`` (this module) -> ``SrpCore.submit`` / ``Delivery``.

Frame format (every integer big-endian)::

    packed frame:    u8 version=1 | u8 kind=0 | u16 count | count x u32 length | payloads
    fragment frame:  u8 version=1 | u8 kind=1 | u16 0     | u32 msg_id | u32 index | u32 total | u32 msg_len | bytes

A packed frame holds one or more whole messages.  A message that does not fit in one frame
alone is cut into ``total`` fragment frames with a per-sender message id; fragment ``index``
0 starts the chain and every frame carries its slice of the message.

Configuration changes (how the driver tells the layer): for every :class:`ConfigChange`
the core delivers, call :meth:`PgEndpoint.on_events` (or ``Assembler.config_change`` and
``Packer.config_change``).  A message cut by a change is delivered whole by every member of
the configuration it completes in, or by none of them (virtual synchrony for reassembled
messages):

* at a TRANSITIONAL change the assembler drops the partial chains of the senders that left
  (their remaining fragments can never arrive in this configuration) and keeps those of
  transitional members: the core delivers the rest of the old ring to every member of the
  transitional configuration alike -- after a hole only frames of transitional members
  (totem.md §2.8 step 4) -- so such a chain completes there on every receiver exactly as on its
  sender, whose packer therefore re-queues nothing at a TRANSITIONAL change;
* at a REGULAR change the assembler drops every partial chain, and the packer re-queues whole,
  with a fresh id, at the head of the queue, every own message whose chain was started in the
  own delivery stream (self delivery) but not completed.  A message none of whose fragments
  has come back yet is left alone: Totem originates it whole in the new ring.

Per-sender FIFO across a re-queue.  With a ``withdraw`` callable (the core's
``withdraw_pending``: frames handed to the core but not yet originated), the packer keeps
handing frames while chains are in flight; at a REGULAR change it takes those frames back and
queues their messages again, whole and in their order, behind the broken chains.  Every own
frame that was originated has come back by then (self delivery), so nothing is lost or
doubled and nothing overtakes a re-queued message.  Without ``withdraw`` the packer hands
nothing further until its own last fragment has come back (about one token rotation of idle
time after each fragmented message).  Either way the driver must call :meth:`PgEndpoint.pump`
again after every batch of delivered events (the simulator does), or the queue stalls.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable

from aisexec.totem.api import ConfigChange, ConfKind, Delivery, Guarantee, QueueFull
from aisexec.totem.config import MAX_MESSAGE_SIZE

VERSION = 1
KIND_PACKED = 0
KIND_FRAGMENT = 1

_HEADER = struct.Struct("!BBH")
_LENGTH = struct.Struct("!I")
_FRAGMENT = struct.Struct("!IIII")
_FRAGMENT_FRAME = struct.Struct("!BBHIIII")  # both headers of a fragment frame in one go (hot path)
HEADER_SIZE = _HEADER.size
FRAGMENT_HEADER_SIZE = _HEADER.size + _FRAGMENT.size
#: Smallest frame the packer accepts (header plus room for payload bytes).
MIN_FRAME = FRAGMENT_HEADER_SIZE + 16
_MAX_COUNT = 0xFFFF
#: Bytes a cluster message may take beyond the largest application message (``MAX_MESSAGE_SIZE``, the
#: libraries' documented maximum): the routing header and a service's own header (CPG: pid and group
#: name; EVS: up to 256 group names).  Every layer above agrees: an application message of exactly
#: ``MAX_MESSAGE_SIZE`` bytes always fits in one cluster message.
MESSAGE_HEADROOM = 16 * 1024
#: Largest whole message this layer takes (``add``) and reassembles (fragment ``msg_len``).
MAX_CLUSTER_MESSAGE = MAX_MESSAGE_SIZE + MESSAGE_HEADROOM


class FrameError(ValueError):
    """A frame that does not decode (the one exception the strict decoder raises)."""


def encode_packed(messages: list[bytes]) -> bytes:
    """Encode whole ``messages`` into one packed frame."""
    if not messages or len(messages) > _MAX_COUNT:
        raise ValueError("a packed frame holds 1..65535 messages")
    parts = [_HEADER.pack(VERSION, KIND_PACKED, len(messages))]
    parts.extend(_LENGTH.pack(len(m)) for m in messages)
    parts.extend(messages)
    return b"".join(parts)


def encode_fragment(msg_id: int, index: int, total: int, msg_len: int, chunk: bytes | memoryview) -> bytes:
    """Encode fragment ``index`` of ``total`` of message ``msg_id`` (whole length ``msg_len``)."""
    return b"".join((_HEADER.pack(VERSION, KIND_FRAGMENT, 0), _FRAGMENT.pack(msg_id, index, total, msg_len), chunk))


def decode_packed(frame: bytes | memoryview, count: int) -> list[bytes | memoryview]:
    """Split the body of a packed frame; raise :class:`FrameError` unless lengths add up exactly.

    The messages are slices of ``frame``: bytes of a bytes frame, views of a memoryview.
    """
    if count == 0:
        raise FrameError("packed frame with no message")
    offset = HEADER_SIZE
    body = offset + count * _LENGTH.size
    size = len(frame)
    if body > size:
        raise FrameError("length array runs past the frame")
    out = []
    pos = body
    for (length,) in _LENGTH.iter_unpack(frame[offset:body]):
        end = pos + length
        if end > size:
            raise FrameError("message runs past the frame")
        out.append(frame[pos:end])
        pos = end
    if pos != size:
        raise FrameError("trailing bytes after the last message")
    return out


def decode_header(frame: bytes | memoryview) -> tuple[int, int]:
    """Return ``(kind, count)`` of a frame or raise :class:`FrameError`."""
    if len(frame) < HEADER_SIZE:
        raise FrameError("frame shorter than its header")
    version, kind, count = _HEADER.unpack_from(frame, 0)
    if version != VERSION:
        raise FrameError(f"unknown frame version {version}")
    if kind == KIND_FRAGMENT:
        if count != 0 or len(frame) < FRAGMENT_HEADER_SIZE:
            raise FrameError("malformed fragment header")
    elif kind != KIND_PACKED:
        raise FrameError(f"unknown frame kind {kind}")
    return kind, count


def decode_fragment(frame: memoryview) -> tuple[int, int, int, int, memoryview]:
    """Return ``(msg_id, index, total, msg_len, chunk)`` of a fragment frame or raise :class:`FrameError`."""
    msg_id, index, total, msg_len = _FRAGMENT.unpack_from(frame, HEADER_SIZE)
    chunk = frame[FRAGMENT_HEADER_SIZE:]
    if total < 2 or index >= total or msg_len > MAX_CLUSTER_MESSAGE or not chunk:
        raise FrameError("fragment fields out of range")
    return msg_id, index, total, msg_len, chunk


class _Chain:
    """A fragmented message being produced: the whole message and how far it is cut."""

    __slots__ = ("chunk", "message", "msg_id", "next_index", "seen", "total")

    def __init__(self, msg_id: int, message: bytes, chunk: int) -> None:
        self.msg_id = msg_id
        self.message = message
        self.chunk = chunk
        self.total = -(-len(message) // chunk)
        self.next_index = 0
        self.seen = 0


class SafeMessage(bytes):
    """A queued message that asked for safe delivery; it travels only in frames submitted as SAFE."""


def is_safe(message: bytes) -> bool:
    """True for a message queued with safe delivery."""
    return isinstance(message, SafeMessage)


class Packer:
    """Queue of whole outgoing messages, turned into frames on demand.

    ``max_frame`` is the largest frame the core accepts (``SrpCore.max_payload``).  The
    queue is bounded by ``max_bytes`` and ``max_count``; :meth:`add` raises
    :class:`QueueFull` when a message does not fit (answer TRY_AGAIN) and ``ValueError``
    when it exceeds :data:`MAX_CLUSTER_MESSAGE` (answer TOO_BIG).
    """

    def __init__(self, max_frame: int, max_bytes: int = 4 * MAX_MESSAGE_SIZE, max_count: int = 4096,
                 withdraw: Callable[[], list[tuple[bytes, int]]] | None = None) -> None:
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame {max_frame} below {MIN_FRAME}")
        self.max_frame = max_frame
        self.max_bytes = max_bytes
        self.max_count = max_count
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._current: _Chain | None = None
        self._in_flight: dict[int, _Chain] = {}
        self._next_id = 1
        self._peeked: tuple[bytes, int] | None = None  # frame, messages it consumes (-1: a fragment)
        self._withdraw = withdraw
        self.requeued = 0

    @property
    def queued_count(self) -> int:
        """Messages waiting (a message being cut counts until its last fragment is taken)."""
        return len(self._queue) + (1 if self._current is not None else 0)

    def has_frames(self) -> bool:
        """False when nothing at all waits (then :meth:`take` has nothing to give): cheap, for every token."""
        return bool(self._queue) or self._current is not None or self._peeked is not None

    @property
    def queued_bytes(self) -> int:
        """Bytes of the whole messages waiting."""
        return self._queued_bytes + (len(self._current.message) if self._current is not None else 0)

    def add(self, message: bytes) -> None:
        """Queue one whole message or raise :class:`QueueFull` / ``ValueError`` (too big)."""
        if len(message) > MAX_CLUSTER_MESSAGE:
            raise ValueError(f"message of {len(message)} bytes exceeds {MAX_CLUSTER_MESSAGE}")
        if self.queued_count >= self.max_count or self.queued_bytes + len(message) > self.max_bytes:
            raise QueueFull("pg pending queue full")
        self._queue.append(message)
        self._queued_bytes += len(message)

    def _fits_packed(self, size: int, count: int) -> bool:
        return HEADER_SIZE + _LENGTH.size * count + size <= self.max_frame

    def peek(self) -> bytes | None:
        """Build (once) and return the next frame, without consuming it; ``None`` when idle."""
        if self._peeked is not None:
            return self._peeked[0]
        chain = self._current
        if chain is None and self._in_flight and self._withdraw is None:
            return None  # wait until the last fragmented message came back whole (FIFO across re-queues)
        if chain is None and self._queue and not self._fits_packed(len(self._queue[0]), 1):
            chain = _Chain(self._new_id(), self._queue[0], self.max_frame - FRAGMENT_HEADER_SIZE)
            self._current = chain
            self._queue.popleft()
            self._queued_bytes -= len(chain.message)
        if chain is not None:
            start = chain.next_index * chain.chunk
            chunk = memoryview(chain.message)[start : start + chain.chunk]
            frame = encode_fragment(chain.msg_id, chain.next_index, chain.total, len(chain.message), chunk)
            self._peeked = (frame, -1)
            return frame
        if not self._queue:
            return None
        take: list[bytes] = []
        size = 0
        safe = is_safe(self._queue[0])
        for message in self._queue:
            if len(take) == _MAX_COUNT or not self._fits_packed(size + len(message), len(take) + 1):
                break
            if is_safe(message) != safe:  # a frame carries one guarantee
                break
            take.append(message)
            size += len(message)
        frame = encode_packed(take)
        self._peeked = (frame, len(take))
        return frame

    def accept(self) -> None:
        """Consume the frame last returned by :meth:`peek` (the core took it)."""
        if self._peeked is None:
            raise RuntimeError("accept() without a peeked frame")
        _, consumed = self._peeked
        self._peeked = None
        if consumed < 0:
            chain = self._current
            assert chain is not None
            if chain.next_index == 0:
                self._in_flight[chain.msg_id] = chain
            chain.next_index += 1
            if chain.next_index == chain.total:
                self._current = None
            return
        for _ in range(consumed):
            self._queued_bytes -= len(self._queue.popleft())

    def peek_guarantee(self) -> Guarantee:
        """The guarantee the frame last returned by :meth:`peek` must be submitted with."""
        chain = self._current
        if chain is not None and self._peeked is not None and self._peeked[1] < 0:
            return Guarantee.SAFE if is_safe(chain.message) else Guarantee.AGREED
        return Guarantee.SAFE if self._queue and is_safe(self._queue[0]) else Guarantee.AGREED

    def pump(self, submit: Callable[..., object], limit: int | None = None, with_guarantee: bool = False) -> int:
        """Hand frames to ``submit`` until idle, ``limit`` frames, or it raises :class:`QueueFull`.

        With ``with_guarantee`` the call is ``submit(frame, guarantee)``: SAFE for frames of
        messages queued as :class:`SafeMessage`, AGREED otherwise.
        """
        sent = 0
        while limit is None or sent < limit:
            frame = self.peek()
            if frame is None:
                break
            try:
                if with_guarantee:
                    submit(frame, self.peek_guarantee())
                else:
                    submit(frame)
            except QueueFull:
                break
            self.accept()
            sent += 1
        return sent

    def own_fragment_delivered(self, msg_id: int, index: int) -> bytes | None:
        """Note that fragment ``index`` of own message ``msg_id`` came back in the delivered stream.

        Returns the whole message when this was its last fragment, in order, of a chain this packer
        cut (the original bytes: no reassembly needed); None otherwise.
        """
        chain = self._in_flight.get(msg_id)
        if chain is None:
            return None
        in_order = index == chain.seen
        chain.seen = index + 1
        if chain.seen != chain.total:
            return None
        del self._in_flight[msg_id]
        if not in_order:
            return None
        message = chain.message
        return message if type(message) is bytes else bytes(message)

    def take(self, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` next frames as ``(frame, guarantee)``, consumed: the caller hands them all on.

        The batch form of :meth:`pump` for a caller that knows how much room there is.
        """
        frames: list[tuple[bytes, int]] = []
        append = frames.append
        while len(frames) < limit:
            chain = self._current
            if chain is not None and self._peeked is None:
                # cutting a chain: build the fragment directly (the common case for large messages)
                index = chain.next_index
                start = index * chain.chunk
                append((encode_fragment(chain.msg_id, index, chain.total, len(chain.message),
                                        memoryview(chain.message)[start : start + chain.chunk]),
                        Guarantee.SAFE if is_safe(chain.message) else Guarantee.AGREED))
                if index == 0:
                    self._in_flight[chain.msg_id] = chain
                chain.next_index = index + 1
                if chain.next_index == chain.total:
                    self._current = None
                continue
            frame = self.peek()
            if frame is None:
                break
            append((frame, self.peek_guarantee()))
            self.accept()
        return frames

    def config_change(self, change: ConfigChange) -> None:
        """Re-queue, whole and with a fresh id, every own message whose chain this change cuts.

        A TRANSITIONAL cuts nothing yet: my own fragments after a hole are still delivered in it (I am in the
        deliver set), so a chain may complete there exactly as on every node that goes with me.
        """
        if change.kind == ConfKind.TRANSITIONAL:
            return
        if self._withdraw is not None:
            self._requeue_withdrawn(self._withdraw())
            return
        broken = [c for c in self._in_flight.values() if c.seen > 0]
        for chain in reversed(broken):
            del self._in_flight[chain.msg_id]
            if self._current is chain:
                self._current = None
                if self._peeked is not None and self._peeked[1] < 0:
                    self._peeked = None
            self._queue.appendleft(chain.message)
            self._queued_bytes += len(chain.message)
            self.requeued += 1
        if broken and self._peeked is not None and self._peeked[1] >= 0:
            self._peeked = None  # the head of the queue changed

    def _requeue_withdrawn(self, frames: list[tuple[bytes, int]]) -> None:
        """Queue again, whole and in order, every message not completely delivered to myself.

        ``frames`` are what the core had not originated (oldest first).  Broken chains (some fragments
        came back) go first, in the order they were started; then the messages of the withdrawn frames;
        then the chain being cut; then the queue as it was.
        """
        again: list[bytes] = []
        taken: set[int] = set()
        for chain in sorted(self._in_flight.values(), key=lambda c: c.msg_id):
            if chain.seen > 0:
                again.append(chain.message)
                taken.add(chain.msg_id)
        for frame, guarantee in frames:
            view = memoryview(frame)
            kind, count = decode_header(view)
            if kind == KIND_FRAGMENT:
                msg_id = _FRAGMENT.unpack_from(view, HEADER_SIZE)[0]
                chain = self._in_flight.get(msg_id)
                if chain is None and self._current is not None and self._current.msg_id == msg_id:
                    chain = self._current
                if chain is not None and msg_id not in taken:
                    taken.add(msg_id)
                    again.append(chain.message)
                continue
            wrap = SafeMessage if guarantee == Guarantee.SAFE else bytes
            again.extend(wrap(m) for m in decode_packed(view, count))
        current = self._current
        if current is not None and current.msg_id not in taken:
            again.append(current.message)
        self._in_flight.clear()
        self._current = None
        self._peeked = None
        for message in reversed(again):
            self._queue.appendleft(message)
            self._queued_bytes += len(message)
        self.requeued += len(again)

    def _new_id(self) -> int:
        msg_id = self._next_id
        self._next_id = msg_id + 1 if msg_id < 0xFFFFFFFF else 1
        return msg_id


class _Assembly:
    """One sender's chain in progress: the bytes of its fragments so far."""

    __slots__ = ("buffer", "msg_id", "msg_len", "next_index", "size", "total")

    def __init__(self, msg_id: int, total: int, msg_len: int) -> None:
        self.msg_id = msg_id
        self.total = total
        self.msg_len = msg_len
        self.next_index = 0
        self.size = 0
        self.buffer = bytearray()


class Assembler:
    """Per-sender reassembly of delivered frames into whole messages.

    Malformed frames and broken chains are dropped and counted (``malformed``,
    ``orphans``, ``broken``), never raised.
    """

    def __init__(self) -> None:
        self._partial: dict[int, _Assembly] = {}
        self.malformed = 0
        self.orphans = 0
        self.broken = 0
        self.dropped_on_change = 0

    def feed(self, sender: int, frame: bytes | memoryview) -> list[bytes]:
        """Take one delivered frame from ``sender`` and return the messages it completes."""
        if len(frame) > FRAGMENT_HEADER_SIZE and frame[1] == KIND_FRAGMENT:
            return self.feed_fragment(sender, frame, *_FRAGMENT_FRAME.unpack_from(frame))
        view = frame if frame.__class__ is bytes else memoryview(frame)  # bytes slice straight into bytes
        try:
            kind, count = decode_header(view)
            if kind == KIND_PACKED:
                if sender in self._partial:  # a chain must not be interleaved with packed frames
                    del self._partial[sender]
                    self.broken += 1
                return [bytes(m) for m in decode_packed(view, count)]
            decode_fragment(memoryview(frame))
        except (FrameError, struct.error):
            self.malformed += 1
            return []
        return self.feed_fragment(sender, frame, *_FRAGMENT_FRAME.unpack_from(frame))

    def feed_fragment(self, sender: int, frame: bytes | memoryview, version: int, kind: int, zero: int, msg_id: int,
                      index: int, total: int, msg_len: int) -> list[bytes]:
        """A fragment frame whose headers the caller already unpacked (``_FRAGMENT_FRAME``)."""
        message = self.take_fragment(sender, frame, (version, kind, zero, msg_id, index, total, msg_len))
        return [] if message is None else [message]

    def take_fragment(self, sender: int, frame: bytes | memoryview, fields: tuple) -> bytes | None:
        """:meth:`feed_fragment` with the unpacked headers as one tuple; the message it completes, or None."""
        version, _kind, zero, msg_id, index, total, msg_len = fields
        if version != VERSION or zero != 0 or total < 2 or index >= total or msg_len > MAX_CLUSTER_MESSAGE:
            self.malformed += 1
            return None
        partial = self._partial
        assembly = partial.get(sender)
        if index == 0:
            if assembly is not None:
                self.broken += 1
            assembly = partial[sender] = _Assembly(msg_id, total, msg_len)
        elif assembly is None:
            self.orphans += 1
            return None
        elif assembly.msg_id != msg_id or assembly.next_index != index or assembly.total != total:
            del partial[sender]
            self.broken += 1
            return None
        chunk = memoryview(frame)[FRAGMENT_HEADER_SIZE:]
        size = assembly.size = assembly.size + len(chunk)
        if size > msg_len:
            del partial[sender]
            self.malformed += 1
            return None
        assembly.buffer += chunk
        index += 1
        assembly.next_index = index
        if index < total:
            return None
        del partial[sender]
        if size != msg_len:
            self.malformed += 1
            return None
        return bytes(assembly.buffer)

    def discard(self, sender: int) -> None:
        """Forget ``sender``'s chain in progress, if any (its frames are followed elsewhere)."""
        self._partial.pop(sender, None)

    def config_change(self, change: ConfigChange) -> None:
        """Drop partial assemblies: of departed senders on TRANSITIONAL, all of them on REGULAR.

        Fragments of transitional members after a hole are still delivered in the transitional
        configuration (totem.md §2.8 step 4), so their chains may complete there.
        """
        if change.kind == ConfKind.TRANSITIONAL:
            gone = [s for s in self._partial if s not in change.members]
        else:
            gone = list(self._partial)
        for sender in gone:
            del self._partial[sender]
        self.dropped_on_change += len(gone)

    @property
    def partial_senders(self) -> tuple[int, ...]:
        """Senders with a chain in progress (sorted)."""
        return tuple(sorted(self._partial))


class PgEndpoint:
    """One node's packer and assembler wired together for a driver.

    The driver calls :meth:`send` for application messages, :meth:`pump` to hand
    frames to the core, and :meth:`on_events` with the core's ``Ready.events``; it gets
    back ``(sender, message)`` pairs and the configuration changes, in order.
    """

    def __init__(
        self, nodeid: int, max_frame: int, max_bytes: int = 4 * MAX_MESSAGE_SIZE, max_count: int = 4096,
        withdraw: Callable[[], list[tuple[bytes, int]]] | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.packer = Packer(max_frame, max_bytes, max_count, withdraw)
        self.assembler = Assembler()

    def send(self, message: bytes, safe: bool = False) -> None:
        """Queue one application message (raises :class:`QueueFull` or ``ValueError``)."""
        self.packer.add(SafeMessage(message) if safe else message)

    def pump(self, submit: Callable[..., object], limit: int | None = None, with_guarantee: bool = False) -> int:
        """Hand queued frames to the core's ``submit``; see :meth:`Packer.pump`."""
        return self.packer.pump(submit, limit, with_guarantee)

    def on_events(self, events: Iterable[Delivery | ConfigChange]) -> list[tuple[int, bytes] | ConfigChange]:
        """Turn core events into delivered ``(sender, message)`` pairs and config changes."""
        out: list[tuple[int, bytes] | ConfigChange] = []
        me = self.nodeid
        assembler = self.assembler
        unpack = _FRAGMENT_FRAME.unpack_from
        take_fragment = assembler.take_fragment
        append = out.append
        for event in events:
            if isinstance(event, ConfigChange):
                assembler.config_change(event)
                self.packer.config_change(event)
                append(event)
                continue
            sender, payload = event[0], event[1]
            if len(payload) > FRAGMENT_HEADER_SIZE and payload[1] == KIND_FRAGMENT:
                fields = unpack(payload)  # one unpack serves the own-fragment note and the assembler
                if sender == me:
                    if fields[3] in self.packer._in_flight:
                        # my own chain: the packer still holds the message, nothing to reassemble
                        if fields[4] == 0:
                            assembler.discard(me)
                        whole = self.packer.own_fragment_delivered(fields[3], fields[4])
                        if whole is not None:
                            append((sender, whole))
                        continue
                    self.packer.own_fragment_delivered(fields[3], fields[4])
                message = take_fragment(sender, payload, fields)
                if message is not None:
                    append((sender, message))
                continue
            for message in assembler.feed(sender, payload):
                append((sender, message))
        return out
