"""Readings left out for low quality: the result still names every device that sent one.

Found by bench/pipeline_fuzz.py: with ``low_quality_action: drop`` and an array whose first
reading was below ``min_quality``, the result named that first device and not the devices of
the readings produced, so presence never saw them (their records flowed while they could be
reported offline), and ``device_id`` was not the first record's key.
"""

from __future__ import annotations

import json

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings

RECEIVED_AT_MS = 1_700_000_000_000


def process(items: list[dict[str, object]]) -> object:
    config = {
        "schema_version": 2,
        "min_quality": 100,
        "profiles": [
            {
                "name": "nodered",
                "format": "json_reading",
                "arrays": True,
                "topic_filters": ["nodered/#"],
            }
        ],
    }
    pipeline = Pipeline(PipelineSettings.model_validate(config), "gw")
    payload = json.dumps(items).encode()
    return pipeline.process(ReceivedMessage("nodered/x", payload, 1, False, RECEIVED_AT_MS))


def reading(device: str, quality: int) -> dict[str, object]:
    return {"device_id": device, "metric": "m", "value": 1.5, "quality": quality}


def test_low_quality_first_reading_left_out_names_the_produced_devices():
    """device_id is the first record's device; the left-out and other devices are others."""
    processed = process([reading("d1", 0), reading("d2", 192), reading("d3", 192)])
    assert processed.outcome is Outcome.VALID
    assert [r.key for r in processed.records] == [b"d2", b"d3"]
    assert processed.device_id == "d2"
    assert processed.other_device_ids == ("d1", "d3")  # type: ignore[attr-defined]


def test_low_quality_single_reading_left_produced_names_both_devices():
    """One reading left: its device is device_id, the left-out one is still seen."""
    processed = process([reading("d1", 0), reading("d2", 192)])
    assert [r.key for r in processed.records] == [b"d2"]
    assert processed.device_id == "d2"
    assert processed.other_device_ids == ("d1",)  # type: ignore[attr-defined]


def test_all_readings_of_one_device_need_no_other_devices():
    """Without a second device nothing more is named (the plain result)."""
    processed = process([reading("d1", 0), reading("d1", 192)])
    assert processed.device_id == "d1"
    assert getattr(processed, "other_device_ids", ()) == ()
