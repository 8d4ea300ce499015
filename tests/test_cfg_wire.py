"""CFG IPC messages: round trips and strict decoding."""

from __future__ import annotations

import struct

import pytest

from openais import cfg
from openais.cfg import Member, Membership, Ring, RingStatus
from openais.message import MessageError

STATUS = RingStatus(1, [Ring(0, "1.8", "127.0.0.1", "active")], "OPERATIONAL", [1, 2], True, {"rx": 3})


def test_ring_status_round_trip():
    assert RingStatus.decode(STATUS.encode()) == STATUS
    assert not STATUS.faulty
    assert STATUS._replace(rings=[Ring(0, "1.8", "127.0.0.1", "faulty")]).faulty
    odd = STATUS._replace(stats={"when": object, "nested": {"a": [1, 2]}})
    assert RingStatus.decode(odd.encode()).stats == {"when": str(object), "nested": {"a": [1, 2]}}


def _with_stats(text: bytes) -> bytes:
    head = STATUS.encode()[: -(4 + len(b'{"rx":3}'))]
    return head + struct.pack("!I", len(text)) + text


@pytest.mark.parametrize(("raw", "field"), [
    (_with_stats(b"not json"), "stats"), (_with_stats(b"[1]"), "stats"), (_with_stats(b"\xff"), "stats"),
    (STATUS.encode()[:-1], "stats"), (STATUS.encode()[:3], "nodeid"), (STATUS.encode() + b"x", None),
])
def test_bad_ring_status_is_rejected(raw, field):
    with pytest.raises(MessageError) as info:
        RingStatus.decode(raw)
    assert (info.value.message_name, info.value.field) == ("RingStatus", field)
    with pytest.raises(MessageError):
        STATUS._replace(stats=[1]).encode()


def test_membership_round_trip_and_strictness():
    membership = Membership(1, 0x1C, [Member(1, "127.0.0.1"), Member(2, "")])
    raw = membership.encode()
    assert Membership.decode(raw) == membership
    assert membership.ring_id == "1.1c"
    for bad in (raw[:-1], raw + b"\x00", raw[:5]):
        with pytest.raises(MessageError):
            Membership.decode(bad)
    lying = bytearray(raw)
    lying[15] = 9  # member count
    with pytest.raises(MessageError):
        Membership.decode(bytes(lying))
    with pytest.raises(MessageError):
        Member(1, "x" * 65).encode()


def test_state_round_trip_and_strictness():
    assert cfg.State.decode(cfg.State.pack(3, True)) == (3, True)
    with pytest.raises(MessageError):
        cfg.State.decode(b"\x00\x00\x00\x01\x02")
    with pytest.raises(MessageError):
        cfg.State.decode(b"\x00")
