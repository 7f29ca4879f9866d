"""A ConfigMap volume swapped by kubelet while the agent forwards under load.

The agent reads ``--config <volume>/agent.yaml`` and watches the volume directory. The test
reproduces kubelet's atomic ``..data`` swap exactly (tests/support/kubelet.py).
"""

from __future__ import annotations

import asyncio
import json

import yaml

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.support.agent import AgentProcess
from tests.support.delivery import check_delivery
from tests.support.kafka import consume_all, create_topic
from tests.support.kubelet import KubeletVolume
from tests.support.wait import wait_for


async def test_remote_config_swap_applies_the_new_topic_map_under_load_and_loses_nothing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, tmp_path
):
    """A valid swap moves new readings to the new topic, none lost or duplicated; an invalid
    swap is rejected with the field named and the running configuration stays.
    """
    volume = KubeletVolume(tmp_path / "configmap")
    agent: AgentProcess = agent_factory()
    renamed = f"{agent.topics.normalized}-v2"
    for topic in (*vars(agent.topics).values(), renamed):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    config = agent.config()
    config["remote_config"] = {
        "mode": "directory",
        "directory": str(volume.directory),
        "debounce_secs": 0.2,
        "poll_interval_secs": 2,
    }
    volume.write({"agent.yaml": yaml.safe_dump(config)})
    agent.config_path_override = volume.directory / "agent.yaml"
    await asyncio.to_thread(agent.start)

    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=20,
            messages_per_device=600,
            rate_per_device_hz=30,
        )
    )
    async with asyncio.TaskGroup() as tg:
        publishing = tg.create_task(sim.run())
        await wait_for(lambda: sim.published > 3000, 30, "publishing")
        new = json.loads(json.dumps(config))
        new["pipeline"]["topics"]["normalized"] = renamed
        volume.write({"agent.yaml": yaml.safe_dump(new)})
        await asyncio.to_thread(agent.wait_for_log, "Configuration applied.", 30)
        await wait_for(lambda: sim.published > 7000, 30, "more publishing")
        bad = json.loads(json.dumps(new))
        bad["ingest"] = {"commit_interval_ms": -5}
        volume.write({"agent.yaml": yaml.safe_dump(bad)})
        await asyncio.to_thread(agent.wait_for_log, "Configuration rejected", 30)
        await publishing

    total = 20 * 600
    # How many readings went to the old topic is only known once the agent forwarded all: a
    # quiet moment on the old topic is not proof (its backlog may still be in the spool).
    await wait_for(lambda: _progress(agent.log_text()) == (total, 0), 120, "the spool to drain")
    old = await consume_all(
        kafka.bootstrap_servers, agent.topics.normalized, expected=1, settle_s=2
    )
    moved = await consume_all(kafka.bootstrap_servers, renamed, expected=total - len(old))
    report = check_delivery([*old, *moved], {device_name(i): 600 for i in range(20)})
    assert report.lost == 0, report.summary()
    assert report.duplicates == 0, report.summary()  # one configuration per message
    assert len(old) > 0
    assert len(moved) > 0
    last = {(json.loads(r.value)["device_id"], json.loads(r.value)["tags"]["seq"]) for r in moved}
    assert (device_name(0), "599") in last  # after the bad swap, the new map is still in force
    log = agent.log_text()
    assert "ingest.commit_interval_ms" in log.split("Configuration rejected", 1)[1]
    assert await asyncio.to_thread(agent.terminate) == 0


def _progress(log: str) -> tuple[int, int]:
    """(received, spool_records) of the last progress line, or (0, -1) before the first."""
    fields = {}
    for line in log.splitlines():
        if "Progress." in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    if not fields:
        return 0, -1
    return int(fields["received"]), int(fields["spool_records"])
