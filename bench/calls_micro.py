"""Microbenchmark of the synchronous call layer: µs per call against a fake executive that answers at once.

    python bench/calls_micro.py [--calls 20000] [--modes lck,lck_deadline,msg,msg_deadline,cpg,cpg_post]

Run from a build's directory with that build's python (A/B: /work/main vs a worktree, interleaved).
A forked child plays the executive on a Unix socket (the handshake, then one 13-byte answer per
request, sent as soon as the request is read); the parent opens one LCK or MSG handle and makes
``--calls`` ``handle._call`` calls from one thread (``*_deadline``: each with a 5 s timeout).  ``cpg``:
the same through a CPG handle (its default 30 s call timeout); ``cpg_post``: pipelined sends
(``_send_pipelined``, as ``mcast`` makes them; ``try_again`` counts the refused ones, retried).  One
JSON line per mode: ``wall_us`` per call and ``cpu_us`` (the calling thread's CPU time) per call.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())

from openais import _wire, cpg, lck, msg
from openais.errors import SaAisError, TryAgain

ANSWER = b"\x00" * 8 + b"\x01" * 5
OK = int(SaAisError.OK)


def _serve(listener: socket.socket) -> None:
    """The fake executive: handshake both channels of one handle, then answer every request at once."""
    response, _ = listener.accept()
    _s, _m, _rid, _payload = _read_request(response)
    response.sendall(_wire.encode_response(0, _wire.HELLO_RESPONSE, 0, OK, _wire.HELLO_ANSWER.pack(1, b"c" * 16)))
    dispatch, _ = listener.accept()
    _read_request(dispatch)
    dispatch.sendall(_wire.encode_response(0, _wire.HELLO_DISPATCH, 0, OK, b""))
    buf = bytearray()
    while True:
        data = response.recv(1 << 16)
        if not data:
            return
        buf += data
        frames, used = _wire.split_requests(buf)
        del buf[:used]
        if frames:
            response.sendall(b"".join(_wire.encode_response(s, m, rid, OK, ANSWER) for s, m, rid, _p in frames))


def _read_request(sock: socket.socket) -> tuple[int, int, int, bytes]:
    buf = bytearray()
    while True:
        frames, _used = _wire.split_requests(buf)
        if frames:
            return frames[0]
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk


def run(mode: str, calls: int) -> dict:
    """One handle, ``calls`` calls of ``mode``; the figures per call."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ipc.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(2)
        pid = os.fork()
        if pid == 0:  # the executive
            try:
                _serve(listener)
            finally:
                os._exit(0)
        listener.close()
        try:
            handle = {"lck": lck.initialize, "msg": msg.initialize, "cpg": cpg.initialize}[mode.split("_")[0]](
                path=path)
            timeout = 5.0 if mode.endswith("_deadline") else None
            call = _poster(handle) if mode.endswith("_post") else handle._call
            for _ in range(500):  # warm up
                call(2, b"x" * 30, timeout)
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                call(2, b"x" * 30, timeout)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            if mode.endswith("_post"):
                handle.flush()
            handle.finalize()
        except BaseException:
            os.kill(pid, 9)
            raise
        finally:
            os.waitpid(pid, 0)
    return {"mode": mode, "calls": calls, "wall_us": round(wall / calls * 1e6, 2),
            "cpu_us": round(cpu / calls * 1e6, 2), **({"try_again": _REFUSED[0]} if mode.endswith("_post") else {})}


_REFUSED = [0]


def _poster(handle):
    """``_send_pipelined`` as a call: retried on TryAgain (counted), as a sender at full speed would."""
    send = handle._send_pipelined

    def post(msg_id: int, payload: bytes, timeout: float | None) -> None:
        while True:
            try:
                send(msg_id, payload)
                return
            except TryAgain:
                _REFUSED[0] += 1

    return post


def main() -> None:
    """Run the modes asked for, print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--modes", default="lck,lck_deadline,msg,msg_deadline")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        print(json.dumps({"build": os.getcwd(), **run(mode, args.calls)}), flush=True)


if __name__ == "__main__":
    main()
