"""Remote configuration from a directory: a mounted ConfigMap volume, or any plain directory.

Kubelet's layout of a ConfigMap volume, and how it updates it (``AtomicWriter``)::

    <dir>/..2026_11_26_10_00_00.123456789/agent.yaml   the real files of one version
    <dir>/..data -> ..2026_11_26_10_00_00.123456789     the current version
    <dir>/agent.yaml -> ..data/agent.yaml               one symlink per key

An update writes a new timestamped directory, points a new ``..data_tmp`` symlink at it,
renames ``..data_tmp`` over ``..data`` (atomic) and removes the old directory. A watch on a file
path is lost at the first swap, so the directory itself is watched.

Contract
--------
1. Detection: inotify on the directory (Linux), woken by ``..data`` being created or renamed
   into place, or by a top-level file being written, moved or deleted; plus a content-hash poll
   every ``poll_interval_secs`` as a safety net, and as the only means where inotify is
   unavailable.
2. Debounce: after an event, the directory is read once no further event arrived for
   ``debounce_secs`` (at most ten times that in total). A change found by the poll alone is
   read a second time after the same quiet period, so a file caught half-written is not handed
   over when its writer is still busy.
3. Atomic read: with a ``..data`` link the version it points to is read, one directory of
   regular files, never a mix of two versions. Otherwise the top-level regular files whose
   names do not start with a dot are read. Files that are not UTF-8 text or larger than
   1 MiB (a ConfigMap's limit) are left out and named in a warning.
4. A directory that is missing, empty or unreadable is logged and read again at the next event
   or poll; nothing is published for it, so the running configuration stays.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent._backoff import Backoff
from agent.remote._inotify import DATA_LINK, DirectoryNotifier, open_inotify
from agent.remote._snapshot import ChangeFilter, ConfigSnapshot, wall_clock_ms

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_log = logging.getLogger(__name__)

MAX_FILE_BYTES: Final = 1024 * 1024
"""Files larger than this are left out of a snapshot (a whole ConfigMap is limited to 1 MiB)."""

_DEBOUNCE_CAP_FACTOR: Final = 10
_FAILURE_BACKOFF_INITIAL_SECS: Final = 1.0
_FAILURE_BACKOFF_MAX_SECS: Final = 60.0


@dataclass(frozen=True, slots=True)
class DirectoryWatcherStats:
    """Counters of a :class:`DirectoryWatcher`, for metrics and tests.

    Attributes:
        events_total: inotify wake-ups that may mean a change (0 without inotify).
        reads_total: Times the directory's content was read successfully.
        read_errors_total: Reads that failed (missing directory, a swap under the reader...).
        published_total: Snapshots handed over.
        inotify: Whether inotify is in use (False: polling only).
    """

    events_total: int
    reads_total: int
    read_errors_total: int
    published_total: int
    inotify: bool


@dataclass(frozen=True, slots=True)
class _Content:
    data: dict[str, str]
    skipped: dict[str, str]  # file name -> why it was left out


class DirectoryWatcher:
    """Watches a directory and publishes its content whenever it changes.

    See the module documentation for the contract.
    """

    def __init__(
        self,
        directory: Path,
        *,
        debounce_secs: float = 1.0,
        poll_interval_secs: float = 10.0,
        use_inotify: bool = True,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """Create a watcher; nothing happens until :meth:`run`.

        Args:
            directory: The directory to watch; it need not exist yet.
            debounce_secs: Quiet time after an event before reading.
            poll_interval_secs: Interval of the content-hash poll.
            use_inotify: False polls only (as on a system without inotify).
            clock_ms: Wall clock in epoch milliseconds, for ``observed_at_ms``.
        """
        self._directory = directory
        self._debounce_secs = debounce_secs
        self._poll_interval_secs = poll_interval_secs
        self._use_inotify = use_inotify
        self._clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._notifier: DirectoryNotifier | None = None
        self._reads = 0
        self._read_errors = 0
        self._published = 0
        self._last_problem: str | None = None
        self._last_skipped_hash: str | None = None

    @property
    def source(self) -> str:
        """``directory:<path>``, as in each snapshot's ``source``."""
        return f"directory:{self._directory}"

    @property
    def stats(self) -> DirectoryWatcherStats:
        """The counters so far."""
        notifier = self._notifier
        return DirectoryWatcherStats(
            events_total=notifier.events_total if notifier else 0,
            reads_total=self._reads,
            read_errors_total=self._read_errors,
            published_total=self._published,
            inotify=notifier is not None,
        )

    async def run(self, publish: Callable[[ConfigSnapshot], Awaitable[None]]) -> None:
        """Publish the directory's content now and after every change, until cancelled."""
        changes = ChangeFilter(publish)
        if self._use_inotify:
            self._notifier = open_inotify(
                self._directory, asyncio.get_running_loop(), self._wake.set
            )
        _log.info(
            "Watching the configuration directory.",
            extra={"directory": str(self._directory), "inotify": self._notifier is not None},
        )
        try:
            await self._loop(changes)
        finally:
            if self._notifier is not None:
                self._notifier.close()

    async def _loop(self, changes: ChangeFilter) -> None:
        backoff = Backoff(_FAILURE_BACKOFF_INITIAL_SECS, _FAILURE_BACKOFF_MAX_SECS)
        settled = True  # the first read is published as it is
        while True:
            try:
                await self._check(changes, settled=settled)
                backoff.reset()
            except Exception:  # noqa: BLE001 - the top loop: log, back off, go on
                delay = backoff.next_delay()
                _log.exception(
                    "Handing over the directory's configuration failed; retrying.",
                    extra={"directory": str(self._directory), "retry_in_secs": round(delay, 3)},
                )
                await asyncio.sleep(delay)
                continue
            settled = await self._wait_for_change()

    async def _wait_for_change(self) -> bool:
        """Sleep until an event (then debounce; True) or the next poll (False)."""
        if not await self._wait_wake(self._poll_interval_secs):
            return False
        await self._quiet()
        return True

    async def _wait_wake(self, timeout_secs: float) -> bool:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_secs)
        except TimeoutError:
            return False
        return True

    async def _quiet(self) -> None:
        """Wait until no event arrived for ``debounce_secs`` (or ten times that in total)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._debounce_secs * _DEBOUNCE_CAP_FACTOR
        while True:
            self._wake.clear()
            remaining = min(self._debounce_secs, deadline - loop.time())
            if remaining <= 0 or not await self._wait_wake(remaining):
                return

    async def _check(self, changes: ChangeFilter, *, settled: bool) -> None:
        snapshot = await self._snapshot()
        if snapshot is None or snapshot.content_hash == changes.last_hash:
            return
        if not settled and self._debounce_secs > 0:
            # Found by the poll alone: a writer may still be busy. Read again once quiet.
            await self._quiet()
            snapshot = await self._snapshot()
            if snapshot is None:
                return
        if await changes.offer(snapshot):
            self._published += 1
            _log.info(
                "New configuration found in the directory.",
                extra={
                    "directory": str(self._directory),
                    "content_hash": snapshot.content_hash,
                    "keys": sorted(snapshot.data),
                },
            )

    async def _snapshot(self) -> ConfigSnapshot | None:
        """Read the directory; None (logged) if it cannot be read or holds nothing."""
        if self._notifier is not None:
            self._notifier.ensure_watch()
        self._wake.clear()  # an event from here on means "read again"
        try:
            content = await asyncio.to_thread(_read_directory, self._directory)
        except OSError as exc:
            self._read_errors += 1
            self._problem("Cannot read the configuration directory; will retry.", exc)
            return None
        self._reads += 1
        if not content.data:
            self._problem("The configuration directory holds no files; will retry.", None)
            return None
        if self._last_problem is not None:
            _log.info("The configuration directory is readable again.")
            self._last_problem = None
        snapshot = ConfigSnapshot.of(content.data, self.source, self._clock_ms())
        if content.skipped and snapshot.content_hash != self._last_skipped_hash:
            _log.warning(
                "Left files out of the configuration.",
                extra={"directory": str(self._directory), "skipped": content.skipped},
            )
        self._last_skipped_hash = snapshot.content_hash if content.skipped else None
        return snapshot

    def _problem(self, message: str, exc: OSError | None) -> None:
        """Log a read problem at WARNING the first time, at DEBUG while it persists."""
        detail = f"{message} {exc}"
        level = logging.DEBUG if detail == self._last_problem else logging.WARNING
        self._last_problem = detail
        _log.log(
            level,
            message,
            extra={"directory": str(self._directory), "error": str(exc) if exc else None},
        )


def _read_directory(directory: Path) -> _Content:
    """Read one consistent version of ``directory`` (blocking; run in a thread)."""
    root = _version_root(directory)
    data: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            why = _read_file(Path(entry.path), entry.name, data)
            if why is not None:
                skipped[entry.name] = why
    return _Content(data, skipped)


def _version_root(directory: Path) -> Path:
    """The directory that holds the current version's files.

    ``<dir>/<target of ..data>`` for a ConfigMap volume: resolving the link once means every
    file comes from the same version even if kubelet swaps ``..data`` meanwhile (the old
    version's directory may then vanish under the reader: an OSError, retried). ``<dir>``
    itself otherwise.
    """
    link = directory / DATA_LINK
    try:
        return directory / link.readlink()
    except FileNotFoundError:
        return directory
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # ..data exists but is not a symlink
            return link if link.is_dir() else directory
        raise


def _read_file(path: Path, name: str, data: dict[str, str]) -> str | None:
    """Add ``name`` -> text to ``data``; return why not instead if it is left out."""
    with path.open("rb") as file:
        raw = file.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    try:
        data[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return None
