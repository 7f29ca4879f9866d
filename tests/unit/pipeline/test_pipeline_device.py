from __future__ import annotations

import json

import pytest

from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from agent.pipeline._cache import TOPIC_CACHE_ENTRIES, TOPIC_CACHE_MAX_CHARS, TopicCache
from agent.pipeline._device import parse_template
from tests.unit.pipeline.conftest import message

TEMPLATE = {"topic_template": "plant/{site}/{device_id}/{metric}", "json_field": None}
READING = {"metric": "temperature", "value": 21.5}


def _body(result):
    return json.loads(result.records[-1].value)


def test_device_template_compiles_to_one_level_per_placeholder():
    """A placeholder matches exactly one non-empty level; literal levels match exactly."""
    template = parse_template("plant/{site}/{device_id}/{metric}")
    assert template.has_metric
    match = template.pattern.fullmatch("plant/berlin/press-1/temp")
    assert match is not None
    assert match.groupdict() == {"site": "berlin", "device_id": "press-1", "metric": "temp"}
    for topic in ("plant/berlin/press-1", "plant/berlin/press-1/temp/x", "plant//press-1/temp"):
        assert template.pattern.fullmatch(topic) is None, topic


def test_device_template_literal_levels_are_not_regular_expressions():
    """Regex metacharacters in literal levels match only themselves."""
    template = parse_template("a.b/(x)/{device_id}")
    assert template.pattern.fullmatch("a.b/(x)/d1") is not None
    assert template.pattern.fullmatch("aXb/(x)/d1") is None
    assert not template.has_metric


def test_device_template_supports_empty_literal_levels():
    """A leading slash is an empty literal level, as in MQTT."""
    template = parse_template("/site/{device_id}")
    assert template.pattern.fullmatch("/site/d1") is not None
    assert template.pattern.fullmatch("site/d1") is None


def test_device_from_template_keys_the_record(run):
    """The template's {device_id} level is the device id and the record key."""
    result = run(READING, topic="plant/berlin/press-1/ignored", device_id=TEMPLATE)
    assert result.outcome is Outcome.VALID
    assert result.device_id == "press-1"
    assert result.records[-1].key == b"press-1"
    assert _body(result)["device_id"] == "press-1"


def test_device_template_metric_used_when_payload_has_none(run):
    """{metric} supplies the metric only when the payload has none."""
    from_topic = run({"value": 1}, topic="plant/berlin/press-1/pressure", device_id=TEMPLATE)
    assert _body(from_topic)["metric"] == "pressure"
    from_payload = run(READING, topic="plant/berlin/press-1/pressure", device_id=TEMPLATE)
    assert _body(from_payload)["metric"] == "temperature"


def test_device_template_without_metric_needs_payload_metric(run):
    """Without {metric} in the template a payload without metric is missing_field."""
    result = run({"value": 1}, topic="a/d1", device_id={"topic_template": "a/{device_id}"})
    assert result.reason is Reason.MISSING_FIELD


def test_device_template_no_match_is_no_device_id(run):
    """A topic that does not match the template, with no JSON field configured, is rejected."""
    result = run(READING, topic="other/press-1", device_id=TEMPLATE)
    assert result.outcome is Outcome.REJECTED
    assert result.reason is Reason.NO_DEVICE_ID
    assert result.records[0].key is None


def test_device_template_invalid_level_is_bad_device_id(run):
    """A device id level with a control character is rejected, not used as a key."""
    result = run(READING, topic="plant/berlin/press\x01/t", device_id=TEMPLATE)
    assert result.reason is Reason.BAD_DEVICE_ID
    assert result.device_id is None
    assert result.records[0].key is None


def test_device_template_invalid_metric_level_is_invalid_value(run):
    """A metric level with a control character is rejected."""
    result = run({"value": 1}, topic="plant/berlin/press-1/t\x7f", device_id=TEMPLATE)
    assert result.reason is Reason.INVALID_VALUE
    assert result.detail == "the metric in the topic contains a control character"


def test_device_from_json_field(run):
    """The default source is the payload's device_id field."""
    result = run({"device_id": "d-7", **READING})
    assert result.device_id == "d-7"
    assert result.records[-1].key == b"d-7"


def test_device_from_dotted_json_field(run):
    """A dotted path reads the device id from nested objects."""
    payload = {"meta": {"device": {"id": "d-9"}}, **READING}
    result = run(payload, device_id={"json_field": "meta.device.id"})
    assert result.device_id == "d-9"


@pytest.mark.parametrize(
    "payload",
    [{"meta": "d-9"}, {"meta": {"device": None}}, {"meta": {}}, {"meta": [1]}, {}],
)
def test_device_dotted_json_field_missing_is_no_device_id(run, payload):
    """A path that does not lead to a value is no_device_id."""
    result = run({**payload, **READING}, device_id={"json_field": "meta.device.id"})
    assert result.reason is Reason.NO_DEVICE_ID


def test_device_template_first_then_json_field(run):
    """With both sources the template wins; the field is used when the topic does not match."""
    both = {"topic_template": "plant/{site}/{device_id}/{metric}", "json_field": "id"}
    payload = {"id": "from-payload", **READING}
    matched = run(payload, topic="plant/berlin/from-topic/t", device_id=both)
    assert matched.device_id == "from-topic"
    unmatched = run(payload, topic="elsewhere", device_id=both)
    assert unmatched.device_id == "from-payload"


def test_device_invalid_template_id_is_not_replaced_by_field(run):
    """An invalid device id found by the template is rejected, not silently replaced."""
    both = {"topic_template": "plant/{site}/{device_id}/{metric}", "json_field": "id"}
    result = run({"id": "ok", **READING}, topic="plant/b/bad\x00id/t", device_id=both)
    assert result.reason is Reason.BAD_DEVICE_ID


def test_device_id_limits(run):
    """Device ids are at most 256 UTF-8 bytes; multi-byte characters count as bytes."""
    assert run({"device_id": "d" * 256, **READING}).outcome is Outcome.VALID
    assert run({"device_id": "é" * 128, **READING}).outcome is Outcome.VALID
    assert run({"device_id": "é" * 129, **READING}).reason is Reason.BAD_DEVICE_ID


@pytest.mark.parametrize("device_id", ["press 1", "Presse-Ü", "设备-1", "a/b", "😀"])
def test_device_id_printable_unicode_is_accepted(run, device_id):
    """Spaces, non-ASCII letters and emoji are fine in a device id."""
    result = run({"device_id": device_id, **READING})
    assert result.outcome is Outcome.VALID
    assert result.records[-1].key == device_id.encode()


@pytest.mark.parametrize("device_id", ["a\tb", "a\x00", "\x85x", "x\x9f"])
def test_device_id_control_characters_are_rejected(run, device_id):
    """C0 and C1 control characters are not allowed in a device id."""
    result = run({"device_id": device_id, **READING})
    assert result.reason is Reason.BAD_DEVICE_ID
    assert result.detail == "field 'device_id' contains a control character"


def test_device_topic_cache_is_bounded_in_entries_and_topic_length():
    """At most 4096 topics are kept, oldest out first; a topic over 256 characters is not kept."""
    cache: TopicCache[int] = TopicCache()
    for i in range(TOPIC_CACHE_ENTRIES + 10):
        assert cache.remember(f"plant/d{i}/t", i) == i
    assert len(cache) == TOPIC_CACHE_ENTRIES
    assert "plant/d9/t" not in cache
    assert cache["plant/d10/t"] == 10
    long_topic = "x" * (TOPIC_CACHE_MAX_CHARS + 1)
    assert cache.remember(long_topic, 1) == 1
    assert long_topic not in cache


def test_device_template_results_are_the_same_from_the_topic_cache():
    """A topic seen before (cached) ends exactly as it did the first time."""
    pipeline = Pipeline(PipelineSettings.model_validate({"device_id": TEMPLATE}), "gw")
    topics = ["plant/berlin/press-1/pressure", "plant/berlin/\x01/pressure", "other/topic"]
    first = [pipeline.process(message({"value": 1}, topic)) for topic in topics]
    again = [pipeline.process(message({"value": 1}, topic)) for topic in topics]
    assert [(r.outcome, r.reason, r.device_id, r.detail) for r in first] == [
        (r.outcome, r.reason, r.device_id, r.detail) for r in again
    ]
    assert [r.reason for r in first] == [None, Reason.BAD_DEVICE_ID, Reason.NO_DEVICE_ID]
