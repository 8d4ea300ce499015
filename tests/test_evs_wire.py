"""EVS IPC and cluster message codecs: round trips and strict rejection of malformed input."""

from __future__ import annotations

import struct

import pytest

from openais import evs
from openais.evs import EvsMessageError
from plugins.evs import messages
from plugins.evs.messages import EvsClusterMessageError


def test_round_trips():
    groups = ["a", "é" * 16]
    assert evs.decode_group_request(evs.encode_group_request(groups)) == groups
    guarantee, data = evs.decode_mcast_joined(evs.encode_mcast_joined(b"hi", evs.SAFE))
    assert (guarantee, bytes(data)) == (evs.SAFE, b"hi")
    guarantee, got, data = evs.decode_mcast_groups(evs.encode_mcast_groups(groups, b"d"))
    assert (guarantee, got, bytes(data)) == (evs.AGREED, groups, b"d")
    assert evs.decode_membership(evs.encode_membership(3, [1, 2, 3])) == (3, [1, 2, 3])
    assert evs.decode_deliver(evs.encode_deliver(5, b"x")) == (5, b"x")
    assert evs.decode_confchg(evs.encode_confchg([1, 3], [2], [])) == ([1, 3], [2], [])
    msg = messages.decode_mcast(messages.encode_mcast(groups, b"m"))
    assert (msg.groups, bytes(msg.data)) == (groups, b"m")


def test_encoders_refuse_bad_groups():
    for bad in ([""], ["x" * 33], [b"x"], [f"g{i}" for i in range(evs.MAX_GROUPS + 1)]):
        with pytest.raises(EvsMessageError):
            evs.encode_group_request(bad)
    with pytest.raises(EvsClusterMessageError):
        messages.encode_mcast([""], b"")


@pytest.mark.parametrize("payload", [
    b"", b"\0", b"\0\1", b"\0\1\0", b"\0\1\x21" + b"x" * 33, b"\0\1\2\xff\xfe", b"\0\2\1a", b"\0\1\1ax",
    struct.pack("!H", evs.MAX_GROUPS + 1),
])
def test_group_list_rejects_malformed(payload):
    with pytest.raises(EvsMessageError):
        evs.decode_group_request(payload)


def test_other_decoders_reject_malformed():
    with pytest.raises(EvsMessageError):
        evs.decode_mcast_joined(b"")
    with pytest.raises(EvsMessageError):
        evs.decode_mcast_groups(b"\3\0\0")
    with pytest.raises(EvsMessageError):
        evs.decode_membership(evs.encode_membership(1, [1])[:-1])
    with pytest.raises(EvsMessageError):
        evs.decode_confchg(evs.encode_confchg([1], [], []) + b"\0")
    with pytest.raises(EvsMessageError):
        evs.decode_deliver(b"\0\0")
    with pytest.raises(EvsClusterMessageError):
        messages.decode_mcast(b"\0\5")


def test_handle_validates_before_sending_and_decodes_callbacks():
    from openais.errors import InvalidParam, TooBig

    calls: list = []
    handle = evs.EvsHandle.__new__(evs.EvsHandle)
    handle._deliver_fn = lambda *args: calls.append(("deliver", *args))
    handle._confchg_fn = lambda *args: calls.append(("confchg", *args))
    handle._call = lambda msg_id, payload, timeout=None: calls.append(("call", msg_id, payload)) or b""
    with pytest.raises(InvalidParam):
        handle.join("abc")  # one str, not a list
    with pytest.raises(InvalidParam):
        handle.join(["x" * 33])
    with pytest.raises(TooBig):
        handle.mcast_joined(b"\0" * (evs.MAX_MESSAGE + 1))
    assert calls == []
    handle.mcast_groups(["a"], b"d", evs.SAFE)
    assert calls == [("call", evs.Request.MCAST_GROUPS, evs.encode_mcast_groups(["a"], b"d", evs.SAFE))]
    calls.clear()
    handle._on_dispatch(evs.Callback.DELIVER, evs.encode_deliver(4, b"m"))
    handle._on_dispatch(evs.Callback.CONFCHG, evs.encode_confchg([1, 2], [3], []))
    assert calls == [("deliver", 4, b"m"), ("confchg", [1, 2], [3], [])]
