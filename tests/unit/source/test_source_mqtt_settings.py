"""MqttSettings: defaults, documentation and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from agent.source import MqttSettings
from agent.source._connect import subscribe_topics, subscribed_filters
from agent.source._topics import validate_filter


def test_settings_defaults_are_documented_values():
    """The defaults give a persistent MQTT 5 session with QoS 1 on plant/#."""
    settings = MqttSettings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 1883
    assert settings.protocol == "5"
    assert settings.client_id is None
    assert settings.subscriptions == ("plant/#",)
    assert settings.qos == 1
    assert settings.session_expiry_secs == 7 * 86_400
    assert settings.receive_maximum == 1000
    assert settings.keepalive_secs == 30
    assert settings.connect_timeout_secs == 10.0
    assert settings.reconnect_initial_secs == 0.5
    assert settings.reconnect_max_secs == 30.0
    assert settings.drain_timeout_secs == 10.0
    assert settings.max_buffered_qos0_messages == 10_000
    assert settings.username is None
    assert settings.password is None
    assert settings.password_file is None
    assert settings.tls is False
    assert settings.ca_file is None
    assert settings.cert_file is None
    assert settings.key_file is None
    assert settings.tls_insecure_skip_verify is False
    assert settings.broker == "127.0.0.1:1883"


def test_settings_every_field_has_a_description():
    """Every option is documented."""
    for name, field in MqttSettings.model_fields.items():
        assert field.description, name


def test_settings_are_frozen_and_refuse_unknown_keys():
    """Settings cannot change after load, and a misspelt key is an error."""
    settings = MqttSettings()
    with pytest.raises(ValidationError):
        settings.port = 1884
    with pytest.raises(ValidationError, match="subscription"):
        MqttSettings(subscription=["a/#"])  # type: ignore[call-arg]


def test_settings_accept_protocol_5_as_a_yaml_integer():
    """``protocol: 5`` (an int in YAML) means "5"; other spellings are refused."""
    assert MqttSettings(protocol=5).protocol == "5"  # type: ignore[arg-type]
    assert MqttSettings(protocol="3.1.1").protocol == "3.1.1"
    with pytest.raises(ValidationError, match="protocol"):
        MqttSettings(protocol="3.1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="protocol"):
        MqttSettings(protocol=True)  # type: ignore[arg-type]


def test_settings_subscriptions_accept_lists_and_shared_filters():
    """A YAML list works, and shared subscriptions are legal filters."""
    settings = MqttSettings(subscriptions=["plant/+/temp", "$share/agents/site/#", "x/#"])  # type: ignore[arg-type]
    assert settings.subscriptions == ("plant/+/temp", "$share/agents/site/#", "x/#")


def test_settings_subscriptions_contained_in_another_are_not_subscribed():
    """A filter nested in another is accepted but not subscribed: its messages would come twice."""
    settings = MqttSettings(subscriptions=["plant/+/status", "plant/#", "other/x", "#"])  # type: ignore[arg-type]
    assert subscribed_filters(settings) == ("#",)
    settings = MqttSettings(subscriptions=["a/+/status", "a/#", "b/+"])  # type: ignore[arg-type]
    assert subscribed_filters(settings) == ("a/#", "b/+")
    assert [f for f, _ in subscribe_topics(settings)] == ["a/#", "b/+"]


@pytest.mark.parametrize(
    ("subscriptions", "pair"),
    [
        (["a/+/x", "a/b/+"], "'a/+/x' and 'a/b/+'"),
        (["plant/#", "$share/g/plant/a"], "'plant/#' and '$share/g/plant/a'"),
        (["+/x", "a/#"], "'+/x' and 'a/#'"),
    ],
)
def test_settings_subscriptions_that_overlap_partly_are_refused(subscriptions, pair):
    """Filters sharing topics without nesting would deliver those messages twice: refused."""
    with pytest.raises(ValidationError, match=re.escape(pair)):
        MqttSettings(subscriptions=subscriptions)


@pytest.mark.parametrize(
    ("subscriptions", "message"),
    [
        ([], "at least 1"),
        (["plant/#/temp"], "'#' must be a whole level and the last one"),
        (["plant/te#"], "'#' must be a whole level"),
        (["plant/te+/x"], "'+' must be a whole level"),
        ([""], "must not be empty"),
        (["$share/g"], "must have the form"),
        (["$share//plant/#"], "must have the form"),
        (["$share/g+/plant/#"], "must not contain"),
        (["$share/g/plant/#/x"], "'#' must be a whole level"),
        (["a/#", "a/#"], "more than once"),
    ],
)
def test_settings_refuse_illegal_subscriptions(subscriptions, message):
    """An illegal filter fails at load, naming the field and what is wrong."""
    with pytest.raises(ValidationError, match=re.escape(message)) as info:
        MqttSettings(subscriptions=subscriptions)
    assert info.value.errors()[0]["loc"][0] == "subscriptions"


@pytest.mark.parametrize(
    "topic_filter",
    ["a", "a/b", "/", "a//b", "+", "+/+", "#", "a/#", "+/#", "$SYS/#", "$share/g/#", "$shared/x"],
)
def test_settings_topic_filter_legal_forms(topic_filter):
    """Legal MQTT filters pass unchanged."""
    assert validate_filter(topic_filter) == topic_filter


@pytest.mark.parametrize("topic_filter", ["a\x00b", "x" * 65_536, "$share", "$share/g/"])
def test_settings_topic_filter_illegal_forms(topic_filter):
    """NUL, over-long filters and incomplete shared subscriptions are refused."""
    with pytest.raises(ValueError, match=r"filter|subscription"):
        validate_filter(topic_filter)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reconnect_initial_secs": 5, "reconnect_max_secs": 1}, "reconnect_max_secs"),
        ({"username": "u", "password": "p", "password_file": "/p"}, "not both"),
        ({"password": "p"}, "needs a username"),
        ({"password_file": "/run/secrets/mqtt"}, "needs a username"),
        ({"ca_file": "/ca.pem"}, "ca_file only apply with tls: true"),
        ({"tls_insecure_skip_verify": True}, "tls_insecure_skip_verify only apply"),
        ({"tls": True, "key_file": "/k.pem"}, "key_file needs cert_file"),
        ({"host": "mqtt://broker"}, "without scheme"),
        ({"port": 0}, "port"),
        ({"qos": 2}, "qos"),
        ({"receive_maximum": 0}, "receive_maximum"),
        ({"receive_maximum": 65_536}, "receive_maximum"),
        ({"session_expiry_secs": 0}, "session_expiry_secs"),
        ({"keepalive_secs": 0}, "keepalive_secs"),
        ({"drain_timeout_secs": float("inf")}, "drain_timeout_secs"),
        ({"client_id": ""}, "client_id"),
    ],
)
def test_settings_refuse_inconsistent_values(values, message):
    """Contradictory or out-of-range options fail at load with a sentence naming them."""
    with pytest.raises(ValidationError, match=message):
        MqttSettings(**values)


def test_settings_tls_and_password_file_options_load():
    """A full TLS + mTLS + password-file configuration is accepted and keeps its types."""
    settings = MqttSettings(
        host="broker.plant.local",
        port=8883,
        tls=True,
        ca_file=Path("/etc/edge-agent/ca.pem"),
        cert_file=Path("/etc/edge-agent/client.pem"),
        key_file=Path("/etc/edge-agent/client.key"),
        username="edge",
        password_file=Path("/run/secrets/mqtt"),
    )
    assert settings.broker == "broker.plant.local:8883"
    assert settings.password_file == Path("/run/secrets/mqtt")


def test_settings_password_is_secret():
    """The password never shows up in the settings' repr."""
    settings = MqttSettings(username="edge", password=SecretStr("hunter2"))
    assert "hunter2" not in repr(settings)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "hunter2"
