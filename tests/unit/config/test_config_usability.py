"""Everything is validated at load: values that pass their own check but break `run` are refused."""

from __future__ import annotations

import pytest

from agent.cli import EX_CONFIG, main
from agent.config import InvalidConfigError, load_config


def _problem(**overrides: object):
    with pytest.raises(InvalidConfigError) as caught:
        load_config(overrides=overrides, environ={})
    (problem,) = caught.value.problems
    return problem


@pytest.mark.parametrize(
    "path",
    [
        "kafka.request_timeout_secs",
        "kafka.probe_interval_secs",
        "forwarder.retry_max_secs",
        "lifecycle.device_offline_after_secs",
        "lifecycle.presence_check_interval_secs",
        "http.loop_stall_secs",
    ],
)
def test_config_refuses_an_infinite_duration(path):
    """`.inf` passes `gt=0` but becomes int(inf) or an endless sleep at run time: refused."""
    problem = _problem(**{path: float("inf")})
    assert problem.path == path
    assert "finite" in problem.message


def test_config_refuses_a_lifecycle_topic_shared_with_telemetry():
    """lifecycle.topic equal to a pipeline topic would mix events into telemetry: refused."""
    problem = _problem(**{"lifecycle.topic": "iot.dlq"})
    assert problem.path == "lifecycle.topic"
    assert "pipeline.topics" in problem.message


@pytest.mark.parametrize("topic", ["bad topic", "..", "x" * 250, "iot/lifecycle"])
def test_config_refuses_a_lifecycle_topic_kafka_cannot_have(topic):
    """lifecycle.topic is checked like the pipeline topics: a legal Kafka topic name."""
    problem = _problem(**{"lifecycle.topic": topic})
    assert problem.path == "lifecycle.topic"
    assert "legal Kafka topic name" in problem.message


@pytest.mark.parametrize("host", ["not a host", "", "a_b", "host:9810"])
def test_config_refuses_an_http_listen_host_that_cannot_be_listened_on(host):
    """http.listen_host must be an IP address or a host name, or every start would fail."""
    problem = _problem(**{"http.listen_host": host})
    assert problem.path == "http.listen_host"


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "127.0.0.1", "localhost", "gw-1.plant.local"],  # noqa: S104 - only parsed
)
def test_config_accepts_usual_http_listen_hosts(host):
    """Addresses and host names that can be listened on load."""
    assert load_config(overrides={"http.listen_host": host}, environ={}).settings.http


def test_config_check_reports_a_control_character_in_the_file_instead_of_crashing(tmp_path, capsys):
    """A raw control character in the YAML text is a config problem (exit 78), not a traceback."""
    config = tmp_path / "agent.yaml"
    config.write_text('gateway_id: "gw\x01x"\n')
    assert main(["check-config", str(config)]) == EX_CONFIG
    assert "is not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spool.directory", "/var/lib/edge-agent/sp\x00ol"),
        ("mqtt.client_id", "edge\x01agent"),
        ("mqtt.username", "agent\n"),
        ("kafka.client_id", "edge\x7fagent"),
        ("remote_config.directory", "/etc/edge-agent\x00"),
    ],
)
def test_config_refuses_a_control_character_in_a_name_or_path(path, value):
    """A NUL in a path fails every start; brokers refuse control characters in names."""
    problem = _problem(**{path: value})
    assert problem.path == path
    assert "control character" in problem.message


def test_config_refuses_an_mqtt_host_that_cannot_resolve():
    """mqtt.host must be an IP address or a host name: 'bad host' would be retried forever."""
    problem = _problem(**{"mqtt.host": "bad host"})
    assert problem.path == "mqtt.host"
