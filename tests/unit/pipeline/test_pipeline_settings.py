from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agent.pipeline import (
    DeviceIdSettings,
    LowQualityAction,
    MissingTimestampPolicy,
    PipelineSettings,
    TopicSettings,
    UnknownFieldPolicy,
)


def test_settings_defaults_are_documented_values():
    """The defaults are the documented ones."""
    settings = PipelineSettings()
    assert settings.topics == TopicSettings(
        normalized="iot.telemetry.normalized", raw="iot.telemetry.raw", dlq="iot.dlq"
    )
    assert settings.device_id == DeviceIdSettings(topic_template=None, json_field="device_id")
    assert settings.field_map == {}
    assert settings.forward_raw is False
    assert settings.unknown_fields is UnknownFieldPolicy.IGNORE
    assert settings.min_quality == 0
    assert settings.low_quality_action is LowQualityAction.DROP
    assert settings.missing_ts is MissingTimestampPolicy.RECEIVE_TIME
    assert settings.max_payload_bytes == 65536
    assert settings.max_future_skew_secs == 300
    assert settings.min_timestamp == datetime(2000, 1, 1, tzinfo=UTC)
    assert settings.max_tags == 32
    assert settings.max_tag_bytes == 256


def test_settings_every_field_has_a_description():
    """Every option of every settings model is documented."""
    for model in (PipelineSettings, TopicSettings, DeviceIdSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_settings_are_frozen():
    """Settings cannot be changed after loading."""
    settings = PipelineSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.forward_raw = True  # type: ignore[misc]


@pytest.mark.parametrize(
    "data",
    [
        {"max_payload_bytez": 10},
        {"topics": {"normalised": "x"}},
        {"device_id": {"template": "a/{device_id}"}},
    ],
)
def test_settings_unknown_option_is_rejected(data):
    """A misspelt option fails at load instead of being ignored."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PipelineSettings.model_validate(data)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("plant/{site}/{metric}", "must contain the placeholder '{device_id}'"),
        ("plant/{device_id", "unbalanced braces"),
        ("plant/device_id}/x", "unbalanced braces"),
        ("plant/dev-{device_id}", "exactly one placeholder"),
        ("plant/{device_id}{metric}", "exactly one placeholder"),
        ("plant/{}/{device_id}", "exactly one placeholder"),
        ("plant/{1x}/{device_id}", "exactly one placeholder"),
        ("plant/+/{device_id}", "MQTT wildcards"),
        ("plant/{device_id}/#", "MQTT wildcards"),
        ("a/{device_id}/{device_id}", "appears more than once"),
        ("", "the topic template is empty"),
    ],
)
def test_settings_bad_topic_template_fails_with_clear_message(template, message):
    """A bad topic template fails at validation, naming the field and what is wrong."""
    with pytest.raises(ValidationError, match=r"device_id\.topic_template") as info:
        PipelineSettings.model_validate({"device_id": {"topic_template": template}})
    assert message in str(info.value)


@pytest.mark.parametrize("path", ["", ".id", "meta.", "meta..id"])
def test_settings_bad_json_field_path_is_rejected(path):
    """A device id field path must be names separated by single dots."""
    with pytest.raises(ValidationError, match="is not a field path"):
        DeviceIdSettings(json_field=path)


def test_settings_device_id_needs_a_source():
    """Turning off both device id sources fails at load."""
    with pytest.raises(ValidationError, match=r"set device_id\.topic_template"):
        DeviceIdSettings(topic_template=None, json_field=None)


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "a/b", "é", "x" * 250])
def test_settings_illegal_kafka_topic_is_rejected(name):
    """Topic names are checked against Kafka's legal topic names."""
    with pytest.raises(ValidationError, match="is not a legal Kafka topic name"):
        TopicSettings(dlq=name)


def test_settings_legal_kafka_topic_names_are_accepted():
    """Names of up to 249 characters from [A-Za-z0-9._-] are accepted."""
    topics = TopicSettings(normalized="a.b_c-D9", raw="x" * 249, dlq="...")
    assert topics.raw == "x" * 249


def test_settings_topics_must_differ():
    """Valid records and dead letters never share a topic."""
    with pytest.raises(ValidationError, match="three different topics"):
        TopicSettings(normalized="t", dlq="t")


def test_settings_field_map_maps_canonical_names():
    """payload_fields resolves every canonical field through the mapping."""
    settings = PipelineSettings(field_map={"value": "v", "ts": "timestamp"})
    assert settings.payload_fields == {
        "metric": "metric",
        "value": "v",
        "ts": "timestamp",
        "quality": "quality",
        "unit": "unit",
        "tags": "tags",
    }


def test_settings_field_map_unknown_canonical_name_is_rejected():
    """Only reading fields can be mapped."""
    with pytest.raises(ValidationError, match="field_map"):
        PipelineSettings.model_validate({"field_map": {"temperature": "t"}})


def test_settings_field_map_two_fields_from_one_payload_field_is_rejected():
    """Two reading fields cannot read the same payload field."""
    with pytest.raises(ValidationError, match=r"payload field\(s\) \['ts'\]"):
        PipelineSettings(field_map={"value": "ts"})


@pytest.mark.parametrize(
    "data",
    [
        {"min_quality": 256},
        {"min_quality": -1},
        {"max_payload_bytes": 0},
        {"max_future_skew_secs": -1},
        {"min_timestamp": "2000-01-01T00:00:00"},
        {"low_quality_action": "log"},
        {"unknown_fields": "keep"},
        {"missing_ts": "now"},
    ],
)
def test_settings_out_of_range_values_are_rejected(data):
    """Bad values fail at load, not at the first message."""
    with pytest.raises(ValidationError):
        PipelineSettings.model_validate(data)
