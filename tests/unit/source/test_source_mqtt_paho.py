"""The one reach into aiomqtt's private paho client still works with the installed releases."""

from __future__ import annotations

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PermanentError
from agent.source._paho import paho_client, take_over


async def test_paho_aiomqtt_client_still_wraps_a_paho_client():
    """aiomqtt.Client._client is a paho client with manual_ack_set() and ack()."""
    client = aiomqtt.Client("127.0.0.1", 1883, identifier="t")
    paho = client._client
    assert isinstance(paho, mqtt.Client)
    assert callable(paho.manual_ack_set)
    assert callable(paho.ack)
    assert paho_client(client) is paho


def test_paho_missing_private_client_is_a_clear_error():
    """If aiomqtt drops `_client`, the source fails with a sentence saying what to do."""

    class NotAiomqtt:
        pass

    with pytest.raises(PermanentError, match=r"pinned in pyproject\.toml"):
        paho_client(NotAiomqtt())  # type: ignore[arg-type]


async def test_paho_take_over_defers_acks_and_chains_callbacks():
    """take_over turns manual acks on, gets every message, and still lets aiomqtt see events."""
    client = aiomqtt.Client("127.0.0.1", 1883, identifier="t")
    received: list[mqtt.MQTTMessage] = []
    connects: list[tuple[bool, int]] = []
    disconnects: list[tuple[int, bool]] = []
    paho = take_over(
        client,
        on_message=received.append,
        on_connect=lambda present, code: connects.append((present, code.value)),
        on_disconnect=lambda code, by_broker: disconnects.append((code.value, by_broker)),
    )
    assert paho._manual_ack is True

    message = mqtt.MQTTMessage(mid=3, topic=b"plant/a")
    paho.on_message(paho, None, message)  # type: ignore[misc]
    assert received == [message]
    assert client._queue.empty()  # aiomqtt's own queue is bypassed

    success = ReasonCode(PacketTypes.CONNACK, "Success")
    paho.on_connect(paho, None, mqtt.ConnectFlags(session_present=True), success, None)  # type: ignore[call-arg, misc]
    assert connects == [(True, 0)]
    assert client._connected.done()  # aiomqtt's handler ran too

    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    paho.on_disconnect(paho, None, mqtt.DisconnectFlags(False), lost, None)  # type: ignore[call-arg, misc]
    assert disconnects == [(0x80, False)]
    assert client._disconnected.done()
    assert isinstance(client._disconnected.exception(), aiomqtt.MqttError)
