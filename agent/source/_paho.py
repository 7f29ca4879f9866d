"""The one place that reaches past aiomqtt into its paho-mqtt client.

aiomqtt 2.x has no manual acknowledgement (aiomqtt issue #345): paho-mqtt sends PUBACK as soon as
its ``on_message`` callback returns, and aiomqtt's ``on_message`` only puts the message into an
in-memory queue, so a crash loses every message in that queue. paho-mqtt 2.x can defer the
PUBACK (``manual_ack_set(True)`` before connecting, then ``ack(mid, qos)``), but aiomqtt keeps its
paho client in the private attribute ``_client``. :func:`paho_client` is the only code that
touches it, and ``tests/unit/source/test_source_mqtt_paho.py`` fails when it disappears.

Everything else here uses paho's public API on that client: aiomqtt keeps the socket and its
asyncio integration (connect, subscribe, disconnect, keepalive); the source takes over the
message path (``on_message``), and listens in on ``on_connect`` and ``on_disconnect`` before
passing them on to aiomqtt, to learn the session-present flag and the disconnect reason code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import paho.mqtt.client as mqtt

from agent.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiomqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode


def paho_client(client: aiomqtt.Client) -> mqtt.Client:
    """Return the paho-mqtt client inside an aiomqtt client.

    Raises:
        PermanentError: aiomqtt no longer keeps a paho-mqtt client in ``_client``; the agent
            cannot defer acknowledgements with this aiomqtt release.
    """
    paho = getattr(client, "_client", None)
    if not isinstance(paho, mqtt.Client) or not hasattr(paho, "manual_ack_set"):
        raise PermanentError(
            "This aiomqtt release has no paho-mqtt client at aiomqtt.Client._client, so "
            "messages cannot be acknowledged after spooling; install the aiomqtt version "
            "pinned in pyproject.toml."
        )
    return paho


def take_over(
    client: aiomqtt.Client,
    *,
    on_message: Callable[[mqtt.MQTTMessage], None],
    on_connect: Callable[[bool, ReasonCode], None],
    on_disconnect: Callable[[ReasonCode, bool], None],
) -> mqtt.Client:
    """Switch ``client`` to manual acknowledgements and route its messages to ``on_message``.

    Must be called before the client connects. aiomqtt's own message queue stays empty from
    then on, so ``client.messages`` yields nothing and only raises when the connection ends.

    Args:
        client: A new, unconnected aiomqtt client.
        on_message: Called (on the event loop) for every PUBLISH received; no PUBACK is sent
            until :meth:`paho.mqtt.client.Client.ack` is called for its ``mid``.
        on_connect: Called with ``(session_present, reason_code)`` for every CONNACK, before
            aiomqtt sees it.
        on_disconnect: Called with ``(reason_code, sent_by_broker)`` when the connection ends,
            before aiomqtt sees it.

    Returns:
        The paho client, for :meth:`~paho.mqtt.client.Client.ack`.
    """
    paho = paho_client(client)
    paho.manual_ack_set(True)  # noqa: FBT003 - paho's signature
    aiomqtt_on_connect = cast("mqtt.CallbackOnConnect_v2", paho.on_connect)
    aiomqtt_on_disconnect = cast("mqtt.CallbackOnDisconnect_v2", paho.on_disconnect)

    def _on_connect(
        paho: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        on_connect(bool(flags.session_present), reason_code)
        aiomqtt_on_connect(paho, userdata, flags, reason_code, properties)

    def _on_disconnect(
        paho: mqtt.Client,
        userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        on_disconnect(reason_code, bool(flags.is_disconnect_packet_from_server))
        aiomqtt_on_disconnect(paho, userdata, flags, reason_code, properties)

    def _on_message(_paho: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        on_message(message)

    paho.on_connect = _on_connect
    paho.on_disconnect = _on_disconnect
    paho.on_message = _on_message
    return paho
