"""The MQTT side of commands: its own client connection, QoS 1 publishes, device responses.

The client is separate from the telemetry source's (client id ``<mqtt client id>-cmd``, its
own optional credentials), so the source's session, inflight window and manual acks are never
touched. It keeps a persistent session (like the source) subscribed to the gateway's MQTT 5
response topic, so answers sent while the agent was away are delivered when it returns.

Publishes are one at a time: :meth:`CommandPublisher.publish` returns after the PUBACK, with
the broker's reason code (aiomqtt drops it; paho's ``on_publish`` is wrapped to keep it, see
:func:`agent.source._paho.paho_client`, the one place that reaches into aiomqtt).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent._backoff import Backoff
from agent.errors import RetryableError
from agent.source._connect import connect_properties, read_password, tls_context
from agent.source._paho import paho_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agent.commands.settings import CommandsSettings
    from agent.source.settings import MqttSettings

_log = logging.getLogger("agent.commands")
RECONNECT_INITIAL_SECS = 1.0
RECONNECT_MAX_SECS = 30.0


@dataclass(frozen=True, slots=True)
class Response:
    """A device's answer on the response topic."""

    correlation_data: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class Published:
    """The broker's answer to one PUBLISH."""

    reason_code: int
    reason: str

    @property
    def ok(self) -> bool:
        """Whether the broker accepted it (reason code below 0x80)."""
        return self.reason_code < 0x80  # noqa: PLR2004 - MQTT 5: >= 0x80 is a failure


class CommandPublisher:
    """The command client; :meth:`run` keeps it connected, :meth:`publish` uses it."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: CommandsSettings,
        *,
        client_id: str,
        response_topic: str | None,
        on_response: Callable[[Response], Awaitable[None]],
    ) -> None:
        """Describe the client; nothing connects before :meth:`run`."""
        self._mqtt = mqtt_settings
        self._settings = settings
        self.client_id = client_id
        self.v5 = mqtt_settings.protocol == "5"
        self.response_topic = response_topic if self.v5 else None
        self._on_response = on_response
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._last_reason: tuple[int, str] = (0, "Success")

    @property
    def connected(self) -> bool:
        """Whether the client is connected now."""
        return self._connected.is_set()

    async def run(self) -> None:
        """Connect, subscribe the response topic, hand over responses; reconnect forever."""
        backoff = Backoff(RECONNECT_INITIAL_SECS, RECONNECT_MAX_SECS)
        while True:
            try:
                client = await self._build()
                async with client:
                    if self.response_topic is not None:
                        await client.subscribe(self.response_topic, qos=1)
                    self._client = client
                    self._connected.set()
                    backoff.reset()
                    _log.info(
                        "Command client connected.",
                        extra={"client_id": self.client_id, "broker": self._mqtt.broker},
                    )
                    async for message in client.messages:
                        await self._deliver(message)
                raise aiomqtt.MqttError("the command client's message iterator ended")  # noqa: TRY301
            except aiomqtt.MqttError as exc:
                delay = backoff.next_delay()
                _log.warning(
                    "Command client disconnected; reconnecting.",
                    extra={"error": str(exc), "retry_in_secs": round(delay, 1)},
                )
            except Exception:  # noqa: BLE001 - the top loop: a bug must not stop telemetry
                delay = backoff.next_delay()
                _log.exception(
                    "Command client failed unexpectedly; reconnecting. Report this as a bug.",
                    extra={"retry_in_secs": round(delay, 1)},
                )
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(delay)

    async def publish(
        self, topic: str, payload: bytes, *, command_id: str, expiry_secs: float
    ) -> Published:
        """Publish QoS 1 and wait for the PUBACK.

        Args:
            topic: The device's command topic.
            payload: The command as the device receives it.
            command_id: MQTT 5 correlation data (and user property ``command-id``).
            expiry_secs: MQTT 5 Message Expiry Interval: the broker drops it after this long.

        Raises:
            RetryableError: Not connected, or no PUBACK within ``publish_timeout_secs``.
        """
        timeout = self._settings.publish_timeout_secs
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError as exc:
            raise RetryableError("The command client is not connected to the MQTT broker.") from exc
        client = self._client
        if client is None:
            raise RetryableError("The command client is not connected to the MQTT broker.")
        async with self._lock:
            self._last_reason = (0, "Success")
            try:
                await client.publish(
                    topic,
                    payload,
                    qos=1,
                    properties=self._properties(command_id, expiry_secs),
                    timeout=timeout,
                )
            except aiomqtt.MqttError as exc:
                msg = f"Publishing the command failed ({exc}); it is retried."
                raise RetryableError(msg) from exc
            return Published(*self._last_reason)

    def _properties(self, command_id: str, expiry_secs: float) -> Properties | None:
        if not self.v5:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call] # paho
        properties.MessageExpiryInterval = max(1, math.ceil(expiry_secs))
        properties.CorrelationData = command_id.encode()
        properties.UserProperty = [("command-id", command_id)]
        if self.response_topic is not None:
            properties.ResponseTopic = self.response_topic
        properties.ContentType = "application/json"
        return properties

    async def _build(self) -> aiomqtt.Client:
        s = self._mqtt
        c = self._settings
        password = await asyncio.to_thread(self._password)
        context = await asyncio.to_thread(tls_context, s)
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=c.mqtt_username or s.username,
            password=password,
            logger=logging.getLogger("agent.commands.paho"),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if self.v5 else False,
            clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=s.keepalive_secs,
            timeout=s.connect_timeout_secs,
            properties=connect_properties(s),
            tls_context=context,
        )
        paho = paho_client(client)
        aiomqtt_on_publish = paho.on_publish

        def on_publish(*args: Any) -> None:  # noqa: ANN401 - paho's callback signature
            code = args[3]
            self._last_reason = (int(getattr(code, "value", 0)), str(code))
            if aiomqtt_on_publish is not None:
                aiomqtt_on_publish(*args)

        paho.on_publish = on_publish
        return client

    def _password(self) -> str | None:
        c = self._settings
        if c.mqtt_username is None:
            return read_password(self._mqtt)
        if c.mqtt_password_file is not None:
            return c.mqtt_password_file.read_text(encoding="utf-8").removesuffix("\n")
        return None if c.mqtt_password is None else c.mqtt_password.get_secret_value()

    async def _deliver(self, message: aiomqtt.Message) -> None:
        properties = message.properties
        correlation = getattr(properties, "CorrelationData", None) if properties else None
        if not isinstance(correlation, bytes) or not correlation:
            _log.warning(
                "A message on the response topic has no correlation data; ignored.",
                extra={"topic": str(message.topic)},
            )
            return
        payload = bytes(message.payload)
        await self._on_response(Response(correlation, payload))
