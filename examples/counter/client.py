"""The counter client: asks for the next number and finds the active server by itself.

It keeps one connection to the server that answered last; when that server
refuses (``STANDBY``), closes, or does not answer within ``answer_timeout``,
it tries the next address, round after round, re-sending the *same* request
id, so a request that reached a server that died before answering is
answered by its successor from the checkpoint, never counted twice::

    client = CounterClient(["127.0.0.1", "127.0.0.2", "127.0.0.3"], port=7500)
    answer = client.next()          # Answer(request=1, value=..., nodeid=..., waited=...)

As a command: ``python -m examples.counter.client --addresses 127.0.0.1,127.0.0.2 --port 7500 -n 5``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import NamedTuple

from examples.counter.protocol import request_line


class Answer(NamedTuple):
    """One answered request: its id and value, who answered, and how long the client waited (s)."""

    request: int
    value: int
    nodeid: int
    waited: float
    attempts: int


class NoServer(RuntimeError):
    """No server answered within the client's patience."""


class CounterClient:
    """A client of the counter service that retries on the next node."""

    def __init__(self, addresses: list[str], port: int, client_id: str | None = None, *,
                 connect_timeout: float = 0.25, answer_timeout: float = 1.0, patience: float = 60.0) -> None:
        self.addresses = list(addresses)
        self.port = port
        self.client_id = client_id or f"c{os.getpid()}"
        self.connect_timeout = connect_timeout
        self.answer_timeout = answer_timeout
        self.patience = patience
        self.request = 0
        self._current = 0
        self._sock: socket.socket | None = None
        self._buf = b""

    def next(self) -> Answer:
        """The next number of the sequence (raises NoServer when nobody answers for ``patience`` seconds)."""
        self.request += 1
        return self.ask(self.request)

    def ask(self, request: int) -> Answer:
        """Send request ``request`` (a new one, or an earlier one again) until a server answers it."""
        started = time.monotonic()
        attempts = 0
        while time.monotonic() - started < self.patience:
            attempts += 1
            reply = self._try(request)
            if reply is not None:
                value, nodeid = reply
                return Answer(request, value, nodeid, time.monotonic() - started, attempts)
            self._current = (self._current + 1) % len(self.addresses)
            if self._current == 0:
                time.sleep(0.01)  # a whole round refused: the new active is being chosen
        raise NoServer(f"no active counter server answered request {request} within {self.patience} s")

    def _try(self, request: int) -> tuple[int, int] | None:
        try:
            sock = self._connect()
            sock.sendall(request_line(self.client_id, request))
            line = self._readline(sock)
        except OSError:
            self.close()
            return None
        words = line.split()
        if len(words) == 4 and words[0] == "OK" and int(words[1]) == request:
            return int(words[2]), int(words[3])
        self.close()  # STANDBY, ERR, or garbage: look elsewhere
        return None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.addresses[self._current], self.port),
                                            timeout=self.connect_timeout)
            sock.settimeout(self.answer_timeout)
            self._sock, self._buf = sock, b""
        return self._sock

    def _readline(self, sock: socket.socket) -> str:
        while b"\n" not in self._buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace")

    def close(self) -> None:
        """Drop the current connection (the next request reconnects)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def main(argv: list[str] | None = None) -> int:
    """``python -m examples.counter.client``: ask for numbers and print them with who answered."""
    parser = argparse.ArgumentParser(description="Ask the counter service for the next numbers.")
    parser.add_argument("--addresses", default="127.0.0.1,127.0.0.2,127.0.0.3")
    parser.add_argument("--port", type=int, default=7500)
    parser.add_argument("-n", "--count", type=int, default=1)
    args = parser.parse_args(argv)
    client = CounterClient(args.addresses.split(","), args.port)
    try:
        for _ in range(args.count):
            answer = client.next()
            print(f"{answer.value} (node {answer.nodeid}, {answer.waited * 1000:.1f} ms)")
    except NoServer as exc:
        print(f"counter: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
