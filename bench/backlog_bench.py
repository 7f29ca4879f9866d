"""Backlog drain benchmark: the agent's memory and drain rate while a large spool empties.

Builds a spool holding ``--records`` records (default 10 million) of the shape the pipeline
writes (canonical JSON of ~``--value-bytes``, device id as key, message-id and received-at
headers) in blocks of ``--block-records``, through the spool's own insert path; then starts a
single-node Kafka, a Mosquitto and the agent on that spool, and samples the agent's RSS every
``--sample-secs`` until Kafka's end offsets say every record arrived. Prints the drain rate,
the RSS at the start, minimum, maximum and end of the drain, and a few samples in between.

    .venv/bin/python bench/backlog_bench.py                    # 10M records (~4.5 GB spool)
    .venv/bin/python bench/backlog_bench.py --records 1000000  # a quicker look

The issue's target: RSS flat within ± 10 MiB while a 10M-record backlog drains. The spool is
built in a temporary directory (under ``--directory`` if given) that is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.model import Record
from agent.spool import SpoolSettings
from agent.spool._format import encode_block
from agent.spool._store import EncodedBlock, Store
from bench.e2e_bench import rss_mib
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale
from tests.support.kafka import create_topic

TOPIC = "bench.backlog"
PARTITIONS = 3
_DISTINCT_BLOCKS = 64  # blocks are built once and stored many times: the agent cannot tell
_TRANSACTION_BLOCKS = 200


class _Quiet:
    def event(self, event: object) -> None:
        pass

    def data_added(self) -> None:
        pass

    def space_freed(self) -> None:
        pass


def make_block(index: int, records: int, value_bytes: int, now_ms: int) -> bytes:
    """One block of ``records`` readings from 1,000 devices, canonical-JSON shaped."""
    batch = []
    for i in range(records):
        n = index * records + i
        device = f"dev-{n % 1000:05d}"
        value = {
            "schema": 1,
            "device_id": device,
            "metric": "temperature",
            "value": 20.0 + (n % 100) / 10,
            "unit": "C",
            "ts": now_ms,
            "quality": "good",
            "received_at": now_ms,
            "gateway_id": "bench",
            "topic": f"plant/bench/{device}/temperature",
        }
        text = orjson.dumps(value)
        pad = max(0, value_bytes - len(text) - 12)
        value["tags"] = {"trace": os.urandom(pad // 2).hex()}  # half the entropy of random
        batch.append(
            Record(
                topic=TOPIC,
                key=device.encode(),
                value=orjson.dumps(value),
                headers=(
                    ("message-id", f"{n:032x}".encode()),
                    ("received-at", str(now_ms).encode()),
                ),
                timestamp_ms=now_ms,
            )
        )
    return encode_block(batch, now_ms)


def build(directory: Path, total: int, per_block: int, value_bytes: int) -> tuple[int, float]:
    """Fill the spool in ``directory``; return (bytes of blocks, seconds)."""
    settings = SpoolSettings(directory=directory, durability="normal", max_size_bytes=2**40)
    now_ms = int(time.time() * 1000)
    store = Store(settings, lambda: now_ms, lambda: 0)
    store.open(_Quiet())
    blocks = [make_block(i, per_block, value_bytes, now_ms) for i in range(_DISTINCT_BLOCKS)]
    count = total // per_block
    stored = 0
    start = time.perf_counter()
    try:
        for first in range(0, count, _TRANSACTION_BLOCKS):
            chunk = [
                EncodedBlock(blocks[i % _DISTINCT_BLOCKS], per_block, now_ms)
                for i in range(first, min(first + _TRANSACTION_BLOCKS, count))
            ]
            store.insert_many(chunk)
            stored += sum(len(block.data) for block in chunk)
            if (first // _TRANSACTION_BLOCKS) % 50 == 0:
                print(f"  building: {first * per_block:,}/{total:,} records", file=sys.stderr)
    finally:
        store.close()
    return stored, time.perf_counter() - start


async def delivered(consumer: AIOKafkaConsumer) -> int:
    parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    ends = await consumer.end_offsets(parts)
    return sum(ends.values())


Sample = tuple[float, float, int]  # seconds since start, RSS MiB, records delivered


async def watch_drain(
    agent: asyncio.subprocess.Process,
    consumer: AIOKafkaConsumer,
    total: int,
    args: argparse.Namespace,
    log: Path,
) -> tuple[float, float, float, list[Sample]]:
    """Sample RSS and progress until ``total`` records are in Kafka.

    Returns:
        The agent's start, the first record's and the last record's monotonic times, and
        the samples.
    """
    t0 = time.monotonic()
    samples: list[Sample] = []
    spy = None
    first_at = None
    done = 0
    while done < total:
        if agent.returncode is not None:
            raise SystemExit(log.read_text()[-3000:])
        await asyncio.sleep(args.sample_secs)
        done = await delivered(consumer)
        now = time.monotonic()
        if done and first_at is None:
            first_at = now
            if args.profile:
                spy = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                    str(agent.pid), "-d", "10", "-r", "200", "-f", "raw",
                    "-o", args.profile, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
        samples.append((now - t0, rss_mib(agent.pid), done))
        if len(samples) % round(10 / args.sample_secs) == 0:
            print(f"  {now - t0:6.0f} s  {done:>12,} delivered  "
                  f"RSS {samples[-1][1]:.1f} MiB", file=sys.stderr)  # fmt: skip
    t_end = time.monotonic()
    if spy is not None:
        await spy.wait()
    if first_at is None:
        raise SystemExit("no record arrived")
    return t0, first_at, t_end, samples


async def main() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--block-records", type=int, default=500, help="ingest.max_batch_messages")
    parser.add_argument("--value-bytes", type=int, default=400)
    parser.add_argument("--sample-secs", type=float, default=0.25)
    parser.add_argument("--directory", type=Path, help="where to build the spool (a temp dir)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an agent option for this run, as `edge-agent run --set` takes it (repeatable)",
    )  # fmt: skip
    parser.add_argument("--profile", metavar="FILE", help="py-spy the agent for 10 s of drain")
    args = parser.parse_args()
    total = args.records // args.block_records * args.block_records

    reap_stale()
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="backlog-bench-") as tmp:
        work = Path(tmp)
        spool_dir = work / "spool"
        print(f"# backlog drain: {total:,} records in blocks of {args.block_records}, "
              f"~{args.value_bytes} B values")  # fmt: skip
        size, secs = await asyncio.to_thread(
            build, spool_dir, total, args.block_records, args.value_bytes
        )
        print(f"spool built       {size / 2**20:10.0f} MiB of blocks in {secs:.0f} s")

        mosquitto, kafka = Mosquitto(), KafkaCluster.single()
        agent = None
        consumer = None
        try:
            mosquitto.start()
            kafka.start()
            await create_topic(kafka.bootstrap_servers, TOPIC, partitions=PARTITIONS)
            config = {
                "gateway_id": "bench",
                "log_format": "text",
                "mqtt": {"port": mosquitto.port, "client_id": "backlog-agent",
                         "subscriptions": ["plant/backlog/#"]},
                "kafka": {"bootstrap_servers": kafka.bootstrap_servers},
                "spool": {"directory": str(spool_dir), "max_size_bytes": 2**40},
            }  # fmt: skip
            (work / "agent.yaml").write_text(yaml.safe_dump(config))
            consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
            await consumer.start()
            log = (work / "agent.log").open("wb")
            agent = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "run", "--config", str(work / "agent.yaml"),
                *(f"--set={option}" for option in args.set),
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            drain = await watch_drain(agent, consumer, total, args, work / "agent.log")
            peak = rss_mib(agent.pid, "VmHWM")
        finally:
            if consumer is not None:
                await consumer.stop()
            if agent is not None and agent.returncode is None:
                agent.terminate()
                await agent.wait()
            kafka.close()
            mosquitto.close()

    t0, first_at, t_end, samples = drain
    # The rate counts what arrived after the first sample that saw records, over the time
    # since that sample, so the sampling interval does not round the drain time.
    first_done = next(n for _, _, n in samples if n)
    rate = (total - first_done) / (t_end - first_at)
    draining = [rss for _, rss, n in samples if 0 < n < total] or [samples[-1][1]]
    print(f"agent start       {first_at - t0:10.1f} s until the first record was readable")
    print(f"drain             {rate:10,.0f} records/s "
          f"({t_end - first_at:.1f} s after the first sample with records)")  # fmt: skip
    print(f"RSS while draining {draining[0]:9.1f} MiB at start, min {min(draining):.1f}, "
          f"max {max(draining):.1f}, end {draining[-1]:.1f}; spread "
          f"{max(draining) - min(draining):.1f} MiB; peak (VmHWM) {peak:.1f} MiB")  # fmt: skip
    step = max(1, len(samples) // 10)
    print("  t s    delivered      RSS MiB")
    for t, rss, n in samples[::step]:
        print(f"  {t:5.0f}  {n:>12,}  {rss:8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
