"""Encode and decode spool blocks: pure functions, no I/O. The layout is in the package doc."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.model import Record
from agent.spool._types import QuarantineReason

if TYPE_CHECKING:
    from collections.abc import Sequence

MAGIC = b"ESPB"
VERSION = 1
FLAGS = 0
"""No flag is defined in version 1; a block with any flag set is refused."""

# magic, version, flags, created_at_ms, record_count, payload_len, crc32
_HEADER = struct.Struct("<4sBBqIII")
_CRC_OFFSET = _HEADER.size - 4
_CRC = struct.Struct("<I")
# timestamp_ms, topic_len, key_len (-1 = no key), value_len, header_count
_RECORD = struct.Struct("<qHiIH")
# name_len, value_len
_RECORD_HEADER = struct.Struct("<HI")
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
    """

    created_at_ms: int
    record_count: int
    payload_len: int


def encode_block(records: Sequence[Record], created_at_ms: int) -> bytes:
    """Encode records into one checksummed block.

    Raises:
        ValueError: A field does not fit the format (topic or header name over 65535 UTF-8
            bytes, over 65535 headers, a value over 4 GiB, a timestamp outside int64).
    """
    parts: list[bytes] = [b""]  # placeholder for the header
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
        head = _HEADER.pack(MAGIC, VERSION, FLAGS, created_at_ms, len(records), len(payload), 0)
    except struct.error as exc:
        raise ValueError(f"A record does not fit the spool block format: {exc}.") from exc
    crc = zlib.crc32(payload, zlib.crc32(memoryview(head)[:_CRC_OFFSET]))
    return b"".join((head[:_CRC_OFFSET], crc.to_bytes(4, "little"), payload))


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
    if version != VERSION or flags != FLAGS:
        raise BlockFormatError(
            QuarantineReason.BAD_HEADER, f"Row has unknown version {version} or flags {flags:#x}."
        )
    return BlockHeader(created_at_ms, record_count, payload_len)


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
        records = _decode_records(data, header.record_count)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise BlockFormatError(
            QuarantineReason.BAD_RECORDS, f"Records do not decode: {exc}."
        ) from exc
    return header, records


def _decode_records(data: bytes, count: int) -> tuple[Record, ...]:
    unpack_record = _RECORD.unpack_from
    unpack_header = _RECORD_HEADER.unpack_from
    record_size = _RECORD.size
    header_size = _RECORD_HEADER.size
    end = len(data)
    offset = HEADER_SIZE
    records: list[Record] = []
    for _ in range(count):
        timestamp_ms, topic_len, key_len, value_len, header_count = unpack_record(data, offset)
        offset += record_size
        topic_end = offset + topic_len
        key_end = topic_end + max(key_len, 0)
        value_end = key_end + value_len
        if value_end > end or key_len < _NO_KEY:
            raise ValueError("a record runs past the end of the block")
        topic = data[offset:topic_end].decode()
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
            headers.append((data[offset:name_end].decode(), data[name_end:header_value_end]))
            offset = header_value_end
        records.append(Record(topic, key, value, tuple(headers), timestamp_ms))
    if offset != end:
        raise ValueError(f"{end - offset} bytes follow the last record")
    return tuple(records)
