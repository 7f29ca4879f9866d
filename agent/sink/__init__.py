"""Sinks: where spooled records go. Today one, central Kafka."""

from agent.sink.kafka import Delivery, KafkaSink, UplinkState
from agent.sink.settings import KafkaSettings

__all__ = ["Delivery", "KafkaSettings", "KafkaSink", "UplinkState"]
