"""Micro-benchmark of Pipeline.process on one core: prints microseconds per message.

Usage: ``.venv/bin/python bench/pipeline_bench.py [messages]``. Each case is a valid 256-byte
reading (metric, value, timestamp, quality, unit, three tags, padding), processed repeatedly;
the best of five rounds is reported. Compare numbers between commits on the same machine.
"""

from __future__ import annotations

import json
import sys
import time

from agent.model import ReceivedMessage
from agent.pipeline import DeviceIdSettings, Outcome, Pipeline, PipelineSettings

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
) -> None:
    pipeline = Pipeline(settings, "gw-bench-1")
    assert pipeline.process(msg).outcome is outcome  # noqa: S101
    process = pipeline.process
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            process(msg)
        best = min(best, time.perf_counter() - start)
    print(f"{name:<36} {best / count * 1e6:6.2f} us/msg (best of 5 x {count})")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
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


if __name__ == "__main__":
    main()
