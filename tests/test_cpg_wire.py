"""CPG IPC and cluster messages: round trips and strict rejection of malformed input."""

from __future__ import annotations

import struct

import pytest

from openais import cpg
from openais.cpg import Member, Reason
from openais.message import MessageError
from plugins.cpg import messages


def test_group_request_round_trip_and_limits():
    name = "é" * 64  # 128 bytes of UTF-8
    assert cpg.GroupRequest.decode(cpg.GroupRequest.pack(name)).group == name
    for bad in ("", "x" * 129, "é" * 65, b"bytes"):
        with pytest.raises(MessageError) as info:
            cpg.GroupRequest.pack(bad)
        assert (info.value.message_name, info.value.field) == ("GroupRequest", "group")


@pytest.mark.parametrize("payload", [
    b"", b"\x00", b"\x00\x00", b"\x00\x05abc", b"\x00\x02ab!", struct.pack("!H", 129) + b"x" * 129,
    b"\x00\x02\xff\xfe",
])
def test_group_request_rejects_malformed(payload):
    with pytest.raises(MessageError):
        cpg.GroupRequest.decode(payload)


def test_mcast_request():
    assert cpg.McastRequest.decode(cpg.McastRequest.pack(cpg.SAFE, b"data")) == (cpg.SAFE, b"data")
    guarantee, data = cpg.McastRequest.decode(cpg.McastRequest.pack(cpg.AGREED, b""))
    assert (guarantee, bytes(data)) == (cpg.AGREED, b"") and isinstance(data, memoryview)
    largest = cpg.McastRequest.pack(cpg.AGREED, bytes(cpg.MAX_MESSAGE))
    assert len(cpg.McastRequest.decode(largest).data) == cpg.MAX_MESSAGE
    for bad, field in ((b"", "guarantee"), (b"\x02data", "guarantee"), (largest + b"x", "data")):
        with pytest.raises(MessageError) as info:
            cpg.McastRequest.decode(bad)
        assert info.value.field == field
    with pytest.raises(MessageError):
        cpg.McastRequest.pack(5, b"x")
    with pytest.raises(MessageError):
        cpg.McastRequest.pack(cpg.AGREED, bytes(cpg.MAX_MESSAGE + 1))


def test_member_list_and_group_list():
    members = [Member(1, 2, Reason.JOIN), Member(3, 4, Reason.NODEUP)]
    assert cpg.MemberList.decode(cpg.MemberList.pack(members)).members == members
    assert Member(1, 2) == Member(1, 2, Reason.JOIN)
    listing = {"a": members, "b": []}
    assert cpg.group_dict(cpg.GroupList.decode(cpg.GroupList.pack(list(listing.items())))) == listing
    encoded = cpg.MemberList.pack(members)
    for bad in (encoded[:-1], encoded + b"\0", struct.pack("!I", 3) + encoded[4:], struct.pack("!IIIB", 1, 1, 1, 9)):
        with pytest.raises(MessageError):
            cpg.MemberList.decode(bad)
    twice = cpg.GroupList.pack([("a", []), ("a", [])])
    with pytest.raises(MessageError, match="listed twice"):
        cpg.group_dict(cpg.GroupList.decode(twice))
    with pytest.raises(MessageError):
        cpg.GroupList.decode(struct.pack("!I", 5))


def test_callbacks():
    group, nodeid, pid, data = cpg.Deliver.decode(cpg.Deliver.pack("g", 7, 8, b"\0hi"))
    assert (group, nodeid, pid, bytes(data)) == ("g", 7, 8, b"\0hi")
    with pytest.raises(MessageError):
        cpg.Deliver.decode(cpg.GroupRequest.pack("g") + b"\0\0\0\1")
    change = ("g", [Member(1, 1)], [Member(2, 2, Reason.PROCDOWN)], [Member(3, 3, Reason.NODEUP)])
    encoded = cpg.Confchg.pack(*change)
    assert cpg.Confchg.decode(encoded) == change
    with pytest.raises(MessageError):
        cpg.Confchg.decode(encoded[:-2])
    with pytest.raises(MessageError):
        cpg.Confchg.decode(encoded + b"x")


def test_nodeid():
    assert cpg.NodeId.decode(cpg.NodeId.pack(0xFFFFFFFF)).nodeid == 0xFFFFFFFF
    with pytest.raises(MessageError):
        cpg.NodeId.decode(b"\0\0\0")


def test_cluster_messages_round_trip():
    assert messages.JoinMsg.decode(messages.JoinMsg.pack(2**64 - 1, 5, 6, "g")) == (2**64 - 1, 5, 6, "g")
    leave = messages.LeaveMsg.decode(messages.LeaveMsg.pack(1, 2, 3, Reason.PROCDOWN, "g"))
    assert leave == (1, 2, 3, Reason.PROCDOWN, "g") and leave.reason is Reason.PROCDOWN
    msg = messages.McastMsg.decode(messages.McastMsg.pack(9, "grp", b"payload"))
    assert (msg.pid, msg.group, bytes(msg.data)) == (9, "grp", b"payload")
    entries = [(1, "a"), (2, "b" * 128)]
    assert messages.SyncMembersMsg.decode(messages.SyncMembersMsg.pack(4, 2**40, entries)) == (4, 2**40, entries)


def test_cluster_messages_reject_malformed():
    join = messages.JoinMsg.pack(1, 2, 3, "g")
    leave = messages.LeaveMsg.pack(1, 2, 3, Reason.LEAVE, "g")
    sync = messages.SyncMembersMsg.pack(1, 1, [(1, "a")])
    bad_reason = leave[:20] + bytes([Reason.JOIN]) + leave[21:]
    cases = [
        (messages.JoinMsg, join[:-1]), (messages.JoinMsg, join + b"x"), (messages.JoinMsg, b""),
        (messages.LeaveMsg, leave[:10]), (messages.LeaveMsg, leave + b"x"), (messages.LeaveMsg, bad_reason),
        (messages.McastMsg, b"\0\0"), (messages.McastMsg, b"\0\0\0\1\0\0"),
        (messages.SyncMembersMsg, sync[:-1]), (messages.SyncMembersMsg, sync + b"x"),
        (messages.SyncMembersMsg, struct.pack("!IQI", 1, 1, 1000)),
    ]
    for cls, payload in cases:
        with pytest.raises(MessageError) as info:
            cls.decode(payload)
        assert info.value.message_name == cls.__name__, payload
    with pytest.raises(MessageError):
        messages.JoinMsg.pack(1, 2, 3, "")
    with pytest.raises(MessageError):
        messages.LeaveMsg.pack(1, 2, 3, Reason.JOIN, "g")


def _offline_handle(calls: list) -> cpg.CpgHandle:
    """A CpgHandle without a connection: requests are recorded, callbacks decoded for real."""
    handle = cpg.CpgHandle.__new__(cpg.CpgHandle)
    handle._deliver_fn = lambda *args: calls.append(("deliver", *args))
    handle._confchg_fn = lambda *args: calls.append(("confchg", *args))
    handle._call = lambda msg_id, payload, timeout=None: calls.append(("call", msg_id, payload)) or b""
    handle._send_pipelined = lambda msg_id, payload, timeout=None: calls.append(("call", msg_id, payload))
    return handle


def test_handle_validates_before_sending_and_decodes_callbacks():
    from openais.errors import InvalidParam, TooBig

    calls: list = []
    handle = _offline_handle(calls)
    with pytest.raises(InvalidParam):
        handle.join("x" * 129)
    with pytest.raises(InvalidParam):
        handle.leave("")
    with pytest.raises(TooBig):
        handle.mcast(b"\0" * (cpg.MAX_MESSAGE + 1))
    with pytest.raises(InvalidParam):
        handle.mcast(b"x", guarantee=3)
    assert calls == []
    handle.join("g")
    handle.mcast(b"hi", cpg.SAFE)
    assert calls == [("call", cpg.Request.JOIN, cpg.GroupRequest.pack("g")),
                     ("call", cpg.Request.MCAST, b"\x01hi")]
    calls.clear()
    handle._on_dispatch(cpg.Callback.DELIVER, cpg.Deliver.pack("g", 1, 2, b"d"))
    handle._on_dispatch(cpg.Callback.CONFCHG, cpg.Confchg.pack("g", [Member(1, 2)], [], [Member(1, 2)]))
    assert calls == [("deliver", "g", 1, 2, b"d"), ("confchg", "g", [Member(1, 2)], [], [Member(1, 2)])]
    assert type(calls[0][4]) is bytes and calls[1][2][0].reason is Reason.JOIN
    with pytest.raises(MessageError):
        handle._on_dispatch(9, b"")


def test_every_layer_takes_the_largest_message():
    from aisexec.routing import HEADER
    from aisexec.totem.pg import MAX_CLUSTER_MESSAGE
    from openais import _wire
    from plugins.cpg.engine import CpgEngine

    data, group = bytes(cpg.MAX_MESSAGE), "g" * cpg.MAX_GROUP_NAME
    request = cpg.McastRequest.pack(cpg.AGREED, data)
    assert CpgEngine().lib_handlers[cpg.Request.MCAST].max_size == len(request)
    assert _wire.REQUEST.size + len(request) <= _wire.MAX_FRAME
    assert HEADER.size + len(messages.McastMsg.pack(2**32 - 1, group, data)) <= MAX_CLUSTER_MESSAGE
    assert _wire.RESPONSE.size + len(cpg.Deliver.pack(group, 1, 2, data)) <= _wire.MAX_FRAME


def test_mcast_of_something_not_bytes_like_is_invalid_param():
    from openais.errors import InvalidParam

    handle = _offline_handle([])
    handle._joined = "g"
    with pytest.raises(InvalidParam):
        handle.mcast("text")  # type: ignore[arg-type]
