"""Helpers for the operator commands' tests: records, damaged rows, a tree's state."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agent.model import Record
from agent.spool._store import BLOCKS_DIR

START_MS = 1_700_000_000_000
TOPIC_A = "telemetry.normalized"
TOPIC_B = "telemetry.raw"


def make_records(start: int, count: int, topic: str) -> list[Record]:
    """Records numbered from ``start``: JSON values on TOPIC_A, plain bytes elsewhere."""
    out = []
    for i in range(start, start + count):
        value = json.dumps({"n": i}).encode() if topic == TOPIC_A else b"\xff\x00raw-%d" % i
        out.append(
            Record(
                topic=topic,
                key=f"device-{i % 3}".encode(),
                value=value,
                headers=(("message-id", f"{i:032x}".encode()), ("bin", b"\xff\xfe")),
                timestamp_ms=START_MS + i,
            )
        )
    return out


def sql(directory: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run and commit one statement on a spool's database (to damage rows on purpose)."""
    with closing(sqlite3.connect(directory / BLOCKS_DIR / "cache.db")) as connection:
        rows = connection.execute(statement, params).fetchall()
        connection.commit()
    return rows


def corrupt(directory: Path, block_id: int) -> None:
    """Flip a byte in a block's payload: its CRC no longer matches."""
    ((value,),) = sql(directory, "SELECT value FROM Cache WHERE key = ?", block_id)
    damaged = bytearray(value)  # type: ignore[arg-type]
    damaged[-1] ^= 0xFF
    sql(directory, "UPDATE Cache SET value = ? WHERE key = ?", bytes(damaged), block_id)


def tree_state(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``directory``: size, modification time and content hash."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(directory))] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


@dataclass
class WrittenSpool:
    """A closed spool and what is in it."""

    directory: Path
    records: dict[str, int]
    block_ids: list[int]
    quarantined_block: int
    delivered_block: int
