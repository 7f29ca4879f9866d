"""Translation of aiomqtt/paho failures into the agent's error tree, at the source boundary."""

from __future__ import annotations

import ssl

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import AgentError, PermanentError, RetryableError

# CONNACK reason codes (MQTT 5 numbering; paho maps the 3.1.1 return codes onto them) that the
# broker will keep answering until an operator changes the configuration on one side.
_OPERATOR_CONNACK_CODES = frozenset(
    {
        0x84,  # Unsupported protocol version
        0x85,  # Client identifier not valid
        0x86,  # Bad user name or password
        0x87,  # Not authorized
        0x8A,  # Banned
        0x8C,  # Bad authentication method
    }
)
# aiomqtt turns OSErrors raised while connecting into MqttError(str(exc)) and drops the
# original exception, so a TLS verification failure can only be recognised by its text.
_TLS_VERIFY_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")


def reason_code(exc: BaseException) -> int | None:
    """The MQTT reason code carried by ``exc`` or its cause, if there is one."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, aiomqtt.MqttCodeError):
            code = current.rc
            if isinstance(code, ReasonCode):
                return int(code.value)
            if isinstance(code, int):
                return code
        current = current.__cause__
    return None


def translate(exc: BaseException) -> AgentError:
    """Classify a failure of a connection attempt or of a live connection.

    Returns a :class:`PermanentError` when retrying cannot help until an operator acts, else a
    :class:`RetryableError`; either way with ``exc`` as its ``__cause__``. An
    :class:`AgentError` is returned as it is.
    """
    if isinstance(exc, AgentError):
        return exc
    error = _classify(exc)
    error.__cause__ = exc
    return error


def _classify(exc: BaseException) -> AgentError:
    text = str(exc)
    if isinstance(exc, MqttConnectError):
        code = reason_code(exc)
        if code in _OPERATOR_CONNACK_CODES:
            return PermanentError(
                f"The MQTT broker refused the connection ({_describe(exc)}); check username, "
                "password, client_id, protocol and the broker's ACL."
            )
        return RetryableError(f"The MQTT broker refused the connection ({_describe(exc)}).")
    if isinstance(exc, ssl.SSLError) or any(marker in text for marker in _TLS_VERIFY_MARKERS):
        return PermanentError(
            f"TLS with the MQTT broker failed ({text}); check ca_file, cert_file, key_file "
            "and that host matches the broker's certificate."
        )
    if isinstance(exc, OSError):
        return PermanentError(
            f"A credential or certificate file could not be read ({exc}); fix the path or "
            "the file's permissions."
        )
    if isinstance(exc, aiomqtt.MqttError):
        return RetryableError(f"The MQTT connection failed ({_describe(exc)}).")
    return RetryableError(f"The MQTT source failed unexpectedly ({type(exc).__name__}: {text}).")


def _describe(exc: BaseException) -> str:
    """``str(exc)``, followed by the cause's text when aiomqtt wrapped the real reason."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text
