"""The influx_line unit tests' pipeline: one influx_line profile on ``telegraf/#``."""

from __future__ import annotations

from typing import Any

from agent.model import ReceivedMessage
from agent.pipeline import Pipeline, PipelineSettings

RECEIVED_AT_MS = 1_700_000_000_000
TOPIC = "telegraf/gw-1"


def pipeline(**profile: Any) -> Pipeline:
    """A pipeline with one influx_line profile on telegraf/# (device from the topic)."""
    config = {
        "schema_version": 2,
        "profiles": [
            {
                "name": "influx",
                "format": "influx_line",
                "topic_filters": ["telegraf/#"],
                "device_id": {"topic_template": "telegraf/{device_id}"},
                **profile,
            }
        ],
    }
    return Pipeline(PipelineSettings.model_validate(config), "gw")


def process(payload: bytes, topic: str = TOPIC, **profile: Any) -> Any:
    """``payload`` on ``topic`` through :func:`pipeline` with ``profile`` options."""
    msg = ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS, message_id="0" * 32)
    return pipeline(**profile).process(msg)
