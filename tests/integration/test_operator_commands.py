"""Operator commands against a real running agent: spool stats/inspect/export and status.

The agent runs against the real Mosquitto and Kafka of the harness. Kafka is stopped so the
readings spool; the commands then read the live spool directory (the agent holds it open) and
ask the running agent for its status; Kafka comes back and every message is counted in Kafka,
while ``spool stats`` keeps reading the spool the agent is draining. Reading must change nothing
for the agent: no lock taken, no row quarantined or deleted, every message delivered.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess, AgentTopics
from tests.support.delivery import check_delivery
from tests.support.kafka import consume_all, create_topic
from tests.support.wait import wait_for

FIRST_DEVICES = 4
FIRST_PER_DEVICE = 50
OUTAGE_DEVICES = 6
OUTAGE_PER_DEVICE = 150
OUTAGE_MESSAGES = OUTAGE_DEVICES * OUTAGE_PER_DEVICE


def _cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS`` in its own process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _status(agent: AgentProcess) -> dict:
    status, body = agent.http_get("/status")
    assert status == 200, body
    return json.loads(body)


def _publish(mosquitto: Mosquitto, agent: AgentProcess, devices: int, per_device: int, offset: int):
    return Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=devices,
            messages_per_device=per_device,
            rate_per_device_hz=0,
            device_offset=offset,
        )
    ).run()


async def test_operator_commands_read_a_live_spool_and_status_while_kafka_is_down(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, tmp_path: Path
):
    """Spool counts equal what was published; status says uplink down; everything is delivered."""
    agent = agent_factory(drain_timeout_secs=5)
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    url = f"http://127.0.0.1:{await asyncio.to_thread(agent.http_port)}"
    spool_dir = str(agent.spool_dir)

    # Uplink up: a first batch is delivered and the spool empties.
    await _publish(mosquitto, agent, FIRST_DEVICES, FIRST_PER_DEVICE, 0)
    first = FIRST_DEVICES * FIRST_PER_DEVICE
    await wait_for(
        lambda: (
            (s := _status(agent))["totals"]["mqtt_received"] == first and s["spool"]["records"] == 0
        ),
        60,
        "the first batch to be delivered",
    )
    result = await asyncio.to_thread(_cli, "status", "--url", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uplink: connected to kafka for" in result.stdout

    # Kafka down: the outage's readings spool.
    await asyncio.to_thread(kafka.stop_node, 1)
    try:
        await asyncio.to_thread(agent.wait_for_log, "Uplink to Kafka lost", 60)
        await _publish(mosquitto, agent, OUTAGE_DEVICES, OUTAGE_PER_DEVICE, FIRST_DEVICES)
        await wait_for(
            lambda: _status(agent)["totals"]["mqtt_received"] == first + OUTAGE_MESSAGES,
            60,
            "the outage's messages to be received",
        )
        await wait_for(
            lambda: _status(agent)["spool"]["records"] >= 2 * OUTAGE_MESSAGES,
            60,
            "the outage's records to be spooled",
        )

        await _check_spool_commands(spool_dir, t, tmp_path)
        await _check_status(url, first + OUTAGE_MESSAGES)
    finally:
        await asyncio.to_thread(kafka.start_node, 1)

    # Kafka back: the agent drains while `spool stats` keeps reading its spool.
    await asyncio.to_thread(agent.wait_for_log, "Uplink to Kafka restored", 120)
    await _read_until_drained(spool_dir)

    expected = {device_name(i): FIRST_PER_DEVICE for i in range(FIRST_DEVICES)}
    expected |= {device_name(FIRST_DEVICES + i): OUTAGE_PER_DEVICE for i in range(OUTAGE_DEVICES)}
    total = first + OUTAGE_MESSAGES
    normalized = await consume_all(kafka.bootstrap_servers, t.normalized, expected=total)
    report = check_delivery(normalized, expected)
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    raw = await consume_all(kafka.bootstrap_servers, t.raw, expected=total)
    assert {r.headers["message-id"] for r in raw} == {r.headers["message-id"] for r in normalized}
    document = await asyncio.to_thread(_status, agent)
    assert document["totals"]["spool_quarantined_blocks"] == 0
    assert document["totals"]["records_dropped"] == 0
    result = await asyncio.to_thread(_cli, "status", "--url", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert await asyncio.to_thread(agent.terminate) == 0


async def _check_spool_commands(spool_dir: str, t: AgentTopics, tmp_path: Path) -> None:
    """stats, inspect and export of the live spool: exactly the outage's readings."""
    # spool stats on the live directory: exactly the outage's readings, per topic.
    result = await asyncio.to_thread(
        _cli, "spool", "stats", "--spool-dir", spool_dir, "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["topics"][t.normalized]["records"] == OUTAGE_MESSAGES
    assert stats["topics"][t.raw]["records"] == OUTAGE_MESSAGES
    assert stats["records"] >= 2 * OUTAGE_MESSAGES
    assert stats["records"] == sum(v["records"] for v in stats["topics"].values())
    assert stats["quarantine"]["files"] == 0
    assert stats["unreadable_blocks"] == 0
    result = await asyncio.to_thread(_cli, "spool", "stats", "--spool-dir", spool_dir)
    assert result.returncode == 0, result.stderr
    assert f"{t.normalized}" in result.stdout
    assert "quarantine:  empty" in result.stdout

    # inspect: the blocks add up to the same records.
    result = await asyncio.to_thread(
        _cli, "spool", "inspect", "--spool-dir", spool_dir, "--limit", "0", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    inspection = json.loads(result.stdout)
    assert inspection["quarantine"] == []
    blocks = inspection["blocks"]
    assert sum(b["topics"].get(t.normalized, 0) for b in blocks) == OUTAGE_MESSAGES
    assert {b["state"] for b in blocks} == {"ok"}

    # export: every outage reading once, as JSON, with its message id.
    exported = tmp_path / "spool.jsonl"
    result = await asyncio.to_thread(
        _cli,
        "spool",
        "export",
        "--spool-dir",
        spool_dir,
        "--topic",
        t.normalized,
        "--output",
        str(exported),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == OUTAGE_MESSAGES
    readings = {(ln["value"]["device_id"], int(ln["value"]["tags"]["seq"])) for ln in lines}
    assert readings == {
        (device_name(FIRST_DEVICES + d), seq)
        for d in range(OUTAGE_DEVICES)
        for seq in range(OUTAGE_PER_DEVICE)
    }
    assert len({ln["message_id"] for ln in lines}) == OUTAGE_MESSAGES


async def _check_status(url: str, received: int) -> None:
    """status and top against the running agent: uplink down, the backlog in the spool."""
    # status: the running agent says the uplink is down and the spool holds the backlog.
    result = await asyncio.to_thread(_cli, "status", "--url", url, "--format", "json")
    assert result.returncode == 4, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["uplink"]["up"] is False
    assert document["healthy"] is True
    assert document["spool"]["records"] >= 2 * OUTAGE_MESSAGES
    assert document["spool"]["oldest_age_secs"] is not None
    assert document["totals"]["mqtt_received"] == received
    result = await asyncio.to_thread(_cli, "status", "--url", url)
    assert result.returncode == 4
    assert "uplink: DOWN" in result.stdout
    assert "spool:  " in result.stdout
    assert "records, " in result.stdout
    result = await asyncio.to_thread(
        _cli, "top", "--url", url, "--iterations", "2", "--interval-secs", "0.2"
    )
    assert result.returncode == 0
    assert result.stdout.count("uplink: DOWN") == 2
    assert "\x1b[" not in result.stdout  # piped: plain text


async def _read_until_drained(spool_dir: str) -> None:
    """Run `spool stats` over and over while the agent drains, until the spool is empty."""
    reads = 0
    deadline = time.monotonic() + 120
    while True:
        result = await asyncio.to_thread(
            _cli, "spool", "stats", "--spool-dir", spool_dir, "--format", "json"
        )
        assert result.returncode == 0, result.stderr
        reads += 1
        if json.loads(result.stdout)["records"] == 0:
            break
        assert time.monotonic() < deadline, "the spool never drained"
    assert reads >= 1
