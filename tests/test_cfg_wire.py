"""CFG IPC messages: round trips and strict decoding."""

from __future__ import annotations

import pytest

from openais import cfg
from openais.cfg import CfgMessageError, Member, Membership, Ring, RingStatus

STATUS = RingStatus(1, [Ring(0, "1.8", "127.0.0.1", "active")], "OPERATIONAL", [1, 2], True, {"rx": 3})


def test_ring_status_round_trip():
    assert cfg.decode_ring_status(cfg.encode_ring_status(STATUS)) == STATUS
    assert not STATUS.faulty
    assert STATUS._replace(rings=[Ring(0, "1.8", "127.0.0.1", "faulty")]).faulty


@pytest.mark.parametrize("raw", [
    b"not json", b"[1]", b'{"nodeid": 1}', b"\xff",
    b'{"nodeid": true, "rings": [], "state": "", "members": [], "synced": true, "stats": {}}',
    b'{"nodeid": 1, "rings": [{"ringnumber": 0}], "state": "", "members": [], "synced": true, "stats": {}}',
    b'{"nodeid": 1, "rings": [], "state": "", "members": ["a"], "synced": true, "stats": {}}',
])
def test_bad_ring_status_is_rejected(raw):
    with pytest.raises(CfgMessageError):
        cfg.decode_ring_status(raw)


def test_membership_round_trip_and_strictness():
    membership = Membership(1, 0x1C, [Member(1, "127.0.0.1"), Member(2, "")])
    raw = cfg.encode_membership(membership)
    assert cfg.decode_membership(raw) == membership
    assert membership.ring_id == "1.1c"
    for bad in (raw[:-1], raw + b"\x00", raw[:5]):
        with pytest.raises(CfgMessageError):
            cfg.decode_membership(bad)
    lying = bytearray(raw)
    lying[15] = 9  # member count
    with pytest.raises(CfgMessageError):
        cfg.decode_membership(bytes(lying))


def test_state_round_trip_and_strictness():
    assert cfg.decode_state(cfg.encode_state(3, True)) == (3, True)
    with pytest.raises(CfgMessageError):
        cfg.decode_state(b"\x00\x00\x00\x01\x02")
    with pytest.raises(CfgMessageError):
        cfg.decode_state(b"\x00")
