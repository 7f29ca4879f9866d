"""Issue 9, point 10: SIGTERM with Kafka down and the spool full ends within the drain timeout.

Kafka timeouts are the production defaults here (request 30 s, acks 10 s), not the harness's
short ones, because the unbounded steps the issue found (``lifecycle.flush`` on a full spool,
``sink.close()`` waiting for an absent cluster) scale with them. The agent must exit within
``drain_timeout_secs`` + 5 s, measured on one monotonic clock from just before the signal to
the exit.

"Full" is made exact: once the spool holds a good part of its limit, the limit is lowered
below what it holds by a live reload (``spool.max_size_bytes`` applies live), so no append of
any size fits, the lifecycle events of the shutdown included, whatever the last gap was.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import yaml

from agent.simulate import SimulationSettings, Simulator
from tests.infra import KafkaCluster, Mosquitto
from tests.support.hardening import wait_metrics
from tests.support.kafka import create_topic

DRAIN_TIMEOUT_S = 10
GRACE_S = 5
SPOOL_MAX_BYTES = 300_000
SPOOL_SHRUNK_BYTES = 20_000


async def test_hardening_sigterm_with_kafka_down_and_spool_full_exits_within_drain_timeout(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster
):
    """Exit (code 0) within drain_timeout_secs + 5 s of SIGTERM, Kafka down and spool full."""
    agent = agent_factory(
        drain_timeout_secs=DRAIN_TIMEOUT_S,
        kafka={"request_timeout_secs": 30, "ack_timeout_secs": 10, "probe_interval_secs": 5},
        spool={"max_size_bytes": SPOOL_MAX_BYTES, "overflow_policy": "block"},
    )
    t = agent.topics
    for topic in (t.normalized, t.raw, t.dlq, t.lifecycle):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    await asyncio.to_thread(kafka.stop_node, 1)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=10,
            messages_per_device=300,
            rate_per_device_hz=0,
            # Random padding: the spool compresses its blocks; these ~700 kB of records that
            # do not compress are more than twice what it may hold.
            incompressible_padding=True,
        )
    )
    await sim.run()
    await wait_metrics(
        agent,
        lambda p: p.value("edge_agent_spool_bytes") >= 0.5 * SPOOL_MAX_BYTES,
        60,
        "a spool half full",
    )
    proc = agent.proc
    assert proc is not None
    agent.overrides["spool"]["max_size_bytes"] = SPOOL_SHRUNK_BYTES
    (agent.workdir / "agent.yaml").write_text(yaml.safe_dump(agent.config()))
    proc.send_signal(signal.SIGHUP)
    await wait_metrics(
        agent,
        lambda p: p.value("edge_agent_config_generation") >= 2,
        30,
        "the reload that shrinks the spool limit",
    )

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(proc.wait, DRAIN_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - started

    assert code is not None, f"no exit {took:.0f} s after SIGTERM:\n{agent.log_tail(15)}"
    assert took <= DRAIN_TIMEOUT_S + GRACE_S, (
        f"exit {took:.1f} s after SIGTERM, drain timeout {DRAIN_TIMEOUT_S} s:\n{agent.log_tail(15)}"
    )
    assert code == 0, f"exit code {code}:\n{agent.log_tail(15)}"
