"""Sources: where the agent's data comes from. Today one, the local MQTT broker.

:class:`MqttSource` receives messages as :class:`~agent.model.ReceivedMessage` values through a
bounded queue and acknowledges each QoS 1 message to the broker only when the caller calls
:meth:`MqttSource.ack` after storing it; see :mod:`agent.source.mqtt` for the full contract.
"""

from agent.source._redelivery import RedeliveryWindow
from agent.source._types import (
    AckSkipReason,
    DropReason,
    MqttConnected,
    MqttConnectFailed,
    MqttDisconnected,
    MqttEvent,
    MqttSourceStats,
    MqttSubscriptionRefused,
    PayloadLimit,
)
from agent.source.mqtt import MqttSource, wall_clock_ms
from agent.source.settings import MqttProtocol, MqttSettings

__all__ = [
    "AckSkipReason",
    "DropReason",
    "MqttConnectFailed",
    "MqttConnected",
    "MqttDisconnected",
    "MqttEvent",
    "MqttProtocol",
    "MqttSettings",
    "MqttSource",
    "MqttSourceStats",
    "MqttSubscriptionRefused",
    "PayloadLimit",
    "RedeliveryWindow",
    "wall_clock_ms",
]
