"""The producer's zstd level reaches the batches aiokafka builds."""

from __future__ import annotations

from collections.abc import Iterator

import cramjam
import orjson
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBase

from agent.sink._zstd_level import use_zstd_level

_HEADER_BYTES = 61  # a v2 record batch's header; the (compressed) records follow it


@pytest.fixture(autouse=True)
def _restore_level() -> Iterator[None]:
    yield
    use_zstd_level(3)


def _compressed_records(level: int) -> bytes:
    use_zstd_level(level)
    builder = BatchBuilder(512 * 1024, DefaultRecordBase.CODEC_ZSTD)
    for n in range(500):
        reading = {"device_id": f"dev-{n % 50:03d}", "metric": "vibration_rms", "value": n / 7}
        builder.append(timestamp=None, key=b"dev", value=orjson.dumps(reading), headers=[])
    return bytes(builder._build()[_HEADER_BYTES:])  # what the sender sends


@pytest.mark.parametrize("level", [1, 3, 9])
def test_batches_are_compressed_at_the_configured_level(level: int) -> None:
    frame = _compressed_records(level)
    records = bytes(cramjam.zstd.decompress(frame))
    assert frame == bytes(cramjam.zstd.compress(records, level=level))


def test_a_different_level_gives_a_different_frame() -> None:
    # The check above only means something if the levels tell apart on this batch.
    assert _compressed_records(1) != _compressed_records(9)
