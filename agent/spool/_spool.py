"""The asyncio face of the spool: one worker thread does all storage work, in call order."""

from __future__ import annotations

import asyncio
import enum
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Self, TypeVar, TypeVarTuple

from agent.errors import PermanentError
from agent.spool._store import EXPIRE_CHUNK, EncodedBlock, Store
from agent.spool._types import AppendResult, SpoolEvent, SpoolStats

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from agent.model import Record, SpoolBlock
    from agent.spool.settings import SpoolSettings

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def wall_clock_ms() -> int:
    """Wall-clock time in epoch milliseconds (the default clock of :class:`Spool`)."""
    return time.time_ns() // 1_000_000


def monotonic_clock_ms() -> int:
    """Monotonic time in milliseconds (the default age clock of :class:`Spool`)."""
    return time.monotonic_ns() // 1_000_000


class _State(enum.Enum):
    NEW = enum.auto()
    OPEN = enum.auto()
    CLOSED = enum.auto()


class _LoopListener:
    """Hands the worker thread's notifications to the event loop, in the order they happened."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[SpoolEvent], None] | None,
        data_added: asyncio.Event,
        space_freed: asyncio.Event,
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self._data_added = data_added
        self._space_freed = space_freed

    def event(self, event: SpoolEvent) -> None:
        if self._on_event is not None:
            self._loop.call_soon_threadsafe(self._on_event, event)

    def data_added(self) -> None:
        self._loop.call_soon_threadsafe(self._data_added.set)

    def space_freed(self) -> None:
        self._loop.call_soon_threadsafe(self._space_freed.set)


class Spool:
    """A bounded, crash-safe queue of record blocks on local disk.

    The MQTT source calls :meth:`append` and acknowledges the messages to the broker only after
    it returned. The forwarder calls :meth:`read` with a cursor (the id of the last block it
    took), produces the records, and calls :meth:`remove` once Kafka acknowledged all records of
    a block. After a crash or restart, reading from ``None`` resumes with the oldest block that
    was not removed, so delivery is at-least-once.

    All disk work runs on one dedicated worker thread in call order; the event loop only waits.
    ``on_event`` is called on the event loop (never on the worker thread) with every
    :class:`~agent.spool.SpoolDropped` and :class:`~agent.spool.SpoolQuarantined`, before the
    call that caused it returns; it must not raise or block.

    Clocks: ``clock_ms`` (wall clock, epoch milliseconds) gives the creation time written in
    each block and, at open, the age of blocks from an earlier run (never negative);
    ``monotonic_ms`` gives every age after that, so expiry is immune to wall-clock steps. Both
    are called on the worker thread, ``monotonic_ms`` also by :meth:`stats`.

    Leases: :meth:`read` leases the blocks it returns to the caller (the forwarder).
    :meth:`remove` ends a lease as delivered; :meth:`release_leases` (and :meth:`close`) end
    all of them as abandoned. ``drop_oldest`` may still delete a leased block to free space, but
    that drop is counted and reported only when the lease is released, never when the block is
    removed: then it was delivered. Expiry skips leased blocks.

    Example::

        async with Spool(settings, on_event=report) as spool:
            result = await spool.append(records)
    """

    def __init__(
        self,
        settings: SpoolSettings,
        *,
        on_event: Callable[[SpoolEvent], None] | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        monotonic_ms: Callable[[], int] = monotonic_clock_ms,
    ) -> None:
        """Create a closed spool; nothing touches the disk before :meth:`open`."""
        self._on_event = on_event
        self._store = Store(settings, clock_ms, monotonic_ms)
        self._executor: ThreadPoolExecutor | None = None
        self._state = _State.NEW
        self._append_lock = asyncio.Lock()
        self._data_added = asyncio.Event()
        self._space_freed = asyncio.Event()
        self._appends_waiting = 0

    async def __aenter__(self) -> Self:
        """Open the spool."""
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the spool."""
        await self.close()

    async def open(self) -> None:
        """Lock the directory, open the database and index what is stored.

        One SQL query reads every row's key and index entry, never a block (about 0.9 s per
        million blocks, see ``bench/spool_bench.py``). Rows that are not the spool's (foreign
        keys, pickles) are quarantined and reported before this returns; blocks with damaged
        bytes are found when read. Works on a full disk: the reserve file (``reserve_bytes``)
        is released so the database can be opened; without one the spool opens read-only
        (reads work, writes raise ``RetryableError`` until there is space, then it is writable
        again by itself). After a failure, ``open`` may be called again.

        Raises:
            RetryableError: The directory is locked by another process, or SQLite or the file
                system failed in a way that may pass.
            PermanentError: The spool was already opened, or its database is damaged.
        """
        if self._state is not _State.NEW:
            raise PermanentError("This spool was already opened; create a new Spool instead.")
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-agent-spool")
        listener = _LoopListener(loop, self._on_event, self._data_added, self._space_freed)
        try:
            await loop.run_in_executor(executor, self._store.open, listener)
        except BaseException:
            # Cancelled or failed: the close is queued behind an open that may still be running.
            executor.submit(self._store.close)
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        self._state = _State.OPEN

    async def close(self) -> None:
        """Finish queued operations, close the database and release the directory.

        Appends waiting for space and :meth:`wait_for_data` callers are woken; later calls raise
        :class:`~agent.errors.PermanentError`. Closing twice is harmless.
        """
        if self._state is not _State.OPEN or self._executor is None:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        self._data_added.set()
        self._space_freed.set()
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            await asyncio.shield(loop.run_in_executor(executor, self._store.close))
        finally:
            executor.shutdown(wait=False)

    async def append(
        self, records: Sequence[Record], *, journal: bytes | None = None
    ) -> AppendResult:
        """Store records as one block and return once it is durable.

        ``journal``, when not None, is stored in the same SQLite transaction as the block (a
        reserved row, never read as a block), so it is durable exactly when the block is; it is
        not stored when the block is not (``drop_newest`` refusal, failure, cancellation, empty
        batch). :meth:`journal` returns the last one stored. At most ``MAX_JOURNAL_BYTES``.

        Durable means synced to the device with ``durability="fsync"``, and handed to the OS
        (safe from a process crash, not from power loss) with ``durability="normal"``. An empty
        batch stores nothing and returns ``accepted=True, block_id=None``. Concurrent appends are
        committed one at a time, in call order.

        When the block does not fit in ``max_size_bytes``: ``block`` waits (without a thread)
        until :meth:`remove` or expiry frees enough space; ``drop_oldest`` drops the oldest
        blocks (in flight or not) in the same transaction; ``drop_newest`` returns
        ``accepted=False``. A block larger than ``max_size_bytes`` by itself never fits, so it
        is stored whenever the spool holds nothing else, whatever the policy: ``block`` waits
        until the spool is empty, ``drop_oldest`` drops everything else, ``drop_newest`` refuses
        it unless the spool is empty. The spool then exceeds its limit by that one block.

        Cancellation is safe: the block is then either stored completely or not at all, and the
        caller must treat it as not stored (the broker redelivers, which may duplicate).

        Raises:
            RetryableError: SQLite or the file system failed (for example the disk is full);
                nothing was stored.
            PermanentError: The spool is not open or was closed while waiting, a record does
                not fit the block format, or the block is over ``MAX_BLOCK_BYTES`` (64 MiB) or
                the journal over ``MAX_JOURNAL_BYTES``.
        """
        batch = tuple(records)
        if not batch:
            return AppendResult(accepted=True, block_id=None, size_bytes=0)
        async with self._append_lock:
            self._space_freed.clear()
            outcome = await self._run(self._store.append, batch, journal)
            while isinstance(outcome, EncodedBlock):
                await self._wait_for_space()
                self._space_freed.clear()
                outcome = await self._run(self._store.commit, outcome)
            return outcome

    async def read(
        self,
        after_block_id: int | None = None,
        max_blocks: int = 16,
        max_records: int | None = None,
    ) -> list[SpoolBlock]:
        """Return and lease up to ``max_blocks`` blocks with ids above ``after_block_id``.

        With ``max_records`` the blocks hold at most that many records together; the first block
        is returned whatever its size.

        Blocks come oldest first. Pass the id of the last block already taken (None for the
        start) so blocks in flight are not returned again. Every block returned is leased until
        :meth:`remove` or :meth:`release_leases`. Blocks older than ``max_age_secs`` are
        dropped instead of returned (unless leased), at most ``EXPIRE_CHUNK`` per call: the
        result can then be empty although later blocks exist, so call again (``wait_for_data``
        returns at once). Unreadable blocks are quarantined and skipped.

        Raises:
            ValueError: ``max_blocks`` is below 1.
            RetryableError: SQLite failed as a whole (never because of one bad block).
            PermanentError: The spool is not open.
        """
        if max_blocks < 1:
            raise ValueError(f"max_blocks must be at least 1, not {max_blocks}.")
        if max_records is not None and max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}.")
        return await self._run(self._store.read, after_block_id, max_blocks, max_records)

    async def wait_for_data(self, after_block_id: int | None = None) -> bool:
        """Wait until a block with an id above ``after_block_id`` is stored.

        Returns:
            True when there is such a block, False when the spool is not open (or got closed).
        """
        while self._state is _State.OPEN:
            self._data_added.clear()
            if self._store.has_block_after(after_block_id):
                return True
            await self._data_added.wait()
        return False

    async def remove(self, *block_ids: int) -> int:
        """Delete delivered blocks, all in one transaction, and wake appends waiting for space.

        Ends the blocks' leases. A block dropped by ``drop_oldest`` while leased counts as
        delivered (it is never counted as dropped). Other ids that are not stored (already
        removed, expired or quarantined) are ignored. On a full disk the reserve file is
        released so the delete can go through.

        Returns:
            How many of the ids were blocks now accounted as delivered.

        Raises:
            RetryableError: SQLite or the file system failed; nothing was deleted, the leases
                stay.
            PermanentError: The spool is not open.
        """
        return await self._run(self._store.remove, block_ids)

    async def release_leases(self) -> None:
        """End every lease: the caller abandoned everything it had read (reset, shutdown).

        Blocks dropped while leased are counted as dropped now, with their original reason,
        and reported; the other leased blocks are simply returned by a later :meth:`read`.
        :meth:`close` releases the leases too. Touches no disk.

        Raises:
            PermanentError: The spool is not open.
        """
        await self._run(self._store.release_leases)

    def journal(self) -> bytes:
        """The journal stored with the newest block that had one (read at open; ``b""`` if none).

        Reads memory only; after an :meth:`append` with a journal returned, this is that journal.
        """
        return self._store.journal()

    async def update_limits(self, settings: SpoolSettings) -> None:
        """Apply new limits and overflow policy while open (live reload).

        Only ``max_size_bytes``, ``max_age_secs``, ``overflow_policy`` and
        ``max_quarantine_bytes`` are taken; ``directory`` and ``durability`` need a restart.
        Appends waiting for space re-check against the new limit.
        """
        await self._run(self._store.replace_limits, settings)
        self._space_freed.set()

    async def expire(self) -> int:
        """Drop every block older than ``max_age_secs`` that is not leased; call it periodically.

        Ages are monotonic: a wall-clock step does not age blocks. A leased block is skipped; if
        it is released rather than removed, the next call drops it. Works in transactions of
        ``EXPIRE_CHUNK`` blocks, letting appends and reads run in between.

        Returns:
            How many blocks were dropped (each reported with reason ``expired``).

        Raises:
            RetryableError: SQLite or the file system failed (a full disk first releases the
                reserve and retries); what was dropped before the failure is counted.
            PermanentError: The spool is not open.
        """
        dropped = 0
        while (chunk := await self._run(self._store.expire, EXPIRE_CHUNK)) == EXPIRE_CHUNK:
            dropped += chunk
        return dropped + chunk

    def stats(self) -> SpoolStats:
        """Return the in-memory counters; never touches the disk or blocks on it."""
        return self._store.stats(self._appends_waiting)

    async def _wait_for_space(self) -> None:
        self._appends_waiting += 1
        try:
            await self._space_freed.wait()
        finally:
            self._appends_waiting -= 1
        if self._state is not _State.OPEN:
            raise PermanentError(
                "The spool was closed while an append waited for space; the records were not "
                "stored, so do not acknowledge them."
            )

    async def _run(self, func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        if self._state is not _State.OPEN or self._executor is None:
            raise PermanentError("The spool is not open; open it before use, not after close().")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)
