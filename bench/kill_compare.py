"""Durability on SIGKILL: what each system loses or duplicates, counted in Kafka.

The agent's kill test, run against the peers too. Every message carries a unique
(device, sequence number); after the run the whole Kafka topic is read back and compared with
what the publishers got acknowledged by Mosquitto (all of it: ``mosquitto_pub`` exits only after
its last PUBACK). Two scenarios per system, each with its own topics:

- ``mid-stream``: SIGKILL once a quarter of the messages is readable in Kafka, restart at once,
  keep publishing; a system that acknowledged messages it had not yet written loses them.
- ``kafka-down``: Kafka stopped, all messages published (the system holds what it took in
  memory, in its spool, or leaves it unacknowledged at the broker), SIGKILL, Kafka started, the
  system restarted.

Systems: ``telegraf`` (the fair configuration of bench/compare.py: persistent session, ack
after the Kafka write), ``telegraf-autoack`` (Telegraf's default: clean session, ack on
receipt), ``bridge`` (bench/peers/bridge.py) and ``agent`` (defaults: MQTT 5, fsync spool).
Lost = published minus distinct (device, seq) in Kafka; duplicates = records minus distinct.
It prints numbers; it asserts nothing (the agent's own kill tests under tests/ do).

    .venv/bin/python bench/kill_compare.py                     # all systems, ~2.5 min
    .venv/bin/python bench/kill_compare.py --systems telegraf,agent --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import (
    SYSTEM_CLASSES,
    Env,
    KafkaProbe,
    Publishers,
    System,
    build_telegraf,
    stop_on_sigterm,
    write_payloads,
)

from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import HARNESS_MARKER, reap_stale
from tests.support.kafka import create_topic

KILL_SYSTEMS = ("telegraf", "telegraf-autoack", "bridge", "agent")
KEY_RE = re.compile(rb'"device_id":"([^"]+)".*"seq":"(\d+)"')


async def settle(probe: KafkaProbe, target: int, quiet_s: float, timeout_s: float) -> int:
    """Wait until ``target`` records are readable and ``quiet_s`` passed with no new one (so
    duplicates arrive too), or until nothing new came for ``quiet_s`` after the publishers
    finished; give up after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = await probe.readable()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= (quiet_s if n >= target else 3 * quiet_s):
            break
        await asyncio.sleep(0.2)
    return last


async def count(bootstrap: str, topic: str, expected_records: int) -> tuple[int, int, int]:
    """(records, distinct (device, seq), distinct ``message-id`` headers) in the whole topic."""
    probe = KafkaProbe(bootstrap, topic)
    await probe.start()
    try:
        end = await probe.end_offsets()
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: set[tuple[bytes, bytes]] = set()
    ids: set[bytes] = set()
    records = 0
    try:
        consumer.assign(list(end))
        await consumer.seek_to_beginning(*end)
        deadline = time.monotonic() + 120
        while records < min(expected_records, sum(end.values())):
            if time.monotonic() > deadline:
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=20000)
            for msgs in batch.values():
                for m in msgs:
                    records += 1
                    match = KEY_RE.search(m.value)
                    if match:
                        seen.add((match.group(1), match.group(2)))
                    ids.update(v for k, v in m.headers if k == "message-id")
    finally:
        await consumer.stop()
    return records, len(seen), len(ids)


async def scenario(
    name: str, system: System, env: Env, files: list[Path], total: int, *, kafka_down: bool
) -> tuple[int, int]:
    """Run one kill scenario; returns (records in Kafka, distinct messages in Kafka)."""
    kafka = env.kafka
    await create_topic(kafka.bootstrap_servers, system.topic, partitions=3)
    probe = KafkaProbe(kafka.bootstrap_servers, system.topic)
    await probe.start()
    pubs = Publishers(env.mosquitto.port, system.prefix, env.args.devices)
    try:
        await asyncio.to_thread(system.prepare)
        await system.start()
        if kafka_down:
            await probe.stop()
            await asyncio.to_thread(kafka.stop_node, 1)
            pubs.start(files)
            await asyncio.to_thread(pubs.wait)
            await asyncio.sleep(env.args.hold_secs)  # let it take what it will from the broker
            system.kill()
            await asyncio.to_thread(kafka.start_node, 1)
            probe = KafkaProbe(kafka.bootstrap_servers, system.topic)
            await probe.start()
        else:
            pubs.start(files)
            await probe.wait_readable(total // 4, 120)
            system.kill()
        await system.start()
        await asyncio.to_thread(pubs.wait)
        await settle(probe, total, env.args.quiet_secs, 180)
    finally:
        pubs.kill()
        system.stop()
        await probe.stop()
    records, distinct, ids = await count(kafka.bootstrap_servers, system.topic, 2 * total)
    same_id = f" ({records - ids} repeat the first copy's message-id)" if ids else ""
    print(
        f"  {name:10s} {system.name:17s} published {total:7d}  in Kafka {records:7d}  "
        f"lost {total - distinct:7d}  duplicated {records - distinct:6d}{same_id}",
        flush=True,
    )
    return records, distinct


async def main() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the outage is on purpose
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(KILL_SYSTEMS))
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--hold-secs", type=float, default=3, help="kafka-down: wait before kill")
    parser.add_argument("--quiet-secs", type=float, default=3, help="settled: no new record for")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(KILL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(KILL_SYSTEMS)}")
    telegraf = build_telegraf() if any(s.startswith("telegraf") for s in systems) else None
    if telegraf is None:
        systems = [s for s in systems if not s.startswith("telegraf")]
    reap_stale()
    work = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-kill-"))
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    env = Env(work, mosquitto, kafka, args, telegraf)
    try:
        mosquitto.start()
        kafka.start()
        per_device = args.messages // args.devices
        total = per_device * args.devices
        files = write_payloads(work, args.devices, per_device, args.payload_bytes)
        print(f"# SIGKILL durability: {total} QoS 1 msgs per scenario from {args.devices} "
              f"mosquitto_pub, {os.cpu_count()} cores", flush=True)  # fmt: skip
        for name in systems:
            for kafka_down in (False, True):
                tag = "kd-" if kafka_down else "ms-"
                label = "kafka-down" if kafka_down else "mid-stream"
                system = SYSTEM_CLASSES[name](env, tag)
                await scenario(label, system, env, files, total, kafka_down=kafka_down)
    finally:
        kafka.close()
        mosquitto.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted; every process the bench started is stopped")
