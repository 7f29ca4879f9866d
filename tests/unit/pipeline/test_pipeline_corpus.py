from __future__ import annotations

import hashlib

import pytest

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason
from tests.fixtures.bad_payloads import BAD_PAYLOADS

RECEIVED_AT_MS = 1_700_000_000_000
PIPELINE = Pipeline(PipelineSettings(), "gw-1")


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        pytest.param(topic, payload, reason, id=desc)
        for desc, topic, payload, reason in BAD_PAYLOADS
    ],
)
def test_corpus_each_bad_payload_has_its_reason(topic, payload, reason):
    """Every malformed payload is REJECTED with its exact reason, kept byte for byte up to 64 KiB.

    Beyond ``dlq_max_payload_bytes`` (64 KiB) the record keeps the prefix, the original size and
    the payload's SHA-256.
    """
    result = PIPELINE.process(ReceivedMessage(topic, payload, 1, False, RECEIVED_AT_MS))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == reason
    (record,) = result.records
    keep = PipelineSettings().dlq_max_payload_bytes
    assert record.value == payload[:keep]
    headers = dict(record.headers)
    if len(payload) > keep:
        assert headers["original-size"] == str(len(payload)).encode()
        assert headers["payload-sha256"] == hashlib.sha256(payload).hexdigest().encode()
    assert headers["dlq-reason"] == reason.encode()
    assert headers["dlq-detail"] == str(result.detail).encode()


def test_corpus_covers_every_payload_reason():
    """The corpus has an example of every reason the default settings can produce."""
    settings_only = {
        Reason.UNKNOWN_FIELD,
        Reason.LOW_QUALITY,
        Reason.INTERNAL_ERROR,
        Reason.NO_READINGS,  # profiles only
        Reason.BAD_LINE_PROTOCOL,  # the influx_line profile only
        Reason.UNKNOWN_ALIAS,  # sparkplug_b only: tests/unit/pipeline/test_pipeline_sparkplug.py
        Reason.NOT_PROTOBUF,  # sparkplug_b only
    }
    assert {Reason(reason) for *_, reason in BAD_PAYLOADS} == set(Reason) - settings_only


def test_corpus_descriptions_are_unique():
    """Each entry has its own description (it is the test id)."""
    descriptions = [desc for desc, *_ in BAD_PAYLOADS]
    assert len(descriptions) == len(set(descriptions))
