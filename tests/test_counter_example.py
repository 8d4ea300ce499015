"""The counter sample's own pieces: its state record and a client that finds the active server."""

from __future__ import annotations

import socket
import threading

import pytest

from examples.counter.client import CounterClient, NoServer
from examples.counter.config import amf_conf
from examples.counter.protocol import MAX_CLIENTS, CounterState, parse_request, request_line


def test_a_retried_request_gets_the_same_number_and_a_new_one_the_next():
    state = CounterState()
    assert state.next("a", 1) == (1, True)
    assert state.next("b", 1) == (2, True)
    assert state.next("a", 1) == (1, False)  # a retry after a failover: same answer, nothing recorded
    assert state.next("a", 2) == (3, True)
    again = CounterState.decode(state.encode())
    assert again == state and again.next("a", 2) == (3, False)
    assert CounterState.decode(b"") == CounterState()


def test_the_record_stays_bounded():
    state = CounterState()
    for i in range(MAX_CLIENTS + 50):
        state.next(f"c{i}", 1)
    assert len(state.last) == MAX_CLIENTS and state.value == MAX_CLIENTS + 50
    assert len(state.encode()) < 32 * 1024


def test_request_lines_parse_and_garbage_is_refused():
    assert parse_request(request_line("x", 7).rstrip()) == ("x", 7)
    for bad in (b"NEXT x", b"PUT x 1", b"NEXT x -1", b"NEXT x 0", b"\xff\xfe"):
        with pytest.raises(ValueError):
            parse_request(bad)


class FakeServer(threading.Thread):
    """Answers every line with ``reply(line)``; None closes the connection."""

    def __init__(self, address: str, reply, port: int = 0) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.reply = reply

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                for line in conn.makefile("rb"):
                    answer = self.reply(line)
                    if answer is None:
                        break
                    conn.sendall(answer)


def test_the_client_moves_past_a_standby_and_a_dead_node_and_retries_the_same_request():
    seen: list[bytes] = []
    active = FakeServer("127.0.0.3", lambda line: (seen.append(line), f"OK {line.split()[2].decode()} 41 3\n"
                                                   .encode())[1])
    port = active.port
    standby = FakeServer("127.0.0.2", lambda line: b"STANDBY 2\n", port)
    active.start()
    standby.start()
    try:
        # 127.0.0.1 refuses (nothing listens), 127.0.0.2 is a standby, 127.0.0.3 answers
        client = CounterClient(["127.0.0.1", "127.0.0.2", "127.0.0.3"], port, client_id="t", patience=5)
        answer = client.next()
        assert (answer.request, answer.value, answer.nodeid) == (1, 41, 3) and answer.attempts == 3
        assert client.ask(1).attempts == 1  # it stays with the node that answered
        assert seen == [b"NEXT t 1\n", b"NEXT t 1\n"]
        client.close()
    finally:
        active.sock.close()
        standby.sock.close()


def test_nobody_answering_ends_in_no_server():
    client = CounterClient(["127.0.0.1"], 1, patience=0.3)
    with pytest.raises(NoServer):
        client.next()


def test_the_demo_configuration_names_one_su_per_node_and_the_checkpoint():
    text = amf_conf([(1, "127.0.0.1"), (2, "127.0.0.2")], 7600, python="/usr/bin/python3", pid_dir="/tmp/p")
    assert text.count("safSu = ") == 2 and "saAmfSGRedundancyModel = 2n" in text
    assert "COUNTER_ADDRESS=127.0.0.2" in text and "COUNTER_PORT=7600" in text
    assert "COUNTER_PIDFILE=/tmp/p/counter-2.pid" in text and "safCkpt=counter-state" in text
