"""The command schema: what is a valid command, and the JSON Schema says the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.commands import CommandsSettings
from agent.commands.schema import (
    COMMAND_ID_PATTERN,
    NAME_PATTERN,
    Command,
    Invalid,
    peek,
    usable_in_topic,
    validate,
)

SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "reference" / "command.schema.json"


def _doc(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "command_id": "c-1",
        "device_id": "press-7",
        "name": "setpoint",
        "payload": {"t": 1},
        "created_at": "2026-11-30T02:00:00Z",
        "expires_at": "2026-11-30T02:05:00Z",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_schema_examples_of_the_json_schema_are_valid_commands():
    """Every example in docs/reference/command.schema.json validates."""
    schema = json.loads(SCHEMA.read_text())
    for example in schema["examples"]:
        assert isinstance(validate(example), Command)


def test_schema_json_schema_matches_the_model():
    """The JSON Schema's required fields and patterns are the model's."""
    schema = json.loads(SCHEMA.read_text())
    required = {n for n, f in Command.model_fields.items() if f.is_required()}
    assert set(schema["required"]) == required
    assert set(schema["properties"]) == set(Command.model_fields)
    assert schema["properties"]["command_id"]["pattern"] == COMMAND_ID_PATTERN
    assert schema["properties"]["name"]["pattern"] == NAME_PATTERN
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expires_at": "2026-11-30T01:00:00Z"}, "expires_at must be after created_at"),
        ({"created_at": "2026-11-30T02:00:00"}, "created_at"),
        ({"command_id": "has space"}, "command_id"),
        ({"name": "a/b"}, "name"),
        ({"extra": 1}, "extra"),
        ({"device_id": ""}, "device_id"),
    ],
)
def test_schema_invalid_command_is_rejected_with_its_field(changes, field):
    """An invalid command gives Invalid whose detail names the field."""
    result = validate(_doc(**changes))
    assert isinstance(result, Invalid)
    assert field in result.detail


def test_schema_device_message_carries_the_command_id():
    """The MQTT payload has the command_id, name, payload and deadline, no routing fields."""
    command = validate(_doc(gateway_id="gw"))
    assert isinstance(command, Command)
    body = json.loads(command.device_message())
    assert body["command_id"] == "c-1"
    assert body["payload"] == {"t": 1}
    assert "gateway_id" not in body
    assert "device_id" not in body


@pytest.mark.parametrize("value", [None, b"", b"not json", b"[1,2]", b"\xff\xfe", b'"x"'])
def test_schema_peek_of_unreadable_record_gives_nothing(value):
    """peek never raises; unreadable records have no routing fields."""
    peeked = peek(value)
    assert peeked.document is None
    assert peeked.device_id is None


def test_schema_peek_reads_routing_fields_of_an_invalid_command():
    """Routing works before validation: an invalid command still has its device and gateway."""
    peeked = peek(json.dumps({"device_id": "d", "gateway_id": "g", "command_id": 5}).encode())
    assert (peeked.device_id, peeked.gateway_id, peeked.command_id) == ("d", "g", None)


@pytest.mark.parametrize("device_id", ["a+b", "a#", "a/b", "a\x00"])
def test_schema_device_ids_with_topic_characters_are_not_usable(device_id):
    """A device id with a wildcard, separator or NUL cannot be a topic level."""
    assert not usable_in_topic(device_id)


def test_settings_commands_are_off_by_default_and_refuse_everything():
    """Default settings: disabled, empty allow-list."""
    settings = CommandsSettings()
    assert settings.enabled is False
    assert settings.template_for("reset") is None


@pytest.mark.parametrize(
    "template", ["cmd/+/{name}", "cmd/#", "$SYS/{device_id}", "cmd/{unknown}", "{device_id}x#"]
)
def test_settings_unusable_topic_templates_are_refused(template):
    """A template with a wildcard, a $ start or an unknown placeholder fails at load."""
    with pytest.raises(ValidationError):
        CommandsSettings(allowed={"reset": template})


def test_settings_bad_command_name_is_refused():
    """An allow-list name outside the name pattern fails at load."""
    with pytest.raises(ValidationError):
        CommandsSettings(allowed={"a b": "cmd/{device_id}"})
