"""DirectoryWatcher against real directories laid out and swapped exactly as kubelet does."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from agent.remote import DirectoryWatcher, content_hash
from tests.support.kubelet import KubeletVolume
from tests.unit.remote._support import Recorder, running, wait_until

V1 = {"agent.yaml": "gateway_id: gw-1\n", "devices.txt": "pump-1\n"}
V2 = {"agent.yaml": "gateway_id: gw-2\n", "devices.txt": "pump-1\n"}
V3 = {"agent.yaml": "gateway_id: gw-3\n", "devices.txt": "pump-1\npump-2\n"}

needs_inotify = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="inotify exists on Linux only"
)


def _inotify_watcher(directory: Path, debounce_secs: float = 0.2) -> DirectoryWatcher:
    """A watcher driven by inotify alone: the safety-net poll is far beyond any test."""
    return DirectoryWatcher(directory, debounce_secs=debounce_secs, poll_interval_secs=600)


def _polling_watcher(directory: Path) -> DirectoryWatcher:
    return DirectoryWatcher(
        directory, debounce_secs=0.05, poll_interval_secs=0.05, use_inotify=False
    )


@needs_inotify
async def test_directory_first_snapshot_is_the_current_version(
    volume: KubeletVolume, recorder: Recorder
) -> None:
    """The first read is published: the keys of ..data only, with their hash and source."""
    volume.write(V1)
    watcher = _inotify_watcher(volume.directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        assert watcher.stats.inotify
    (snapshot,) = recorder.snapshots
    assert dict(snapshot.data) == V1
    assert snapshot.content_hash == content_hash(V1)
    assert snapshot.source == f"directory:{volume.directory}"
    assert snapshot.observed_at_ms > 1_700_000_000_000


@needs_inotify
async def test_directory_swap_publishes_new_content_exactly_once(
    volume: KubeletVolume, recorder: Recorder
) -> None:
    """Each kubelet swap yields one publish of the new content, never a repeat."""
    volume.write(V1)
    watcher = _inotify_watcher(volume.directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        volume.write(V2)
        await wait_until(lambda: len(recorder.snapshots) == 2, "the first swap")
        volume.write(V3)
        await wait_until(lambda: len(recorder.snapshots) == 3, "the second swap")
        stats = watcher.stats
    # A repeat of V2 would have come before V3: exactly once each, in order.
    assert recorder.contents == [V1, V2, V3]
    assert stats.published_total == 3
    assert stats.events_total >= 2


@needs_inotify
async def test_directory_burst_of_swaps_publishes_last_content_once(
    volume: KubeletVolume, recorder: Recorder
) -> None:
    """Swaps closer together than the debounce time yield one read and one publish: the last."""
    volume.write(V1)
    watcher = _inotify_watcher(volume.directory, debounce_secs=1.0)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        reads_before = watcher.stats.reads_total
        versions = [{"agent.yaml": f"gateway_id: burst-{i}\n"} for i in range(5)]
        for version in versions:
            events_before = watcher.stats.events_total
            volume.write(version)
            # The watcher has seen this swap before the next one starts.
            await wait_until(lambda n=events_before: watcher.stats.events_total > n, "the event")
        await wait_until(lambda: len(recorder.snapshots) == 2, "the debounced publish")
        stats = watcher.stats
    assert recorder.contents == [V1, versions[-1]]
    assert stats.reads_total == reads_before + 1


@needs_inotify
async def test_directory_swap_with_identical_content_publishes_nothing(
    volume: KubeletVolume, recorder: Recorder
) -> None:
    """A swap to a new version directory with the same content is read but not published."""
    volume.write(V1)
    watcher = _inotify_watcher(volume.directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        reads_before = watcher.stats.reads_total
        volume.write(dict(V1))
        await wait_until(lambda: watcher.stats.reads_total > reads_before, "the re-read")
        assert len(recorder.snapshots) == 1
        volume.write(V2)  # and the watcher still works afterwards
        await wait_until(lambda: len(recorder.snapshots) == 2, "the next real change")
    assert recorder.contents == [V1, V2]
    assert len(volume.version_dirs) == 3


async def test_directory_poll_alone_detects_a_swap(
    volume: KubeletVolume, recorder: Recorder
) -> None:
    """Without inotify (forced), the content-hash poll finds each swap and publishes it once."""
    volume.write(V1)
    watcher = _polling_watcher(volume.directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        assert not watcher.stats.inotify
        volume.write(V2)
        await wait_until(lambda: len(recorder.snapshots) == 2, "the swap")
        volume.write(V3)
        await wait_until(lambda: len(recorder.snapshots) == 3, "the second swap")
    assert recorder.contents == [V1, V2, V3]
    assert watcher.stats.events_total == 0


async def test_directory_plain_file_edited_in_place_is_found_by_the_poll(
    tmp_path: Path, recorder: Recorder
) -> None:
    """A bare gateway's directory: a regular file rewritten in place is published; dotfiles not."""
    directory = tmp_path / "etc-edge-agent"
    directory.mkdir()
    config = directory / "agent.yaml"
    config.write_text("gateway_id: gw-1\n", encoding="utf-8")
    (directory / ".agent.yaml.swp").write_text("editor state", encoding="utf-8")
    (directory / "conf.d").mkdir()
    watcher = _polling_watcher(directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        with config.open("r+", encoding="utf-8") as file:  # same inode, new bytes
            file.write("gateway_id: gw-9\n")
        await wait_until(lambda: len(recorder.snapshots) == 2, "the edit")
    assert recorder.contents == [
        {"agent.yaml": "gateway_id: gw-1\n"},
        {"agent.yaml": "gateway_id: gw-9\n"},
    ]
    assert recorder.snapshots[1].source == f"directory:{directory}"


@needs_inotify
async def test_directory_plain_file_rewrite_wakes_inotify(
    tmp_path: Path, recorder: Recorder
) -> None:
    """In a plain directory, closing a rewritten file wakes the watcher without the poll."""
    directory = tmp_path / "etc-edge-agent"
    directory.mkdir()
    config = directory / "agent.yaml"
    config.write_text("gateway_id: gw-1\n", encoding="utf-8")
    watcher = _inotify_watcher(directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
        config.write_text("gateway_id: gw-2\n", encoding="utf-8")
        await wait_until(lambda: len(recorder.snapshots) == 2, "the rewrite")
    assert recorder.contents[-1] == {"agent.yaml": "gateway_id: gw-2\n"}


async def test_directory_missing_at_start_is_published_once_it_appears(
    volume: KubeletVolume, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that does not exist yet is retried quietly and published when it appears."""
    caplog.set_level(logging.DEBUG, logger="agent.remote")
    watcher = DirectoryWatcher(volume.directory, debounce_secs=0.05, poll_interval_secs=0.05)
    async with running(watcher, recorder) as task:
        await wait_until(lambda: watcher.stats.read_errors_total >= 3, "several failed reads")
        assert recorder.snapshots == []
        assert not task.done()
        volume.write(V1)
        await wait_until(lambda: len(recorder.snapshots) == 1, "the directory's content")
        volume.write(V2)
        await wait_until(lambda: len(recorder.snapshots) == 2, "a swap after that")
    assert recorder.contents == [V1, V2]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "Cannot read the configuration directory; will retry."
    ]


async def test_directory_publish_failure_is_retried(
    volume: KubeletVolume, caplog: pytest.LogCaptureFixture
) -> None:
    """If handing over fails, the watcher logs it, backs off and hands the content over again."""
    volume.write(V1)
    calls: list[dict[str, str]] = []

    async def flaky_publish(snapshot: object) -> None:
        calls.append(dict(snapshot.data))  # type: ignore[attr-defined]
        if len(calls) == 1:
            raise RuntimeError("the agent's handler broke")

    watcher = _polling_watcher(volume.directory)
    async with running(watcher, flaky_publish):  # type: ignore[arg-type]
        await wait_until(lambda: len(calls) == 2, "the retry", deadline_secs=10)
    assert calls == [V1, V1]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_directory_non_text_file_is_left_out_with_a_warning(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not UTF-8 text is not part of the snapshot, and the warning names it."""
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "agent.yaml").write_text("gateway_id: gw-1\n", encoding="utf-8")
    (directory / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    watcher = _polling_watcher(directory)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
    assert recorder.contents == [{"agent.yaml": "gateway_id: gw-1\n"}]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.skipped == {"logo.png": "not UTF-8 text"}  # type: ignore[attr-defined]
