"""``spool stats|inspect|export`` read a spool written by the real spool API, and change nothing."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import pytest

from agent import cli
from agent.ops import spool_cmd
from agent.ops._reader import SpoolReader, SpoolReadError
from agent.spool import Spool, SpoolSettings
from agent.spool._store import BLOCKS_DIR
from tests.unit.ops._support import (
    TOPIC_A,
    TOPIC_B,
    WrittenSpool,
    corrupt,
    make_records,
    tree_state,
)


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_spool_stats_counts_blocks_records_topics_and_quarantine(
    written_spool: WrittenSpool,
) -> None:
    """Stats counts what is left after a delivery and a quarantine, per topic and quarantined."""
    summary = spool_cmd.collect_stats(written_spool.directory)
    document = summary.to_json()
    assert document["blocks"] == 3
    assert document["records"] == 40
    assert {name: t["records"] for name, t in document["topics"].items()} == written_spool.records
    assert document["quarantine"]["files"] == 1
    assert document["quarantine"]["by_reason"] == {"bad_checksum": 1}
    assert document["quarantine"]["bytes"] > 0
    assert document["unreadable_blocks"] == 0
    assert document["oldest_record_timestamp_ms"] == 1_700_000_000_000 + 20
    assert document["newest_record_timestamp_ms"] == 1_700_000_000_000 + 59
    assert document["disk_bytes"]["total"] >= document["disk_bytes"]["database"] > 0
    text = spool_cmd.render_stats(summary)
    assert "records:     40" in text
    assert "bad_checksum 1" in text


def test_spool_commands_leave_a_stopped_agents_spool_byte_for_byte_unchanged(
    written_spool: WrittenSpool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file is created, written or touched (not even -wal/-shm) by stats, inspect, export."""
    before = tree_state(written_spool.directory)
    directory = str(written_spool.directory)
    assert _main(capsys, "spool", "stats", "--spool-dir", directory)[0] == 0
    assert _main(capsys, "spool", "inspect", "--spool-dir", directory, "--limit", "0")[0] == 0
    out = tmp_path / "export.jsonl"
    assert _main(capsys, "spool", "export", "--spool-dir", directory, "--output", str(out))[0] == 0
    assert tree_state(written_spool.directory) == before


async def test_spool_commands_read_a_running_spool_without_taking_it_from_the_agent(
    spool_dir: Path,
) -> None:
    """While a spool is open, the reader sees its committed blocks and the spool keeps working."""
    spool = Spool(SpoolSettings(directory=spool_dir))
    await spool.open()
    try:
        first = await spool.append(make_records(0, 25, TOPIC_A))
        database = spool_dir / BLOCKS_DIR
        before = {name: tree_state(database)[name] for name in ("cache.db", "cache.db-wal")}
        summary = await asyncio.to_thread(spool_cmd.collect_stats, spool_dir)
        assert summary.records == 25
        # Neither the database nor its write-ahead log changed: no write, no checkpoint.
        after = {name: tree_state(database)[name] for name in ("cache.db", "cache.db-wal")}
        assert after == before
        assert before["cache.db-wal"][0] > 0  # the block is still only in the log
        assert summary.topics[TOPIC_A].records == 25
        # The agent still appends, reads and deletes: no lock, no write was taken from it.
        await spool.append(make_records(25, 5, TOPIC_B))
        blocks = await spool.read(None, 10)
        assert sum(len(b.records) for b in blocks) == 30
        assert await spool.remove(*(b.block_id for b in blocks)) == 2
        assert first.block_id is not None
        summary = await asyncio.to_thread(spool_cmd.collect_stats, spool_dir)
        assert summary.records == 0
        assert spool.stats().quarantined_blocks == 0
    finally:
        await spool.close()


def test_spool_export_writes_every_record_as_a_json_line(written_spool: WrittenSpool) -> None:
    """Every record left, oldest first: JSON values decoded, others base64, ids and headers kept."""
    out = io.StringIO()
    result = spool_cmd.export_records(written_spool.directory, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert result.records == len(lines) == 40
    assert result.blocks == 3
    numbers = [int(line["message_id"], 16) for line in lines]
    assert numbers == list(range(20, 60))
    first = lines[0]
    assert first["topic"] == TOPIC_A
    assert first["value"] == {"n": 20}
    assert first["key"] == "device-2"
    assert first["timestamp_ms"] == 1_700_000_000_000 + 20
    assert first["headers"][1] == ["bin", {"base64": base64.b64encode(b"\xff\xfe").decode()}]
    assert first["block_id"] == written_spool.block_ids[0]
    raw = lines[10]
    assert raw["topic"] == TOPIC_B
    assert "value" not in raw
    assert base64.b64decode(raw["value_base64"]) == b"\xff\x00raw-30"


def test_spool_export_filters_by_topic_and_stops_at_the_limit(written_spool: WrittenSpool) -> None:
    """--topic keeps only that topic's records; --limit stops after N records."""
    out = io.StringIO()
    spool_cmd.export_records(written_spool.directory, out, topics=[TOPIC_B])
    assert {json.loads(line)["topic"] for line in out.getvalue().splitlines()} == {TOPIC_B}
    assert len(out.getvalue().splitlines()) == 10
    out = io.StringIO()
    result = spool_cmd.export_records(written_spool.directory, out, limit=7)
    assert result.records == len(out.getvalue().splitlines()) == 7


def test_spool_inspect_lists_blocks_with_topic_counts_and_the_quarantine(
    written_spool: WrittenSpool,
) -> None:
    """Inspect lists the oldest N blocks with per-topic counts, and every quarantined file."""
    inspection = spool_cmd.collect_inspection(written_spool.directory, limit=2)
    document = inspection.to_json()
    assert document["total_blocks"] == 3
    assert [b["block_id"] for b in document["blocks"]] == written_spool.block_ids[:2]
    assert [b["topics"] for b in document["blocks"]] == [{TOPIC_A: 10}, {TOPIC_B: 10}]
    (quarantined,) = document["quarantine"]
    assert quarantined["block_id"] == written_spool.quarantined_block
    assert quarantined["reason"] == "bad_checksum"
    assert quarantined["size_bytes"] > 0
    text = spool_cmd.render_inspection(inspection)
    assert "blocks: 3, the oldest 2" in text
    assert "bad_checksum" in text


def test_spool_inspect_reports_a_damaged_block_the_agent_has_not_read_yet(
    written_spool: WrittenSpool,
) -> None:
    """A block that fails its checksum is listed as such, not exported, and not quarantined."""
    corrupt(written_spool.directory, written_spool.block_ids[1])
    inspection = spool_cmd.collect_inspection(written_spool.directory, limit=0)
    assert [b.state for b in inspection.blocks] == ["ok", "bad_checksum", "ok"]
    assert len(inspection.quarantine) == 1  # the old one only: nothing was moved
    out = io.StringIO()
    result = spool_cmd.export_records(written_spool.directory, out)
    assert result.unreadable_blocks == 1
    assert result.records == 30


def test_spool_stats_with_config_takes_the_directory_and_reports_percent_full(
    written_spool: WrittenSpool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config takes spool.directory from the file and compares with spool.max_size_bytes."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"spool:\n  directory: {written_spool.directory}\n  max_size_bytes: 100000\n"
        "kafka:\n  bootstrap_servers: 127.0.0.1:9092\n"
    )
    code, out, _ = _main(capsys, "spool", "stats", "--config", str(config), "--format", "json")
    assert code == 0
    document = json.loads(out)
    size = document["size_bytes"]
    assert document["limits"]["max_size_bytes"] == 100000
    assert document["limits"]["percent_full"] == round(100 * size / 100000, 1)
    code, out, _ = _main(capsys, "spool", "stats", "--config", str(config))
    assert "% full" in out


def test_spool_commands_on_a_directory_without_a_spool_fail_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 and one line on stderr naming the directory; nothing is created there."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for action in ("stats", "inspect", "export"):
        code, out, err = _main(capsys, "spool", action, "--spool-dir", str(empty))
        assert code == 1
        assert out == ""
        assert err.count("\n") == 1
        assert str(empty) in err
    assert list(empty.iterdir()) == []
    with pytest.raises(SpoolReadError):
        SpoolReader(tmp_path / "missing").__enter__()


def test_spool_export_refuses_to_write_into_the_spool_directory(
    written_spool: WrittenSpool, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --output inside the spool directory is refused before anything is written."""
    target = written_spool.directory / "export.jsonl"
    code, _, err = _main(
        capsys,
        "spool",
        "export",
        "--spool-dir",
        str(written_spool.directory),
        "--output",
        str(target),
    )
    assert code == 1
    assert "inside the spool directory" in err
    assert not target.exists()


def test_spool_command_needs_a_directory_or_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither --spool-dir nor --config is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["spool", "stats"])
    assert exc.value.code == 2
    capsys.readouterr()
