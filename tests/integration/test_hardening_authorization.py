"""Issue 9, point 2: a topic that refuses the agent (ACLs) does not stop the other topics.

A Kafka of its own (module scope) runs KRaft's StandardAuthorizer. The agent connects over SASL
as ``User:edge`` and may write its telemetry and DLQ topics, but has no ACL at all on its
lifecycle topic, as when an operator forgot that one. Readings and DLQ records must still flow,
and the refused lifecycle events must be settled with reason ``topic_authorization_failed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto, producer_acls
from tests.infra._kafka import SASL_PASSWORD, SASL_PRINCIPAL, SASL_USER
from tests.support.agent import AgentProcess
from tests.support.delivery import check_delivery
from tests.support.hardening import RESETS, SETTLED, SPOOL_RECORDS, wait_metrics
from tests.support.kafka import consume_all, create_topic

DEVICES = 10
PER_DEVICE = 100
BAD_EVERY = 10  # every 10th message of a device is not JSON: 100 DLQ records


@pytest.fixture(scope="module")
def kafka_acl() -> Iterator[KafkaCluster]:
    """A single-node Kafka with the StandardAuthorizer (PLAINTEXT = super user)."""
    cluster = KafkaCluster.single(authorizer=True)
    cluster.start()
    yield cluster
    cluster.close()


def _sasl_producer(kafka: KafkaCluster) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=kafka.sasl_bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username=SASL_USER,
        sasl_plain_password=SASL_PASSWORD,
        enable_idempotence=True,
        request_timeout_ms=10_000,
    )


async def test_hardening_acl_refuses_the_agent_principal_only_where_no_acl_allows(
    kafka_acl: KafkaCluster, unique_name: str
):
    """User:edge writes the topic its ACLs name and gets TopicAuthorizationFailed on another."""
    allowed, refused = f"ok-{unique_name}", f"no-{unique_name}"
    for topic in (allowed, refused):
        await create_topic(kafka_acl.bootstrap_servers, topic, partitions=1)
    listed = await asyncio.to_thread(
        kafka_acl.create_acls, producer_acls(SASL_PRINCIPAL, [allowed])
    )
    assert f"name={allowed}" in listed
    assert f"name={refused}" not in listed
    producer = _sasl_producer(kafka_acl)
    await producer.start()
    try:
        meta = await producer.send_and_wait(allowed, b"allowed")
        assert meta.offset == 0
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait(refused, b"refused"), 30)
    finally:
        await producer.stop()


async def test_hardening_lifecycle_topic_refused_telemetry_and_dlq_still_flow(
    kafka_acl: KafkaCluster, mosquitto: Mosquitto, tmp_path: Path, unique_name: str
):
    """No ACL on the lifecycle topic: every reading and DLQ record arrives, refusals counted."""
    password = tmp_path / "kafka-password"
    password.write_text(SASL_PASSWORD + "\n")
    agent = AgentProcess(
        workdir=tmp_path / "agent",
        mosquitto=mosquitto,
        kafka=kafka_acl,
        name=unique_name,
        overrides={
            "kafka": {
                "bootstrap_servers": kafka_acl.sasl_bootstrap_servers,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": SASL_USER,
                "sasl_password_file": str(password),
            }
        },
    )
    t = agent.topics
    try:
        for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
            await create_topic(kafka_acl.bootstrap_servers, topic, partitions=3)
        await asyncio.to_thread(
            kafka_acl.create_acls, producer_acls(SASL_PRINCIPAL, [t.normalized, t.raw, t.dlq])
        )
        await asyncio.to_thread(agent.start)
        sim = Simulator(
            SimulationSettings(
                port=mosquitto.port,
                topic_prefix=agent.topic_prefix,
                devices=DEVICES,
                messages_per_device=PER_DEVICE,
                rate_per_device_hz=100,
                bad_every=BAD_EVERY,
            )
        )
        await sim.run()
        n_bad = DEVICES * (PER_DEVICE // BAD_EVERY)
        n_good = DEVICES * PER_DEVICE - n_bad
        normalized = await consume_all(
            kafka_acl.bootstrap_servers, t.normalized, expected=n_good, timeout_s=60
        )
        good_seqs = [s for s in range(PER_DEVICE) if s % BAD_EVERY != BAD_EVERY - 1]
        report = check_delivery(normalized, {device_name(i): PER_DEVICE for i in range(DEVICES)})
        lost = sum(1 for m in report.missing.values() for s in m if s in good_seqs)
        assert lost == 0, f"{lost} of {n_good} readings lost; {report.summary()}"
        assert report.duplicates_with_new_id == 0, report.summary()
        dlq = await consume_all(kafka_acl.bootstrap_servers, t.dlq, expected=n_bad, timeout_s=30)
        # The DLQ may also hold the refused lifecycle events (reason topic_authorization_failed).
        not_json = [r for r in dlq if r.headers.get("dlq-reason") == b"not_json"]
        assert len({r.headers["message-id"] for r in not_json}) == n_bad
        assert all(
            r.headers.get("dlq-reason") in (b"not_json", b"topic_authorization_failed") for r in dlq
        ), {r.headers.get("dlq-reason") for r in dlq}

        # The refused lifecycle events leave the spool, counted with their reason.
        page = await wait_metrics(
            agent, lambda p: p.value(SPOOL_RECORDS) == 0, 60, "an empty spool"
        )
        assert page.value(SETTLED, reason="topic_authorization_failed") >= 1
        assert page.value(RESETS) <= 5, f"{page.value(RESETS)} producer resets"
        assert agent.running
        lifecycle = await consume_all(
            kafka_acl.bootstrap_servers, t.lifecycle, expected=0, timeout_s=2
        )
        assert lifecycle == []  # the ACL really kept the agent out
        assert await asyncio.to_thread(agent.terminate) == 0
    finally:
        agent.close()
