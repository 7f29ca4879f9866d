"""End to end: simulator → Mosquitto → agent (a real process) → Kafka, counting every message.

Each test publishes readings with per-device sequence numbers and reads the normalized topic
back completely: nothing may be missing, each device's readings must be in order on one
partition, and a duplicate is only acceptable when it carries the message id already seen.
"""

from __future__ import annotations

import asyncio
import time

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.delivery import check_delivery
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

HEADERS = {"message-id", "source-topic", "gateway-id", "received-at", "schema-version"}


async def _create_topics(kafka: KafkaCluster, agent: AgentProcess) -> None:
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)


def _simulator(mosquitto: Mosquitto, agent: AgentProcess, **kw: float) -> Simulator:
    settings = SimulationSettings(
        port=mosquitto.port,
        topic_prefix=agent.topic_prefix,
        **kw,  # type: ignore[arg-type]
    )
    return Simulator(settings)


async def test_delivery_round_trip_every_valid_reading_once_in_device_order(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """200 devices x 100 readings: each exactly once (normalized and raw), keyed, with headers."""
    agent = agent_factory()
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = _simulator(mosquitto, agent, devices=200, messages_per_device=100, rate_per_device_hz=0)
    await sim.run()
    expected = {device_name(i): 100 for i in range(200)}

    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=20_000, timeout_s=120
    )
    report = check_delivery(normalized, expected)
    assert report.lost == 0, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert report.unexpected == 0, report.summary()
    for rec in normalized:
        assert rec.headers.keys() >= HEADERS
        assert rec.headers["gateway-id"] == b"gw-test"
        assert rec.headers["source-topic"].decode().startswith(agent.topic_prefix)

    raw = await consume_all(kafka.bootstrap_servers, agent.topics.raw, expected=20_000)
    assert len(raw) == 20_000
    assert {r.headers["message-id"] for r in raw} == {r.headers["message-id"] for r in normalized}
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_delivery_kafka_outage_of_30s_loses_nothing_and_drains(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Kafka down for 30 s while publishing goes on: the spool grows, drains, nothing is lost."""
    agent = agent_factory()
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = _simulator(mosquitto, agent, devices=50, messages_per_device=1000, rate_per_device_hz=20)
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        await wait_for(lambda: sim.published >= 3000, 30, "publishing to start")
        await asyncio.to_thread(kafka.stop_node, 1)
        outage_started = time.monotonic()
        await asyncio.to_thread(agent.wait_for_log, "Uplink to Kafka lost", 60)
        while time.monotonic() - outage_started < 30:
            await asyncio.sleep(1)  # the outage itself: Kafka stays down for 30 s
        published_during_outage = sim.published
        await asyncio.to_thread(kafka.start_node, 1)
        await asyncio.to_thread(agent.wait_for_log, "Uplink to Kafka restored", 120)
        await publishing
    assert published_during_outage < 50_000  # publishing went on after the outage too

    expected = {device_name(i): 1000 for i in range(50)}
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=50_000, timeout_s=180
    )
    report = check_delivery(normalized, expected)
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    depths = _spool_depths(agent.log_text())
    assert max(depths) > 5000, "the spool never held the outage's backlog"
    await wait_for(lambda: _spool_depths(agent.log_text())[-1] == 0, 60, "the spool to drain")
    print(f"outage: {report.summary()}; spool peaked at {max(depths)} records")
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_delivery_agent_killed_three_times_loses_nothing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """SIGKILL mid-stream, three times, restarting each time: no reading lost; duplicates only
    with a message id already seen (their number is reported).
    """
    agent = agent_factory()
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = _simulator(mosquitto, agent, devices=100, messages_per_device=400, rate_per_device_hz=40)
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        for round_ in range(1, 4):
            await wait_for(lambda r=round_: sim.published >= r * 9000, 60, "publishing")
            await asyncio.to_thread(agent.kill)
            await asyncio.to_thread(agent.start)
        await publishing
    expected = {device_name(i): 400 for i in range(100)}
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=40_000, timeout_s=180
    )
    report = check_delivery(normalized, expected)
    print(f"3 x SIGKILL: {report.summary()}")
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_delivery_mosquitto_restart_loses_nothing_the_broker_accepted(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Mosquitto restarted (persistence on) mid-stream: every acknowledged publish arrives."""
    agent = agent_factory()
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = _simulator(mosquitto, agent, devices=50, messages_per_device=300, rate_per_device_hz=30)
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        await wait_for(lambda: sim.published >= 4000, 60, "publishing")
        await asyncio.to_thread(mosquitto.restart)
        await publishing
    assert sim.reconnects > 0
    expected = sim.accepted_per_device
    normalized = await consume_all(
        kafka.bootstrap_servers,
        agent.topics.normalized,
        expected=sum(expected.values()),
        timeout_s=120,
    )
    report = check_delivery(normalized, expected)
    print(f"mosquitto restart: {report.summary()}")
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert await asyncio.to_thread(agent.terminate) == 0


async def test_delivery_sigterm_under_load_exits_0_and_restart_loses_nothing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """SIGTERM while readings flow: exit 0 within the drain timeout; after a restart all arrive."""
    agent = agent_factory(drain_timeout_secs=15)
    await _create_topics(kafka, agent)
    await asyncio.to_thread(agent.start)
    sim = _simulator(mosquitto, agent, devices=50, messages_per_device=300, rate_per_device_hz=50)
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        await wait_for(lambda: sim.published >= 5000, 60, "publishing")
        started = time.monotonic()
        code = await asyncio.to_thread(agent.terminate, 60)
        stop_secs = time.monotonic() - started
        assert code == 0
        assert stop_secs < 15 + 10  # the drain timeout plus process start-up/shut-down slack
        await asyncio.to_thread(agent.start)
        await publishing
    expected = {device_name(i): 300 for i in range(50)}
    normalized = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=15_000, timeout_s=120
    )
    report = check_delivery(normalized, expected)
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert "Agent stopped." in agent.log_text()
    assert await asyncio.to_thread(agent.terminate) == 0


def _spool_depths(log: str) -> list[int]:
    depths = [
        int(part.split("=", 1)[1])
        for line in log.splitlines()
        if "Progress." in line
        for part in line.split()
        if part.startswith("spool_records=")
    ]
    return depths or [0]
