"""The dead-letter copy of a record Kafka refused for good.

The copy goes to the DLQ topic with the original key, timestamp and headers, the payload cut to
``kafka.dlq_max_payload_bytes`` (``original-size`` and ``payload-sha256`` say what was cut, see
:func:`agent.pipeline.bounded_payload`), and ``dlq-reason`` / ``dlq-detail``. It never exceeds
the producer's request size: the payload is cut further when key and headers are large, and no
copy is made when even an empty payload would not fit.

A record that already was a dead letter (the pipeline's, on the DLQ topic) keeps its own
``dlq-reason``/``dlq-detail``: only its payload is cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agent.model import Headers, Record
from agent.pipeline import (
    HEADER_DLQ_DETAIL,
    HEADER_DLQ_REASON,
    HEADER_ORIGINAL_SIZE,
    HEADER_PAYLOAD_SHA256,
    bounded_payload,
)
from agent.sink.clock import HEADER_ORIGINAL_TIMESTAMP

if TYPE_CHECKING:
    from agent.sink._faults import SettleReason

_REASON: Final = frozenset({HEADER_DLQ_REASON, HEADER_DLQ_DETAIL})
_CUT: Final = frozenset({HEADER_ORIGINAL_SIZE, HEADER_PAYLOAD_SHA256})
_REPLACED: Final = _REASON | _CUT
_SIZE_MARGIN_BYTES: Final = 1024  # record batch framing and the two cut headers
_MAX_DETAIL_BYTES: Final = 512


def dead_letter_copy(  # noqa: PLR0913 - every argument is a separate fact of the copy
    record: Record,
    *,
    topic: str,
    reason: SettleReason,
    detail: str,
    max_payload_bytes: int,
    max_request_bytes: int,
    timestamp_ms: int | None = None,
) -> Record | None:
    """Return the DLQ copy of ``record``, or None when no copy can fit a request.

    ``timestamp_ms`` replaces the record's timestamp (for a record refused for its timestamp);
    the original is then kept in the ``original-timestamp`` header.
    """
    if record.topic == topic:
        # Already a dead letter (the pipeline's): keep its own reason, only cut the payload.
        headers = tuple((k, v) for k, v in record.headers if k not in _CUT)
        tail: Headers = tuple((k, v) for k, v in record.headers if k in _REASON)
        headers = tuple((k, v) for k, v in headers if k not in _REASON)
    else:
        headers = tuple((k, v) for k, v in record.headers if k not in _REPLACED)
        tail = (
            (HEADER_DLQ_REASON, reason.value.encode("ascii")),
            (HEADER_DLQ_DETAIL, detail.encode("utf-8", "backslashreplace")[:_MAX_DETAIL_BYTES]),
        )
    if timestamp_ms is not None and timestamp_ms != record.timestamp_ms:
        if all(k != HEADER_ORIGINAL_TIMESTAMP for k, _ in headers):
            headers = (*headers, (HEADER_ORIGINAL_TIMESTAMP, b"%d" % record.timestamp_ms))
    else:
        timestamp_ms = record.timestamp_ms
    skeleton = Record(topic, record.key, b"", (*headers, *tail), timestamp_ms)
    budget = min(max_payload_bytes, max_request_bytes - skeleton.size_bytes - _SIZE_MARGIN_BYTES)
    if budget < 0:
        return None
    value, cut = bounded_payload(record.value, budget)
    return Record(topic, record.key, value, (*headers, *cut, *tail), timestamp_ms)
