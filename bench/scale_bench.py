"""Scale-out benchmark: one agent versus N agents sharded by MQTT topic filter, same load.

Why sharding by topic filter and not ``$share``: Mosquitto hands a shared subscription's
messages to its members round-robin, so one device's readings would be split across agents,
each with its own spool and its own Kafka producer, and their order in Kafka would depend on
which agent forwarded first. A device's topics must all reach one agent. Topic filters do that
when the topic tree has a level that splits the devices (a site, a line, a cell): agent ``i``
subscribes to ``plant/s<i>/#``. Each agent keeps the whole delivery contract on its own (ack
after its durable spool commit, per-device order, message ids); they share nothing but Kafka.

The load is the e2e bench's (C ``mosquitto_pub -l`` publishers, one device each, QoS 1,
~256-byte readings), published to ``plant/s<d % N>/dev-<d>/temperature``. Prints throughput
(first publish → last record readable in Kafka) and total CPU per message of the agents, once
with one agent subscribed to everything and once with N agents.

    .venv/bin/python bench/scale_bench.py                  # 1 agent vs 2 agents, 200k msgs
    .venv/bin/python bench/scale_bench.py --agents 4 --messages 400000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.simulate import reading
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale
from tests.support.kafka import create_topic

PARTITIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def count_records(bootstrap: str, topic: str, target: int, timeout_s: float) -> float:
    """Consume ``topic`` from the start until ``target`` records arrived; the monotonic time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        count = 0
        deadline = time.monotonic() + timeout_s
        while count < target:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {count}/{target} records reached {topic} in {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=100, max_records=20000)
            count += sum(len(msgs) for msgs in batch.values())
        return time.monotonic()
    finally:
        await consumer.stop()


@dataclass
class Result:
    """One run: how many agents, how fast, at what CPU."""

    agents: int
    messages: int
    elapsed_s: float
    cpu_s: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        """Messages per second end to end."""
        return self.messages / self.elapsed_s


class Run:
    """Starts N agents on disjoint shards of the topic tree and publishes the load."""

    def __init__(
        self, work: Path, mosquitto: Mosquitto, kafka: KafkaCluster, agents: int, shards: int
    ) -> None:
        self.work = work
        self.mosquitto = mosquitto
        self.kafka = kafka
        self.agents = agents
        self.shards = shards
        self.topic = f"scale.normalized.{agents}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def _config(self, index: int) -> dict[str, object]:
        if self.agents == 1:
            subscriptions = ["plant/#"]
        else:
            shards = range(index, self.shards, self.agents)
            subscriptions = [f"plant/s{s}/#" for s in shards]
        return {
            "gateway_id": f"scale-{self.agents}-{index}",
            "log_format": "text",
            "mqtt": {"port": self.mosquitto.port, "client_id": f"scale-{self.agents}-{index}",
                     "subscriptions": subscriptions},
            "kafka": {"bootstrap_servers": self.kafka.bootstrap_servers},
            "pipeline": {"device_id": {"topic_template": "plant/{shard}/{device_id}/{metric}"},
                         "topics": {"normalized": self.topic, "raw": "scale.raw",
                                    "dlq": "scale.dlq"}},
            "spool": {"directory": str(self.work / f"spool-{self.agents}-{index}"),
                      "durability": "fsync"},
            "http": {"port": 0, "listen_host": "127.0.0.1"},
        }  # fmt: skip

    async def start_agents(self) -> None:
        """Start every agent and wait until each one subscribed."""
        for index in range(self.agents):
            path = self.work / f"agent-{self.agents}-{index}.yaml"
            path.write_text(yaml.safe_dump(self._config(index)))
            log = self.work / f"agent-{self.agents}-{index}.log"
            command = [sys.executable, "-m", "agent", "run", "--config", str(path)]
            self.procs.append(
                subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + 60
        for index, proc in enumerate(self.procs):
            log = self.work / f"agent-{self.agents}-{index}.log"
            while "MQTT subscribed" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(log.read_text(errors="replace")[-3000:])
                await asyncio.sleep(0.05)

    def stop_agents(self) -> None:
        """Stop every agent (SIGTERM, then SIGKILL after 60 s)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def publish(self, devices: int, per_device: int, size: int) -> list[subprocess.Popen[bytes]]:
        """One ``mosquitto_pub -l`` per device, each fed from a pre-generated file."""
        procs = []
        for d in range(devices):
            path = self.work / f"dev-{d}.txt"
            if not path.exists():
                with path.open("wb") as fh:
                    for seq in range(per_device):
                        fh.write(reading(f"dev-{d:05d}", seq, size) + b"\n")
            topic = f"plant/s{d % self.shards}/dev-{d:05d}/temperature"
            command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mosquitto.port),
                       "-q", "1", "-M", "200", "-V", "mqttv5", "-t", topic, "-l"]  # fmt: skip
            procs.append(subprocess.Popen(command, stdin=path.open("rb")))
        return procs


async def measure(run: Run, args: argparse.Namespace) -> Result:
    """Start the agents, publish the load, wait until Kafka has all of it."""
    await create_topic(run.kafka.bootstrap_servers, run.topic, partitions=PARTITIONS)
    await run.start_agents()
    try:
        per_device = args.messages // args.devices
        total = per_device * args.devices
        cpu0 = sum(cpu_secs(p.pid) for p in run.procs)
        t0 = time.monotonic()
        pubs = run.publish(args.devices, per_device, args.payload_bytes)
        t_end = await count_records(run.kafka.bootstrap_servers, run.topic, total, 600)
        cpu = sum(cpu_secs(p.pid) for p in run.procs) - cpu0
        rss = max(peak_rss_mib(p.pid) for p in run.procs)
        for pub in pubs:
            pub.wait()
        return Result(run.agents, total, t_end - t0, cpu, rss)
    finally:
        run.stop_agents()


async def main() -> None:
    """Run the load through one agent, then through N sharded agents; print both."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2, help="agents in the sharded run")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--payload-bytes", type=int, default=256)
    args = parser.parse_args()
    if args.devices % args.agents:
        parser.error("--devices must be a multiple of --agents (equal shards)")

    reap_stale()
    work = Path(tempfile.mkdtemp(prefix="edge-agent-scale-"))
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    try:
        mosquitto.start()
        kafka.start()
        print(f"# scale-out: {args.messages} msgs, {args.devices} devices, "
              f"{args.payload_bytes} B, MQTT 5, QoS 1, fsync, {os.cpu_count()} cores; "
              f"1 agent vs {args.agents} agents sharded by topic filter")  # fmt: skip
        results = []
        for agents in (1, args.agents):
            print(f"running {agents} agent(s)...", flush=True)
            results.append(await measure(Run(work, mosquitto, kafka, agents, args.agents), args))
        base = results[0]
        print(f"{'agents':>6} {'msg/s':>9} {'scaling':>8} {'CPU us/msg':>11} {'peak RSS':>10}")
        for r in results:
            print(f"{r.agents:>6} {r.rate:>9.0f} {r.rate / base.rate:>7.2f}x "
                  f"{r.cpu_s * 1e6 / r.messages:>11.1f} {r.peak_rss_mib:>7.1f} MiB")  # fmt: skip
    finally:
        kafka.close()
        mosquitto.close()


if __name__ == "__main__":
    asyncio.run(main())
