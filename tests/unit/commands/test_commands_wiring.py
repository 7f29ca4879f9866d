"""Wiring: off by default (nothing built), and the documented names and credentials when on."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import Agent
from agent.commands import CommandsSettings
from agent.commands.consumer import consumer_kwargs
from agent.config import load_config
from agent.errors import ConfigError
from agent.sink.settings import KafkaSettings
from agent.telemetry import Notifier
from tests.unit.app._fakes import FakeKafka, FakeMqttSource


def _agent(tmp_path: Path, yaml_text: str = "", gateway: str = "gw-9") -> Agent:
    text = f"gateway_id: {gateway}\nspool: {{directory: {tmp_path}}}\nhttp: {{enabled: false}}\n"
    settings = load_config(text=text + yaml_text, environ={}).settings
    return Agent(
        settings,
        source_factory=FakeMqttSource,
        sink_factory=FakeKafka().sink_factory(),
        notifier=Notifier(None),
    )


def test_wiring_commands_are_off_by_default_and_nothing_is_built(tmp_path: Path):
    """A default config builds no command service (no consumer, no second MQTT client)."""
    agent = _agent(tmp_path)
    assert agent.settings.commands.enabled is False
    assert agent.commands is None


def test_wiring_enabled_commands_use_the_documented_group_client_id_and_store(tmp_path: Path):
    """Group edge-agent-cmd-<gateway>, client id <client id>-cmd, store under the spool."""
    agent = _agent(tmp_path, "commands: {enabled: true}\nmqtt: {client_id: agent-x}\n")
    assert agent.commands is not None
    assert agent.commands.consumer.group_id == "edge-agent-cmd-gw-9"
    assert agent.commands.publisher.client_id == "agent-x-cmd"
    assert agent.commands.store.path == tmp_path / "commands" / "dedupe.sqlite"
    assert agent.commands.publisher.response_topic == "cmd-response/gw-9"


def test_wiring_gateway_id_unusable_in_the_response_topic_is_a_config_error(tmp_path: Path):
    """A gateway id with / cannot name the response topic: refused at start, with the fix."""
    with pytest.raises(ConfigError, match="response_topic"):
        _agent(tmp_path, "commands: {enabled: true}\n", gateway="hall/2")


def test_wiring_consumer_uses_its_own_sasl_user_when_given(tmp_path: Path):
    """commands.kafka_sasl_* replace the uplink's user for the consumer only; no auto-commit."""
    password = tmp_path / "pw"
    password.write_text("cmd-secret\n")
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="edge",
        sasl_password="edge-secret",  # type: ignore[arg-type] # noqa: S106 - a test value
    )
    own = CommandsSettings(kafka_sasl_username="edge-cmd", kafka_sasl_password_file=password)
    kwargs = consumer_kwargs(kafka, own, "g")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "edge-cmd",
        "cmd-secret",
    )
    assert kwargs["enable_auto_commit"] is False
    shared = consumer_kwargs(kafka, CommandsSettings(), "g")
    assert (shared["sasl_plain_username"], shared["sasl_plain_password"]) == ("edge", "edge-secret")
