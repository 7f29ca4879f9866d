"""Kafka helpers for tests: create topics, read a topic back completely."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


@dataclass(frozen=True)
class Consumed:
    """One record read back, with what tests assert on."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


async def create_topic(
    bootstrap: str,
    name: str,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create a topic and wait until its metadata is visible."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs=configs or {})]
        )
        deadline = time.monotonic() + 30
        while name not in await admin.list_topics():
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not visible after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def consume_all(
    bootstrap: str, topic: str, *, expected: int, timeout_s: float = 60.0, settle_s: float = 1.0
) -> list[Consumed]:
    """Read a topic from the beginning until ``expected`` records arrived and nothing more
    comes for ``settle_s`` (so surplus duplicates are seen too), or until ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Consumed] = []
    try:
        partitions = await _partitions(bootstrap, topic, timeout_s)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10000)
            got = [m for msgs in batch.values() for m in msgs]
            if got:
                quiet_since = time.monotonic()
            out.extend(
                Consumed(
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    key=m.key,
                    value=m.value,
                    headers={k: bytes(v) for k, v in m.headers},
                    timestamp_ms=m.timestamp,
                )
                for m in got
            )
            if len(out) >= expected and time.monotonic() - quiet_since >= settle_s:
                break
    finally:
        await consumer.stop()
    return out


async def _partitions(bootstrap: str, topic: str, timeout_s: float) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            (described,) = await admin.describe_topics([topic])
            parts = [p["partition"] for p in described.get("partitions", [])]
            if parts and described.get("error_code", 0) == 0:
                return sorted(parts)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no metadata for topic {topic}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
