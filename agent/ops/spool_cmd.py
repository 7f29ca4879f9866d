"""``edge-agent spool stats|inspect|export``: look into a spool directory, read-only.

Every command reads through :class:`~agent.ops._reader.SpoolReader`, so it is safe while the
agent runs: nothing is locked, written, quarantined, deleted or checkpointed. Block counts come
from one consistent snapshot; records are read block by block afterwards, so a block the agent
delivers meanwhile is counted as "delivered while reading" rather than failing the command.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TextIO

from agent.ops import _fmt
from agent.ops._reader import BadBlock, DecodedBlock, SpoolReader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from agent.model import Record
    from agent.ops._reader import BlockEntry, DiskUsage, Index, QuarantinedFile
    from agent.spool import SpoolSettings

MESSAGE_ID_HEADER: Final = "message-id"
DEFAULT_INSPECT_LIMIT: Final = 50


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class TopicCount:
    """Records of one Kafka topic in the spool.

    Attributes:
        records: How many.
        value_bytes: Sum of their value sizes.
    """

    records: int = 0
    value_bytes: int = 0


@dataclass(slots=True)
class SpoolSummary:
    """What ``spool stats`` reports; :meth:`to_json` is its ``--format json``."""

    directory: Path
    now_ms: int
    disk: DiskUsage
    index: Index
    quarantine: list[QuarantinedFile]
    topics: dict[str, TopicCount] = field(default_factory=dict)
    oldest_record_ms: int | None = None
    newest_record_ms: int | None = None
    unreadable_blocks: int = 0
    vanished_blocks: int = 0
    limits: SpoolSettings | None = None

    @property
    def records(self) -> int:
        """Records in the blocks of the snapshot."""
        return sum(block.records for block in self.index.blocks)

    @property
    def size_bytes(self) -> int:
        """Encoded size of those blocks (what ``spool.max_size_bytes`` limits)."""
        return sum(block.size_bytes for block in self.index.blocks)

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-able dict (sizes in bytes, times in epoch ms, ages in s)."""
        blocks = self.index.blocks
        oldest = blocks[0].created_at_ms if blocks else None
        newest = blocks[-1].created_at_ms if blocks else None
        out: dict[str, Any] = {
            "directory": str(self.directory),
            "disk_bytes": {
                "total": self.disk.total_bytes,
                "database": self.disk.database_bytes,
                "quarantine": self.disk.quarantine_bytes,
                "reserve": self.disk.reserve_bytes,
                "other": self.disk.other_bytes,
            },
            "blocks": len(blocks),
            "records": self.records,
            "size_bytes": self.size_bytes,
            "oldest_block_created_at_ms": oldest,
            "oldest_block_age_secs": _age_secs(self.now_ms, oldest),
            "newest_block_created_at_ms": newest,
            "newest_block_age_secs": _age_secs(self.now_ms, newest),
            "oldest_record_timestamp_ms": self.oldest_record_ms,
            "newest_record_timestamp_ms": self.newest_record_ms,
            "topics": {
                name: {"records": count.records, "value_bytes": count.value_bytes}
                for name, count in sorted(self.topics.items())
            },
            "unreadable_blocks": self.unreadable_blocks,
            "delivered_while_reading_blocks": self.vanished_blocks,
            "suspect_rows": self.index.suspect_rows,
            "quarantine": {
                "files": len(self.quarantine),
                "bytes": sum(item.size_bytes for item in self.quarantine),
                "by_reason": dict(Counter(item.reason for item in self.quarantine)),
            },
        }
        if self.limits is not None:
            out["limits"] = {
                "max_size_bytes": self.limits.max_size_bytes,
                "percent_full": _percent(self.size_bytes, self.limits.max_size_bytes),
                "max_age_secs": self.limits.max_age_secs,
                "overflow_policy": self.limits.overflow_policy,
                "max_quarantine_bytes": self.limits.max_quarantine_bytes,
                "quarantine_percent_full": _percent(
                    self.disk.quarantine_bytes, self.limits.max_quarantine_bytes
                ),
            }
        return out


def _age_secs(now_ms: int, then_ms: int | None) -> float | None:
    return None if then_ms is None else round(max(0, now_ms - then_ms) / 1000, 3)


def _percent(part: int, whole: int) -> float | None:
    return None if whole <= 0 else round(100 * part / whole, 1)


# ---------------------------------------------------------------------- stats
def collect_stats(
    directory: Path,
    *,
    limits: SpoolSettings | None = None,
    progress: TextIO | None = None,
    now_ms: Callable[[], int] = _now_ms,
) -> SpoolSummary:
    """Read the whole spool once and summarise it.

    Raises:
        SpoolReadError: The directory holds no readable spool.
    """
    with SpoolReader(directory) as reader:
        index = reader.index()
        summary = SpoolSummary(
            directory=directory,
            now_ms=now_ms(),
            disk=reader.disk_usage(),
            index=index,
            quarantine=reader.quarantine(),
            limits=limits,
        )
        total = sum(block.records for block in index.blocks)
        meter = _fmt.Progress(progress or sys.stderr, "reading records", total)
        done = 0
        for item in reader.blocks(index.blocks):
            if item is None:
                summary.vanished_blocks += 1
            elif isinstance(item, BadBlock):
                summary.unreadable_blocks += 1
            else:
                _add_records(summary, item.records)
                done += len(item.records)
                meter.update(done)
        meter.done()
    return summary


def _add_records(summary: SpoolSummary, records: Sequence[Record]) -> None:
    topics = summary.topics
    for record in records:
        count = topics.get(record.topic)
        if count is None:
            count = topics[record.topic] = TopicCount()
        count.records += 1
        count.value_bytes += len(record.value)
        ts = record.timestamp_ms
        if summary.oldest_record_ms is None or ts < summary.oldest_record_ms:
            summary.oldest_record_ms = ts
        if summary.newest_record_ms is None or ts > summary.newest_record_ms:
            summary.newest_record_ms = ts


def render_stats(summary: SpoolSummary) -> str:
    """The summary in plain words, one fact per line."""
    blocks = summary.index.blocks
    disk = summary.disk
    on_disk = (
        f"  on disk:     {_fmt.size(disk.total_bytes)} (database {_fmt.size(disk.database_bytes)},"
        f" quarantine {_fmt.size(disk.quarantine_bytes)}, reserve {_fmt.size(disk.reserve_bytes)})"
    )
    lines = [f"spool {summary.directory}", on_disk]
    if not blocks:
        lines.append("  blocks:      none (the spool is empty)")
    else:
        lines.append(
            f"  blocks:      {_fmt.count(len(blocks))} (ids {blocks[0].block_id}"
            f"-{blocks[-1].block_id}), {_fmt.size(summary.size_bytes)} encoded"
        )
        lines.append(f"  records:     {_fmt.count(summary.records)}")
        lines.append(f"  oldest:      {_when(summary.now_ms, blocks[0].created_at_ms)}")
        lines.append(f"  newest:      {_when(summary.now_ms, blocks[-1].created_at_ms)}")
    if summary.topics:
        lines.append("  topics:")
        width = max(len(name) for name in summary.topics)
        lines.extend(
            f"    {name:<{width}}  {_fmt.count(topic.records):>10} records"
            f"  {_fmt.size(topic.value_bytes):>10} of values"
            for name, topic in sorted(summary.topics.items())
        )
    if summary.vanished_blocks:
        lines.append(
            f"  meanwhile:   {_fmt.count(summary.vanished_blocks)} blocks were delivered while "
            "they were read (not in the topic counts)"
        )
    if summary.unreadable_blocks:
        lines.append(
            f"  unreadable:  {_fmt.count(summary.unreadable_blocks)} blocks do not decode; the "
            "agent quarantines them when it reads them"
        )
    if summary.index.suspect_rows:
        lines.append(
            f"  suspect:     {_fmt.count(summary.index.suspect_rows)} rows are not spool blocks; "
            "the agent quarantines them at its next start"
        )
    lines.append(f"  quarantine:  {_quarantine_line(summary.quarantine)}")
    if summary.limits is not None:
        lines.extend(_limit_lines(summary))
    return "\n".join(lines) + "\n"


def _when(now_ms: int, then_ms: int) -> str:
    return f"{_fmt.timestamp(then_ms)}, {_fmt.duration((now_ms - then_ms) / 1000)} ago"


def _quarantine_line(files: Sequence[QuarantinedFile]) -> str:
    if not files:
        return "empty"
    reasons = Counter(item.reason for item in files)
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    total = sum(item.size_bytes for item in files)
    return f"{_fmt.count(len(files))} files, {_fmt.size(total)} ({by_reason})"


def _limit_lines(summary: SpoolSummary) -> list[str]:
    limits = summary.limits
    assert limits is not None  # noqa: S101 - checked by the caller
    full = _percent(summary.size_bytes, limits.max_size_bytes)
    age = "none" if limits.max_age_secs == 0 else _fmt.duration(limits.max_age_secs)
    quarantine_full = _percent(summary.disk.quarantine_bytes, limits.max_quarantine_bytes)
    size_limit = (
        f"  limit:       max_size_bytes {_fmt.size(limits.max_size_bytes)}: {full}% full;"
        f" overflow_policy {limits.overflow_policy}; max_age_secs {age}"
    )
    quarantine_limit = (
        f"               max_quarantine_bytes {_fmt.size(limits.max_quarantine_bytes)}:"
        f" {quarantine_full}% full"
    )
    return [size_limit, quarantine_limit]


# ---------------------------------------------------------------------- inspect
@dataclass(frozen=True, slots=True)
class BlockListing:
    """One row of ``spool inspect``.

    Attributes:
        entry: The block's index entry.
        topics: Records per topic, or None when the block does not decode or vanished.
        state: ``"ok"``, ``"delivered"`` (gone meanwhile) or the reason it does not decode.
    """

    entry: BlockEntry
    topics: dict[str, int] | None
    state: str


@dataclass(slots=True)
class Inspection:
    """What ``spool inspect`` reports."""

    directory: Path
    now_ms: int
    total_blocks: int
    blocks: list[BlockListing]
    quarantine: list[QuarantinedFile]
    suspect_rows: int
    next_block_id: int | None

    def to_json(self) -> dict[str, Any]:
        """The inspection as a JSON-able dict."""
        return {
            "directory": str(self.directory),
            "total_blocks": self.total_blocks,
            "next_block_id": self.next_block_id,
            "suspect_rows": self.suspect_rows,
            "blocks": [
                {
                    "block_id": row.entry.block_id,
                    "created_at_ms": row.entry.created_at_ms,
                    "records": row.entry.records,
                    "size_bytes": row.entry.size_bytes,
                    "state": row.state,
                    "topics": row.topics,
                }
                for row in self.blocks
            ],
            "quarantine": [
                {
                    "name": item.name,
                    "block_id": item.block_id,
                    "reason": item.reason,
                    "quarantined_at_ms": item.quarantined_at_ms,
                    "size_bytes": item.size_bytes,
                }
                for item in self.quarantine
            ],
        }


def collect_inspection(
    directory: Path, *, limit: int = DEFAULT_INSPECT_LIMIT, now_ms: Callable[[], int] = _now_ms
) -> Inspection:
    """List the oldest ``limit`` blocks (0 = all) and the whole quarantine.

    Raises:
        SpoolReadError: The directory holds no readable spool.
    """
    with SpoolReader(directory) as reader:
        index = reader.index()
        entries = index.blocks if limit <= 0 else index.blocks[:limit]
        listings = [
            _listing(entry, item)
            for entry, item in zip(entries, reader.blocks(entries), strict=True)
        ]
        return Inspection(
            directory=directory,
            now_ms=now_ms(),
            total_blocks=len(index.blocks),
            blocks=listings,
            quarantine=reader.quarantine(),
            suspect_rows=index.suspect_rows,
            next_block_id=index.next_block_id,
        )


def _listing(entry: BlockEntry, item: DecodedBlock | BadBlock | None) -> BlockListing:
    if item is None:
        return BlockListing(entry, None, "delivered")
    if isinstance(item, BadBlock):
        return BlockListing(entry, None, str(item.reason))
    return BlockListing(entry, dict(Counter(record.topic for record in item.records)), "ok")


def render_inspection(inspection: Inspection) -> str:
    """Blocks as a table, then the quarantine."""
    lines = [f"spool {inspection.directory}"]
    shown = len(inspection.blocks)
    if not inspection.total_blocks:
        lines.append("blocks: none (the spool is empty)")
    else:
        more = "" if shown == inspection.total_blocks else f", the oldest {_fmt.count(shown)}"
        lines.append(f"blocks: {_fmt.count(inspection.total_blocks)}{more}")
        header = f"  {'id':>10}  {'created (UTC)':<19}  {'age':>9}  {'records':>8}  {'bytes':>10}"
        lines.append(f"{header}  topics")
        for row in inspection.blocks:
            entry = row.entry
            created = _fmt.timestamp(entry.created_at_ms).removesuffix(" UTC")
            age = _fmt.duration((inspection.now_ms - entry.created_at_ms) / 1000)
            topics = (
                " ".join(f"{name}:{n}" for name, n in sorted(row.topics.items()))
                if row.topics is not None
                else f"({row.state})"
            )
            lines.append(
                f"  {entry.block_id:>10}  {created:<19}  {age:>9}  {entry.records:>8}"
                f"  {entry.size_bytes:>10}  {topics}"
            )
    if inspection.suspect_rows:
        lines.append(
            f"suspect rows: {inspection.suspect_rows} (not spool blocks; quarantined at the "
            "agent's next start)"
        )
    if not inspection.quarantine:
        lines.append("quarantine: empty")
    else:
        lines.append(f"quarantine: {_fmt.count(len(inspection.quarantine))} files")
        lines.append(f"  {'when (UTC)':<19}  {'reason':<13}  {'block':>10}  {'bytes':>10}  file")
        for item in inspection.quarantine:
            when = _fmt.timestamp(item.quarantined_at_ms).removesuffix(" UTC")
            block = "-" if item.block_id is None else str(item.block_id)
            lines.append(
                f"  {when:<19}  {item.reason:<13}  {block:>10}  {item.size_bytes:>10}  {item.name}"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- export
@dataclass(slots=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        records: Records written.
        blocks: Blocks they came from.
        unreadable_blocks: Blocks that did not decode (skipped).
        vanished_blocks: Blocks delivered while the export read (skipped).
    """

    records: int = 0
    blocks: int = 0
    unreadable_blocks: int = 0
    vanished_blocks: int = 0


def export_records(
    directory: Path,
    out: TextIO,
    *,
    topics: Sequence[str] = (),
    limit: int = 0,
    progress: TextIO | None = None,
) -> ExportResult:
    """Write the spool's records as JSON lines to ``out``, oldest first.

    Args:
        directory: The spool directory.
        out: Where the lines go.
        topics: Only records of these Kafka topics (all when empty).
        limit: At most this many records (0 = all).
        progress: Where a progress line goes when it is a terminal (default stderr).

    Raises:
        SpoolReadError: The directory holds no readable spool.
    """
    result = ExportResult()
    wanted = frozenset(topics)
    with SpoolReader(directory) as reader:
        index = reader.index()
        total = sum(block.records for block in index.blocks)
        if limit > 0:
            total = min(total, limit)
        meter = _fmt.Progress(progress or sys.stderr, "exporting records", total)
        for item in reader.blocks(index.blocks):
            if item is None:
                result.vanished_blocks += 1
                continue
            if isinstance(item, BadBlock):
                result.unreadable_blocks += 1
                continue
            result.blocks += 1
            for line in _lines(item, wanted):
                out.write(line)
                result.records += 1
                if result.records == limit:
                    meter.done()
                    return result
            meter.update(result.records)
        meter.done()
    return result


def _lines(block: DecodedBlock, wanted: frozenset[str]) -> Iterator[str]:
    for record in block.records:
        if wanted and record.topic not in wanted:
            continue
        yield json.dumps(record_to_json(record, block.entry), separators=(",", ":")) + "\n"


def record_to_json(record: Record, entry: BlockEntry) -> dict[str, Any]:
    """One exported record.

    ``key`` and header values are text when they are UTF-8, else ``{"base64": ...}``; ``value``
    is the decoded JSON document when the value is JSON, else ``value_base64`` holds it.
    """
    out: dict[str, Any] = {
        "topic": record.topic,
        "key": None if record.key is None else _text_or_base64(record.key),
        "timestamp_ms": record.timestamp_ms,
        "message_id": None,
        "headers": [[name, _text_or_base64(value)] for name, value in record.headers],
        "block_id": entry.block_id,
        "spooled_at_ms": entry.created_at_ms,
    }
    for name, value in record.headers:
        if name == MESSAGE_ID_HEADER:
            out["message_id"] = _text_or_base64(value)
            break
    try:
        out["value"] = json.loads(record.value, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        out["value_base64"] = base64.b64encode(record.value).decode("ascii")
    return out


def _refuse_constant(name: str) -> None:
    # NaN and Infinity are not JSON: such a value is exported as base64.
    raise ValueError(name)


def _text_or_base64(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


@contextlib.contextmanager
def open_output(path: Path | None) -> Iterator[TextIO]:
    """``path`` opened for writing (created or truncated), or stdout when None."""
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as file:
        yield file
