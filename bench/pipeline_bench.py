"""Micro-benchmark of the per-message work between the MQTT source and the spool, on one core.

Usage: ``.venv/bin/python bench/pipeline_bench.py [messages] [--profiles-only]`` (``--help``).
Prints microseconds per message (and per reading for messages that yield several).

* ``Pipeline.process`` cases: a valid 256-byte reading (metric, value, timestamp, quality, unit,
  three tags, padding), processed repeatedly; the best of five rounds is reported.
* Payload profiles (schema version 2): the default reader with typed values, a Zigbee2MQTT
  multi-field object (4 readings), a Tasmota nested object (6 readings), a Node-RED array of
  10 readings, a bare value, an InfluxDB line with 4 fields; microseconds per message and per
  reading.
* ``ReceivedMessage`` construction, as the MQTT source builds one per PUBLISH (with its fresh
  message id).
* ``ingest``: the whole group-commit loop (:class:`agent.ingest.Ingest`) over a pre-filled
  :class:`~agent.ingest.MessageQueue`: message ids (redelivery window and journal), pipeline,
  counters, the real metrics hook and device presence, with a spool and an acker that answer at
  once, on the e2e bench's load shape (20 devices, topic template, 256-byte readings, QoS 1).
  Best of three rounds.

Times are process CPU time (``time.process_time``), not wall time, so other work on the
machine disturbs them less. Compare numbers between commits on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TYPE_CHECKING

from agent.ingest import Ingest, IngestSettings, MessageQueue
from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import ReceivedMessage
from agent.pipeline import DeviceIdSettings, Outcome, Pipeline, PipelineSettings
from agent.simulate import reading
from agent.spool import AppendResult
from agent.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.model import Record

RECEIVED_AT_MS = 1_700_000_000_000
PAYLOAD_BYTES = 256
TEMPLATE = DeviceIdSettings(topic_template="plant/{site}/{device_id}/{metric}")
READING = {
    "metric": "temperature",
    "value": 21.5,
    "ts": 1_699_999_999_123,
    "quality": "good",
    "unit": "degC",
    "tags": {"line": "3", "cell": "A7", "firmware": "4.2.1"},
}


def _message(topic: str, **fields: object) -> ReceivedMessage:
    """A message whose payload is padded to exactly PAYLOAD_BYTES."""
    doc = {**READING, **fields, "pad": ""}
    doc["pad"] = "x" * (PAYLOAD_BYTES - len(json.dumps(doc).encode()))
    payload = json.dumps(doc).encode()
    assert len(payload) == PAYLOAD_BYTES  # noqa: S101
    return ReceivedMessage(topic, payload, qos=1, retain=False, received_at_ms=RECEIVED_AT_MS)


def _run(
    name: str,
    settings: PipelineSettings,
    msg: ReceivedMessage,
    count: int,
    outcome: Outcome = Outcome.VALID,
    setup: tuple[ReceivedMessage, ...] = (),
) -> None:
    pipeline = Pipeline(settings, "gw-bench-1")
    for before in setup:  # e.g. the Sparkplug births that define the aliases
        pipeline.process(before)
    processed = pipeline.process(msg)
    assert processed.outcome is outcome, processed.detail  # noqa: S101
    readings = sum(1 for r in processed.records if r.topic == settings.topics.normalized)
    process = pipeline.process
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(count):
            process(msg)
        best = min(best, time.process_time() - start)
    how = f"best of 5 x {count}"
    if readings > 1:
        how += f"; {best / count / readings * 1e6:.2f} us/reading x {readings}"
    _print(name, best / count, how)


def _print(name: str, secs: float, how: str) -> None:
    print(f"{name:<36} {secs * 1e6:6.2f} us/msg ({how})")


PROFILES = [  # as in tests/fixtures/device_payloads.py
    {
        "name": "zigbee2mqtt",
        "format": "json_fields",
        "topic_filters": ["zigbee2mqtt/+"],
        "device_id": {"topic_template": "zigbee2mqtt/{device_id}"},
        "exclude": ["last_seen", "update"],
    },
    {
        "name": "tasmota",
        "format": "json_fields",
        "topic_filters": ["tele/+/SENSOR"],
        "device_id": {"topic_template": "tele/{device_id}/SENSOR"},
        "include": ["ENERGY"],
        "exclude": ["ENERGY.TotalStartTime"],
        "units": {"ENERGY.Power": "W", "ENERGY.Voltage": "V"},
    },
    {
        "name": "node-red-readings",
        "format": "json_reading",
        "arrays": True,
        "topic_filters": ["nodered/readings/#"],
    },
    {
        "name": "bare",
        "format": "scalar",
        "topic_filters": ["plant/+/+/+"],
        "device_id": {"topic_template": "plant/{site}/{device_id}/{metric}"},
    },
    {
        "name": "telegraf",
        "format": "influx_line",
        "topic_filters": ["telegraf/#"],
        "device_tag": "host",
    },
]
TASMOTA = (
    b'{"Time":"2024-01-01T12:00:00","ENERGY":{"TotalStartTime":"2023-12-01T00:00:00",'
    b'"Total":1.234,"Yesterday":0.5,"Today":0.1,"Power":12,"Voltage":230,"Current":0.09}}'
)


def _profiles(count: int) -> None:
    """Schema version 2 and the payload profiles of the device corpus."""
    typed = PipelineSettings(schema_version=2, device_id=TEMPLATE)
    _run(
        "schema 2, default reader (template)",
        typed,
        _message("plant/berlin/p-042/temperature"),
        count,
    )
    profiled = PipelineSettings.model_validate({"schema_version": 2, "profiles": PROFILES})
    now = RECEIVED_AT_MS
    cases = [
        (
            "json_fields zigbee2mqtt (4 fields)",
            "zigbee2mqtt/kitchen",
            b'{"temperature":21.5,"humidity":40,"battery":97,"linkquality":120}',
        ),
        (
            "json_fields tasmota (nested, 6)",
            "tele/tasmota_1A2B3C/SENSOR",
            TASMOTA,
        ),
        (
            "json_reading array (10 readings)",
            "nodered/readings/line-2",
            json.dumps(
                [{"device_id": f"d{i}", "metric": "t", "value": 20.5 + i} for i in range(10)]
            ).encode(),
        ),
        ("scalar bare number", "plant/berlin/press-7/temperature", b"21.5"),
        (
            "influx_line (1 line, 4 fields)",
            "telegraf/gw-1",
            (
                b"modbus,host=plc-4,line=3 temperature=71.25,pressure=4.5,running=t,count=12i "
                b"1699999999000000000"
            ),
        ),
    ]
    for name, topic, payload in cases:
        _run(name, profiled, ReceivedMessage(topic, payload, 1, False, now), count)  # noqa: FBT003
    _sparkplug(count)


def _sparkplug(count: int) -> None:
    """The sparkplug_b profile: a DBIRTH of 10 metrics, alias-only DDATA of 10 and of 1."""
    from agent.sparkplug.encode import MetricSpec, encode  # noqa: PLC0415 - protobuf
    from agent.sparkplug.sparkplug_b_pb2 import DataType  # noqa: PLC0415

    kinds = [DataType.Float] * 5 + [DataType.Double, DataType.Int32, DataType.Int64]
    kinds += [DataType.Boolean, DataType.String]
    values: dict[int, object] = {
        DataType.Float: 21.5,
        DataType.Double: 1.013,
        DataType.Int32: -7,
        DataType.Int64: 123456789,
        DataType.Boolean: True,
        DataType.String: "AUTO",
    }
    birth = [MetricSpec(f"m{i}", values[k], k, alias=100 + i) for i, k in enumerate(kinds)]
    data = [MetricSpec(None, values[k], k, alias=100 + i) for i, k in enumerate(kinds)]
    nbirth = encode([MetricSpec("bdSeq", 0, DataType.Int64)], seq=0, timestamp=RECEIVED_AT_MS)
    dbirth = encode(birth, seq=1, timestamp=RECEIVED_AT_MS)
    settings = PipelineSettings.model_validate(
        {"schema_version": 2, "profiles": [{"name": "spb", "format": "sparkplug_b"}]}
    )

    def msg(kind: str, payload: bytes, device: str | None = "d1") -> ReceivedMessage:
        topic = f"spBv1.0/g/{kind}/n1" + (f"/{device}" if device else "")
        return ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS)  # noqa: FBT003

    births = (msg("NBIRTH", nbirth, None), msg("DBIRTH", dbirth))
    # No seq in the repeated DATA: the same message again and again would be a gap each time.
    rebirth = encode(birth, seq=None, timestamp=RECEIVED_AT_MS)
    _run("sparkplug DBIRTH (10 metrics)", settings, msg("DBIRTH", rebirth), count, setup=births)
    ddata = encode(data, seq=None, timestamp=RECEIVED_AT_MS)
    _run("sparkplug DDATA aliases (10)", settings, msg("DDATA", ddata), count, setup=births)
    one = encode(data[:1], seq=None, timestamp=RECEIVED_AT_MS)
    _run("sparkplug DDATA aliases (1)", settings, msg("DDATA", one), count, setup=births)


def _received_message(count: int) -> None:
    payload = reading("dev-00001", 1, PAYLOAD_BYTES)
    topic = "plant/bench/dev-00001/temperature"
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for i in range(count):
            ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS, i, 1, False, None, None)  # noqa: FBT003
        best = min(best, time.process_time() - start)
    _print("ReceivedMessage construction", best / count, f"best of 5 x {count}")


class _Spool:
    """Stores nothing and answers at once."""

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        del journal
        return AppendResult(accepted=True, block_id=1, size_bytes=len(records))

    def journal(self) -> bytes:
        return b""


class _Acker:
    """Acks at once; the broker processes every PUBACK at once."""

    def __init__(self) -> None:
        self.sent = 0

    def ack(self, messages: Sequence[ReceivedMessage]) -> int:
        self.sent += len(messages)
        return len(messages)

    @property
    def confirmed_acks(self) -> tuple[int, int]:
        return (1, self.sent)


def _e2e_messages(count: int, devices: int = 20) -> list[ReceivedMessage]:
    """The e2e bench's load: ``devices`` devices on their own topics, QoS 1, packet ids cycling."""
    now_ms = time.time_ns() // 1_000_000 + 1000  # the readings' timestamps are now
    return [
        ReceivedMessage(
            f"plant/bench/dev-{i % devices:05d}/temperature",
            reading(f"dev-{i % devices:05d}", i, PAYLOAD_BYTES),
            1,
            False,  # noqa: FBT003
            now_ms,
            i % 65535 + 1,
            1,
        )
        for i in range(count)
    ]


async def _ingest_round(messages: list[ReceivedMessage]) -> float:
    settings = PipelineSettings(
        device_id=DeviceIdSettings(topic_template="plant/bench/{device_id}/{metric}")
    )
    metrics = Metrics(process_metrics=False)
    lifecycle = LifecycleSettings()
    queue = MessageQueue(len(messages), 1 << 40)
    for message in messages:
        queue.put_nowait(message)
    ingest = Ingest(
        queue,
        Pipeline(settings, "gw-bench-1"),
        _Spool(),
        _Acker(),
        IngestSettings(),
        presence=Presence(lifecycle, Lifecycle(lifecycle, "gw-bench-1")),
        on_processed=metrics.processed,
    )
    start = time.process_time()
    task = asyncio.create_task(ingest.run())
    await queue.join()
    elapsed = time.process_time() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ingest.stats.valid == len(messages)  # noqa: S101
    return elapsed


def _ingest(count: int) -> None:
    messages = _e2e_messages(count)
    best = min(asyncio.run(_ingest_round(messages)) for _ in range(3))
    _print("ingest (group commit loop)", best / count, f"best of 3 x {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("messages", type=int, nargs="?", default=100_000, help="per case")
    parser.add_argument("--profiles-only", action="store_true", help="only the profile cases")
    args = parser.parse_args()
    count = args.messages
    if args.profiles_only:
        _profiles(count)
        return
    by_topic = _message("plant/berlin/press-042/temperature")
    by_field = _message("plant/x", device_id="press-042")
    rfc3339 = _message("plant/x", device_id="press-042", ts="2023-11-14T22:13:19.123Z")
    _run("device id from topic template", PipelineSettings(device_id=TEMPLATE), by_topic, count)
    _run(
        "topic template + forward_raw",
        PipelineSettings(device_id=TEMPLATE, forward_raw=True),
        by_topic,
        count,
    )
    _run("device id from json field", PipelineSettings(), by_field, count)
    _run("json field, RFC 3339 timestamp", PipelineSettings(), rfc3339, count)
    rejected = _message("plant/x", device_id="press-042", value="21.5")
    _run("rejected (wrong_type)", PipelineSettings(), rejected, count, Outcome.REJECTED)
    _profiles(count)
    _received_message(count)
    _ingest(count)


if __name__ == "__main__":
    main()
