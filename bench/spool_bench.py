"""Spool benchmarks: open time and peak RSS by backlog size (default), or append/read throughput.

Usage:
  .venv/bin/python bench/spool_bench.py [--sizes 0,100000,1000000] [--old-format 100000]
                                        [--directory DIR]
  .venv/bin/python bench/spool_bench.py --throughput [--blocks 500] [--records 100]
                                        [--value-bytes 250] [--directory DIR]

Open benchmark: builds spools of N one-record blocks (~190 bytes each, the shape a low message
rate gives) through the spool's own insert path, 100k blocks per transaction, then opens each in
a fresh process and reports the time until ``Spool.open()`` returned and the process's peak RSS.
``--old-format`` also builds a spool the way the previous version wrote it (no index tag per row)
and opens it: those rows are indexed from their headers. Spools are built in a temporary
directory (under ``--directory`` if given) that is removed afterwards.

Throughput benchmark: format cost, append per durability mode, read+remove, and both at once.
Numbers are wall-clock on this machine; run it on the target hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diskcache

from agent.model import Record
from agent.spool import Spool, SpoolSettings
from agent.spool._disk import BytesOnlyDisk
from agent.spool._format import decode_block, encode_block
from agent.spool._store import _CACHE_SETTINGS, BLOCKS_DIR, EncodedBlock, Store

_BUILD_CHUNK = 100_000
_START_MS = 1_700_000_000_000


def make_batch(start: int, count: int, value_bytes: int) -> list[Record]:
    return [
        Record(
            topic="plant/line-1/temperature",
            key=f"dev-{(start + i) % 1000:04d}".encode(),
            value=bytes(value_bytes),
            headers=(("message-id", f"{start + i:016d}".encode()),),
            timestamp_ms=_START_MS + start + i,
        )
        for i in range(count)
    ]


# ---------------------------------------------------------------- open time and RSS


class _Quiet:
    def event(self, event: object) -> None:
        pass

    def data_added(self) -> None:
        pass

    def space_freed(self) -> None:
        pass


def build(directory: Path, blocks: int) -> float:
    """Store ``blocks`` one-record blocks through the spool's insert path; return seconds."""
    settings = SpoolSettings(directory=directory, durability="normal", max_size_bytes=2**40)
    store = Store(settings, lambda: _START_MS, lambda: 0)
    store.open(_Quiet())
    start = time.perf_counter()
    try:
        for first in range(0, blocks, _BUILD_CHUNK):
            chunk = [
                EncodedBlock(encode_block(make_batch(i, 1, 80), _START_MS + i), 1, _START_MS + i)
                for i in range(first, min(first + _BUILD_CHUNK, blocks))
            ]
            store.insert_many(chunk)
    finally:
        store.close()
    return time.perf_counter() - start


def build_old_format(directory: Path, blocks: int) -> float:
    """Store blocks the way the previous version did: no tag, header read at open."""
    (directory / BLOCKS_DIR).mkdir(parents=True)
    start = time.perf_counter()
    with diskcache.Cache(str(directory / BLOCKS_DIR), disk=BytesOnlyDisk, **_CACHE_SETTINGS) as c:
        for first in range(0, blocks, _BUILD_CHUNK):
            with c.transact():
                for i in range(first, min(first + _BUILD_CHUNK, blocks)):
                    c.add(i + 1, encode_block(make_batch(i, 1, 80), _START_MS + i))
    return time.perf_counter() - start


async def measure_open(directory: Path) -> dict[str, float]:
    """In this (fresh) process: open the spool, report seconds and peak RSS."""
    settings = SpoolSettings(directory=directory, durability="normal", max_size_bytes=2**40)
    start = time.perf_counter()
    cpu_start = time.process_time()
    spool = Spool(settings)
    await spool.open()
    secs = time.perf_counter() - start
    cpu_secs = time.process_time() - cpu_start
    stats = spool.stats()
    status = _proc_status()
    await spool.close()
    return {
        "open_secs": secs,
        "open_cpu_secs": cpu_secs,
        "peak_rss_mib": status["VmHWM"] / 1024,
        "anon_mib": status["RssAnon"] / 1024,
        "file_mib": status["RssFile"] / 1024,
        "blocks": stats.blocks,
    }


def _proc_status() -> dict[str, int]:
    """Memory in KiB: peak RSS of this process image (VmHWM; ``ru_maxrss`` would include the
    parent's RSS at fork), and resident now: RssAnon (heap), RssFile (mapped files: SQLite mmap).
    """
    fields: dict[str, int] = {}
    for text in Path("/proc/self/status").read_text().splitlines():
        name, _, value = text.partition(":")
        if name in {"VmHWM", "RssAnon", "RssFile"}:
            fields[name] = int(value.split()[0])
    return fields


def open_in_child(directory: Path) -> dict[str, float]:
    child = subprocess.run(
        [sys.executable, __file__, "--measure-open", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def bench_open(args: argparse.Namespace) -> None:
    sizes = [int(size) for size in args.sizes.split(",")]
    rows: list[tuple[str, int, float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="spool-bench-") as tmp:
        for size in sizes:
            directory = Path(tmp) / f"new-{size}"
            build_secs = build(directory, size)
            rows.append(("current", size, build_secs, open_in_child(directory)))
            print(f"  built and opened {size:,} blocks", file=sys.stderr)
        if args.old_format:
            directory = Path(tmp) / f"old-{args.old_format}"
            build_secs = build_old_format(directory, args.old_format)
            measured = open_in_child(directory)
            rows.append(("previous (no tags)", args.old_format, build_secs, measured))
    print("spool open: one-record blocks (~190 bytes each), fresh process per open; open s is")
    print("wall time, cpu s the CPU time it used (all threads: less sensitive to a busy machine);")
    print("RSS after open split into heap (anon) and mapped files (SQLite mmap, up to 64 MiB)")
    print(
        f"  {'row format':<20} {'blocks':>10} {'build s':>8} {'open s':>7} {'cpu s':>6}"
        f" {'peak RSS MiB':>13} {'anon MiB':>9} {'file MiB':>9}"
    )
    for label, size, build_secs, measured in rows:
        if measured["blocks"] != size:
            raise SystemExit(f"Opened {measured['blocks']} blocks, not {size}.")
        print(
            f"  {label:<20} {size:>10,} {build_secs:>8.1f} {measured['open_secs']:>7.2f}"
            f" {measured['open_cpu_secs']:>6.2f} {measured['peak_rss_mib']:>13.0f}"
            f" {measured['anon_mib']:>9.0f} {measured['file_mib']:>9.0f}"
        )


# ---------------------------------------------------------------- throughput


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

    async with Spool(settings) as spool:
        start = time.perf_counter()
        cursor = None
        while blocks := await spool.read(cursor, 16):
            cursor = blocks[-1].block_id
            await spool.remove(*(block.block_id for block in blocks))
        line("read 16 + remove 16 per transaction", total, time.perf_counter() - start)

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


async def bench_throughput(args: argparse.Namespace) -> None:
    bench_format(make_batch(0, args.records, args.value_bytes), rounds=2000)
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="spool-bench-") as tmp:
        for durability in ("fsync", "normal"):
            await bench_mode(Path(tmp), durability, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--old-format", type=int, default=100_000)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--value-bytes", type=int, default=250)
    parser.add_argument("--directory", type=Path, default=None)
    parser.add_argument("--measure-open", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_open is not None:
        print(json.dumps(asyncio.run(measure_open(args.measure_open))))
    elif args.throughput:
        asyncio.run(bench_throughput(args))
    else:
        bench_open(args)


if __name__ == "__main__":
    main()
