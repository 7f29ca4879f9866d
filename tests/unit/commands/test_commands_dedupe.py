"""The dedupe window: persistent across reopen, bounded by count and by age."""

from __future__ import annotations

from pathlib import Path

from agent.commands.dedupe import DedupeStore


async def test_dedupe_command_ids_survive_reopen(tmp_path: Path):
    """A command id recorded before a close is known after reopening the file."""
    store = DedupeStore(tmp_path / "commands", max_ids=10, max_age_secs=3600)
    await store.open()
    await store.add("c-1", "dev-1")
    await store.close()
    again = DedupeStore(tmp_path / "commands", max_ids=10, max_age_secs=3600)
    await again.open()
    seen = await again.get("c-1")
    assert seen is not None
    assert seen.device_id == "dev-1"
    assert await again.get("c-2") is None
    await again.close()


async def test_dedupe_window_is_bounded_by_count_oldest_first(tmp_path: Path):
    """Beyond max_ids the oldest ids are forgotten, the newest kept."""
    now = [1_000]
    store = DedupeStore(tmp_path, max_ids=3, max_age_secs=3600, clock_ms=lambda: now[0])
    await store.open()
    for i in range(5):
        now[0] += 1
        await store.add(f"c-{i}", "d")
    assert store.count == 3
    assert [await store.get(f"c-{i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    await store.close()


async def test_dedupe_window_forgets_ids_older_than_max_age_at_open(tmp_path: Path):
    """An id older than max_age_secs is gone after reopening."""
    now = [0]
    store = DedupeStore(tmp_path, max_ids=10, max_age_secs=60, clock_ms=lambda: now[0])
    await store.open()
    await store.add("old", "d")
    await store.close()
    now[0] = 61_000
    store = DedupeStore(tmp_path, max_ids=10, max_age_secs=60, clock_ms=lambda: now[0])
    await store.open()
    assert await store.get("old") is None
    await store.close()


async def test_dedupe_answer_is_recorded_once(tmp_path: Path):
    """A command is answered once; unknown ids cannot be answered."""
    store = DedupeStore(tmp_path, max_ids=10, max_age_secs=60)
    await store.open()
    await store.add("c", "d")
    assert await store.mark_answered("c") is True
    assert await store.mark_answered("c") is False
    assert await store.mark_answered("nope") is False
    await store.close()


async def test_dedupe_store_is_a_separate_file_under_its_directory(tmp_path: Path):
    """The store is its own SQLite file in the given directory, mode 0700."""
    store = DedupeStore(tmp_path / "spool" / "commands", max_ids=10, max_age_secs=60)
    await store.open()
    await store.close()
    assert store.path == tmp_path / "spool" / "commands" / "dedupe.sqlite"
    assert store.path.exists()
    assert (store.path.parent.stat().st_mode & 0o777) == 0o700
