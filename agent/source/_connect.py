"""What one connection attempt needs from the settings: credentials, TLS, CONNECT and SUBSCRIBE.

The functions that read files block; the source calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.source._topics import without_covered

if TYPE_CHECKING:
    from agent.source.settings import MqttSettings

_log = logging.getLogger("agent.source.mqtt")


def read_password(settings: MqttSettings) -> str | None:
    """The password from ``password`` or ``password_file`` (blocking when it reads the file).

    One trailing line break of the file is ignored, as editors add one.

    Raises:
        OSError: The file cannot be read.
        UnicodeDecodeError: The file is not UTF-8.
    """
    if settings.password_file is not None:
        text = settings.password_file.read_text(encoding="utf-8")
        return text.removesuffix("\n").removesuffix("\r")
    if settings.password is not None:
        return settings.password.get_secret_value()
    return None


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """A TLS client context for the settings, or None without TLS (blocking: loads files).

    Raises:
        OSError: A certificate or key file cannot be read.
        ssl.SSLError: A file is not valid PEM, or the key does not match the certificate.
    """
    if not settings.tls:
        return None
    cafile = str(settings.ca_file) if settings.ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        keyfile = str(settings.key_file) if settings.key_file is not None else None
        context.load_cert_chain(str(settings.cert_file), keyfile)
    if settings.tls_insecure_skip_verify:
        _log.warning(
            "TLS verification of the MQTT broker is off; anyone on the path can read and "
            "change the traffic. Set tls_insecure_skip_verify: false outside of tests.",
            extra={"broker": settings.broker},
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_properties(settings: MqttSettings) -> Properties | None:
    """MQTT 5 CONNECT properties: Session Expiry Interval and Receive Maximum (None for 3.1.1)."""
    if settings.protocol != "5":
        return None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # paho
    properties.SessionExpiryInterval = settings.session_expiry_secs
    properties.ReceiveMaximum = settings.receive_maximum
    return properties


def subscribed_filters(settings: MqttSettings) -> tuple[str, ...]:
    """The filters actually subscribed: those no other filter of the settings contains.

    An MQTT 5 broker (Mosquitto 2 among them) delivers a message once per matching
    subscription; every copy would be a new reception with its own message id. The containing
    filter receives everything the contained one would.
    """
    return without_covered(settings.subscriptions)


def subscribe_topics(
    settings: MqttSettings,
) -> list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]:
    """One SUBSCRIBE for every filter of :func:`subscribed_filters`, all with ``settings.qos``.

    With MQTT 5 the retained messages are only sent for a subscription the session did not
    have yet (Retain Handling 1), so re-subscribing after a reconnect does not deliver every
    retained message again. MQTT 3.1.1 has no such option: the broker re-sends them.
    """
    filters = subscribed_filters(settings)
    if settings.protocol == "5":
        options = SubscribeOptions(
            qos=settings.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        )
        return [(topic_filter, options) for topic_filter in filters]
    qos: int = settings.qos
    return [(topic_filter, qos) for topic_filter in filters]
