"""The counter's wire protocol (one line each way) and its checkpoint record.

Client to server: ``NEXT <client-id> <request-id>\\n``.  Server to client:
``OK <request-id> <value> <nodeid>\\n``, or ``STANDBY <nodeid>\\n`` from a
server that is not active, or ``ERR <text>\\n``.  A request id is a positive
integer, increasing per client; the server remembers the last request of each
client with its answer, in the checkpoint, so a request retried on another
server after a failover gets the same answer, never a second number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

#: The checkpoint section holding the state (the default section).
STATE_SECTION = b""
#: Most clients remembered (the oldest is forgotten beyond it).
MAX_CLIENTS = 256
#: Largest state record, in bytes (the section size).
MAX_STATE = 32 * 1024


@dataclass(slots=True)
class CounterState:
    """The sequence and each client's last request with its answer."""

    value: int = 0
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  #: client -> (request id, value)

    def next(self, client: str, request: int) -> tuple[int, bool]:
        """The answer to ``request`` of ``client`` and whether the state changed (False: a retry)."""
        seen = self.last.get(client)
        if seen is not None and seen[0] == request:
            return seen[1], False
        self.value += 1
        self.last.pop(client, None)
        self.last[client] = (request, self.value)
        while len(self.last) > MAX_CLIENTS:
            self.last.pop(next(iter(self.last)))
        return self.value, True

    def encode(self) -> bytes:
        """The checkpoint record."""
        return json.dumps({"value": self.value, "last": self.last}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CounterState:
        """Read a checkpoint record (an empty one is the initial state)."""
        if not raw:
            return cls()
        doc = json.loads(raw)
        return cls(int(doc["value"]), {c: (int(r), int(v)) for c, (r, v) in doc["last"].items()})


def request_line(client: str, request: int) -> bytes:
    """``NEXT client request``."""
    return f"NEXT {client} {request}\n".encode()


def parse_request(line: bytes) -> tuple[str, int]:
    """(client, request id) of a NEXT line; ValueError otherwise."""
    words = line.decode("ascii", "replace").split()
    if len(words) != 3 or words[0] != "NEXT" or not words[2].isdigit() or int(words[2]) <= 0:
        raise ValueError(f"expected 'NEXT <client> <request>', got {line[:64]!r}")
    return words[1], int(words[2])
