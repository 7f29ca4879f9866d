"""Secrets: never shown (repr, str, JSON dump, check-config, errors), read from files."""

from __future__ import annotations

import json
import traceback

import pytest
from pydantic import SecretStr, ValidationError

from agent.cli import EX_CONFIG, main
from agent.config import MASK, InvalidConfigError, Override, load_settings
from agent.sink import KafkaSettings
from agent.source import MqttSettings
from agent.source._connect import read_password

MQTT_SECRET = "mqtt-Secret-4711"  # noqa: S105 - a made-up secret that must never be shown
KAFKA_SECRET = "kafka-Secret-0815"  # noqa: S105 - likewise
SECRETS_YAML = f"""
mqtt:
  username: edge
  password: {MQTT_SECRET}
kafka:
  bootstrap_servers: kafka.test:9093
  security_protocol: SASL_SSL
  sasl_mechanism: PLAIN
  sasl_username: edge
  sasl_password: {KAFKA_SECRET}
"""


def assert_hidden(text: str) -> None:
    assert MQTT_SECRET not in text
    assert KAFKA_SECRET not in text


@pytest.fixture
def with_secrets(write_config):
    return load_settings(write_config(SECRETS_YAML), environ={})


def test_settings_repr_and_str_mask_secrets(with_secrets):
    """repr() and str() of the settings (and of each section) never show a secret."""
    for text in (repr(with_secrets), str(with_secrets), repr(with_secrets.mqtt)):
        assert_hidden(text)
        assert "SecretStr('**********')" in text


def test_settings_model_dump_json_masks_secrets(with_secrets):
    """model_dump_json() shows secrets as ********** (the values stay readable in code)."""
    dumped = json.loads(with_secrets.model_dump_json())
    assert dumped["mqtt"]["password"] == MASK
    assert dumped["kafka"]["sasl_password"] == MASK
    assert with_secrets.mqtt.password is not None
    assert with_secrets.mqtt.password.get_secret_value() == MQTT_SECRET


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_check_config_masks_secrets_in_output(capsys, write_config, fmt, monkeypatch):
    """check-config output shows the mask, and the source, never the value."""
    monkeypatch.setenv("EDGE_AGENT_KAFKA__SASL_PASSWORD", KAFKA_SECRET)
    path = write_config(SECRETS_YAML.replace(f"  sasl_password: {KAFKA_SECRET}\n", ""))
    code = main(["check-config", str(path), "--format", fmt])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert_hidden(out)
    if fmt == "yaml":
        assert f"  password: '{MASK}'  # from file {path}, line 4" in out.splitlines()
        assert (
            f"  sasl_password: '{MASK}'  # from env EDGE_AGENT_KAFKA__SASL_PASSWORD"
            in out.splitlines()
        )
    else:
        assert json.loads(out)["config"]["mqtt"]["password"] == MASK


def test_error_for_bad_secret_value_masks_it(write_config):
    """A secret of the wrong type is reported with its value masked."""
    path = write_config("mqtt:\n  username: u\n  password: [12345678, 87654321]\n")
    with pytest.raises(InvalidConfigError) as exc:
        load_settings(path, environ={})
    assert str(exc.value) == (
        f"mqtt.password = {MASK} (from file {path}, line 3): Input should be a valid string"
    )
    assert "12345678" not in str(exc.value)


def test_error_for_section_rule_never_shows_secret(write_config):
    """A rule across options (password without username) never shows the password."""
    path = write_config(f"mqtt:\n  password: {MQTT_SECRET}\n")
    with pytest.raises(InvalidConfigError) as exc:
        load_settings(path, environ={"EDGE_AGENT_KAFKA__SASL_PASSWORD": KAFKA_SECRET})
    assert "a password needs a username" in str(exc.value)
    assert_hidden(str(exc.value))


def test_error_carries_no_cause_that_could_print_a_secret(write_config):
    """The full traceback of a config error quotes no secret (pydantic's error is not chained)."""
    path = write_config(f"mqtt:\n  password: {MQTT_SECRET}\n  port: 0\n")
    with pytest.raises(InvalidConfigError) as exc:
        load_settings(path, environ={})
    assert exc.value.__cause__ is None
    assert exc.value.__context__ is None
    assert_hidden("".join(traceback.format_exception(exc.value)))


def test_error_scrubs_secret_quoted_by_any_message(write_config):
    """A secret's value is masked wherever an error would quote it, even under another option."""
    # The password pasted into bootstrap_servers by mistake: that validator quotes its input.
    path = write_config(
        f"mqtt:\n  username: u\n  password: {MQTT_SECRET}\n"
        f"kafka:\n  bootstrap_servers: {MQTT_SECRET}\n"
    )
    with pytest.raises(InvalidConfigError) as exc:
        load_settings(path, environ={})
    assert str(exc.value) == (
        f"kafka.bootstrap_servers = {MASK} (from file {path}, line 5): '{MASK}' is not host:port"
    )


def test_cli_error_output_never_shows_secret_from_flag(capsys):
    """--set of a secret into an invalid combination: the error output hides the value."""
    code = main(
        [
            "check-config",
            "--set",
            f"kafka.sasl_password={KAFKA_SECRET}",
            "--set",
            "kafka.linger_ms=-1",
        ]
    )
    _, err = capsys.readouterr()
    assert code == EX_CONFIG
    assert "kafka.linger_ms = -1 (from flag --set kafka.linger_ms)" in err
    assert_hidden(err)


def test_yaml_syntax_error_does_not_quote_the_line(write_config):
    """A YAML error on a secret's line reports line and column, not the text."""
    path = write_config(f'mqtt:\n  username: u\n  password: "{MQTT_SECRET}\n')
    with pytest.raises(InvalidConfigError) as exc:
        load_settings(path, environ={})
    assert "is not valid YAML: line" in str(exc.value)
    assert_hidden(str(exc.value))


def test_set_flag_with_bad_yaml_does_not_quote_value():
    """A --set VALUE that is not YAML is refused without repeating it."""
    with pytest.raises(InvalidConfigError) as exc:
        Override.parse(f"mqtt.password=[{MQTT_SECRET}")
    assert_hidden(str(exc.value))
    assert "(from flag --set mqtt.password)" in str(exc.value)


# ---------------------------------------------------------------- secret files
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("s3cret \n", "s3cret "),
        ("s3cret\n\n", "s3cret\n"),
    ],
)
def test_secret_files_drop_one_trailing_newline(tmp_path, content, expected):
    """MQTT and Kafka password files: one trailing line break ignored, nothing else."""
    secret = tmp_path / "password"
    secret.write_text(content, encoding="utf-8", newline="")
    mqtt = MqttSettings(username="u", password_file=secret)
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password_file=secret,
    )
    assert read_password(mqtt) == expected
    assert kafka.password() == expected


def test_secret_file_is_read_when_used_not_at_load(tmp_path):
    """The file's path is configuration; its content is read on use (rotation needs no reload)."""
    secret = tmp_path / "kafka-password"
    settings = load_settings(
        environ={
            "EDGE_AGENT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "EDGE_AGENT_KAFKA__SASL_MECHANISM": "PLAIN",
            "EDGE_AGENT_KAFKA__SASL_USERNAME": "u",
            "EDGE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(secret),
        }
    )
    secret.write_text("first\n", encoding="utf-8")
    assert settings.kafka.password() == "first"
    secret.write_text("rotated\n", encoding="utf-8")
    assert settings.kafka.password() == "rotated"


def test_kafka_refuses_inline_and_file_password_together(tmp_path):
    """sasl_password and sasl_password_file together are refused (which one wins is unclear)."""
    with pytest.raises(ValidationError, match="not both"):
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username="u",
            sasl_password=SecretStr("x"),
            sasl_password_file=tmp_path / "p",
        )
