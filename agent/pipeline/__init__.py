"""Edge validation: device id, routing, canonical readings and the records to produce.

Usage::

    pipeline = Pipeline(PipelineSettings(), gateway_id="gw-1")
    processed = pipeline.process(message)  # never raises
    for record in processed.records:
        ...  # spool, then produce

See :class:`Pipeline` for the contract, :class:`Reason` for every way a message can fail.
Payload profiles (``pipeline.profiles``: multi-field objects, arrays, bare values, chosen per
MQTT topic filter) and the typed schema version 2 are in :mod:`agent.pipeline._profiles` and
:mod:`agent.pipeline._typed`; without them the pipeline behaves exactly as before.
"""

from agent.pipeline._pipeline import Pipeline
from agent.pipeline._reading import Reading
from agent.pipeline._records import (
    HEADER_DLQ_DETAIL,
    HEADER_DLQ_REASON,
    HEADER_GATEWAY_ID,
    HEADER_MESSAGE_ID,
    HEADER_ORIGINAL_SIZE,
    HEADER_PARENT_MESSAGE_ID,
    HEADER_PAYLOAD_SHA256,
    HEADER_READING_INDEX,
    HEADER_RECEIVED_AT,
    HEADER_SCHEMA_VERSION,
    HEADER_SOURCE_TOPIC,
    SCHEMA_VERSION,
    bounded_payload,
    reading_message_id,
)
from agent.pipeline._result import Outcome, Processed, Reason
from agent.pipeline.settings import (
    DeviceIdSettings,
    JsonFieldsProfile,
    JsonReadingProfile,
    LowQualityAction,
    MissingTimestampPolicy,
    PipelineSettings,
    ScalarProfile,
    TopicSettings,
    UnknownFieldPolicy,
)

__all__ = [
    "HEADER_DLQ_DETAIL",
    "HEADER_DLQ_REASON",
    "HEADER_GATEWAY_ID",
    "HEADER_MESSAGE_ID",
    "HEADER_ORIGINAL_SIZE",
    "HEADER_PARENT_MESSAGE_ID",
    "HEADER_PAYLOAD_SHA256",
    "HEADER_READING_INDEX",
    "HEADER_RECEIVED_AT",
    "HEADER_SCHEMA_VERSION",
    "HEADER_SOURCE_TOPIC",
    "SCHEMA_VERSION",
    "DeviceIdSettings",
    "JsonFieldsProfile",
    "JsonReadingProfile",
    "LowQualityAction",
    "MissingTimestampPolicy",
    "Outcome",
    "Pipeline",
    "PipelineSettings",
    "Processed",
    "Reading",
    "Reason",
    "ScalarProfile",
    "TopicSettings",
    "UnknownFieldPolicy",
    "bounded_payload",
    "reading_message_id",
]
