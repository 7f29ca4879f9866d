"""Last wills against the real Mosquitto and Kafka: stored through the spool before their ack.

A device's last will is handed over by the broker once. The agent turns it into a
``device_offline`` record (reason ``last_will``) that is part of the group written to the spool
before the will is acknowledged, with the will's message id as its ``event_id``. So a will
survives a SIGKILL of the agent at any moment, and a copy (broker redelivery, spool replay)
carries the same event id: per device exactly one distinct event id.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict

import aiomqtt

from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.kafka import consume_all, create_topic

DEVICE = """
import sys, threading, time
import paho.mqtt.client as mqtt
port, client_id, will_topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
up = threading.Event()
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
client.on_connect = lambda *args: up.set()
client.will_set(will_topic, b"offline", qos=1)
client.connect("127.0.0.1", port, keepalive=60)
client.loop_start()
up.wait(30)
print("connected", flush=True)
time.sleep(3600)
"""


def _device(mosquitto: Mosquitto, agent: AgentProcess, name: str) -> subprocess.Popen[bytes]:
    will_topic = f"{agent.topic_prefix}/{name}/status"
    proc = subprocess.Popen(
        [sys.executable, "-c", DEVICE, str(mosquitto.port), f"{agent.name}-{name}", will_topic],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"connected\n"
    return proc


def _crash(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a device: the broker sees the connection drop and publishes its will."""
    proc.kill()
    proc.wait(10)


def _wait_for_log(agent: AgentProcess, text: str, timeout_s: float) -> None:
    """Poll the log every few ms (tighter than AgentProcess.wait_for_log)."""
    deadline = time.monotonic() + timeout_s
    while text not in agent.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, agent.log_tail()
        time.sleep(0.002)


async def _wait_for_wills(observer: aiomqtt.Client, names: set[str], timeout_s: float) -> None:
    """Until the broker has published the wills of all ``names`` (topic ``.../<name>/status``)."""
    seen: set[str] = set()
    async with asyncio.timeout(timeout_s):
        async for message in observer.messages:
            seen.add(str(message.topic).split("/")[-2])
            if names <= seen:
                return


async def test_last_will_survives_sigkill_of_the_agent_once_per_will_id(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Wills received just before a SIGKILL and wills queued while the agent is down all reach
    the lifecycle topic after the restart, each device's under exactly one event id.
    """
    agent = agent_factory()
    agent.overrides["lifecycle"] = {
        "topic": agent.topics.lifecycle,
        "last_will_topics": [f"{agent.topic_prefix}/+/status"],
        "rate_limit_burst": 1,  # the wills must not depend on the rate limit
        "rate_limit_per_min": 1,
    }
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    names = [f"dev-{i}" for i in range(10)]
    devices = {name: await asyncio.to_thread(_device, mosquitto, agent, name) for name in names}

    # An observer sees each will when the broker publishes it, so the test knows when the wills
    # of step 2 are queued in the agent's session (no fixed sleep).
    observer = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"{agent.name}-observer")
    async with observer:
        await observer.subscribe(f"{agent.topic_prefix}/+/status", qos=1)
        # 1. The agent is SIGKILLed right after it took in a will (it logs it before the
        #    commit); four more wills are on their way at that moment.
        await asyncio.to_thread(_crash, devices["dev-0"])
        await asyncio.to_thread(_wait_for_log, agent, "device_id=dev-0", 30)
        for name in names[1:5]:
            await asyncio.to_thread(_crash, devices[name])
        await asyncio.to_thread(agent.kill)
        # 2. Wills published while the agent is down wait in its broker session.
        for name in names[5:]:
            await asyncio.to_thread(_crash, devices[name])
        await _wait_for_wills(observer, set(names[5:]), 30)
    await asyncio.to_thread(agent.start)

    records = await consume_all(
        kafka.bootstrap_servers, t.lifecycle, expected=len(names) + 3, timeout_s=60, settle_s=3
    )
    assert await asyncio.to_thread(agent.terminate) == 0
    will_ids: dict[str, set[str]] = defaultdict(set)
    copies = 0
    for record in records:
        event = json.loads(record.value)
        if event["kind"] == "device_offline" and event["reason"] == "last_will":
            assert record.key == event["device_id"].encode()
            assert record.headers["message-id"].decode() == event["event_id"]
            copies += event["event_id"] in will_ids[event["device_id"]]
            will_ids[event["device_id"]].add(event["event_id"])
    print(f"{len(names)} wills, {copies} copies with a known event id")
    assert sorted(will_ids) == names, agent.log_tail()
    assert all(len(ids) == 1 for ids in will_ids.values()), dict(will_ids)
