"""Births and deaths through ingest and presence; every device of a multi-device message is seen."""

from __future__ import annotations

import json

from agent.ingest import Ingest, IngestSettings, MessageQueue
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.events import DeviceOffline, DeviceOnline
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import ReceivedMessage
from agent.pipeline import Pipeline, PipelineSettings
from agent.pipeline._sparkplug import event_id
from agent.sparkplug import SparkplugState
from agent.sparkplug.encode import MetricSpec, encode
from agent.sparkplug.sparkplug_b_pb2 import DataType
from tests.fixtures.sparkplug_payloads import (
    DBIRTH_PRESS,
    DEVICE_TOPIC,
    NBIRTH,
    NODE,
    NODE_TOPIC,
    PRESS,
    SPARKPLUG_PROFILE,
    T0,
)
from tests.unit.core.test_ingest import FakeAcker, FakeSpool, _feed

LIFECYCLE = LifecycleSettings(topic="life")


def _setup(profiles: list[dict[str, object]]) -> tuple[Ingest, MessageQueue, Lifecycle, Presence]:
    lifecycle = Lifecycle(LIFECYCLE, "gw")
    presence = Presence(LIFECYCLE, lifecycle)
    settings = PipelineSettings.model_validate({"schema_version": 2, "profiles": profiles})
    queue = MessageQueue(max_messages=1000, max_bytes=1 << 24)
    return (
        Ingest(
            queue,
            Pipeline(settings, "gw", sparkplug=SparkplugState()),
            spool := FakeSpool(),
            FakeAcker(spool),
            IngestSettings(commit_interval_ms=0),
            presence=presence,
        ),
        queue,
        lifecycle,
        presence,
    )


def _msg(topic: str, payload: bytes, mid: int, at_ms: int = T0) -> ReceivedMessage:
    return ReceivedMessage(topic, payload, 1, False, at_ms, mid=mid, connection=1)


async def test_sparkplug_births_put_devices_online_with_source_sparkplug():
    """NBIRTH and DBIRTH: device_online for node and device, source sparkplug."""
    ingest, queue, lifecycle, presence = _setup([SPARKPLUG_PROFILE])
    acker = ingest._acker
    await _feed(
        ingest,
        queue,
        acker,
        _msg(NODE_TOPIC.format("NBIRTH"), NBIRTH, 1),
        _msg(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS, 2),
    )
    online = [e for e in lifecycle._pending if isinstance(e, DeviceOnline)]
    assert [(e.device_id, e.source, e.first_seen) for e in online] == [
        (NODE, "sparkplug", True),
        (PRESS, "sparkplug", True),
    ]
    assert presence.online_count == 2
    assert json.loads(online[0].model_dump_json())["source"] == "sparkplug"


async def test_sparkplug_ndeath_records_are_spooled_in_the_group_that_acks_it():
    """NDEATH: device_offline records for node and device in the block, before the ack."""
    ingest, queue, _, presence = _setup([SPARKPLUG_PROFILE])
    acker = ingest._acker
    spool = acker.spool
    death = encode([MetricSpec("bdSeq", 3, DataType.Int64)], seq=None, timestamp=T0)
    ndeath = _msg(NODE_TOPIC.format("NDEATH"), death, 3, T0 + 10)
    await _feed(
        ingest,
        queue,
        acker,
        _msg(NODE_TOPIC.format("NBIRTH"), NBIRTH, 1),
        _msg(DEVICE_TOPIC.format("DBIRTH", "press-1"), DBIRTH_PRESS, 2),
        ndeath,
    )
    offline = [r for block in spool.blocks for r in block if r.topic == "life"]
    events = [json.loads(r.value) for r in offline]
    assert [(e["device_id"], e["reason"], e["source"]) for e in events] == [
        (NODE, "sparkplug_ndeath", "sparkplug"),
        (PRESS, "sparkplug_ndeath", "sparkplug"),
    ]
    assert [e["event_id"] for e in events] == [
        event_id(ndeath.message_id, 0),
        event_id(ndeath.message_id, 1),
    ]
    assert acker.spooled_at_ack[-1] == sum(len(b) for b in spool.blocks)
    assert presence.online_count == 0


async def test_presence_marks_every_device_of_a_multi_device_message_seen():
    """A json_reading array naming three devices marks all three seen (not only the first)."""
    profile = {"name": "arr", "format": "json_reading", "arrays": True, "topic_filters": ["a/#"]}
    ingest, queue, _, presence = _setup([profile])
    payload = json.dumps(
        [{"device_id": d, "metric": "t", "value": 1} for d in ("d1", "d2", "d3")]
    ).encode()
    await _feed(ingest, queue, ingest._acker, _msg("a/b", payload, 1))
    assert all(presence.knows(d) for d in ("d1", "d2", "d3"))


def test_presence_last_will_default_record_is_unchanged():
    """A last will's device_offline has no source field (the default output stays byte-equal)."""
    event = DeviceOffline(
        gateway_id="gw", at_ms=1, device_id="d", reason="last_will", last_seen_ms=0, event_id="e"
    )
    assert "source" not in json.loads(event.model_dump_json())
