"""The block format: what is encoded decodes to the same records, and damage is always detected."""

from __future__ import annotations

import struct
import zlib

import cramjam
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.model import Record
from agent.spool import QuarantineReason
from agent.spool._format import (
    HEADER_SIZE,
    MAGIC,
    PLAIN_VERSION,
    BlockFormatError,
    decode_block,
    encode_block,
    verify_block,
)

_INT64 = st.integers(-(2**63), 2**63 - 1)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_RECORDS = st.lists(
    st.builds(
        Record,
        topic=_TEXT,
        key=st.none() | st.binary(max_size=30),
        value=st.binary(max_size=200),
        headers=st.lists(st.tuples(_TEXT, st.binary(max_size=20)), max_size=4).map(tuple),
        timestamp_ms=_INT64,
    ),
    max_size=20,
)


def _sample_block() -> bytes:
    records = [
        Record("plant/ü/temp", None, b"\x00\xff", (("id", b"1"),), 1),
        Record("t", b"", b"", (), -5),
    ]
    return encode_block(records, created_at_ms=1_700_000_000_000)


def _with_crc(head_without_crc: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(head_without_crc))
    return head_without_crc + crc.to_bytes(4, "little") + payload


@given(records=_RECORDS, created_at_ms=_INT64)
def test_format_round_trip_keeps_every_field(records: list[Record], created_at_ms: int) -> None:
    """Any records, incl. None vs empty keys, binary values and unicode, decode unchanged."""
    data = encode_block(records, created_at_ms)
    header, decoded = decode_block(data)
    assert decoded == tuple(records)
    assert header.created_at_ms == created_at_ms
    assert header.record_count == len(records)
    assert header.payload_len == len(data) - HEADER_SIZE


def test_format_crc_detects_any_flipped_byte() -> None:
    """Changing any single byte of a block, to any other value, makes verification fail."""
    data = _sample_block()
    verify_block(data)
    for position in range(len(data)):
        for mask in range(1, 256):
            damaged = bytearray(data)
            damaged[position] ^= mask
            with pytest.raises(BlockFormatError):
                verify_block(bytes(damaged))


def test_format_payload_damage_is_reported_as_checksum_error() -> None:
    """A flipped payload bit is classified as a checksum mismatch, not a header problem."""
    damaged = bytearray(_sample_block())
    damaged[-1] ^= 0x01
    with pytest.raises(BlockFormatError) as raised:
        decode_block(bytes(damaged))
    assert raised.value.reason is QuarantineReason.BAD_CHECKSUM


@pytest.mark.parametrize("cut", [0, 1, HEADER_SIZE - 1, HEADER_SIZE, -1])
def test_format_truncated_block_is_refused(cut: int) -> None:
    """A block cut short anywhere is refused as a bad header."""
    with pytest.raises(BlockFormatError) as raised:
        verify_block(_sample_block()[:cut])
    assert raised.value.reason is QuarantineReason.BAD_HEADER


def test_format_extended_block_is_refused() -> None:
    """Bytes appended after a valid block are refused as a bad header."""
    with pytest.raises(BlockFormatError) as raised:
        verify_block(_sample_block() + b"\x00")
    assert raised.value.reason is QuarantineReason.BAD_HEADER


@pytest.mark.parametrize(("version", "flags"), [(3, 0), (0, 0), (1, 1), (2, 0x80)])
def test_format_unknown_version_or_flags_are_refused(version: int, flags: int) -> None:
    """A block from another format version, or with a flag set, is refused even if its CRC fits."""
    head = struct.pack("<4sBBqII", MAGIC, version, flags, 0, 0, 0)
    with pytest.raises(BlockFormatError) as raised:
        verify_block(_with_crc(head, b""))
    assert raised.value.reason is QuarantineReason.BAD_HEADER


def test_format_records_running_past_the_block_are_refused() -> None:
    """A block whose CRC matches but whose record lengths overrun it fails as bad records."""
    payload = struct.pack("<qHiIH", 0, 200, -1, 0, 0)  # topic_len 200, nothing follows
    head = struct.pack("<4sBBqII", MAGIC, 1, 0, 0, 1, len(payload))
    data = _with_crc(head, payload)
    verify_block(data)
    with pytest.raises(BlockFormatError) as raised:
        decode_block(data)
    assert raised.value.reason is QuarantineReason.BAD_RECORDS


def test_format_trailing_payload_bytes_are_refused() -> None:
    """Payload bytes after the last record are refused as bad records."""
    payload = struct.pack("<qHiIH", 0, 0, -1, 0, 0) + b"x"
    head = struct.pack("<4sBBqII", MAGIC, 1, 0, 0, 1, len(payload))
    with pytest.raises(BlockFormatError) as raised:
        decode_block(_with_crc(head, payload))
    assert raised.value.reason is QuarantineReason.BAD_RECORDS


def test_format_invalid_utf8_topic_is_refused() -> None:
    """A topic that is not UTF-8 is refused as bad records instead of raising UnicodeError."""
    payload = struct.pack("<qHiIH", 0, 1, -1, 0, 0) + b"\xff"
    head = struct.pack("<4sBBqII", MAGIC, 1, 0, 0, 1, len(payload))
    with pytest.raises(BlockFormatError) as raised:
        decode_block(_with_crc(head, payload))
    assert raised.value.reason is QuarantineReason.BAD_RECORDS


def test_format_topic_too_long_for_the_format_is_refused() -> None:
    """A topic over 65535 UTF-8 bytes raises ValueError at encode time, not a corrupt block."""
    record = Record("t" * 65_536, None, b"", (), 0)
    with pytest.raises(ValueError, match="does not fit"):
        encode_block([record], created_at_ms=0)


@given(records=_RECORDS, created_at_ms=_INT64)
def test_format_version_1_blocks_are_still_read(records: list[Record], created_at_ms: int) -> None:
    """Blocks of the previous version (records stored plainly) decode to the same records."""
    data = encode_block(records, created_at_ms, version=PLAIN_VERSION)
    header, decoded = decode_block(data)
    assert (header.version, header.created_at_ms, list(decoded)) == (1, created_at_ms, records)


def test_format_version_2_compresses_repetitive_records() -> None:
    """JSON readings in a block share their keys: the block is a fraction of the plain one."""
    records = [
        Record("t", b"dev-1", b'{"device_id":"dev-1","metric":"temperature","value":%d}' % i, (), i)
        for i in range(100)
    ]
    compressed = encode_block(records, 0)
    assert len(compressed) * 3 < len(encode_block(records, 0, version=PLAIN_VERSION))
    assert list(decode_block(compressed)[1]) == records


def _version_2(records_len: int, frame: bytes) -> bytes:
    payload = struct.pack("<I", records_len) + frame
    return _with_crc(struct.pack("<4sBBqII", MAGIC, 2, 0, 0, 1, len(payload)), payload)


@pytest.mark.parametrize(
    ("records_len", "frame"),
    [
        (10, b"not zstd at all"),  # not a frame
        (10, b""),  # no frame
        (2**31, b""),  # declares more than a block may hold
        (5, bytes(cramjam.zstd.compress(b"0123456789"))),  # frame longer than declared
        (20, bytes(cramjam.zstd.compress(b"0123456789"))),  # frame shorter than declared
    ],
)
def test_format_bad_compressed_payload_is_refused_as_bad_records(
    records_len: int, frame: bytes
) -> None:
    """A version 2 block whose CRC fits but whose frame does not decompress as declared."""
    with pytest.raises(BlockFormatError) as raised:
        decode_block(_version_2(records_len, frame))
    assert raised.value.reason is QuarantineReason.BAD_RECORDS


def test_decode_block_shares_the_topic_and_equal_headers_between_records():
    """Records decoded from one block share their topic and equal header pairs (memory)."""
    records = [
        Record("t", b"k", b"v%d" % i, (("message-id", b"%d" % i), ("gateway-id", b"gw")), i)
        for i in range(3)
    ]
    _, decoded = decode_block(encode_block(records, created_at_ms=0))
    assert list(decoded) == records
    first, *rest = decoded
    for record in rest:
        assert record.topic is first.topic
        assert record.headers[1] is first.headers[1]  # the same gateway-id pair
        assert record.headers[0][0] is first.headers[0][0]  # the same "message-id" name
