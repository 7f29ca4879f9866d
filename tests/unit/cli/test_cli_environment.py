"""EDGE_AGENT_* variables: a misspelt one is refused with the nearest valid name; Kubernetes
service links are not options and pass."""

from __future__ import annotations

import pytest

from agent.cli import EX_CONFIG


@pytest.mark.parametrize(
    ("name", "value", "nearest"),
    [
        ("EDGE_AGENT_MQTT_PORT", "8883", "EDGE_AGENT_MQTT__PORT"),
        ("EDGE_AGENT_KAFKA_BOOTSTRAP_SERVERS", "k:9092", "EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS"),
        ("EDGE_AGENT_SPOOL__MAX_SIZE", "1000", "EDGE_AGENT_SPOOL__MAX_SIZE_BYTES"),
    ],
)
def test_unknown_env_variable_is_refused_with_the_nearest_name(
    cli, config_file, name, value, nearest
):
    """One underscore where `__` nests (or a near miss): exit 78, the variable and its fix."""
    proc = cli("check-config", "--config", config_file(), env={name: value})
    assert proc.returncode == EX_CONFIG
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert f"(from env {name}); did you mean {nearest}?" in line


def test_unknown_env_variable_stops_run_before_anything_starts(cli, config_file, tmp_path):
    """`run` refuses it too, before creating the spool."""
    proc = cli("run", "--config", config_file(), env={"EDGE_AGENT_MQTT_PORT": "8883"})
    assert proc.returncode == EX_CONFIG
    assert "did you mean EDGE_AGENT_MQTT__PORT?" in proc.stderr
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EDGE_AGENT_SERVICE_HOST", "10.43.0.7"),
        ("EDGE_AGENT_SERVICE_PORT", "9810"),
        ("EDGE_AGENT_SERVICE_PORT_METRICS", "9810"),
        ("EDGE_AGENT_PORT", "tcp://10.43.0.7:9810"),
        ("EDGE_AGENT_PORT_9810_TCP", "tcp://10.43.0.7:9810"),
        ("EDGE_AGENT_PORT_9810_TCP_PROTO", "tcp"),
        ("EDGE_AGENT_PORT_9810_TCP_PORT", "9810"),
        ("EDGE_AGENT_PORT_9810_TCP_ADDR", "10.43.0.7"),
        # A Service named edge-agent-mqtt: its bare _PORT is a URL, unlike a misspelt option.
        ("EDGE_AGENT_MQTT_PORT", "tcp://10.43.0.8:1883"),
        ("EDGE_AGENT_MQTT_SERVICE_HOST", "10.43.0.8"),
    ],
)
def test_kubernetes_service_link_variables_are_ignored(cli, config_file, name, value):
    """What Kubernetes injects for a Service named edge-agent[-...] never stops the agent."""
    proc = cli("check-config", "--quiet", "--config", config_file(), env={name: value})
    assert (proc.returncode, proc.stderr) == (0, "")
