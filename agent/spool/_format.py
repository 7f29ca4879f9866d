"""Encode and decode spool blocks: pure functions, no I/O. The layout is in the package doc.

Blocks are written in version 2 (records compressed with zstd, through ``cramjam``, the zstd
binding ``aiokafka[zstd]`` already installs); blocks of version 1 (records stored plainly) are
still read, so a spool written by the previous version drains after an upgrade.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cramjam

from agent.model import Record
from agent.spool._types import QuarantineReason

if TYPE_CHECKING:
    from collections.abc import Sequence

MAGIC = b"ESPB"
VERSION = 2
"""Version written: the payload is ``uint32 records_len`` + a zstd frame of the records."""
PLAIN_VERSION = 1
"""Previous version, still read: the payload is the records."""
WRITE_VERSION = VERSION
"""Version :func:`encode_block` writes by default (tests of exact sizes set it to 1)."""
FLAGS = 0
"""No flag is defined; a block with any flag set is refused."""
ZSTD_LEVEL = 1
"""Fastest level: JSON readings in a block share keys and shapes, and level 1 finds that."""
MAX_RECORDS_BYTES = 64 * 1024**2
"""Largest records section a block may hold, compressed or not (the spool's block limit).
:func:`encode_block` refuses more, so every block it writes can be read back."""

# magic, version, flags, created_at_ms, record_count, payload_len, crc32
_HEADER = struct.Struct("<4sBBqIII")
_CRC_OFFSET = _HEADER.size - 4
_CRC = struct.Struct("<I")
# timestamp_ms, topic_len, key_len (-1 = no key), value_len, header_count
_RECORD = struct.Struct("<qHiIH")
# name_len, value_len
_RECORD_HEADER = struct.Struct("<HI")
_RECORDS_LEN = struct.Struct("<I")
_NO_KEY = -1

HEADER_SIZE = _HEADER.size


class BlockFormatError(ValueError):
    """A block's bytes are not a valid block.

    Attributes:
        reason: Which check failed.
    """

    def __init__(self, reason: QuarantineReason, message: str) -> None:
        """Create the error with its reason and one sentence saying what is wrong."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The fixed-size header of a block.

    Attributes:
        created_at_ms: When the block was encoded, epoch milliseconds.
        record_count: Records in the payload.
        payload_len: Length of the payload that follows the header.
        version: Format version (1: plain records, 2: zstd-compressed records).
    """

    created_at_ms: int
    record_count: int
    payload_len: int
    version: int = VERSION


def encode_block(
    records: Sequence[Record], created_at_ms: int, *, version: int | None = None
) -> bytes:
    """Encode records into one checksummed block, in ``version`` (default :data:`WRITE_VERSION`).

    Raises:
        ValueError: A field does not fit the format (topic or header name over 65535 UTF-8
            bytes, over 65535 headers, a value over 4 GiB, a timestamp outside int64), or the
            records section is over :data:`MAX_RECORDS_BYTES` before compression.
    """
    version = WRITE_VERSION if version is None else version
    parts: list[bytes] = []
    pack_record = _RECORD.pack
    pack_header = _RECORD_HEADER.pack
    append = parts.append
    try:
        for record in records:
            topic = record.topic.encode()
            key = record.key
            value = record.value
            headers = record.headers
            key_len = _NO_KEY if key is None else len(key)
            append(pack_record(record.timestamp_ms, len(topic), key_len, len(value), len(headers)))
            append(topic)
            if key:
                append(key)
            append(value)
            for name, header_value in headers:
                name_bytes = name.encode()
                append(pack_header(len(name_bytes), len(header_value)))
                append(name_bytes)
                append(header_value)
        payload = b"".join(parts)
        if len(payload) > MAX_RECORDS_BYTES:
            raise ValueError(
                f"Records of {len(payload)} bytes are over the block limit of "
                f"{MAX_RECORDS_BYTES} bytes; append fewer or smaller records at a time."
            )
        if version == VERSION:
            packed = cramjam.zstd.compress(payload, level=ZSTD_LEVEL)
            payload = b"".join((_RECORDS_LEN.pack(len(payload)), packed))
        elif version != PLAIN_VERSION:
            raise ValueError(f"Cannot write block version {version}.")
        head = _HEADER.pack(MAGIC, version, FLAGS, created_at_ms, len(records), len(payload), 0)
    except struct.error as exc:
        raise ValueError(f"A record does not fit the spool block format: {exc}.") from exc
    crc = zlib.crc32(payload, zlib.crc32(memoryview(head)[:_CRC_OFFSET]))
    return b"".join((head[:_CRC_OFFSET], crc.to_bytes(4, "little"), payload))


def records_size(data: bytes) -> int:
    """Length of a well-formed block's records section once decompressed (its memory cost).

    For a block :func:`encode_block` just returned; a block read from disk is checked by
    :func:`decode_block` instead.
    """
    if data[len(MAGIC)] == PLAIN_VERSION:  # the version byte follows the magic
        return len(data) - HEADER_SIZE
    (records_len,) = _RECORDS_LEN.unpack_from(data, HEADER_SIZE)
    return int(records_len)


def parse_header(data: bytes) -> BlockHeader:
    """Parse and check the fixed-size header at the start of ``data`` (no checksum, no length).

    Raises:
        BlockFormatError: Too short, bad magic, unknown version or flags.
    """
    if len(data) < HEADER_SIZE:
        raise BlockFormatError(
            QuarantineReason.BAD_HEADER, f"Row of {len(data)} bytes is shorter than a header."
        )
    magic, version, flags, created_at_ms, record_count, payload_len, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BlockFormatError(QuarantineReason.BAD_HEADER, f"Row has bad magic {magic!r}.")
    if version not in {VERSION, PLAIN_VERSION} or flags != FLAGS:
        raise BlockFormatError(
            QuarantineReason.BAD_HEADER, f"Row has unknown version {version} or flags {flags:#x}."
        )
    return BlockHeader(created_at_ms, record_count, payload_len, version)


def verify_block(data: bytes) -> BlockHeader:
    """Check a block's header, length and checksum without decoding its records.

    Raises:
        BlockFormatError: Bad magic, version, flags or length, or a checksum mismatch.
    """
    header = parse_header(data)
    if header.payload_len != len(data) - HEADER_SIZE:
        raise BlockFormatError(
            QuarantineReason.BAD_HEADER,
            f"Header says {header.payload_len} payload bytes but the row holds "
            f"{len(data) - HEADER_SIZE}.",
        )
    (crc,) = _CRC.unpack_from(data, _CRC_OFFSET)
    view = memoryview(data)
    actual = zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[:_CRC_OFFSET]))
    if actual != crc:
        raise BlockFormatError(
            QuarantineReason.BAD_CHECKSUM, f"CRC32 is {actual:#010x}, header says {crc:#010x}."
        )
    return header


def decode_block(data: bytes) -> tuple[BlockHeader, tuple[Record, ...]]:
    """Verify a block and decode its records.

    Raises:
        BlockFormatError: The block fails :func:`verify_block` or its records do not decode.
    """
    header = verify_block(data)
    try:
        if header.version == PLAIN_VERSION:
            records = _decode_records(data, HEADER_SIZE, header.record_count)
        else:
            records = _decode_records(_decompress(data), 0, header.record_count)
    except (struct.error, UnicodeDecodeError, ValueError, cramjam.DecompressionError) as exc:
        raise BlockFormatError(
            QuarantineReason.BAD_RECORDS, f"Records do not decode: {exc}."
        ) from exc
    return header, records


def _decompress(data: bytes) -> bytes:
    """The records section of a version 2 block, never larger than it declares.

    Raises:
        ValueError: The declared length is too large or too short for the frame.
        cramjam.DecompressionError: The frame is not valid zstd.
    """
    (records_len,) = _RECORDS_LEN.unpack_from(data, HEADER_SIZE)
    if records_len > MAX_RECORDS_BYTES:
        raise ValueError(f"records section of {records_len} bytes is over the limit")
    out = bytearray(records_len)
    frame = memoryview(data)[HEADER_SIZE + _RECORDS_LEN.size :]
    if cramjam.zstd.decompress_into(frame, out) != records_len:
        raise ValueError("the records section is shorter than declared")
    return bytes(out)


def _decode_records(data: bytes, offset: int, count: int) -> tuple[Record, ...]:
    """Decode ``count`` records; equal topics and header pairs of a block share one object.

    A block's records mostly repeat the topic, every header name and some header values (the
    gateway id, the schema version): decoding each again would keep one copy per record in
    memory for as long as the block is in flight. ``topics``, ``names`` and ``pairs`` map the
    encoded bytes to the object already decoded for them (a pair's key is its name and value).
    """
    unpack_record = _RECORD.unpack_from
    unpack_header = _RECORD_HEADER.unpack_from
    record_size = _RECORD.size
    header_size = _RECORD_HEADER.size
    end = len(data)
    records: list[Record] = []
    topics: dict[bytes, str] = {}
    names: dict[bytes, str] = {}
    pairs: dict[bytes, tuple[str, bytes]] = {}  # name and value bytes → the pair
    for _ in range(count):
        timestamp_ms, topic_len, key_len, value_len, header_count = unpack_record(data, offset)
        offset += record_size
        topic_end = offset + topic_len
        key_end = topic_end + max(key_len, 0)
        value_end = key_end + value_len
        if value_end > end or key_len < _NO_KEY:
            raise ValueError("a record runs past the end of the block")
        raw_topic = data[offset:topic_end]
        topic = topics.get(raw_topic)
        if topic is None:
            topic = topics[raw_topic] = raw_topic.decode()
        key = None if key_len == _NO_KEY else data[topic_end:key_end]
        value = data[key_end:value_end]
        offset = value_end
        headers: list[tuple[str, bytes]] = []
        for _ in range(header_count):
            name_len, header_value_len = unpack_header(data, offset)
            offset += header_size
            name_end = offset + name_len
            header_value_end = name_end + header_value_len
            if header_value_end > end:
                raise ValueError("a header runs past the end of the block")
            raw = data[offset:header_value_end]
            pair = pairs.get(raw)
            if pair is None:
                raw_name = data[offset:name_end]
                name = names.get(raw_name)
                if name is None:
                    name = names[raw_name] = raw_name.decode()
                pair = pairs[raw] = (name, data[name_end:header_value_end])
            headers.append(pair)
            offset = header_value_end
        records.append(Record(topic, key, value, tuple(headers), timestamp_ms))
    if offset != end:
        raise ValueError(f"{end - offset} bytes follow the last record")
    return tuple(records)
