"""CPG IPC and cluster message codecs: round trips and strict rejection of malformed input."""

from __future__ import annotations

import struct

import pytest

from openais import cpg
from openais.cpg import CpgMessageError, Member, Reason
from plugins.cpg import messages
from plugins.cpg.messages import CpgClusterMessageError


def test_group_request_round_trip_and_limits():
    name = "é" * 64  # 128 bytes of UTF-8
    assert cpg.decode_group_request(cpg.encode_group_request(name)) == name
    for bad in ("", "x" * 129, "é" * 65):
        with pytest.raises(CpgMessageError):
            cpg.encode_group_request(bad)
    with pytest.raises(CpgMessageError):
        cpg.encode_group_request(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [
    b"", b"\x00", b"\x00\x00", b"\x00\x05abc", b"\x00\x02ab!", struct.pack("!H", 129) + b"x" * 129,
    b"\x00\x02\xff\xfe",
])
def test_group_request_rejects_malformed(payload):
    with pytest.raises(CpgMessageError):
        cpg.decode_group_request(payload)


def test_mcast_request():
    assert cpg.decode_mcast_request(cpg.encode_mcast_request(b"data", cpg.SAFE)) == (cpg.SAFE, b"data")
    guarantee, data = cpg.decode_mcast_request(cpg.encode_mcast_request(b""))
    assert (guarantee, bytes(data)) == (cpg.AGREED, b"")
    for bad in (b"", b"\x02data"):
        with pytest.raises(CpgMessageError):
            cpg.decode_mcast_request(bad)
    with pytest.raises(CpgMessageError):
        cpg.encode_mcast_request(b"x", 5)


def test_member_list_and_group_list():
    members = [Member(1, 2, Reason.JOIN), Member(3, 4, Reason.NODEUP)]
    assert cpg.decode_member_list(cpg.encode_member_list(members)) == members
    listing = {"a": members, "b": []}
    assert cpg.decode_group_list(cpg.encode_group_list(listing)) == listing
    encoded = cpg.encode_member_list(members)
    for bad in (encoded[:-1], encoded + b"\0", struct.pack("!I", 3) + encoded[4:], struct.pack("!IIIB", 1, 1, 1, 9)):
        with pytest.raises(CpgMessageError):
            cpg.decode_member_list(bad)
    twice = struct.pack("!I", 2) + (cpg.pack_group_name("a") + struct.pack("!I", 0)) * 2
    with pytest.raises(CpgMessageError):
        cpg.decode_group_list(twice)
    with pytest.raises(CpgMessageError):
        cpg.decode_group_list(struct.pack("!I", 5))


def test_callbacks():
    assert cpg.decode_deliver(cpg.encode_deliver("g", 7, 8, b"\0hi")) == ("g", 7, 8, b"\0hi")
    with pytest.raises(CpgMessageError):
        cpg.decode_deliver(cpg.pack_group_name("g") + b"\0\0\0\1")
    change = ("g", [Member(1, 1)], [Member(2, 2, Reason.PROCDOWN)], [Member(3, 3, Reason.NODEUP)])
    encoded = cpg.encode_confchg(*change)
    assert cpg.decode_confchg(encoded) == change
    with pytest.raises(CpgMessageError):
        cpg.decode_confchg(encoded[:-2])
    with pytest.raises(CpgMessageError):
        cpg.decode_confchg(encoded + b"x")


def test_nodeid():
    assert cpg.decode_nodeid(cpg.encode_nodeid(0xFFFFFFFF)) == 0xFFFFFFFF
    with pytest.raises(CpgMessageError):
        cpg.decode_nodeid(b"\0\0\0")
    with pytest.raises(CpgMessageError):
        cpg.decode_empty_request(b"x")


def test_cluster_messages_round_trip():
    assert messages.decode_join(messages.encode_join(2**64 - 1, 5, 6, "g")) == (2**64 - 1, 5, 6, "g")
    leave = messages.decode_leave(messages.encode_leave(1, 2, 3, Reason.PROCDOWN, "g"))
    assert leave == (1, 2, 3, Reason.PROCDOWN, "g")
    msg = messages.decode_mcast(messages.encode_mcast(9, "grp", b"payload"))
    assert (msg.pid, msg.group, bytes(msg.data)) == (9, "grp", b"payload")
    entries = [(1, "a"), (2, "b" * 128)]
    assert messages.decode_sync_members(messages.encode_sync_members(4, 2**40, entries)) == (4, 2**40, entries)


def test_cluster_messages_reject_malformed():
    join = messages.encode_join(1, 2, 3, "g")
    leave = messages.encode_leave(1, 2, 3, Reason.LEAVE, "g")
    sync = messages.encode_sync_members(1, 1, [(1, "a")])
    cases = [
        (messages.decode_join, join[:-1]), (messages.decode_join, join + b"x"), (messages.decode_join, b""),
        (messages.decode_leave, leave[:10]), (messages.decode_leave, leave + b"x"),
        (messages.decode_leave, messages.encode_leave(1, 2, 3, Reason.JOIN, "g")),
        (messages.decode_mcast, b"\0\0"), (messages.decode_mcast, b"\0\0\0\1\0\0"),
        (messages.decode_sync_members, sync[:-1]), (messages.decode_sync_members, sync + b"x"),
        (messages.decode_sync_members, struct.pack("!IQI", 1, 1, 1000)),
    ]
    for decode, payload in cases:
        with pytest.raises(CpgClusterMessageError):
            decode(payload)
    with pytest.raises(CpgClusterMessageError):
        messages.encode_join(1, 2, 3, "")


def _offline_handle(calls: list) -> cpg.CpgHandle:
    """A CpgHandle without a connection: requests are recorded, callbacks decoded for real."""
    handle = cpg.CpgHandle.__new__(cpg.CpgHandle)
    handle._deliver_fn = lambda *args: calls.append(("deliver", *args))
    handle._confchg_fn = lambda *args: calls.append(("confchg", *args))
    handle._call = lambda msg_id, payload, timeout=None: calls.append(("call", msg_id, payload)) or b""
    handle._send_pipelined = lambda msg_id, payload: calls.append(("call", msg_id, payload))
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
    assert calls == [("call", cpg.Request.JOIN, cpg.encode_group_request("g")),
                     ("call", cpg.Request.MCAST, b"\x01hi")]
    calls.clear()
    handle._on_dispatch(cpg.Callback.DELIVER, cpg.encode_deliver("g", 1, 2, b"d"))
    handle._on_dispatch(cpg.Callback.CONFCHG, cpg.encode_confchg("g", [Member(1, 2)], [], [Member(1, 2)]))
    assert calls == [("deliver", "g", 1, 2, b"d"), ("confchg", "g", [Member(1, 2)], [], [Member(1, 2)])]
    assert calls[1][2][0].reason is Reason.JOIN
    with pytest.raises(CpgMessageError):
        handle._on_dispatch(9, b"")
