"""Values the MQTT source hands out: lifecycle events, statistics and their closed reason sets."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.source.settings import MqttProtocol


class DropReason(enum.StrEnum):
    """Why a received message was not handed to the caller (a closed set, a metric label).

    Only QoS 0 messages are ever dropped: a QoS 1 message that is not handed over is not
    acknowledged either, so the broker delivers it again.
    """

    QOS0_BUFFER_FULL = "qos0_buffer_full"
    """More than ``max_buffered_qos0_messages`` were waiting for the caller."""
    QOS0_UNDELIVERED = "qos0_undelivered"
    """The connection ended (or the source stopped) while the message was still buffered."""
    INVALID_TOPIC = "invalid_topic"
    """The topic was not valid UTF-8 (a broker that follows the specification never sends it)."""


class AckSkipReason(enum.StrEnum):
    """Why :meth:`MqttSource.ack` sent no PUBACK for a QoS 1 message (a closed set)."""

    STALE_CONNECTION = "stale_connection"
    """The message came over a connection that is gone; the broker delivers it again."""
    NOT_OUTSTANDING = "not_outstanding"
    """Acknowledged twice, or never handed out by this source: a bug in the caller."""


@dataclass(frozen=True, slots=True)
class PayloadLimit:
    """Payloads longer than ``max_bytes`` are cut to ``keep_bytes`` right after receipt.

    The pipeline rejects such a payload anyway (``payload_too_large``) and its dead-letter
    record keeps only a prefix, so holding the rest in memory and in the spool buys nothing.
    The cut message says so in ``original_size`` and ``payload_sha256``.
    """

    max_bytes: int
    keep_bytes: int


@dataclass(frozen=True, slots=True)
class MqttConnected:
    """The broker accepted a connection and answered the subscriptions: messages can flow.

    Emitted after SUBACK. Messages the broker kept in the session may already be handed out
    between CONNACK and this event.

    Attributes:
        broker: ``host:port``.
        client_id: The client identifier the session is kept under.
        protocol: ``"3.1.1"`` or ``"5"``.
        session_present: Whether the broker still had the session. False on a reconnect means
            the broker lost it (expired, or restarted without persistence): messages published
            while the agent was away were not queued for it.
        connection: The connection generation; messages carry it in ``connection``.
    """

    broker: str
    client_id: str
    protocol: MqttProtocol
    session_present: bool
    connection: int


@dataclass(frozen=True, slots=True)
class MqttDisconnected:
    """A connection announced by :class:`MqttConnected` ended.

    Attributes:
        broker: ``host:port``.
        connection: The generation of the connection that ended.
        reason: One sentence: why it ended.
        reason_code: The MQTT reason code (v5) or paho error code behind ``reason``, if any.
        requested: True when the source was stopped or cancelled, False when the connection
            was lost.
        unacked_messages: QoS 1 messages handed out on this connection and not acknowledged;
            the broker delivers them again on the next connection.
        retry_in_secs: Delay before the next attempt, or None when the source is stopping.
    """

    broker: str
    connection: int
    reason: str
    reason_code: int | None
    requested: bool
    unacked_messages: int
    retry_in_secs: float | None


@dataclass(frozen=True, slots=True)
class MqttConnectFailed:
    """A connection attempt failed before it was announced by :class:`MqttConnected`.

    That is: connecting, CONNACK, or the SUBSCRIBE/SUBACK exchange failed.

    Attributes:
        broker: ``host:port``.
        reason: One sentence: what failed and what to check.
        reason_code: The CONNACK reason code, if the broker refused the connection.
        permanent: True when retrying cannot help until an operator acts (bad credentials,
            not authorised, TLS verification failure, unreadable password file). The source
            retries anyway.
        retry_in_secs: Delay before the next attempt, or None when the source is stopping.
    """

    broker: str
    reason: str
    reason_code: int | None
    permanent: bool
    retry_in_secs: float | None


@dataclass(frozen=True, slots=True)
class MqttSubscriptionRefused:
    """The broker refused (or downgraded to QoS 0) some of the subscriptions.

    Messages on a refused filter are not received at all; on a downgraded one they arrive
    without acknowledgement, so they are not protected by the spool. An operator must act
    (usually the broker's ACL).

    Attributes:
        connection: The connection generation.
        refused: ``(filter, reason)`` for each filter the broker refused or downgraded.
    """

    connection: int
    refused: tuple[tuple[str, str], ...]


MqttEvent = MqttConnected | MqttDisconnected | MqttConnectFailed | MqttSubscriptionRefused
"""Everything the source reports through its ``on_event`` callback."""


@dataclass(frozen=True, slots=True)
class MqttSourceStats:
    """A snapshot of the source's counters since it was created.

    Attributes:
        connected: Whether a connection is up.
        connection: Generation of the current (or last) connection, 0 before the first.
        connects: Connections the broker accepted.
        connect_failures: Connection attempts that failed.
        received: Messages received from the broker (all QoS).
        delivered: Messages handed to the caller's queue.
        acked: PUBACKs sent.
        outstanding: QoS 1 messages handed out on the current connection and not yet acked.
        ack_skipped: Acknowledgements not sent, by reason (every reason present).
        dropped: Messages not handed over, by reason (every reason present).
        cut: Payloads longer than the payload limit, cut right after receipt.
    """

    connected: bool
    connection: int
    connects: int
    connect_failures: int
    received: int
    delivered: int
    acked: int
    outstanding: int
    ack_skipped: Mapping[AckSkipReason, int]
    dropped: Mapping[DropReason, int]
    cut: int = 0
