"""Sinks: where spooled records go. Today one, central Kafka."""

from agent.sink._faults import SettleReason
from agent.sink.clock import HEADER_ORIGINAL_TIMESTAMP, ClockDiscipline
from agent.sink.kafka import Delivery, KafkaSink, UplinkState
from agent.sink.settings import KafkaSettings

__all__ = [
    "HEADER_ORIGINAL_TIMESTAMP",
    "ClockDiscipline",
    "Delivery",
    "KafkaSettings",
    "KafkaSink",
    "SettleReason",
    "UplinkState",
]
