"""The public names and signatures of ``openais.msg`` are those of the contract page."""

from __future__ import annotations

import inspect

import openais
from openais import msg


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_calls_and_signatures() -> None:
    assert params(msg.initialize) == ["queue_open", "queue_group_track", "message_delivered", "message_received",
                                      "queue_capacity_reached", "queue_capacity_available", "version", "path"]
    h = msg.MsgHandle
    expected = {
        "fileno": [], "dispatch": ["flags"], "finalize": ["timeout"],
        "queue_open": ["name", "creation_attributes", "open_flags", "timeout"],
        "queue_open_async": ["invocation", "name", "creation_attributes", "open_flags"],
        "queue_status_get": ["name"], "queue_unlink": ["name"],
        "queue_group_create": ["group", "policy"], "queue_group_insert": ["group", "queue"],
        "queue_group_remove": ["group", "queue"], "queue_group_delete": ["group"],
        "queue_group_track": ["group", "flags", "buffer"], "queue_group_track_stop": ["group"],
        "message_send": ["destination", "message", "timeout"],
        "message_send_async": ["invocation", "destination", "message", "ack_flags"],
        "message_send_receive": ["destination", "message", "timeout"],
        "message_reply": ["reply_message", "sender_id", "timeout"],
        "message_reply_async": ["invocation", "reply_message", "sender_id", "ack_flags"],
        "metadata_size_get": [], "limit_get": ["limit_id"],
    }
    for name, args in expected.items():
        assert params(getattr(h, name)) == args, name
    q = msg.Queue
    for name, args in {"close": [], "retention_time_set": ["retention_time"], "message_get": ["timeout"],
                       "message_cancel": [], "capacity_thresholds_set": ["thresholds"],
                       "capacity_thresholds_get": []}.items():
        assert params(getattr(q, name)) == args, name


def test_constants_and_types() -> None:
    assert (msg.SERVICE_ID, msg.VERSION) == (6, ("B", 3, 1))
    assert (msg.QUEUE_PERSISTENT, msg.QUEUE_CREATE, msg.QUEUE_RECEIVE_CALLBACK, msg.QUEUE_EMPTY) == (1, 1, 2, 4)
    assert msg.QueueCreationFlags.PERSISTENT == 1 and msg.QueueOpenFlags.EMPTY == 4
    assert (msg.MESSAGE_DELIVERED_ACK, msg.HIGHEST_PRIORITY, msg.LOWEST_PRIORITY, msg.METADATA_SIZE) == (1, 0, 3, 64)
    assert (msg.TRACK_CURRENT, msg.TRACK_CHANGES, msg.TRACK_CHANGES_ONLY) == (
        openais.TRACK_CURRENT, openais.TRACK_CHANGES, openais.TRACK_CHANGES_ONLY)
    assert [p.value for p in msg.QueueGroupPolicy] == [1, 2, 3, 4]
    assert [c.name for c in msg.QueueGroupChange] == ["NO_CHANGE", "ADDED", "REMOVED", "STATE_CHANGED"]
    assert [c.value for c in msg.CapacityStatus] == [1, 2, 3, 4]
    assert [i.value for i in msg.LimitId] == list(range(1, 8))
    assert msg.QueueCreationAttributes() == (0, (65536,) * 4, 0.0)
    assert msg.Message() == (0, 0, b"", msg.LOWEST_PRIORITY, None)
    assert msg.QueueUsage._fields == ("queue_size", "queue_used", "number_of_messages")
    assert msg.QueueStatus._fields == ("creation_flags", "retention_time", "close_time", "queue_usage")
    assert msg.ReceivedMessage._fields == ("message", "send_time", "sender_id")
    assert msg.QueueThresholds._fields == ("capacity_reached", "capacity_available")
    assert msg.Notification._fields == ("member", "change")
    assert msg.NotificationBuffer._fields == ("notifications", "queue_group_policy")
