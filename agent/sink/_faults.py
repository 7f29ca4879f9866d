"""What an aiokafka error means for the record it hit: retry, reset, split, settle.

Classification of a *send future's* failure (a produce response or the sender's own verdict):

=====================  ==========================================================================
fault                  errors and what the forwarder does
=====================  ==========================================================================
``RETRY``              retriable errors (``retriable = True``: a leaderless partition expired,
                       timeouts): send the record again with the same producer. Never a reset.
``PRODUCER``           the producer's state is broken: ``OutOfOrderSequenceNumber`` (the gap a
                       refused batch leaves in the idempotent sequence), fenced or unknown
                       producer id, a closed producer, a dead sender task. Reset, then resend.
``TOO_LARGE``          ``MESSAGE_TOO_LARGE`` / ``RECORD_LIST_TOO_LARGE``: batch-level, every record
                       of the batch gets it. Resend each record alone; alone and still refused
                       means the record itself is too large.
``INVALID``            any other non-retriable broker error (``CORRUPT_MESSAGE``,
                       ``INVALID_RECORD`` which aiokafka reports as ``UnknownError``, policy
                       violations...): also batch-level, handled like ``TOO_LARGE``.
``TIMESTAMP``          ``INVALID_TIMESTAMP``: the record time is too far from the broker's clock;
                       the clock discipline learns a correction and the record is resent.
``TOPIC_AUTH``         ``TOPIC_AUTHORIZATION_FAILED``: the topic refuses the agent.
=====================  ==========================================================================
"""

from __future__ import annotations

import enum
from typing import Final

from aiokafka import errors as kafka_errors


class Fault(enum.Enum):
    """What a failed send means; see the module docstring."""

    RETRY = "retry"
    PRODUCER = "producer"
    TOO_LARGE = "too_large"
    INVALID = "invalid"
    TIMESTAMP = "timestamp"
    TOPIC_AUTH = "topic_auth"


class SettleReason(enum.StrEnum):
    """Why a record was settled (sent to the DLQ or dropped) instead of delivered: closed set."""

    RECORD_TOO_LARGE = "record_too_large"
    TOPIC_AUTHORIZATION_FAILED = "topic_authorization_failed"
    TOPIC_MISSING = "topic_missing"
    INVALID_RECORD = "invalid_record"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    RESEND_LIMIT = "resend_limit"


_PRODUCER_FAULTS: Final = (
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.ProducerFenced,
    kafka_errors.InvalidProducerEpoch,
    kafka_errors.InvalidProducerIdMapping,
    kafka_errors.UnknownProducerId,
    kafka_errors.InvalidTxnState,
    kafka_errors.ProducerClosed,
)
_TOO_LARGE: Final = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError)


_BY_TYPE: Final = (
    (_PRODUCER_FAULTS, Fault.PRODUCER),
    (_TOO_LARGE, Fault.TOO_LARGE),
    ((kafka_errors.InvalidTimestampError,), Fault.TIMESTAMP),
    ((kafka_errors.TopicAuthorizationFailedError,), Fault.TOPIC_AUTH),
)


def classify(exc: BaseException) -> Fault:
    """Return what a send future's exception means for its record."""
    for types, fault in _BY_TYPE:
        if isinstance(exc, types):
            return fault
    if isinstance(exc, kafka_errors.KafkaError) and exc.retriable:
        return Fault.RETRY
    if isinstance(exc, kafka_errors.BrokerResponseError):
        return Fault.INVALID
    # A KafkaError that is not a broker's answer (the sender task died) or anything else.
    return Fault.PRODUCER


def describe(exc: BaseException) -> str:
    """One short line naming the error, for the ``dlq-detail`` header and logs."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}"[:200] if text and text != name else name
