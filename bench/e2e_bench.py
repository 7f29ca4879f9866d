"""End-to-end benchmark: publishers → Mosquitto → agent → Kafka, on this machine.

Prints sustained throughput, the agent's CPU per message, its peak RSS, end-to-end latency
(agent receive → record readable in Kafka), and — with ``--outage`` — the spool write rate while
Kafka is down and the drain rate when it comes back.

Publishers are ``mosquitto_pub -l -q 1`` processes (C, one per device, one topic each) fed from
pre-generated files, so the Python publisher does not compete with the agent for the CPU.

    .venv/bin/python bench/e2e_bench.py                     # 200k messages, defaults
    .venv/bin/python bench/e2e_bench.py --outage            # plus outage + drain
    .venv/bin/python bench/e2e_bench.py --protocol 3.1.1 --durability normal
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.simulate import reading
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale
from tests.support.kafka import create_topic

TOPIC = "bench.normalized"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (``/proc/PID/io`` write_bytes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def payload_bytes(files: list[Path]) -> int:
    """Payload bytes in the publishers' files (one payload per line)."""
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data) - data.count(b"\n")
    return total


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Counter:
    """Consumes the normalized topic, counting records and sampling latency."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.count = 0
        self.latencies_ms: list[float] = []

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(TOPIC, p) for p in range(3)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=20000)
                now_ms = time.time() * 1000
                for msgs in batch.values():
                    self.count += len(msgs)
                    for m in msgs[::50]:
                        received = int(dict(m.headers)["received-at"])
                        self.latencies_ms.append(now_ms - received)
        finally:
            await consumer.stop()


def write_payloads(
    workdir: Path, devices: int, per_device: int, size: int, start: int
) -> list[Path]:
    files = []
    for d in range(devices):
        path = workdir / f"dev-{d}.txt"
        with path.open("wb") as fh:
            for seq in range(start, start + per_device):
                fh.write(reading(f"dev-{d:05d}", seq, size) + b"\n")
        files.append(path)
    return files


def publish(
    mosquitto: Mosquitto, files: list[Path], protocol: str
) -> list[subprocess.Popen[bytes]]:
    version = "mqttv5" if protocol == "5" else "mqttv311"
    procs = []
    for d, path in enumerate(files):
        procs.append(
            subprocess.Popen(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                 "-M", "200", "-V", version, "-t", f"plant/bench/dev-{d:05d}/temperature", "-l"],
                stdin=path.open("rb"),
            )
        )  # fmt: skip
    return procs


async def wait_count(counter: Counter, target: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while counter.count < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {counter.count}/{target} records arrived in {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def main() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the outage is on purpose
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--durability", choices=["fsync", "normal"], default="fsync")
    parser.add_argument("--outage", action="store_true", help="also measure spooling and drain")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the agent (pip install py-spy)")
    args = parser.parse_args()

    reap_stale()
    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    agent: subprocess.Popen[bytes] | None = None
    try:
        mosquitto.start()
        kafka.start()
        await create_topic(kafka.bootstrap_servers, TOPIC, partitions=3)
        config = {
            "gateway_id": "bench",
            "log_format": "text",
            "report_interval_secs": 1,
            "mqtt": {"port": mosquitto.port, "client_id": "bench-agent",
                     "protocol": args.protocol, "subscriptions": ["plant/bench/#"]},
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "probe_interval_secs": 1,
                      "ack_timeout_secs": 3},
            "pipeline": {"device_id": {"topic_template": "plant/bench/{device_id}/{metric}"},
                         "topics": {"normalized": TOPIC, "raw": "bench.raw", "dlq": "bench.dlq"}},
            "spool": {"directory": str(work / "spool"), "durability": args.durability},
        }  # fmt: skip
        (work / "agent.yaml").write_text(yaml.safe_dump(config))
        log = (work / "agent.log").open("wb")
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(work / "agent.yaml")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "MQTT subscribed" not in (work / "agent.log").read_text():
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit((work / "agent.log").read_text()[-3000:])
            await asyncio.sleep(0.05)
        print(f"# edge-agent e2e benchmark: {args.messages} msgs, {args.devices} devices, "
              f"{args.payload_bytes} B payloads, MQTT {args.protocol}, QoS 1, "
              f"durability={args.durability}, {os.cpu_count()} cores")  # fmt: skip

        per_device = args.messages // args.devices
        total = per_device * args.devices
        files = write_payloads(work, args.devices, per_device, args.payload_bytes, 0)
        counter = Counter(kafka.bootstrap_servers)
        consuming = asyncio.create_task(counter.run())
        rss_base = rss_mib(agent.pid)
        cpu0 = cpu_secs(agent.pid)
        written0 = write_bytes(agent.pid)
        t0 = time.monotonic()
        pubs = publish(mosquitto, files, args.protocol)
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(agent.pid),
                 "-d", "12", "-r", "200", "-f", "raw", "-o", args.profile],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        t_end = await wait_count(counter, total, 600)
        if spy is not None:
            spy.wait()
        cpu = cpu_secs(agent.pid) - cpu0
        written = write_bytes(agent.pid) - written0
        for p in pubs:
            p.wait()
        elapsed = t_end - t0
        lat = sorted(counter.latencies_ms)
        print(f"throughput        {total / elapsed:10.0f} msg/s  ({total} in {elapsed:.1f} s)")
        print(f"agent CPU         {cpu * 1e6 / total:10.1f} us/msg  ({cpu:.1f} s CPU)")
        peak = rss_mib(agent.pid, "VmHWM")
        print(f"agent RSS         {rss_mib(agent.pid):10.1f} MiB now, {peak:.1f} MiB peak "
              f"(idle {rss_base:.1f})")  # fmt: skip
        p99 = lat[int(len(lat) * 0.99)]
        print(f"latency p50/p99   {statistics.median(lat):10.1f} / {p99:.1f} ms"
              " (agent receive -> readable in Kafka)")  # fmt: skip
        print(f"disk written      {written / payload_bytes(files):10.2f} B per payload byte "
              f"({written / 2**20:.1f} MiB, /proc/PID/io write_bytes)")  # fmt: skip

        if args.outage:
            await outage(args, work, mosquitto, kafka, counter, total, agent.pid)
        consuming.cancel()
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(60)
        kafka.close()
        mosquitto.close()


async def outage(args, work, mosquitto, kafka, counter, already, agent_pid) -> None:
    per_device = args.messages // args.devices
    total = per_device * args.devices
    files = write_payloads(work, args.devices, per_device, args.payload_bytes, per_device)
    await asyncio.to_thread(kafka.stop_node, 1)
    log = work / "agent.log"
    while "Uplink to Kafka lost" not in log.read_text():
        await asyncio.sleep(0.1)
    written0 = write_bytes(agent_pid)
    t0 = time.monotonic()
    pubs = publish(mosquitto, files, args.protocol)
    target = f"received={already + total}"
    while target not in log.read_text().split("Uplink to Kafka lost", 1)[1]:
        await asyncio.sleep(0.05)
    spooled = time.monotonic() - t0
    for p in pubs:
        p.wait()
    print(f"spool write       {total / spooled:10.0f} msg/s  while Kafka is down ({total} msgs)")
    t1 = time.monotonic()
    await asyncio.to_thread(kafka.start_node, 1)
    t_up = time.monotonic()
    t_end = await wait_count(counter, already + total, 600)
    drain = t_end - t_up
    print(f"drain             {total / drain:10.0f} msg/s  ({drain:.1f} s after Kafka was up; "
          f"broker restart took {t_up - t1:.1f} s)")  # fmt: skip
    print(f"drain / ingest    {total / drain / (total / spooled):10.1f} x")
    written = write_bytes(agent_pid) - written0
    print(f"disk written      {written / payload_bytes(files):10.2f} B per payload byte "
          "(outage + drain)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
