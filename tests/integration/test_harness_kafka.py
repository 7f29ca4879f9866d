"""The harness's single-node Apache Kafka is real: idempotent, acks=all, zstd, SASL."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from tests.infra import KafkaCluster
from tests.infra._kafka import SASL_PASSWORD, SASL_USER
from tests.support.kafka import Consumed, consume_all, create_topic


async def test_kafka_idempotent_zstd_records_round_trip_with_key_and_headers(
    kafka: KafkaCluster, unique_name: str
):
    """Records produced idempotently (acks=all, zstd) come back with key, value and headers."""
    topic = f"t-{unique_name}"
    await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        compression_type="zstd",
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value=f"v{i}".encode(),
                key=f"dev-{i % 7}".encode(),
                headers=[("message-id", f"{i:08d}".encode()), ("source-topic", b"plant/x")],
            )
            for i in range(300)
        ]
        for fut in futures:
            await fut
    finally:
        await producer.stop()
    got = await consume_all(kafka.bootstrap_servers, topic, expected=300)
    assert len(got) == 300
    assert {r.headers["message-id"] for r in got} == {f"{i:08d}".encode() for i in range(300)}
    for rec in got:
        i = int(rec.headers["message-id"])
        assert rec.key == f"dev-{i % 7}".encode()
        assert rec.value == f"v{i}".encode()
        assert rec.headers["source-topic"] == b"plant/x"
    # One key always lands on one partition, in the order it was sent.
    by_key: dict[bytes | None, list[Consumed]] = {}
    for rec in sorted(got, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(rec.key, []).append(rec)
    for recs in by_key.values():
        assert len({r.partition for r in recs}) == 1
        ids = [int(r.headers["message-id"]) for r in recs]
        assert ids == sorted(ids)


async def test_kafka_sasl_plain_and_scram_listeners_accept_the_test_user(
    kafka: KafkaCluster, unique_name: str
):
    """The SASL_PLAINTEXT listener authenticates with PLAIN and SCRAM-SHA-512."""
    topic = f"t-{unique_name}"
    await create_topic(kafka.bootstrap_servers, topic, partitions=1)
    for mechanism in ("PLAIN", "SCRAM-SHA-512"):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.sasl_bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username=SASL_USER,
            sasl_plain_password=SASL_PASSWORD,
            enable_idempotence=True,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, mechanism.encode(), key=b"k")
        finally:
            await producer.stop()
    got = await consume_all(kafka.bootstrap_servers, topic, expected=2)
    assert sorted(r.value for r in got) == [b"PLAIN", b"SCRAM-SHA-512"]
