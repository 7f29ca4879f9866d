"""Sparkplug B: the topic namespace, the protobuf schema and the births/aliases state.

The decoding into readings is a payload profile (:mod:`agent.pipeline._sparkplug`, format
``sparkplug_b``); this package holds what outlives a pipeline: :class:`SparkplugState`, owned by
the composition root and handed to every pipeline it builds, so a live reload or an MQTT
reconnect keeps the aliases the births defined. Importing this package does not import
``protobuf``: only a configured ``sparkplug_b`` profile (or the simulator) loads it.
"""

from agent.sparkplug._state import (
    SPARKPLUG_EVENTS,
    EdgeNode,
    SparkplugState,
)
from agent.sparkplug._topic import MESSAGE_TYPES, NAMESPACE, SparkplugTopic, parse_topic

__all__ = [
    "MESSAGE_TYPES",
    "NAMESPACE",
    "SPARKPLUG_EVENTS",
    "EdgeNode",
    "SparkplugState",
    "SparkplugTopic",
    "parse_topic",
]
