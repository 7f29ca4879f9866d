"""The spool's limits with the real agent: each overflow policy, expiry of nothing, corruption.

The uplink is cut by pointing the agent at a port held bound, without listening, for the test
(``unreachable_kafka``): no other process can start listening there meanwhile. The agent is then
restarted with the real Kafka, and what arrives is compared with what was published and what
the agent said it dropped.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

from agent.model import Record
from agent.simulate import SimulationSettings, Simulator, device_name, reading
from agent.spool._format import decode_block, encode_block
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.delivery import check_delivery
from tests.support.kafka import consume_all, create_topic

DEVICES = 10
PER_DEVICE = 200
TOTAL = DEVICES * PER_DEVICE
PAYLOAD_BYTES = 256


def _a_third_of_what_the_readings_take() -> int:
    """A third of the spool bytes the TOTAL readings take, measured with the spool's encoder.

    The spool compresses its blocks, so a size fixed in bytes says little about how many
    readings fit. The readings are padded with random bytes (``incompressible_padding``), so
    what they take hardly depends on how the agent groups them into blocks: here each is
    encoded twice (the agent spools the raw and the normalized record, which carries the same
    padding) into one block, which compresses at least as well as the agent's smaller blocks
    with their headers: the readings take more than this, and the spool is a third of it.
    """
    records: list[Record] = []
    for seq in range(PER_DEVICE):
        for d in range(DEVICES):
            key = device_name(d).encode()
            payload = reading(device_name(d), seq, PAYLOAD_BYTES, incompressible=True)
            records += [
                Record("raw", key, payload, (), 0),
                Record("normalized", key, payload, (), 0),
            ]
    return len(encode_block(records, created_at_ms=0)) // 3


SMALL_SPOOL_BYTES = _a_third_of_what_the_readings_take()


def _offline(policy: str, bootstrap: str, **extra: object) -> dict[str, object]:
    # Lifecycle events off: only telemetry is spooled, so dropped records count readings
    # exactly (the drops are still logged and counted; lifecycle tests cover the events).
    return {
        "lifecycle": {"enabled": False},
        "drain_timeout_secs": 3,
        "kafka": {"bootstrap_servers": bootstrap},
        "spool": {"max_size_bytes": SMALL_SPOOL_BYTES, "overflow_policy": policy},
        **extra,
    }


async def _publish(mosquitto: Mosquitto, agent: AgentProcess) -> None:
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=DEVICES,
            messages_per_device=PER_DEVICE,
            rate_per_device_hz=200,
            payload_bytes=PAYLOAD_BYTES,
            incompressible_padding=True,
        )
    )
    await sim.run()


async def _go_online(agent: AgentProcess, kafka: KafkaCluster) -> None:
    """Stop the offline agent and start it again with the real Kafka."""
    assert await asyncio.to_thread(agent.terminate) == 0
    agent.overrides["kafka"] = {"bootstrap_servers": kafka.bootstrap_servers}
    await asyncio.to_thread(agent.start)


async def _setup(agent: AgentProcess, kafka: KafkaCluster) -> None:
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)


def _dropped(log: str, reason: str) -> int:
    pattern = re.compile(rf"Spool dropped records\..*reason={reason}\b.*records=(\d+)")
    return sum(int(m.group(1)) for m in pattern.finditer(log))


def _received(log: str) -> int:
    found = re.findall(r"Progress\..*received=(\d+)", log)
    return int(found[-1]) if found else 0


async def _wait_received(agent: AgentProcess, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _received(agent.log_text()) < count:
        assert time.monotonic() < deadline, f"agent received {_received(agent.log_text())}"
        await asyncio.sleep(0.2)


def _seqs(records) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for rec in records:
        reading = json.loads(rec.value)
        out.setdefault(reading["device_id"], []).append(int(reading["tags"]["seq"]))
    return out


async def test_spool_drop_newest_refuses_new_blocks_and_counts_exactly_what_is_missing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, unreachable_kafka: str
):
    """drop_newest: the oldest readings survive; dropped records = readings missing x 2."""
    agent = agent_factory(**_offline("drop_newest", unreachable_kafka))
    await _setup(agent, kafka)
    await _publish(mosquitto, agent)
    await _wait_received(agent, TOTAL)
    await _go_online(agent, kafka)
    dropped = _dropped(agent.log_text(), "spool_full_drop_newest")
    assert dropped > 0
    got = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=TOTAL - dropped // 2
    )
    assert len(got) + dropped // 2 == TOTAL  # every reading delivered or counted (raw + norm)
    seqs = _seqs(got)
    assert all(0 in s for s in seqs.values())  # the first readings were kept
    # The newest were refused. Not all of them by necessity: a group that does not fit is
    # refused, and a smaller later group (the stream's tail trickles in) may still fit.
    assert sum(PER_DEVICE - 1 in s for s in seqs.values()) < DEVICES


async def test_spool_drop_oldest_makes_room_and_counts_exactly_what_is_missing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, unreachable_kafka: str
):
    """drop_oldest: the newest readings survive; dropped records = readings missing x 2."""
    agent = agent_factory(**_offline("drop_oldest", unreachable_kafka))
    await _setup(agent, kafka)
    await _publish(mosquitto, agent)
    await _wait_received(agent, TOTAL)
    await _go_online(agent, kafka)
    dropped = _dropped(agent.log_text(), "spool_full_drop_oldest")
    assert dropped > 0
    got = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=TOTAL - dropped // 2
    )
    assert len(got) + dropped // 2 == TOTAL
    seqs = _seqs(got)
    assert all(PER_DEVICE - 1 in s for s in seqs.values())  # the newest were kept
    assert not any(0 in s for s in seqs.values())  # the oldest made room


async def test_spool_block_policy_stops_acking_so_the_broker_keeps_everything(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, unreachable_kafka: str
):
    """block: a full spool stops the acks, the broker holds the rest, and nothing is lost."""
    agent = agent_factory(**_offline("block", unreachable_kafka))
    await _setup(agent, kafka)
    await _publish(mosquitto, agent)
    await _go_online(agent, kafka)
    got = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=TOTAL, timeout_s=120
    )
    report = check_delivery(got, {device_name(i): PER_DEVICE for i in range(DEVICES)})
    assert report.lost == 0, report.summary()
    assert report.duplicates_with_new_id == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert "Spool dropped records" not in agent.log_text()


async def test_spool_corrupt_block_is_quarantined_and_the_rest_delivered(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, unreachable_kafka: str
):
    """A block damaged on disk is moved aside and reported; every other reading arrives."""
    agent = agent_factory(
        drain_timeout_secs=2,
        kafka={"bootstrap_servers": unreachable_kafka},
        ingest={"max_batch_messages": 50},
    )
    await _setup(agent, kafka)
    await _publish(mosquitto, agent)
    await _wait_received(agent, TOTAL)
    assert await asyncio.to_thread(agent.terminate) == 0

    db = sqlite3.connect(agent.spool_dir / "blocks" / "cache.db")
    rows = db.execute("SELECT key, value FROM Cache WHERE key >= 0 ORDER BY key").fetchall()
    assert len(rows) > 3
    victim_key, victim = rows[len(rows) // 2]
    _, records = decode_block(bytes(victim))
    lost = {
        (json.loads(r.value)["device_id"], int(json.loads(r.value)["tags"]["seq"]))
        for r in records
        if r.topic == agent.topics.normalized
    }
    damaged = bytearray(victim)
    damaged[len(damaged) // 2] ^= 0xFF
    db.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(damaged), victim_key))
    db.commit()
    db.close()

    agent.overrides["kafka"] = {"bootstrap_servers": kafka.bootstrap_servers}
    await asyncio.to_thread(agent.start)
    got = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=TOTAL - len(lost)
    )
    report = check_delivery(got, {device_name(i): PER_DEVICE for i in range(DEVICES)})
    missing = {(d, s) for d, seqs in report.missing.items() for s in seqs}
    assert missing == lost
    assert report.duplicates_with_new_id == 0
    assert "Spool quarantined a corrupt block." in agent.log_text()
    assert len(list((agent.spool_dir / "quarantine").iterdir())) == 1
    assert await asyncio.to_thread(agent.terminate) == 0
