"""Bad input with the real agent: every malformed payload lands in the DLQ with its reason.

The corpus (tests/fixtures/bad_payloads.py) and a hypothesis-generated set of payloads are
published; the expected outcome of each is computed by the same pipeline in-process, and the
test checks that Kafka holds exactly that: valid → normalized, rejected → DLQ with the reason
header and the original bytes, dropped → counted. The agent must keep running throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import aiomqtt
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings
from tests.fixtures.bad_payloads import BAD_PAYLOADS
from tests.infra import KafkaCluster, Mosquitto
from tests.support.kafka import consume_all, create_topic


def _generated_payloads() -> list[bytes]:
    """Payloads from hypothesis: raw bytes, text, and JSON objects with odd field values."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=6,
    )
    reading_like = st.fixed_dictionaries(
        {"device_id": st.text(max_size=12) | st.integers(), "value": json_values},
        optional={"ts": json_values, "metric": json_values, "quality": json_values},
    )
    payloads = (
        st.binary(max_size=300)
        | st.text(max_size=200).map(str.encode)
        | reading_like.map(lambda d: json.dumps(d, allow_nan=True).encode())
    )
    out: list[bytes] = []

    @settings(
        max_examples=300,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(payloads)
    def collect(payload: bytes) -> None:
        out.append(payload)

    collect()
    return out


async def test_dead_letter_every_bad_payload_lands_in_the_dlq_with_its_reason(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Corpus + generated payloads: outcome per message (one topic each) matches the pipeline;
    counts add up; every message id is distinct.
    """
    pipeline_cfg = {"device_id": {"topic_template": None, "json_field": "device_id"}}
    agent = agent_factory(pipeline=pipeline_cfg)
    cfg = agent.config()["pipeline"]
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)

    reference = Pipeline(PipelineSettings.model_validate(cfg), "gw-test")
    messages = [
        (f"{agent.topic_prefix}/corpus/{i}", payload)
        for i, (_, _, payload, _) in enumerate(BAD_PAYLOADS)
    ]
    messages += [(f"{agent.topic_prefix}/gen/{i}", p) for i, p in enumerate(_generated_payloads())]
    expected: dict[bytes, tuple[Outcome, str | None]] = {}  # by source topic
    for topic, payload in messages:
        processed = reference.process(ReceivedMessage(topic, payload, 1, False, _now_ms()))
        reason = None if processed.reason is None else str(processed.reason)
        expected[topic.encode()] = (processed.outcome, reason)
    corpus_topics = {t.encode() for t, _ in messages[: len(BAD_PAYLOADS)]}
    assert all(expected[t][0] is not Outcome.VALID for t in corpus_topics)

    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)

    n_valid = sum(1 for o, _ in expected.values() if o is Outcome.VALID)
    n_rejected = sum(1 for o, _ in expected.values() if o is Outcome.REJECTED)
    n_dropped = sum(1 for o, _ in expected.values() if o is Outcome.DROPPED)
    dlq = await consume_all(kafka.bootstrap_servers, agent.topics.dlq, expected=n_rejected)
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=n_valid, settle_s=2
    )
    assert len(dlq) == n_rejected
    assert len(normalized) == n_valid
    assert n_valid + n_rejected + n_dropped == len(messages)
    payload_by_topic = {t.encode(): p for t, p in messages}
    keep = PipelineSettings().dlq_max_payload_bytes
    for rec in dlq:
        topic = rec.headers["source-topic"]
        outcome, reason = expected[topic]
        assert outcome is Outcome.REJECTED
        assert rec.headers["dlq-reason"].decode() == reason
        assert rec.headers["dlq-detail"]
        payload = payload_by_topic[topic]
        assert rec.value == payload[:keep]  # the original bytes, untouched up to 64 KiB
        if len(payload) > keep:
            assert rec.headers["original-size"] == str(len(payload)).encode()
            assert rec.headers["payload-sha256"] == hashlib.sha256(payload).hexdigest().encode()
    for rec in normalized:
        assert expected[rec.headers["source-topic"]][0] is Outcome.VALID
    ids = [rec.headers["message-id"] for rec in [*dlq, *normalized]]
    assert len(set(ids)) == len(ids)
    assert agent.proc is not None
    assert agent.proc.poll() is None, "the agent died on bad input"
    assert await asyncio.to_thread(agent.terminate) == 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
