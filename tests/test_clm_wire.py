"""CLM IPC and cluster messages: round trips and strict decoding."""

from __future__ import annotations

import pytest

from openais import clm
from openais.clm import ClusterChange, ClusterNode, Notification, NotificationBuffer
from openais.errors import SaAisError
from openais.message import MessageError
from plugins.clm.messages import NodeRecord

NODE = ClusterNode(3, "127.0.0.3", "höst-c", True, 1_795_000_000_123_456_789, 7)
BUFFER = NotificationBuffer(9, [Notification(NODE, ClusterChange.JOINED),
                               Notification(NODE._replace(node_id=4, member=False), ClusterChange.LEFT)])


def test_round_trips():
    assert ClusterNode.decode(NODE.encode()) == NODE
    assert NotificationBuffer.decode(BUFFER.encode()) == BUFFER
    assert NotificationBuffer.decode(NotificationBuffer(0, []).encode()) == NotificationBuffer(0, [])
    assert clm.TrackCallback.decode(clm.TrackCallback.pack(1, SaAisError.OK, BUFFER)) == (1, SaAisError.OK, BUFFER)
    assert clm.TrackRequest.decode(clm.TrackRequest.pack(clm.TRACK_CHANGES, True)) == (clm.TRACK_CHANGES, True)
    assert clm.NodeGetRequest.decode(clm.NodeGetRequest.pack(0xFFFFFFFF)).node_id == clm.LOCAL_NODE_ID
    assert clm.NodeGetAsyncRequest.decode(clm.NodeGetAsyncRequest.pack(2**64 - 1, 5)) == (2**64 - 1, 5)
    assert clm.NodeGetCallback.decode(clm.NodeGetCallback.pack(11, SaAisError.OK, NODE)) == (11, 1, NODE)
    assert clm.NodeGetCallback.decode(clm.NodeGetCallback.pack(12, SaAisError.NOT_EXIST, None)) == (
        12, SaAisError.NOT_EXIST, None)
    back = NotificationBuffer.decode(BUFFER.encode())
    assert back.notifications[1].node.member is False and back.notifications[0].cluster_change is ClusterChange.JOINED
    assert back.notifications[0].node._asdict()["node_name"] == "höst-c"


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_and_padded_buffers_are_rejected(cut):
    raw = BUFFER.encode()
    with pytest.raises(MessageError):
        NotificationBuffer.decode(raw[:-cut])
    with pytest.raises(MessageError):
        NotificationBuffer.decode(raw + b"\x00" * cut)


def test_lying_counts_and_bad_fields_are_rejected():
    raw = bytearray(BUFFER.encode())
    raw[11] = 200  # notification count far beyond the payload
    with pytest.raises(MessageError) as info:
        NotificationBuffer.decode(bytes(raw))
    assert (info.value.message_name, info.value.field) == ("NotificationBuffer", "notifications")
    node = bytearray(NODE.encode())
    member_at = 4 + 2 + len(NODE.node_address) + 2 + len(NODE.node_name.encode())
    node[member_at] = 2  # member flag
    with pytest.raises(MessageError) as info:
        ClusterNode.decode(bytes(node))
    assert info.value.field == "member"
    bad_change = NotificationBuffer(1, [Notification(NODE, ClusterChange.JOINED)]).encode()[:-1] + b"\x09"
    with pytest.raises(MessageError) as info:
        NotificationBuffer.decode(bad_change)
    assert info.value.field == "notifications[0].cluster_change"
    with pytest.raises(MessageError):
        NODE._replace(node_address="x" * 65).encode()
    with pytest.raises(MessageError):
        clm.TrackRequest.decode(b"\x01\x02")
    with pytest.raises(MessageError):
        clm.NodeGetCallback.decode(clm.NodeGetCallback.pack(1, SaAisError.NOT_EXIST, None) + b"\x00")


def test_flags_rules():
    assert clm.flags_error(clm.TRACK_CURRENT | clm.TRACK_CHANGES) == SaAisError.OK
    assert clm.flags_error(clm.TRACK_CURRENT | clm.TRACK_CHANGES_ONLY) == SaAisError.OK
    assert clm.flags_error(clm.TRACK_CHANGES | clm.TRACK_CHANGES_ONLY) == SaAisError.BAD_FLAGS
    assert clm.flags_error(0x10) == SaAisError.BAD_FLAGS
    assert clm.flags_error(0) == SaAisError.BAD_FLAGS


def test_node_record_round_trip_and_strictness():
    record = NodeRecord(1, 0x10, 3, 2, 123, [1, 2, 3], "127.0.0.1", "a")
    raw = record.encode()
    assert NodeRecord.decode(raw) == record
    for bad in (raw[:-1], raw + b"\x00", raw[:10]):
        with pytest.raises(MessageError):
            NodeRecord.decode(bad)
    lying = bytearray(raw)
    lying[36:40] = (5000).to_bytes(4, "big")  # previous member count
    with pytest.raises(MessageError) as info:
        NodeRecord.decode(bytes(lying))
    assert info.value.field == "previous_members"
