"""Codec micro-benchmark: the message layer against the hand-written struct code it replaced (and msgspec).

    python bench/codec.py                 # JSON lines: one per message, size and implementation
    python bench/codec.py --quick         # fewer turns
    python bench/codec.py --loops 300 --repeat 200   # on a loaded machine: many short turns

Messages: the CPG hot path (MCAST request, MCAST cluster message, DELIVER
callback) at 64 B and 1 KiB, and a CLM notification buffer of 16 nodes.
Decoding stops at a view of the data (the copy the library then makes for
the deliver callback is the same for every implementation).
``impl`` is ``message`` (openais.message as the hot paths use it: ``pack``
and ``unpack``; ``decode`` for the CLM buffer), ``message-decode`` (``decode``,
which builds the message tuple),
``struct-before`` (the hand-written codecs these messages had before the
layer, kept here as the baseline) or ``msgspec`` (msgpack of equivalent
``msgspec.Struct`` types with ``array_like=True``; only when msgspec can be
imported, e.g. ``PYTHONPATH=/tmp/msgspec``: it is not a dependency).  Every
line has ``encode_ns``, ``decode_ns`` and ``total_ns`` per message (best of
``--repeat`` runs) and ``bytes`` (the encoded size).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import timeit
from collections.abc import Callable
from typing import Any

from openais import clm, cpg
from plugins.cpg import messages as cpg_messages

# -- the baseline: the hand-written codecs of these messages before openais.message ---------------

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_GUARANTEE = struct.Struct("!B")
_SENDER = struct.Struct("!II")
_PID = struct.Struct("!I")
_NODE_HEAD = struct.Struct("!IBqQ")
_CHANGE = struct.Struct("!B")
_BUFFER_HEAD = struct.Struct("!QI")


def _old_group(group: str) -> bytes:
    raw = group.encode("utf-8")
    if not 1 <= len(raw) <= 128:
        raise ValueError("group name")
    return _U16.pack(len(raw)) + raw


def _old_unpack_group(buf: memoryview, offset: int) -> tuple[str, int]:
    if offset + 2 > len(buf):
        raise ValueError("truncated group name length")
    (length,) = _U16.unpack_from(buf, offset)
    offset += 2
    if not 1 <= length <= 128 or offset + length > len(buf):
        raise ValueError("group name length")
    return bytes(buf[offset:offset + length]).decode("utf-8"), offset + length


def old_mcast_request(data: bytes) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    def enc() -> bytes:
        return _GUARANTEE.pack(0) + bytes(data)

    def dec(payload: bytes) -> Any:
        buf = memoryview(payload)
        if len(buf) < 1:
            raise ValueError("empty mcast request")
        (guarantee,) = _GUARANTEE.unpack_from(buf)
        if guarantee not in (0, 1):
            raise ValueError("guarantee")
        return guarantee, buf[1:]

    return enc, dec


def old_mcast_message(data: bytes) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    def enc() -> bytes:
        return b"".join((_PID.pack(7), _old_group("workers"), data))

    def dec(payload: bytes) -> Any:
        buf = memoryview(payload)
        if len(buf) < 4:
            raise ValueError("truncated mcast")
        (pid,) = _PID.unpack_from(buf)
        group, offset = _old_unpack_group(buf, 4)
        return pid, group, buf[offset:]

    return enc, dec


def old_deliver(data: bytes) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    view = memoryview(data)

    def enc() -> bytes:
        return b"".join((_old_group("workers"), _SENDER.pack(1, 7), view))

    def dec(payload: bytes) -> Any:
        buf = memoryview(payload)
        group, offset = _old_unpack_group(buf, 0)
        if offset + 8 > len(buf):
            raise ValueError("truncated sender")
        nodeid, pid = _SENDER.unpack_from(buf, offset)
        return group, nodeid, pid, buf[offset + 8:]  # the library then copies it for the callback (both alike)

    return enc, dec


def _old_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise ValueError("text")
    return _U16.pack(len(raw)) + raw


def _old_unpack_text(buf: memoryview, offset: int, limit: int) -> tuple[str, int]:
    if offset + 2 > len(buf):
        raise ValueError("truncated")
    (length,) = _U16.unpack_from(buf, offset)
    offset += 2
    if length > limit or offset + length > len(buf):
        raise ValueError("length")
    return bytes(buf[offset:offset + length]).decode("utf-8"), offset + length


def old_buffer(buffer: clm.NotificationBuffer) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    def enc() -> bytes:
        parts = [_BUFFER_HEAD.pack(buffer.view_number, len(buffer.notifications))]
        for note in buffer.notifications:
            node = note.node
            parts.append(_NODE_HEAD.pack(node.node_id, 1 if node.member else 0, node.boot_timestamp,
                                         node.initial_view_number))
            parts.append(_old_text(node.node_address, 64))
            parts.append(_old_text(node.node_name, 256))
            parts.append(_CHANGE.pack(note.cluster_change))
        return b"".join(parts)

    def dec(payload: bytes) -> Any:
        buf = memoryview(payload)
        view, count = _BUFFER_HEAD.unpack_from(buf, 0)
        offset = _BUFFER_HEAD.size
        notes = []
        for _ in range(count):
            if offset >= len(buf):
                raise ValueError("count")
            node_id, member, boot, initial = _NODE_HEAD.unpack_from(buf, offset)
            if member not in (0, 1):
                raise ValueError("member")
            address, offset = _old_unpack_text(buf, offset + _NODE_HEAD.size, 64)
            name, offset = _old_unpack_text(buf, offset, 256)
            (change,) = _CHANGE.unpack_from(buf, offset)
            offset += 1
            notes.append(clm.Notification(clm.ClusterNode(node_id, address, name, bool(member), boot, initial),
                                          clm.ClusterChange(change)))
        if offset != len(buf):
            raise ValueError("trailing")
        return clm.NotificationBuffer(view, notes)

    return enc, dec


# -- the message layer ----------------------------------------------------------------------------


def new_mcast_request(data: bytes, how: str = "unpack") -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    pack = cpg.McastRequest.pack
    return (lambda: pack(0, data)), getattr(cpg.McastRequest, how)


def new_mcast_message(data: bytes, how: str = "unpack") -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    pack = cpg_messages.McastMsg.pack
    return (lambda: pack(7, "workers", data)), getattr(cpg_messages.McastMsg, how)


def new_deliver(data: bytes, how: str = "unpack") -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    pack = cpg.Deliver.pack
    view = memoryview(data)
    return (lambda: pack("workers", 1, 7, view)), getattr(cpg.Deliver, how)


def new_buffer(buffer: clm.NotificationBuffer) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
    return buffer.encode, clm.NotificationBuffer.decode


# -- msgspec (optional) ---------------------------------------------------------------------------


try:  # only to compare with: not a dependency
    import msgspec
except ImportError:
    msgspec = None

if msgspec is not None:
    class MsMcastRequest(msgspec.Struct, array_like=True):
        """CPG MCAST request as msgspec sees it."""

        guarantee: int
        data: bytes

    class MsMcastMsg(msgspec.Struct, array_like=True):
        """CPG MCAST cluster message."""

        pid: int
        group: str
        data: bytes

    class MsDeliver(msgspec.Struct, array_like=True):
        """CPG DELIVER callback."""

        group: str
        nodeid: int
        pid: int
        data: bytes

    class MsNode(msgspec.Struct, array_like=True):
        """CLM cluster node."""

        node_id: int
        node_address: str
        node_name: str
        member: bool
        boot_timestamp: int
        initial_view_number: int

    class MsNote(msgspec.Struct, array_like=True):
        """CLM notification."""

        node: MsNode
        cluster_change: int

    class MsBuffer(msgspec.Struct, array_like=True):
        """CLM notification buffer."""

        view_number: int
        notifications: list[MsNote]


def msgspec_codecs() -> dict[str, Callable[..., tuple[Callable[[], bytes], Callable[[bytes], Any]]]] | None:
    """msgpack codecs of the same messages, or None without msgspec."""
    if msgspec is None:
        return None
    enc = msgspec.msgpack.Encoder()

    def codec(value: Any, cls: type) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
        return (lambda: enc.encode(value)), msgspec.msgpack.Decoder(cls).decode

    def buffer(b: clm.NotificationBuffer) -> tuple[Callable[[], bytes], Callable[[bytes], Any]]:
        value = MsBuffer(b.view_number, [MsNote(MsNode(*n.node), int(n.cluster_change)) for n in b.notifications])
        return codec(value, MsBuffer)

    return {
        "cpg_mcast_request": lambda data: codec(MsMcastRequest(0, data), MsMcastRequest),
        "cpg_mcast_message": lambda data: codec(MsMcastMsg(7, "workers", data), MsMcastMsg),
        "cpg_deliver": lambda data: codec(MsDeliver("workers", 1, 7, data), MsDeliver),
        "clm_buffer": buffer,
    }


def _time(fn: Callable[[], Any], number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per (message, size, implementation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer loops")
    parser.add_argument("--repeat", type=int, default=None,
                        help="turns of each implementation, the best counts (default 60, --quick 20)")
    parser.add_argument("--loops", type=int, default=None,
                        help="calls per turn (default 1000, --quick 500): short turns dodge the scheduler")
    args = parser.parse_args(argv)
    number = args.loops or (500 if args.quick else 1000)
    args.repeat = args.repeat or (20 if args.quick else 60)
    nodes = [clm.Notification(clm.ClusterNode(i, f"10.0.0.{i}", f"node-{i}.example.org", True,
                                              1_795_000_000_000_000_000 + i, 3), clm.ClusterChange.NO_CHANGE)
             for i in range(1, 17)]
    buffer = clm.NotificationBuffer(42, nodes)
    impls: dict[str, dict[str, Callable[..., Any]]] = {
        "message": {"cpg_mcast_request": new_mcast_request, "cpg_mcast_message": new_mcast_message,
                    "cpg_deliver": new_deliver, "clm_buffer": new_buffer},
        "message-decode": {"cpg_mcast_request": lambda d: new_mcast_request(d, "decode"),
                           "cpg_mcast_message": lambda d: new_mcast_message(d, "decode"),
                           "cpg_deliver": lambda d: new_deliver(d, "decode")},
        "struct-before": {"cpg_mcast_request": old_mcast_request, "cpg_mcast_message": old_mcast_message,
                          "cpg_deliver": old_deliver, "clm_buffer": old_buffer},
    }
    extra = msgspec_codecs()
    if extra is not None:
        impls["msgspec"] = extra
    cases: list[tuple[str, int | None, Any]] = [
        (name, size, bytes(range(256)) * (size // 256) + bytes(size % 256))
        for name in ("cpg_mcast_request", "cpg_mcast_message", "cpg_deliver") for size in (64, 1024)
    ]
    cases.append(("clm_buffer", len(nodes), buffer))
    for name, size, value in cases:
        # the implementations take turns within each repeat, and each keeps its best: the machine's
        # load then weighs on all of them alike
        codecs = {impl: table[name](value) for impl, table in impls.items() if name in table}
        frames = {impl: enc() for impl, (enc, _dec) in codecs.items()}
        best: dict[str, list[float]] = {impl: [float("inf"), float("inf")] for impl in codecs}
        for _ in range(args.repeat):
            for impl, (enc, dec) in codecs.items():
                frame = frames[impl]
                dec(frame)  # it must decode what it encoded
                best[impl][0] = min(best[impl][0], _time(enc, number))
                best[impl][1] = min(best[impl][1], _time(lambda d=dec, f=frame: d(f), number))
        for impl, (encode_ns, decode_ns) in best.items():
            print(json.dumps({"bench": "codec", "message": name, "size": size, "impl": impl,
                              "bytes": len(frames[impl]), "encode_ns": round(encode_ns), "decode_ns": round(decode_ns),
                              "total_ns": round(encode_ns + decode_ns)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
