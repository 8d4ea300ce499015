"""The request/reply round trip's short paths keep every semantic of the long ones.

The library encodes the common message body and decodes the common answer in one struct each, and
its multiplexed call path reads for every thread with fewer lock rounds; the engine forwards a
reply request without re-encoding it, sends a lone ``message_send`` / ``message_send_receive`` at
once, and arms per-request deadlines on bare hub timers.  Each is checked here against the general path it shortens.
"""

from __future__ import annotations

import enum
import random
import struct
from collections.abc import Callable

import pytest

import openais
from aisexec.testing import FakeConnection, ServiceCluster
from openais import msg
from openais.errors import SaAisError
from openais.message import MessageError
from openais.msg import Request, SendKind
from plugins.msg import messages as m
from plugins.msg.engine import MessageEngine

MSG = msg.SERVICE_ID
OK = SaAisError.OK
FOREVER = -1


# -- library: encode and decode ------------------------------------------------------------------------


class _Prio(enum.IntEnum):
    TWO = 2


def _random_message(rng: random.Random) -> msg.Message:
    return msg.Message(type=rng.choice([0, 1, 0xFFFFFFFF, rng.randrange(1 << 32)]),
                       version=rng.randrange(1 << 32), data=rng.randbytes(rng.choice([0, 1, 64, 3000])),
                       priority=rng.choice([0, 1, 3, _Prio.TWO]),
                       sender_name=rng.choice([None, None, "", "sender", "é" * 20]))


def test_encode_body_writes_what_body_pack_writes() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        message = _random_message(rng)
        assert msg.encode_body(message) == msg.Body.pack(*[message[i] for i in (0, 1, 3, 4, 2)])


@pytest.mark.parametrize("bad", [dict(priority=True), dict(priority=4), dict(priority=-1), dict(priority=1.0),
                                 dict(type=True), dict(type=-1), dict(type=1 << 32), dict(type=1.0),
                                 dict(version=1 << 32), dict(data="text"), dict(sender_name=5)])
def test_encode_body_refuses_what_it_refused(bad: dict) -> None:
    with pytest.raises(openais.InvalidParam):
        msg.encode_body(msg.Message(**bad))


def test_decode_got_equals_the_strict_decoder() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        message = _random_message(rng)
        payload = msg.GotMessage.pack(rng.randrange(-(1 << 63), 1 << 63), rng.randrange(1 << 64),
                                      msg.encode_body(message))
        got = msg.decode_got(payload)
        strict = msg.GotMessage.decode(payload)
        assert got == msg.ReceivedMessage(msg.decode_body(strict.body), strict.send_time, strict.sender_id)
        assert type(got.message.data) is bytes and got.message.priority == int(message.priority)


def test_decode_got_refuses_what_the_strict_decoder_refuses() -> None:
    good = msg.GotMessage.pack(1, 2, msg.encode_body(msg.Message(data=b"abc")))
    mutants = [good[:cut] for cut in range(len(good))] + [good + b"x", good + b"xyz",
                                                         good[:25] + b"\x02" + good[26:],  # sender-name flag 2
                                                         good[:26] + struct.pack("!I", 9) + good[30:]]
    for payload in mutants:
        try:
            msg.GotMessage.decode(payload)
            msg.Body.decode(msg.GotMessage.decode(payload).body)
        except MessageError:
            with pytest.raises(MessageError):
                msg.decode_got(payload)
        else:  # pragma: no cover - every mutant above is malformed
            raise AssertionError(f"mutant accepted: {payload!r}")


# -- engine: hub timers -------------------------------------------------------------------------------


def test_deadlines_use_api_call_later_without_a_hub() -> None:
    c = ServiceCluster([MessageEngine], nodes=[1, 2])
    c.run()
    conn = c.connect(1, MSG)
    handle = _open(c, conn, "q")
    rid = c.request(conn, Request.GET, msg.GetRequest.pack(handle, 200_000_000))  # 0.2 s
    c.run()
    with pytest.raises(KeyError):
        conn.response(rid)
    c.advance(0.3)
    assert conn.response(rid)[0] == SaAisError.TIMEOUT


# -- engine: the reply and the lone send -------------------------------------------------------------------


def test_reply_head_and_request_are_the_reply_message() -> None:
    rng = random.Random(5)
    for _ in range(500):
        fields = (rng.random() < 0.5, rng.randrange(1 << 64), rng.randrange(256), rng.randrange(1 << 64),
                  rng.randrange(-(1 << 63), 1 << 63), rng.randbytes(rng.randrange(200)))
        head = (rng.randrange(-(1 << 63), 1 << 63), rng.randrange(1 << 64), rng.randrange(1 << 32))
        assert m.REPLY_HEAD.pack(*head) + msg.ReplyRequest.pack(*fields) == m.Reply.pack(*head, *fields)


class Turn:
    """Stands in for the hub: work deferred to the end of the turn runs when :meth:`end` is called."""

    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> bool:
        self.due.append(fn)
        return True

    def end(self) -> None:
        due, self.due = self.due, []
        for fn in due:
            fn()


def _body(data: bytes, sender_name: str | None = None) -> bytes:
    return msg.encode_body(msg.Message(data=data, sender_name=sender_name))


def _send(dest: str, data: bytes, kind: SendKind, timeout: int = FOREVER) -> bytes:
    return msg.SendRequest.pack(int(kind), 0, 0, timeout, 123, dest, _body(data))


def _open(c: ServiceCluster, conn: FakeConnection, name: str) -> int:
    payload = msg.OpenRequest.pack(0, False, name, True, 0, [1 << 16] * 4, 0, msg.QUEUE_CREATE, FOREVER)
    rid = c.request(conn, Request.QUEUE_OPEN, payload)
    c.run()
    error, answer = conn.response(rid)
    assert error == OK
    return msg.OpenAnswer.decode(answer).queue


def _got(c: ServiceCluster, conn: FakeConnection, handle: int) -> msg.ReceivedMessage:
    rid = c.request(conn, Request.GET, msg.GetRequest.pack(handle, 0))
    c.run()
    error, answer = conn.response(rid)
    assert error == OK
    return msg.decode_got(answer)


@pytest.fixture
def cluster() -> ServiceCluster:
    c = ServiceCluster([MessageEngine], nodes=[1, 2, 3])
    c.run()
    return c


def test_a_lone_sync_send_leaves_at_once_and_one_behind_async_sends_keeps_their_order(
        cluster: ServiceCluster) -> None:
    reader = cluster.connect(2, MSG)
    handle = _open(cluster, reader, "q")
    turn = Turn()
    cluster.engine(1, MSG).defer = turn  # type: ignore[attr-defined]
    sender = cluster.connect(1, MSG)
    rid = cluster.request(sender, Request.SEND, _send("q", b"alone", SendKind.SYNC))
    assert not turn.due  # nothing waits for the end of the turn
    cluster.run()
    assert sender.response(rid)[0] == OK
    for data in (b"a1", b"a2"):
        cluster.request(sender, Request.SEND, _send("q", data, SendKind.ASYNC))
    rid = cluster.request(sender, Request.SEND, _send("q", b"s3", SendKind.SYNC))
    cluster.request(sender, Request.SEND, _send("q", b"a4", SendKind.ASYNC))
    assert turn.due  # a4 waits for the end of the turn (s3 took a1 and a2 along, in front of it)
    turn.end()
    cluster.run()
    assert sender.response(rid)[0] == OK
    cluster.request(sender, Request.SEND, _send("q", b"end", SendKind.SYNC))
    cluster.run()
    got = []
    while True:
        rid = cluster.request(reader, Request.GET, msg.GetRequest.pack(handle, 0))
        cluster.run()
        error, answer = reader.response(rid)
        if error != OK:
            break
        got.append(msg.decode_got(answer).message.data)
    assert got == [b"alone", b"a1", b"a2", b"s3", b"a4", b"end"]  # the order of the calls


def test_every_send_of_a_handle_is_got_in_call_order(cluster: ServiceCluster) -> None:
    reader = cluster.connect(3, MSG)
    handle = _open(cluster, reader, "q")
    turn = Turn()
    cluster.engine(1, MSG).defer = turn  # type: ignore[attr-defined]
    sender = cluster.connect(1, MSG)
    rng = random.Random(9)
    sent = []
    for i in range(60):
        kind = rng.choice([SendKind.ASYNC, SendKind.ASYNC, SendKind.SYNC])
        data = f"{i}".encode()
        cluster.request(sender, Request.SEND, _send("q", data, kind))
        sent.append(data)
        if rng.random() < 0.3:
            turn.end()
            cluster.run()
    turn.end()
    cluster.run()
    assert [_got(cluster, reader, handle).message.data for _ in sent] == sent


def test_a_forwarded_reply_reaches_the_sender_once(cluster: ServiceCluster) -> None:
    server = cluster.connect(2, MSG)
    handle = _open(cluster, server, "rpc")
    client = cluster.connect(1, MSG)
    rid = cluster.request(client, Request.SEND, _send("rpc", b"ping", SendKind.SEND_RECEIVE, 10**10))
    cluster.run()
    got = _got(cluster, server, handle)
    reply = cluster.request(server, Request.REPLY,
                            msg.ReplyRequest.pack(False, 0, 0, got.sender_id, 9, _body(b"pong", "srv")))
    cluster.run()
    error, answer = client.response(rid)
    assert error == OK
    assert msg.decode_got(answer) == msg.ReceivedMessage(msg.Message(data=b"pong", sender_name="srv"), 9, 0)
    assert server.response(reply)[0] == OK
    again = cluster.request(server, Request.REPLY, msg.ReplyRequest.pack(False, 0, 0, got.sender_id, 9, _body(b"x")))
    cluster.run()
    assert server.response(again)[0] == SaAisError.NOT_EXIST


@pytest.mark.parametrize("mutate, error", [
    (lambda p: p[:3], SaAisError.INVALID_PARAM),  # truncated
    (lambda p: b"\x02" + p[1:], SaAisError.INVALID_PARAM),  # is_async not a bool
    (lambda p: p[:26 + 8] + b"\x07" + p[26 + 9:], SaAisError.INVALID_PARAM),  # body priority 7
    (lambda p: p + b"x", SaAisError.INVALID_PARAM),  # trailing byte in the body
    (lambda p: p[:26 + 9] + b"\x01\x00\x02\xff\xfe" + p[26 + 10:], SaAisError.INVALID_PARAM),  # name not UTF-8
    (lambda p: p[:26 + 10] + struct.pack("!I", (1 << 20) + 1) + p[26 + 14:], SaAisError.TOO_BIG),
])
def test_a_malformed_reply_request_is_refused(cluster: ServiceCluster, mutate: Callable[[bytes], bytes],
                                              error: SaAisError) -> None:
    server = cluster.connect(2, MSG)
    payload = mutate(msg.ReplyRequest.pack(False, 0, 0, 5, 9, _body(b"pong")))
    rid = cluster.request(server, Request.REPLY, payload)
    cluster.run()
    assert server.response(rid)[0] == error
