"""The zstd level of the producer's batches.

aiokafka compresses every zstd batch at level 3 (Kafka's default, KIP-390) and has no option for
the level. On this agent's batches of JSON readings, level 1 compresses as well or better and
about 30 % faster; compression is the largest single cost of a backlog drain (see
``docs/design/performance.md``). The level is set by replacing the codec function that both of
aiokafka's batch builders (the C extension and the pure-Python fallback) look up in their module
globals when they build a batch. A unit test builds a batch through aiokafka and checks its
bytes, so an aiokafka that stops calling this function fails the tests instead of quietly
compressing at level 3 again.
"""

from __future__ import annotations

import importlib

import cramjam

_BUILDER_MODULES = (
    "aiokafka.record.default_records",
    "aiokafka.record._crecords.default_records",
)

_level = 3


def _zstd_encode(payload: bytes | bytearray | memoryview, level: int | None = None) -> bytes:  # noqa: ARG001 - aiokafka's signature
    return bytes(cramjam.zstd.compress(payload, level=_level))


def use_zstd_level(level: int) -> None:
    """Compress the producer's zstd batches at ``level`` from now on (process-wide)."""
    global _level  # noqa: PLW0603 - one producer setting for the process
    _level = level
    for name in _BUILDER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # the C extension is optional in aiokafka
            continue
        module.zstd_encode = _zstd_encode  # type: ignore[attr-defined]
