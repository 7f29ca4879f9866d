"""Issue 9, point 2: the agent under a wall clock 2 h fast (libfaketime) keeps delivering.

Kafka 4 refuses record timestamps more than ``message.timestamp.after.max.ms`` (1 h) ahead of
its own clock. Under a gateway clock 2 h fast, everything the agent stamps itself (readings
without a device timestamp, DLQ records, lifecycle events) is such a record. Readings must
still arrive (with and without a device timestamp), the producer must not reset in a loop, the
non-JSON messages must end in the DLQ or be counted, and the skew must be reported
(``edge_agent_clock_ahead_of_kafka_seconds`` > 0, or a ``clock_skew_detected`` event).

The agent learns the skew from Kafka's first refusals; a reading refused for a timestamp too
far in the future is resent with a corrected one, never settled: every reading must be in the
normalized topic, none in the DLQ or dropped, and each device's readings in publish order.
"""

from __future__ import annotations

import asyncio
import time

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.support.delivery import check_delivery
from tests.support.faketime import clocks_of_child, faketime_env
from tests.support.hardening import (
    CLOCK_AHEAD,
    RESETS,
    SPOOL_RECORDS,
    dropped_in_log,
    lifecycle_kinds,
    publish_all,
    reading_without_ts,
    readings_in,
    scrape,
    wait_metrics,
)
from tests.support.kafka import consume_all, create_topic

OFFSET_S = 2 * 3600
DEVICES = 10
PER_DEVICE = 100  # per device, with a device timestamp (the simulator's) and without one
BAD = 5


def test_hardening_faketime_moves_the_wall_clock_of_the_child_only():
    """Under faketime_env('+2h') a child's time.time() is 2 h ahead, its monotonic clock real."""
    wall_before, mono_before = time.time_ns(), time.monotonic_ns()
    wall, mono = clocks_of_child(faketime_env("+2h"))
    wall_after, mono_after = time.time_ns(), time.monotonic_ns()
    assert mono_before <= mono <= mono_after  # CLOCK_MONOTONIC is system-wide: not shifted
    offset = OFFSET_S * 10**9
    slack = 5 * 10**9  # libfaketime reads the real clock at start; allow for a slow machine
    assert wall_before + offset - slack <= wall <= wall_after + offset + slack


async def test_hardening_clock_two_hours_fast_readings_flow_without_reset_loop(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """2 h fast: every reading arrives in order, bad ones DLQ'd or counted, skew reported."""
    agent = agent_factory()
    agent.faketime = f"+{OFFSET_S // 3600}h"
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    with_ts = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=DEVICES,
            messages_per_device=PER_DEVICE,
            rate_per_device_hz=100,
        )
    )
    no_ts_devices = [f"nots-{i:02d}" for i in range(DEVICES)]
    without_ts = [
        (f"{agent.topic_prefix}/{device}/temperature", reading_without_ts(device, seq))
        for seq in range(PER_DEVICE)
        for device in no_ts_devices
    ]
    bad = [(f"{agent.topic_prefix}/bad-{i}/temperature", b"not json %d" % i) for i in range(BAD)]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(with_ts.run())
        tg.create_task(publish_all(mosquitto.port, without_ts[:500] + bad + without_ts[500:]))

    expected = {device_name(i): PER_DEVICE for i in range(DEVICES)}
    expected |= dict.fromkeys(no_ts_devices, PER_DEVICE)
    total = DEVICES * PER_DEVICE * 2
    normalized = await consume_all(
        kafka.bootstrap_servers, t.normalized, expected=total, timeout_s=90, settle_s=3
    )
    report = check_delivery(normalized, expected)
    page = await scrape(agent)
    resets = page.value(RESETS)
    assert resets <= 5, f"{resets} producer resets: a reset loop; {report.summary()}"
    assert len(normalized) <= 2 * total, f"{len(normalized)} records for {total} readings"

    await wait_metrics(agent, lambda p: p.value(SPOOL_RECORDS) == 0, 60, "an empty spool")
    dlq = await consume_all(kafka.bootstrap_servers, t.dlq, expected=BAD, timeout_s=15)
    # A reading refused for its (future) timestamp is resent corrected: none settled.
    in_dlq_readings = sorted(readings_in(dlq))
    dropped_readings = dropped_in_log(agent.log_text(), t.normalized)
    missing = sorted((d, s) for d, seqs in report.missing.items() for s in seqs)
    assert not in_dlq_readings, f"readings in the DLQ: {in_dlq_readings[:10]}"
    assert dropped_readings == 0, f"{dropped_readings} readings logged as refused and dropped"
    assert not missing, f"{len(missing)} readings missing: {missing[:10]}; {report.summary()}"
    assert not report.out_of_order_devices, (
        f"readings out of publish order for {report.out_of_order_devices}; {report.summary()}"
    )

    # Every non-JSON message: in the DLQ, or a DLQ record counted as dropped (its timestamp).
    bad_topics = {topic.encode() for topic, _ in bad}
    in_dlq = {r.headers["source-topic"] for r in dlq} & bad_topics
    dropped = dropped_in_log(agent.log_text(), t.dlq)
    assert len(in_dlq) + dropped >= BAD, f"{len(in_dlq)} in the DLQ + {dropped} dropped < {BAD}"
    page = await scrape(agent)

    # The skew is reported: as a lower bound, never more than the real offset.
    ahead = page.value(CLOCK_AHEAD)
    if ahead == 0:
        events = await consume_all(kafka.bootstrap_servers, t.lifecycle, expected=1, timeout_s=15)
        assert "clock_skew_detected" in lifecycle_kinds(events), "skew reported nowhere"
    else:
        assert 0 < ahead <= OFFSET_S + 60
    assert agent.running
    assert await asyncio.to_thread(agent.terminate) == 0
