"""Issue 9, point 1: oversized payloads in a stream of readings never jam the forwarder.

Three payloads far over ``pipeline.max_payload_bytes`` (1.5 MiB, 900 KiB, 200 KiB; random, so
compression cannot hide their size) are published among 3,000 normal readings. Each must end
in exactly one place an operator can find: the DLQ, bounded to the producer's request size with
``original-size``/``payload-sha256`` headers when cut, or a counted drop in
``edge_agent_records_settled_total`` (or the MQTT source's drop counter). Every normal reading
must arrive with its own message id, and the spool must be empty within a minute.

Mosquitto's harness config sets no ``message_size_limit``/``max_packet_size``, so the broker
takes the 1.5 MiB message (its default limit is the MQTT maximum, 256 MiB).
"""

from __future__ import annotations

import asyncio

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.support.delivery import check_delivery
from tests.support.hardening import (
    RESETS,
    SPOOL_RECORDS,
    big_payload,
    check_dlq_copy,
    counted_drops,
    publish_all,
    scrape,
    wait_metrics,
)
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

DEVICES = 10
PER_DEVICE = 300
READINGS = DEVICES * PER_DEVICE
BIG_SIZES = (1536 * 1024, 900 * 1024, 200 * 1024)
REQUEST_LIMIT = 1024 * 1024  # kafka.max_request_size_bytes, the agent's default


async def test_hardening_oversized_payloads_are_settled_and_the_stream_flows(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Every reading delivered in order; each big payload in the DLQ (bounded) or counted."""
    agent = agent_factory()
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=DEVICES,
            messages_per_device=PER_DEVICE,
            rate_per_device_hz=60,
        )
    )
    bigs = [
        (f"{agent.topic_prefix}/big-{i}/blob", big_payload(size, f"big-{i}"))
        for i, size in enumerate(BIG_SIZES)
    ]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sim.run())
        for i, big in enumerate(bigs):  # spread over the stream: readings before and after each
            await wait_for(lambda i=i: sim.published >= (i + 1) * READINGS // 4, 60, "readings")
            assert await publish_all(mosquitto.port, [big]) == 1
    assert sim.published == READINGS

    # The spool empties within a minute of the last message: nothing is stuck behind a big one.
    await wait_metrics(agent, lambda p: p.value(SPOOL_RECORDS) == 0, 60, "an empty spool")

    normalized = await consume_all(kafka.bootstrap_servers, t.normalized, expected=READINGS)
    report = check_delivery(normalized, {device_name(i): PER_DEVICE for i in range(DEVICES)})
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert not report.out_of_order_devices, report.summary()  # each device in publish order
    ids = {rec.headers["message-id"] for rec in normalized}
    assert len(ids) == READINGS, f"{len(ids)} distinct message ids for {READINGS} readings"

    dlq = await consume_all(kafka.bootstrap_servers, t.dlq, expected=len(bigs), timeout_s=15)
    checks = [check_dlq_copy(dlq, topic, payload, REQUEST_LIMIT) for topic, payload in bigs]
    assert all(not c.problems for c in checks), checks
    page = await scrape(agent)
    in_dlq = sum(1 for c in checks if c.found)
    dropped = counted_drops(page) + page.value("edge_agent_mqtt_messages_dropped_total")
    assert in_dlq + dropped == len(bigs), (
        f"{in_dlq} big payloads in the DLQ + {dropped} counted drops != {len(bigs)}: {checks}"
    )
    assert page.value(RESETS) == 0, "a record Kafka refused reset the producer"
    assert agent.running
    assert await asyncio.to_thread(agent.terminate) == 0
