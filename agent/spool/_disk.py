"""A diskcache ``Disk`` that stores raw bytes inline in SQLite and never unpickles anything.

diskcache's stock ``Disk`` pickles every value that is not ``bytes``/``str``/``int``/``float``
(``MODE_PICKLE``) and unpickles such rows on read, so whoever can write the cache directory can
run code in the agent (CVE-2025-69872). It also moves values of ``disk_min_file_size`` bytes or
more into side files (``MODE_BINARY``) that are written without fsync. This ``Disk``:

- stores only ``bytes`` values, always as ``MODE_RAW`` BLOBs inside the SQLite row (whatever the
  size), so every value is covered by SQLite's transaction and sync guarantees;
- accepts only ``int`` keys (block ids); a row whose key is anything else is handed back as a
  :class:`ForeignKey` so the spool can quarantine and delete it without deserialising it;
- refuses to fetch any row that is not an inline raw BLOB and raises :class:`RefusedRowError`
  carrying the raw stored bytes for forensics. Side files are never opened;
- deletes a foreign row's side file only if it really lies inside the cache directory (the stock
  ``Disk`` would follow a crafted ``../`` filename out of it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from diskcache import Disk
from diskcache.core import MODE_RAW, UNKNOWN


class RefusedRowError(ValueError):
    """A row is not an inline raw BLOB (a pickle, text, a number or a side file).

    Attributes:
        raw: The bytes stored in the row, never deserialised (empty for side files).
    """

    def __init__(self, message: str, raw: bytes) -> None:
        """Create the error with one sentence naming the row's storage mode and its raw bytes."""
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """The key of a row the spool did not write, exactly as stored in the ``Cache`` table.

    Attributes:
        db_key: The stored key column (BLOB, TEXT, REAL or a pickle).
        raw: The stored ``raw`` column: False means ``db_key`` is a pickle (never loaded).
    """

    db_key: object
    raw: bool


class BytesOnlyDisk(Disk):  # type: ignore[misc]  # diskcache ships no type information
    """Serialise ``int`` keys and ``bytes`` values only; see the module docstring."""

    def put(self, key: object) -> tuple[object, bool]:
        """Map a key to its ``(key, raw)`` columns.

        Raises:
            TypeError: The key is neither an ``int`` nor a :class:`ForeignKey`.
        """
        if type(key) is int:
            return key, True
        if isinstance(key, ForeignKey):
            return key.db_key, key.raw
        raise TypeError(f"Spool keys are block ids (int), not {type(key).__name__}.")

    def get(self, key: object, raw: bool) -> int | ForeignKey:  # noqa: FBT001  # diskcache's signature
        """Map stored ``(key, raw)`` columns back to a block id, or a :class:`ForeignKey`."""
        if raw and type(key) is int:
            return key
        return ForeignKey(key, raw)

    def store(
        self,
        value: object,
        read: bool,  # noqa: FBT001  # diskcache's signature
        key: object = UNKNOWN,
    ) -> tuple[int, int, None, sqlite3.Binary]:
        """Store ``bytes`` inline as a raw BLOB, whatever its size.

        Raises:
            TypeError: The value is not ``bytes`` or is a file to read from.
        """
        del key
        if read or type(value) is not bytes:
            raise TypeError(f"The spool stores bytes only, not {type(value).__name__}.")
        return 0, MODE_RAW, None, sqlite3.Binary(value)

    def fetch(
        self,
        mode: int,
        filename: str | None,
        value: object,
        read: bool,  # noqa: FBT001  # diskcache's signature
    ) -> bytes:
        """Return the bytes of an inline raw BLOB row.

        Raises:
            RefusedRowError: The row is anything else; nothing is deserialised or opened.
        """
        del read
        return fetch_raw(mode, filename, value)

    def remove(self, file_path: str) -> None:
        """Delete a side file, but only one that lies inside the cache directory."""
        root = Path(self._directory).resolve()
        full_path = (root / file_path).resolve()
        if full_path != root and full_path.is_relative_to(root):
            super().remove(file_path)


def fetch_raw(mode: int, filename: str | None, value: object) -> bytes:
    """The bytes of a row stored as an inline raw BLOB (``mode``, ``filename``, ``value`` columns).

    Raises:
        RefusedRowError: The row is anything else; nothing is deserialised or opened.
    """
    if mode == MODE_RAW and filename is None and type(value) is bytes:
        return value
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = value.encode(errors="surrogateescape")
    else:
        raw = b""
    where = f"side file {filename!r}" if filename is not None else "the row"
    message = f"Refused a value of storage mode {mode} ({type(value).__name__}) in {where}."
    raise RefusedRowError(message, raw)
