"""The CPython floor of a 3-node CPG throughput run: the same I/O and crypto, and no protocol at all.

    flock /tmp/bench.lock python bench/floor.py                 # 64 B, 1 KiB, 16 KiB, 64 KiB, AES-256-GCM
    python bench/floor.py --sizes 1024 --seconds 2 --crypto off

The same six processes as ``bench/run.py --nodes 3 --receivers 2`` (a sender client on node 1, three
"executives" on 127.0.0.1-3 and a receiving client on nodes 2 and 3), doing only what any
implementation of that run must do, in the cheapest Python we know how to write:

* the sender writes length-prefixed messages to executive 1 over a Unix socket, 8 per ``send``
  (prebuilt bytes: no per-message object), and counts its own messages coming back;
* executive 1 cuts the byte stream it reads into 1350-byte frames, regardless of message
  boundaries, seals each with one AES-256-GCM object (``cryptography``; the 12-byte sender+sequence
  header is nonce and associated data), sends each run of frames to nodes 2 and 3 in one
  segmented (GSO) ``sendmsg`` each, and writes the stream straight back to its client;
* executives 2 and 3 read runs of frames (GRO), open each, check its sequence number, write the
  opened bytes to their client in one ``send`` per read, and acknowledge every 32nd frame;
  executive 1 keeps at most 256 frames unacknowledged (the only flow control);
* each client walks the length prefixes to count messages.

There is no ordering, membership, retransmission, fragmentation header, message routing, group
lookup or per-message delivery header: what is left out is what the real stack spends its CPU on.
The rate (slowest receiver's messages per second) and every process's CPU per message are
therefore an upper bound for CPython on this machine, not a design to ship.  One JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hostinfo import host_fields
from bench.procstat import cpu_s

UDP_SEGMENT, UDP_GRO = 103, 104
FRAME = 1350
HEADER = struct.Struct("!IQ")  # sender, sequence: also the AES-GCM nonce
RECORD = struct.Struct("!I")
ACK = struct.Struct("!Q")
ACK_EVERY, WINDOW, BATCH, RUN = 32, 256, 8, 40  # RUN frames of 1378 bytes fit one GSO send
PORT = 23410
KEY = bytes(range(32))
END = RECORD.pack(0)  # the end record: a zero length


def _aead(crypto: bool):
    if not crypto:
        return None
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(KEY)


def _count_records(buf: bytearray) -> tuple[int, bool]:
    """Count the whole records at the front of ``buf`` and drop them; True once the end record came."""
    unpack, pos, count, end = RECORD.unpack_from, 0, 0, False
    size = len(buf)
    while pos + 4 <= size:
        (length,) = unpack(buf, pos)
        if length == 0:
            end, pos = True, pos + 4
            break
        if pos + 4 + length > size:
            break
        pos += 4 + length
        count += 1
    del buf[:pos]
    return count, end


def _report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def sender(path: str, size: int, seconds: float) -> None:
    """Write messages for ``seconds`` (8 per send), then the end record; count own deliveries."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sys.stdin.readline()  # go
    chunk = (RECORD.pack(size) + os.urandom(size)) * BATCH
    sock.setblocking(False)
    poll = select.poll()
    poll.register(sock, select.POLLIN | select.POLLOUT)
    inbuf, out = bytearray(), memoryview(b"")
    delivered, sent, end_seen = 0, 0, False
    start = time.monotonic()
    stop = start + seconds
    ending = False
    while not end_seen:
        for _fd, ev in poll.poll():
            if ev & select.POLLIN:
                data = sock.recv(262144)
                inbuf += data
                n, end_seen = _count_records(inbuf)
                delivered += n
            if ev & select.POLLOUT and not ending:
                if not out:
                    if time.monotonic() >= stop:
                        out, ending = memoryview(END), True
                        poll.modify(sock, select.POLLIN)
                        sock.setblocking(True)
                        sock.sendall(out)
                        sock.setblocking(False)
                        break
                    out = memoryview(chunk)
                    sent += BATCH
                try:
                    out = out[sock.send(out):]
                except BlockingIOError:
                    pass
    _report(role="sender", sent=sent, delivered=delivered, secs=time.monotonic() - start, cpu=cpu_s(os.getpid()))


def _listen(path: str) -> socket.socket:
    """The executive's IPC listening socket at ``path`` (one client)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    return server


def executive1(path: str, crypto: bool, peers: list[str]) -> None:
    """Frame, seal and send the client's stream to the peers; echo it back to the client."""
    aead = _aead(crypto)
    server = _listen(path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    udp.bind(("127.0.0.1", PORT))
    udp.setblocking(False)
    print("ready", flush=True)
    client, _ = server.accept()
    acked = {peer: 0 for peer in peers}
    addrs = [(peer, PORT) for peer in peers]
    pack, seal = HEADER.pack, (aead.encrypt if aead else None)
    seq = 0
    while True:
        while True:
            try:
                data, source = udp.recvfrom(64)
            except BlockingIOError:
                break
            (value,) = ACK.unpack(data)
            if value > acked[source[0]]:
                acked[source[0]] = value
        room = WINDOW - (seq - min(acked.values()))
        if room <= 0:
            select.select([udp], [], [])
            continue
        if client not in select.select([udp, client], [], [])[0]:
            continue
        data = client.recv(min(room, RUN) * FRAME)
        if not data:
            break
        client.sendall(data)  # own delivery
        view = memoryview(data)
        frames = []
        for start in range(0, len(data), FRAME):
            seq += 1
            header = pack(1, seq)
            piece = view[start:start + FRAME]
            frames.append(header + (seal(header, piece, header) if seal else piece))
        for addr in addrs:
            _send_run(udp, frames, addr)
    _report(role="exec1", frames=seq, cpu=cpu_s(os.getpid()))


def _send_run(sock: socket.socket, frames: list[bytes], addr: tuple) -> None:
    """Frames of equal size in one segmented sendmsg (a shorter last one rides along)."""
    size = len(frames[0])
    if len(frames) == 1:
        sock.sendto(frames[0], addr)
        return
    sock.sendmsg(frames, [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)


def executive(path: str, crypto: bool, address: str) -> None:
    """Open the frames from node 1, pass their bytes to the local client, acknowledge every 32nd."""
    aead = _aead(crypto)
    server = _listen(path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
    udp.bind((address, PORT))
    print("ready", flush=True)
    client, _ = server.accept()
    expected, lost, frames = 1, 0, 0
    unpack, open_ = HEADER.unpack_from, (aead.decrypt if aead else None)
    gro_space = socket.CMSG_SPACE(4)
    ack_to = ("127.0.0.1", PORT)
    done = False
    while not done:
        data, ancillary, _flags, _src = udp.recvmsg(65536, gro_space)
        step = len(data)
        if ancillary:
            step = struct.unpack("=i", ancillary[0][2][:4])[0]
        view = memoryview(data)
        out = []
        for start in range(0, len(data), step):
            frame = view[start:start + step]
            _sender, seq = unpack(frame)
            if seq != expected:
                lost += seq - expected
            expected = seq + 1
            header = frame[:12]
            body = open_(header, frame[12:], header) if open_ else frame[12:]
            out.append(body)
            frames += 1
            if seq % ACK_EVERY == 0:
                udp.sendto(ACK.pack(seq), ack_to)
        blob = b"".join(out)
        client.sendall(blob)
        if blob.endswith(END):
            done = True
    _report(role="exec", address=address, frames=frames, lost_frames=lost, cpu=cpu_s(os.getpid()))


def receiver(path: str) -> None:
    """Count the messages the local executive passes on, until the end record."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    buf, count, first, end = bytearray(), 0, 0.0, False
    while not end:
        data = sock.recv(262144)
        if not data:
            break
        if not first:
            first = time.monotonic()
        buf += data
        n, end = _count_records(buf)
        count += n
    _report(role="receiver", delivered=count, secs=time.monotonic() - first, cpu=cpu_s(os.getpid()))


def run_size(size: int, seconds: float, crypto: bool) -> dict:
    """One run at ``size``: start the six processes, go, collect their reports."""
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: os.path.join(tmp, f"ipc{n}") for n in (1, 2, 3)}
        crypto_arg = ["--crypto", "on" if crypto else "off"]
        procs = {}
        for n in (2, 3):
            procs[f"exec{n}"] = subprocess.Popen([*me, "--role", "exec", "--path", paths[n],
                                                 "--address", f"127.0.0.{n}", *crypto_arg],
                                                 stdout=subprocess.PIPE, text=True)
        procs["exec1"] = subprocess.Popen([*me, "--role", "exec1", "--path", paths[1], *crypto_arg],
                                          stdout=subprocess.PIPE, text=True)
        for name in ("exec2", "exec3", "exec1"):
            assert procs[name].stdout.readline().strip() == "ready"
        for n in (2, 3):
            procs[f"recv{n}"] = subprocess.Popen([*me, "--role", "receiver", "--path", paths[n]],
                                                 stdout=subprocess.PIPE, text=True)
        procs["sender"] = subprocess.Popen([*me, "--role", "sender", "--path", paths[1],
                                           "--size", str(size), "--seconds", str(seconds)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        procs["sender"].stdin.write("go\n")
        procs["sender"].stdin.flush()
        reports = {}
        try:
            for name in ("sender", "recv2", "recv3", "exec2", "exec3"):
                out, _ = procs[name].communicate(timeout=seconds + 30)
                reports[name] = json.loads(out.strip().splitlines()[-1])
            out, _ = procs["exec1"].communicate(timeout=10)
            reports["exec1"] = json.loads(out.strip().splitlines()[-1])
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    delivered = min(reports["recv2"]["delivered"], reports["recv3"]["delivered"])
    secs = max(reports["recv2"]["secs"], reports["recv3"]["secs"])
    rate = delivered / secs if secs else 0.0
    cpu = {name: round(1e6 * r["cpu"] / max(delivered, 1), 1) for name, r in reports.items()}
    return {"test": "floor", "nodes": 3, "receivers": 2, "size": size,
            "crypto": "aes-256-gcm" if crypto else "none", "msgs_per_s": round(rate),
            "mb_per_s": round(rate * size / 1e6, 2), "delivered": delivered, "sent": reports["sender"]["sent"],
            "lost_frames": reports["exec2"]["lost_frames"] + reports["exec3"]["lost_frames"],
            "us_cpu_per_msg": cpu, "total_us": round(sum(cpu.values()), 1), **host_fields()}


def main() -> None:
    """Parse arguments: run one role (internal) or the whole measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,1024,16384,65536")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--crypto", choices=("on", "off"), default="on")
    parser.add_argument("--role", choices=("sender", "exec1", "exec", "receiver"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    crypto = args.crypto == "on"
    if args.role == "sender":
        sender(args.path, args.size, args.seconds)
    elif args.role == "exec1":
        executive1(args.path, crypto, ["127.0.0.2", "127.0.0.3"])
    elif args.role == "exec":
        executive(args.path, crypto, args.address)
    elif args.role == "receiver":
        receiver(args.path)
    else:
        for size in (int(s) for s in args.sizes.split(",")):
            print(json.dumps(run_size(size, args.seconds, crypto)), flush=True)


if __name__ == "__main__":
    main()
