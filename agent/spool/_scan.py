"""Index a spool at open with one SQL query over diskcache's ``Cache`` table, reading no values.

Every block row written by this version carries its index entry in the ``tag`` column
(:data:`TAG`: creation time, record count and size, 24 bytes), so opening the spool reads the
keys and tags only: the ``value`` column of a tagged row is not even looked at (testing its
type alone costs 40% of the scan), so a tagged row whose value is not a BLOB is refused when
the block is read, like a damaged block. Rows written by the previous version have no tag: for
those the query returns the 26-byte block header (``substr(value, 1, 26)``) and the size is
taken from it. The meta rows (negative keys) come back with their value. Everything else (a
foreign key, a row that is not stored as an inline raw value, a header too short to be one)
comes back as the ``raw`` flag or NULL and is inspected row by row, through diskcache's public
API, by the caller.

diskcache has no public API for such a query: :func:`execute` is the one place that uses its
private ``Cache._sql`` (the per-thread connection's ``execute``); a unit test fails if diskcache
changes it.
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

from agent.spool._disk import ForeignKey
from agent.spool._format import HEADER_SIZE, BlockFormatError, parse_header

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from diskcache import Cache

TAG = struct.Struct("<qqq")
"""``tag`` column of a block row: created_at_ms, record_count, size_bytes (int64 each)."""

_CHUNK_ROWS = 512  # measured: smaller chunks stay in the CPU cache; 4096 costs 20% more
SCAN_QUERY = (
    "SELECT key, CASE"  # noqa: S608  # built from constants only
    " WHEN typeof(key) != 'integer' OR raw IS NOT 1 THEN ifnull(raw, 0)"
    " WHEN NOT (mode = 1 AND filename IS NULL) THEN NULL"
    " WHEN key < 0 AND typeof(value) = 'blob' THEN value"
    f" WHEN key > 0 AND typeof(tag) = 'blob' AND length(tag) = {TAG.size} THEN tag"
    f" WHEN key > 0 AND tag IS NULL AND typeof(value) = 'blob' AND length(value) >= {HEADER_SIZE}"
    f" THEN substr(value, 1, {HEADER_SIZE})"
    " END FROM Cache ORDER BY rowid"
)
"""The one query, one ``(key, column)`` per row in insertion order. ``column`` is the ``raw``
flag (an int) for a key the spool cannot have written; NULL for an int-keyed row not stored as
an inline raw value (mode, side file), an untagged one too short to hold a header, or a meta
row that is not a BLOB; the value of a meta row; the tag of a block row of this version; or
the header of a block row of the previous version."""


def execute(cache: Cache, query: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
    """Run a query on ``cache``'s own connection (diskcache private API, isolated here)."""
    cursor: sqlite3.Cursor = cache._sql(query, params)  # noqa: SLF001  # see the module doc
    return cursor


@dataclass(slots=True)
class ScanResult:
    """Columns of the block rows that indexed, plus everything the caller must look at itself.

    Attributes:
        ids: Block ids, strictly increasing.
        wall_ms: Creation times (epoch ms) from the tag or the header.
        records: Record counts.
        sizes: Block sizes in bytes.
        meta: Meta rows (negative keys) and their values.
        suspects: Keys of rows to inspect one by one, in table order: block ids whose row is
            not an inline raw BLOB or whose header does not parse, and foreign keys.
        old_format: Rows indexed from their header (written by the previous version).
        ids_seen: Highest block id among rows left unread (read-only open), for the next id.
    """

    ids: array[int] = field(default_factory=lambda: array("q"))
    wall_ms: array[int] = field(default_factory=lambda: array("q"))
    records: array[int] = field(default_factory=lambda: array("i"))
    sizes: array[int] = field(default_factory=lambda: array("i"))
    meta: dict[int, bytes] = field(default_factory=dict)
    suspects: list[int | ForeignKey] = field(default_factory=list)
    old_format: int = 0
    ids_seen: int = 0


def scan(run: Callable[[str], sqlite3.Cursor]) -> ScanResult:
    """Run :data:`SCAN_QUERY` with ``run`` and build the index columns.

    O(rows), C-speed for tagged rows. ``run`` executes a statement:
    ``functools.partial(execute, cache)``, or a read-only connection's ``execute``.
    """
    result = ScanResult()
    flat = array("q")  # created_at_ms, record_count, size_bytes per block, back to back
    ids = result.ids
    cursor = run(SCAN_QUERY)
    while rows := cursor.fetchmany(_CHUNK_ROWS):
        keys, columns = zip(*rows, strict=True)
        try:
            joined = b"".join(columns)  # TypeError: a NULL or an int (suspects) among them
        except TypeError:
            joined = b""
        # Every column a tag (meta rows have negative keys): the fast path, no Python per row.
        if len(joined) == TAG.size * len(columns) and min(keys) > 0:
            ids.extend(keys)
            flat.frombytes(joined)
            continue
        for key, column in rows:
            tag = _row(result, key, column)
            if tag is not None:
                ids.append(key)
                flat.frombytes(tag)
    result.wall_ms = flat[0::3]
    result.records = _narrowed(flat, 1)
    result.sizes = _narrowed(flat, 2)
    del flat
    if any(map(operator.ge, ids, islice(ids, 1, None))):
        _sort(result)
    return result


def _narrowed(flat: array[int], offset: int) -> array[int]:
    """Every third int64 of ``flat`` from ``offset``, as int32 (C-speed; values fit).

    Record counts and sizes are below 2**31 (a SQLite value is at most 1e9 bytes), so the low
    half of the int64 is the value.
    """
    low = 0 if sys.byteorder == "little" else 1
    low_halves = memoryview(flat).cast("B").cast("i")[2 * offset + low :: 6]
    narrowed = array("i")
    narrowed.frombytes(low_halves.tobytes())
    return narrowed


def _row(result: ScanResult, key: object, column: bytes | int | None) -> bytes | None:
    """Handle one row off the fast path; return its tag when it is an indexable block."""
    if isinstance(column, int):
        result.suspects.append(ForeignKey(key, bool(column)))
        return None
    if column is None or type(key) is not int:
        result.suspects.append(key if type(key) is int else ForeignKey(key, raw=True))
        return None
    if key < 0:
        result.meta[key] = column
        return None
    if len(column) == TAG.size:
        return column
    try:
        header = parse_header(column)
    except BlockFormatError:
        result.suspects.append(key)
        return None
    result.old_format += 1
    return TAG.pack(header.created_at_ms, header.record_count, HEADER_SIZE + header.payload_len)


def _sort(result: ScanResult) -> None:
    """Put the columns in id order (only if rowids and ids disagree, which the spool avoids)."""
    order = sorted(range(len(result.ids)), key=result.ids.__getitem__)
    result.ids = array("q", (result.ids[i] for i in order))
    result.wall_ms = array("q", (result.wall_ms[i] for i in order))
    result.records = array("i", (result.records[i] for i in order))
    result.sizes = array("i", (result.sizes[i] for i in order))
