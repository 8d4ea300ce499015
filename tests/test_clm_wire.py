"""CLM IPC and cluster messages: round trips and strict decoding."""

from __future__ import annotations

import pytest

from openais import clm
from openais.clm import ClmMessageError, ClusterChange, ClusterNode, Notification, NotificationBuffer
from openais.errors import SaAisError
from plugins.clm import messages
from plugins.clm.messages import ClmClusterMessageError, NodeRecord

NODE = ClusterNode(3, "127.0.0.3", "höst-c", True, 1_795_000_000_123_456_789, 7)
BUFFER = NotificationBuffer(9, [Notification(NODE, ClusterChange.JOINED),
                               Notification(NODE._replace(node_id=4, member=False), ClusterChange.LEFT)])


def test_round_trips():
    assert clm.decode_node(clm.encode_node(NODE)) == NODE
    assert clm.decode_buffer(clm.encode_buffer(BUFFER)) == BUFFER
    assert clm.decode_buffer(clm.encode_buffer(NotificationBuffer(0, []))) == NotificationBuffer(0, [])
    assert clm.decode_track_callback(clm.encode_track_callback(BUFFER, 1)) == (BUFFER, 1, SaAisError.OK)
    assert clm.decode_track_request(clm.encode_track_request(clm.TRACK_CHANGES, True)) == (clm.TRACK_CHANGES, True)
    assert clm.decode_node_id(clm.encode_node_id(0xFFFFFFFF)) == clm.LOCAL_NODE_ID
    assert clm.decode_node_get_async(clm.encode_node_get_async(2**64 - 1, 5)) == (2**64 - 1, 5)
    assert clm.decode_node_get_callback(clm.encode_node_get_callback(11, SaAisError.OK, NODE)) == (11, 1, NODE)
    assert clm.decode_node_get_callback(clm.encode_node_get_callback(12, SaAisError.NOT_EXIST, None)) == (
        12, SaAisError.NOT_EXIST, None)


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_and_padded_buffers_are_rejected(cut):
    raw = clm.encode_buffer(BUFFER)
    with pytest.raises(ClmMessageError):
        clm.decode_buffer(raw[:-cut])
    with pytest.raises(ClmMessageError):
        clm.decode_buffer(raw + b"\x00" * cut)


def test_lying_counts_and_bad_fields_are_rejected():
    raw = bytearray(clm.encode_buffer(BUFFER))
    raw[11] = 200  # notification count far beyond the payload
    with pytest.raises(ClmMessageError):
        clm.decode_buffer(bytes(raw))
    node = bytearray(clm.encode_node(NODE))
    node[4] = 2  # member flag
    with pytest.raises(ClmMessageError):
        clm.decode_node(bytes(node))
    bad_change = clm.encode_buffer(NotificationBuffer(1, [Notification(NODE, ClusterChange.JOINED)]))[:-1] + b"\x09"
    with pytest.raises(ClmMessageError):
        clm.decode_buffer(bad_change)
    with pytest.raises(ClmMessageError):
        clm.encode_node(NODE._replace(node_address="x" * 65))
    with pytest.raises(ClmMessageError):
        clm.decode_track_request(b"\x01\x02")
    with pytest.raises(ClmMessageError):
        clm.decode_node_get_callback(clm.encode_node_get_callback(1, SaAisError.NOT_EXIST, None) + b"\x00")


def test_flags_rules():
    assert clm.flags_error(clm.TRACK_CURRENT | clm.TRACK_CHANGES) == SaAisError.OK
    assert clm.flags_error(clm.TRACK_CURRENT | clm.TRACK_CHANGES_ONLY) == SaAisError.OK
    assert clm.flags_error(clm.TRACK_CHANGES | clm.TRACK_CHANGES_ONLY) == SaAisError.BAD_FLAGS
    assert clm.flags_error(0x10) == SaAisError.BAD_FLAGS
    assert clm.flags_error(0) == SaAisError.BAD_FLAGS


def test_node_record_round_trip_and_strictness():
    record = NodeRecord(1, 0x10, 3, 2, 123, (1, 2, 3), "127.0.0.1", "a")
    raw = messages.encode_node_record(record)
    assert messages.decode_node_record(raw) == record
    for bad in (raw[:-1], raw + b"\x00", raw[:10]):
        with pytest.raises(ClmClusterMessageError):
            messages.decode_node_record(bad)
    lying = bytearray(raw)
    lying[36:40] = (5000).to_bytes(4, "big")  # previous member count
    with pytest.raises(ClmClusterMessageError):
        messages.decode_node_record(bytes(lying))
