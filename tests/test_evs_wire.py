"""EVS IPC and cluster messages: round trips and strict rejection of malformed input."""

from __future__ import annotations

import struct

import pytest

from openais import evs
from openais.message import MessageError
from plugins.evs import messages


def test_round_trips():
    groups = ["a", "é" * 16]
    assert evs.GroupRequest.decode(evs.GroupRequest.pack(groups)).groups == groups
    guarantee, data = evs.McastJoinedRequest.decode(evs.McastJoinedRequest.pack(evs.SAFE, b"hi"))
    assert (guarantee, bytes(data)) == (evs.SAFE, b"hi")
    guarantee, got, data = evs.McastGroupsRequest.decode(evs.McastGroupsRequest.pack(evs.AGREED, groups, b"d"))
    assert (guarantee, got, bytes(data)) == (evs.AGREED, groups, b"d")
    assert evs.MembershipResponse.decode(evs.MembershipResponse.pack(3, [1, 2, 3])) == (3, [1, 2, 3])
    nodeid, data = evs.Deliver.decode(evs.Deliver.pack(5, b"x"))
    assert (nodeid, bytes(data)) == (5, b"x")
    assert evs.Confchg.decode(evs.Confchg.pack([1, 3], [2], [])) == ([1, 3], [2], [])
    msg = messages.McastMsg.decode(messages.McastMsg.pack(groups, b"m"))
    assert (msg.groups, bytes(msg.data)) == (groups, b"m")
    largest = messages.McastMsg.pack(["g"] * evs.MAX_GROUPS, bytes(evs.MAX_MESSAGE))
    assert len(messages.McastMsg.decode(largest).data) == evs.MAX_MESSAGE


def test_encoders_refuse_bad_groups():
    for bad in ([""], ["x" * 33], [b"x"], [f"g{i}" for i in range(evs.MAX_GROUPS + 1)]):
        with pytest.raises(MessageError) as info:
            evs.GroupRequest.pack(bad)
        assert info.value.field == "groups"
    with pytest.raises(MessageError):
        messages.McastMsg.pack([""], b"")


@pytest.mark.parametrize("payload", [
    b"", b"\0", b"\0\0\0\1", b"\0\0\0\1\0", b"\0\0\0\1\0\x21" + b"x" * 33, b"\0\0\0\1\0\2\xff\xfe",
    b"\0\0\0\2\0\1a", b"\0\0\0\1\0\1ax", b"\0\0\0\1\0\0", struct.pack("!I", evs.MAX_GROUPS + 1),
])
def test_group_list_rejects_malformed(payload):
    with pytest.raises(MessageError):
        evs.GroupRequest.decode(payload)


def test_other_decoders_reject_malformed():
    cases = [
        (evs.McastJoinedRequest, b""), (evs.McastJoinedRequest, b"\3"),
        (evs.McastJoinedRequest, b"\0" + bytes(evs.MAX_MESSAGE + 1)), (evs.McastGroupsRequest, b"\3\0\0"),
        (evs.MembershipResponse, evs.MembershipResponse.pack(1, [1])[:-1]),
        (evs.Confchg, evs.Confchg.pack([1], [], []) + b"\0"), (evs.Deliver, b"\0\0"),
        (messages.McastMsg, b"\0\5"),
    ]
    for cls, payload in cases:
        with pytest.raises(MessageError) as info:
            cls.decode(payload)
        assert info.value.message_name == cls.__name__


def test_handle_validates_before_sending_and_decodes_callbacks():
    from openais.errors import InvalidParam, TooBig

    calls: list = []
    handle = evs.EvsHandle.__new__(evs.EvsHandle)
    handle._deliver_fn = lambda *args: calls.append(("deliver", *args))
    handle._confchg_fn = lambda *args: calls.append(("confchg", *args))
    handle._call = lambda msg_id, payload, timeout=None: calls.append(("call", msg_id, payload)) or b""
    handle._send_pipelined = lambda msg_id, payload, timeout=None: calls.append(("send", msg_id, payload))
    with pytest.raises(InvalidParam):
        handle.join("abc")  # one str, not a list
    with pytest.raises(InvalidParam):
        handle.join(["x" * 33])
    with pytest.raises(TooBig):
        handle.mcast_joined(b"\0" * (evs.MAX_MESSAGE + 1))
    with pytest.raises(InvalidParam):
        handle.mcast_groups([""], b"x")
    assert calls == []
    handle.mcast_groups(["a"], b"d", evs.SAFE)
    handle.mcast_joined(b"e")
    assert calls == [("send", evs.Request.MCAST_GROUPS, evs.McastGroupsRequest.pack(evs.SAFE, ["a"], b"d")),
                     ("send", evs.Request.MCAST_JOINED, b"\0e")]
    calls.clear()
    handle._on_dispatch(evs.Callback.DELIVER, evs.Deliver.pack(4, b"m"))
    handle._on_dispatch(evs.Callback.CONFCHG, evs.Confchg.pack([1, 2], [3], []))
    assert calls == [("deliver", 4, b"m"), ("confchg", [1, 2], [3], [])]
    assert type(calls[0][2]) is bytes
    with pytest.raises(MessageError):
        handle._on_dispatch(7, b"")


def test_every_layer_takes_the_largest_message():
    from aisexec.routing import HEADER
    from aisexec.totem.pg import MAX_CLUSTER_MESSAGE
    from openais import _wire
    from plugins.evs.engine import EvsEngine

    data, groups = bytes(evs.MAX_MESSAGE), ["g" * evs.MAX_GROUP_NAME] * evs.MAX_GROUPS
    request = evs.McastGroupsRequest.pack(evs.AGREED, groups, data)
    assert EvsEngine().lib_handlers[evs.Request.MCAST_GROUPS].max_size == len(request)
    assert _wire.REQUEST.size + len(request) <= _wire.MAX_FRAME
    assert HEADER.size + len(messages.McastMsg.pack(groups, data)) <= MAX_CLUSTER_MESSAGE
    assert _wire.RESPONSE.size + len(evs.Deliver.pack(1, data)) <= _wire.MAX_FRAME


def test_mcast_of_something_not_bytes_like_is_invalid_param():
    from openais.errors import InvalidParam

    handle = evs.EvsHandle.__new__(evs.EvsHandle)
    handle._send_pipelined = lambda msg_id, payload, timeout=None: None
    for call in (lambda: handle.mcast_joined("text"), lambda: handle.mcast_groups(["g"], "text")):
        with pytest.raises(InvalidParam):
            call()
