"""Spool throughput: format cost, append per durability mode, read+remove, open, and both at once.

Usage: .venv/bin/python bench/spool_bench.py [--blocks 500] [--records 100] [--value-bytes 250]
       [--directory DIR]  (default: a fresh temporary directory, removed afterwards)

Each record is ~300 encoded bytes with the defaults (topic, 8-byte key, 250-byte value, one
24-byte header). Numbers are wall-clock on this machine; run it on the target hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from agent.model import Record
from agent.spool import Spool, SpoolSettings
from agent.spool._format import decode_block, encode_block


def make_batch(start: int, count: int, value_bytes: int) -> list[Record]:
    return [
        Record(
            topic="plant/line-1/temperature",
            key=f"dev-{(start + i) % 1000:04d}".encode(),
            value=bytes(value_bytes),
            headers=(("message-id", f"{start + i:016d}".encode()),),
            timestamp_ms=1_700_000_000_000 + start + i,
        )
        for i in range(count)
    ]


def line(label: str, records: int, secs: float, extra: str = "") -> None:
    rate = f"{records / secs:>10,.0f} rec/s  {secs / records * 1e6:>7.2f} us/rec"
    print(f"  {label:<34} {rate}  {extra}")


def bench_format(batch: list[Record], rounds: int) -> None:
    start = time.perf_counter()
    for _ in range(rounds):
        data = encode_block(batch, 0)
    encode_secs = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(rounds):
        decode_block(data)
    decode_secs = time.perf_counter() - start
    print(f"format: block of {len(batch)} records = {len(data)} bytes")
    line("encode", rounds * len(batch), encode_secs)
    line("decode (CRC + records)", rounds * len(batch), decode_secs)


async def bench_mode(directory: Path, durability: str, args: argparse.Namespace) -> None:
    settings = SpoolSettings(
        directory=directory / durability, durability=durability, max_size_bytes=2**40
    )
    batches = [
        make_batch(i * args.records, args.records, args.value_bytes) for i in range(args.blocks)
    ]
    total = args.blocks * args.records
    print(f"durability={durability}: {args.blocks} blocks x {args.records} records")

    async with Spool(settings) as spool:
        latencies = []
        start = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            await spool.append(batch)
            latencies.append(time.perf_counter() - t0)
        secs = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        line("append", total, secs, f"per block p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms")
        size_mib = spool.stats().size_bytes / 2**20

    start = time.perf_counter()
    spool = Spool(settings)
    await spool.open()
    open_secs = time.perf_counter() - start
    label = "open (index + CRC of all blocks)"
    print(f"  {label:<34} {open_secs * 1e3:>10.1f} ms for {size_mib:.1f} MiB")

    start = time.perf_counter()
    cursor = None
    while blocks := await spool.read(cursor, 16):
        cursor = blocks[-1].block_id
        await spool.remove(*(block.block_id for block in blocks))
    line("read 16 + remove 16 per transaction", total, time.perf_counter() - start)
    await spool.close()

    async with Spool(settings) as spool:
        for batch in batches:
            await spool.append(batch)
        start = time.perf_counter()
        cursor = None
        while blocks := await spool.read(cursor, 16):
            cursor = blocks[-1].block_id
            for block in blocks:
                await spool.remove(block.block_id)
        line("read 16 + remove one by one", total, time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(produce(spool, batches), forward(spool, args.blocks))
        line("append || read+remove (steady)", total, time.perf_counter() - start)


async def produce(spool: Spool, batches: list[list[Record]]) -> None:
    for batch in batches:
        await spool.append(batch)


async def forward(spool: Spool, blocks_expected: int) -> None:
    cursor: int | None = None
    done = 0
    while done < blocks_expected:
        await spool.wait_for_data(cursor)
        blocks = await spool.read(cursor, 16)
        if not blocks:  # what was there expired or was quarantined
            continue
        cursor = blocks[-1].block_id
        done += await spool.remove(*(block.block_id for block in blocks))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--value-bytes", type=int, default=250)
    parser.add_argument("--directory", type=Path, default=None)
    args = parser.parse_args()

    bench_format(make_batch(0, args.records, args.value_bytes), rounds=2000)
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="spool-bench-") as tmp:
        for durability in ("fsync", "normal"):
            await bench_mode(Path(tmp), durability, args)


if __name__ == "__main__":
    asyncio.run(main())
