"""Translation of aiomqtt failures into RetryableError / PermanentError."""

from __future__ import annotations

import ssl

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PermanentError, RetryableError
from agent.source._errors import reason_code, translate


def _refused(name: str) -> MqttConnectError:
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, name))


@pytest.mark.parametrize(
    "name",
    ["Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"],
)
def test_errors_refusals_an_operator_must_fix_are_permanent(name):
    """CONNACK refusals that retrying cannot fix are PermanentError naming what to check."""
    error = translate(_refused(name))
    assert isinstance(error, PermanentError)
    assert name in str(error)
    assert "check username, password" in str(error)
    assert isinstance(error.__cause__, MqttConnectError)


def test_errors_server_unavailable_is_retryable():
    """A busy or starting broker is worth retrying."""
    error = translate(_refused("Server unavailable"))
    assert isinstance(error, RetryableError)
    assert reason_code(error.__cause__) == 0x88  # type: ignore[arg-type]


def test_errors_connection_refused_is_retryable():
    """A broker that is down (aiomqtt wraps the OSError text) is retryable."""
    error = translate(aiomqtt.MqttError("[Errno 111] Connection refused"))
    assert isinstance(error, RetryableError)
    assert "Connection refused" in str(error)


def test_errors_lost_connection_names_the_cause():
    """aiomqtt's generic 'Disconnected' error is shown with the reason code behind it."""
    cause = aiomqtt.MqttCodeError(ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout"))
    lost = aiomqtt.MqttError("Disconnected during message iteration")
    lost.__cause__ = cause  # as `raise ... from cause` in aiomqtt's message iterator
    error = translate(lost)
    assert isinstance(error, RetryableError)
    assert "Keep alive timeout" in str(error)
    assert reason_code(error.__cause__) == 0x8D  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        aiomqtt.MqttError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ssl.SSLError("PEM lib"),
    ],
)
def test_errors_tls_failures_are_permanent(exc):
    """Certificate verification and bad PEM files need an operator."""
    error = translate(exc)
    assert isinstance(error, PermanentError)
    assert "check ca_file" in str(error)


def test_errors_unreadable_files_are_permanent():
    """A missing password or key file needs an operator."""
    error = translate(FileNotFoundError(2, "No such file or directory", "/run/secrets/mqtt"))
    assert isinstance(error, PermanentError)
    assert "/run/secrets/mqtt" in str(error)


def test_errors_agent_errors_pass_through():
    """An AgentError is already translated."""
    error = PermanentError("x")
    assert translate(error) is error
