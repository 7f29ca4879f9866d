"""`edge-agent check-config`: the effective config with sources, and every error path's exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import EX_CONFIG, main

ROOT = Path(__file__).resolve().parents[3]
FILE_FIXTURE = "mqtt:\n  host: broker.local\nkafka:\n  linger_ms: 50\n"
KAFKA_ENV = {"EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS": "kafka.test:9092"}


@pytest.fixture(autouse=True)
def kafka_from_env(clean_environment, monkeypatch):  # noqa: ARG001 - runs after the clean-up
    """Kafka's address, which every configuration needs, comes from the environment here."""
    for name, value in KAFKA_ENV.items():
        monkeypatch.setenv(name, value)


def check(capsys, *args):
    """Run check-config in-process; return (exit code, stdout, stderr)."""
    code = main(["check-config", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def check_subprocess(*args, env=None):
    """Run `python -m agent check-config` with only the given EDGE_AGENT_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", *[str(a) for a in args]],
        env={**clean, **KAFKA_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )


# ---------------------------------------------------------------- success
def test_check_config_prints_effective_yaml_with_sources(capsys, write_config, monkeypatch):
    """Output is YAML of the effective config; non-defaults carry '# from <source>'."""
    path = write_config(FILE_FIXTURE)
    monkeypatch.setenv("EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS", "k:9092")
    code, out, err = check(capsys, path, "--set", "kafka.linger_ms=5", "--gateway-id", "gw-9")
    assert (code, err) == (0, "")
    effective = yaml.safe_load(out)
    assert effective["mqtt"]["host"] == "broker.local"
    assert effective["kafka"]["linger_ms"] == 5
    assert effective["kafka"]["bootstrap_servers"] == "k:9092"
    lines = out.splitlines()
    assert f"  host: broker.local  # from file {path}, line 2" in lines
    assert "  bootstrap_servers: 'k:9092'  # from env EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS" in lines
    assert "  linger_ms: 5  # from flag --set kafka.linger_ms" in lines
    assert "gateway_id: gw-9  # from flag --gateway-id" in lines
    assert "  port: 1883" in lines  # a default: no comment
    assert any(line.startswith("# config_hash: ") for line in lines)


def test_check_config_subprocess_valid_file_exits_0(write_config):
    """As a process (how systemd's ExecStartPre runs it): exit 0 and parseable YAML."""
    proc = check_subprocess(write_config(FILE_FIXTURE), env={"EDGE_AGENT_LOG_LEVEL": "DEBUG"})
    assert proc.returncode == 0, proc.stderr
    effective = yaml.safe_load(proc.stdout)
    assert (effective["log_level"], effective["mqtt"]["host"]) == ("DEBUG", "broker.local")


def test_check_config_without_file_uses_env_and_defaults(capsys):
    """No FILE: the environment and defaults only, which are valid."""
    code, out, _ = check(capsys)
    assert code == 0
    assert yaml.safe_load(out)["spool"]["directory"] == "/var/lib/edge-agent/spool"


def test_check_config_empty_file_means_defaults(capsys, write_config):
    """An empty file is valid: every option at its default, no source comments but Kafka's."""
    code, out, _ = check(capsys, write_config(""))
    assert code == 0
    assert [line for line in out.splitlines() if "  # from " in line] == [
        "  bootstrap_servers: 'kafka.test:9092'  # from env EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS"
    ]


def test_check_config_json_format_reports_config_and_sources(capsys, write_config):
    """--format json: valid, hash, masked config and the source of each non-default."""
    path = write_config(FILE_FIXTURE)
    code, out, _ = check(capsys, path, "--format", "json")
    document = json.loads(out)
    assert code == 0
    assert document["valid"] is True
    assert document["config"]["kafka"]["linger_ms"] == 50
    assert document["sources"] == {
        "mqtt.host": f"file {path}, line 2",
        "kafka.bootstrap_servers": "env EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS",
        "kafka.linger_ms": f"file {path}, line 4",
    }
    assert len(document["config_hash"]) == 64


def test_check_config_json_format_reports_errors_on_stdout(capsys, write_config):
    """--format json on an invalid config: exit 78 and the problems as JSON on stdout."""
    path = write_config("mqtt:\n  hots: x\n")
    code, out, _ = check(capsys, path, "--format", "json")
    document = json.loads(out)
    assert code == EX_CONFIG
    assert document["valid"] is False
    assert document["errors"] == [
        {
            "path": "mqtt.hots",
            "value": None,
            "source": f"file {path}, line 2",
            "message": "unknown option",
            "hint": "did you mean 'host'?",
            "text": f"mqtt.hots: unknown option (from file {path}, line 2); did you mean 'host'?",
        }
    ]


# ---------------------------------------------------------------- bad values and keys
def test_check_config_bad_env_value_names_path_value_source_and_reason(capsys, monkeypatch):
    """The brief's example line, exactly, and exit 78."""
    monkeypatch.setenv("EDGE_AGENT_KAFKA__LINGER_MS", "-5")
    code, out, err = check(capsys)
    assert (code, out) == (EX_CONFIG, "")
    assert err == (
        "edge-agent: kafka.linger_ms = -5 (from env EDGE_AGENT_KAFKA__LINGER_MS): "
        "Input should be greater than or equal to 0\n"
    )


def test_check_config_subprocess_bad_env_value_exits_78():
    """As a process: exit 78 and the problem on stderr, nothing on stdout."""
    proc = check_subprocess(env={"EDGE_AGENT_MQTT__PORT": "70000"})
    assert proc.returncode == EX_CONFIG
    assert proc.stdout == ""
    assert "mqtt.port = 70000 (from env EDGE_AGENT_MQTT__PORT):" in proc.stderr


def test_check_config_bad_file_value_names_file_and_line(capsys, write_config):
    """A bad value from the file names the file and the line of its key."""
    path = write_config("spool:\n  overflow_policy: drop_random\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err.startswith(
        f"edge-agent: spool.overflow_policy = drop_random (from file {path}, line 2): "
        "Input should be"
    )


def test_check_config_bad_flag_value_names_flag(capsys, write_config):
    """A bad --set value names the flag."""
    code, _, err = check(capsys, write_config(""), "--set", "ingest.max_batch_messages=0")
    assert code == EX_CONFIG
    assert (
        "ingest.max_batch_messages = 0 (from flag --set ingest.max_batch_messages): "
        "Input should be greater than or equal to 1"
    ) in err


def test_check_config_unknown_file_key_suggests_closest(capsys, write_config):
    """`mqtt.hots` in the file: unknown option, file and line, did you mean 'host'."""
    path = write_config("mqtt:\n  hots: broker\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        f"edge-agent: mqtt.hots: unknown option (from file {path}, line 2); did you mean 'host'?\n"
    )


def test_check_config_unknown_top_level_key_is_refused(capsys, write_config):
    """Unknown keys are refused at the top level too."""
    code, _, err = check(capsys, write_config("gatway_id: x\n"))
    assert code == EX_CONFIG
    assert "gatway_id: unknown option" in err
    assert "did you mean 'gateway_id'?" in err


def test_check_config_unknown_nested_env_var_suggests_variable(capsys, monkeypatch):
    """EDGE_AGENT_MQTT__HOTS: unknown, and the hint is the right variable's name."""
    monkeypatch.setenv("EDGE_AGENT_MQTT__HOTS", "x")
    code, _, err = check(capsys)
    assert code == EX_CONFIG
    assert err == (
        "edge-agent: mqtt.hots: unknown option (from env EDGE_AGENT_MQTT__HOTS); "
        "did you mean EDGE_AGENT_MQTT__HOST?\n"
    )


def test_check_config_unknown_top_level_env_var_is_refused(capsys, monkeypatch):
    """EDGE_AGENT_MQTT_HOST (one underscore) names no option: refused with a hint."""
    monkeypatch.setenv("EDGE_AGENT_MQTT_HOST", "x")
    code, _, err = check(capsys)
    assert code == EX_CONFIG
    assert "(from env EDGE_AGENT_MQTT_HOST); did you mean EDGE_AGENT_MQTT__HOST?" in err


@pytest.mark.parametrize(
    "name",
    [
        "EDGE_AGENT_SERVICE_HOST",
        "EDGE_AGENT_SERVICE_PORT",
        "EDGE_AGENT_SERVICE_PORT_HTTP",
        "EDGE_AGENT_PORT",
        "EDGE_AGENT_PORT_9810_TCP",
        "EDGE_AGENT_PORT_9810_TCP_ADDR",
        "EDGE_AGENT_METRICS_SERVICE_HOST",
    ],
)
def test_check_config_ignores_kubernetes_service_link_variables(capsys, monkeypatch, name):
    """Variables Kubernetes injects for a Service named edge-agent[-...] are not options."""
    monkeypatch.setenv(name, "tcp://10.0.0.1:9810")
    code, _, err = check(capsys)
    assert (code, err) == (0, "")


def test_check_config_unknown_key_from_flag_is_refused(capsys):
    """--set with an unknown path: refused, naming the flag."""
    code, _, err = check(capsys, "--set", "kafka.lingr_ms=5")
    assert code == EX_CONFIG
    assert "kafka.lingr_ms: unknown option (from flag --set kafka.lingr_ms)" in err
    assert "did you mean 'linger_ms'?" in err


def test_check_config_reports_every_problem_at_once(capsys, write_config, monkeypatch):
    """File, environment and flag problems are all listed, one line each."""
    monkeypatch.setenv("EDGE_AGENT_KAFKA__LINGER_MS", "-1")
    path = write_config("mqtt:\n  hots: x\n  port: 0\n")
    code, _, err = check(capsys, path, "--set", "log_level=LOUD")
    assert code == EX_CONFIG
    lines = err.splitlines()
    assert len(lines) == 4
    assert all(line.startswith("edge-agent: ") for line in lines)
    assert {line.split()[1] for line in lines} == {
        "mqtt.hots:",
        "mqtt.port",
        "kafka.linger_ms",
        "log_level",
    }


def test_check_config_model_rule_names_section_and_sources(capsys, write_config, monkeypatch):
    """A rule across options (password needs username) names the section and its sources."""
    monkeypatch.setenv("EDGE_AGENT_MQTT__PASSWORD_FILE", "/run/secrets/mqtt")
    path = write_config("mqtt:\n  host: h\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        "edge-agent: mqtt: a password needs a username "
        f"(from file {path}, env EDGE_AGENT_MQTT__PASSWORD_FILE)\n"
    )


def test_check_config_section_given_a_scalar_is_refused(capsys, write_config):
    """`kafka: 5` is not a section: refused with the file and line."""
    path = write_config("kafka: 5\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert (
        "kafka: is a section: expected a mapping of its options, not int "
        f"(from file {path}, line 1)"
    ) in err


# ---------------------------------------------------------------- unusable sources
def test_check_config_missing_file_exits_78(capsys, tmp_path):
    """A missing file: one sentence naming it."""
    missing = tmp_path / "nope.yaml"
    code, out, err = check(capsys, missing)
    assert (code, out) == (EX_CONFIG, "")
    assert err == f"edge-agent: Configuration file {missing} does not exist; check the path.\n"


def test_check_config_subprocess_missing_file_exits_78(tmp_path):
    """As a process, a missing file exits 78 with the sentence on stderr."""
    proc = check_subprocess(tmp_path / "nope.yaml")
    assert proc.returncode == EX_CONFIG
    assert "does not exist" in proc.stderr


def test_check_config_directory_instead_of_file_exits_78(capsys, tmp_path):
    """A directory: one sentence saying so."""
    code, _, err = check(capsys, tmp_path)
    assert code == EX_CONFIG
    assert err == (
        f"edge-agent: Configuration file {tmp_path} is a directory, not a file; "
        "name the YAML file in it.\n"
    )


def test_check_config_unreadable_file_exits_78(capsys, write_config, monkeypatch):
    """Permission denied: one sentence saying what to do (faked: the tests may run as root)."""
    path = write_config("log_level: INFO\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        f"edge-agent: Configuration file {path} cannot be read (permission denied); "
        "make it readable by the user the agent runs as.\n"
    )


def test_check_config_non_utf8_file_exits_78(capsys, tmp_path):
    """Latin-1 bytes: not UTF-8, with the byte offset."""
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"gateway_id: caf\xe9\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert "is not UTF-8 text (byte 15)" in err


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "a single value (str)")]
)
def test_check_config_top_level_not_a_mapping_exits_78(capsys, write_config, text, kind):
    """A list or a scalar at the top level: one sentence saying a mapping is needed."""
    path = write_config(text)
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        f"edge-agent: Configuration file {path} must be a mapping of options at the top level, "
        f"not {kind}.\n"
    )


def test_check_config_yaml_syntax_error_gives_line_and_column(capsys, write_config):
    """A YAML syntax error: line and column of the problem."""
    path = write_config("mqtt:\n  host: a\n   port: 1883\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        f"edge-agent: Configuration file {path} is not valid YAML: "
        "line 3, column 8: mapping values are not allowed here.\n"
    )


def test_check_config_duplicate_key_is_refused(capsys, write_config):
    """A key given twice in one mapping: refused with both lines (the second would win)."""
    path = write_config("kafka:\n  linger_ms: 5\nmqtt: {}\nkafka:\n  linger_ms: 9\n")
    code, _, err = check(capsys, path)
    assert code == EX_CONFIG
    assert err == (
        "edge-agent: kafka: given twice (first at line 1); the second would silently win "
        f"(from file {path}, line 4); remove one of them\n"
    )


def test_check_config_env_bad_json_exits_78(capsys, monkeypatch):
    """A list option with non-JSON text in the environment: one clear line."""
    monkeypatch.setenv("EDGE_AGENT_MQTT__SUBSCRIPTIONS", "plant/#")
    code, _, err = check(capsys)
    assert code == EX_CONFIG
    assert err.startswith(
        "edge-agent: mqtt.subscriptions: not valid JSON (Expecting value at line 1, column 1) "
        "(from env EDGE_AGENT_MQTT__SUBSCRIPTIONS); a list or mapping takes JSON"
    )


def test_check_config_env_bad_section_json_exits_78(capsys, monkeypatch):
    """A whole-section variable with broken JSON names the variable."""
    monkeypatch.setenv("EDGE_AGENT_KAFKA", '{"linger_ms": ')
    code, _, err = check(capsys)
    assert code == EX_CONFIG
    assert "kafka: not valid JSON" in err
    assert "(from env EDGE_AGENT_KAFKA)" in err


def test_check_config_set_without_equals_is_a_usage_error(capsys):
    """--set without PATH=VALUE: argparse usage error, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["check-config", "--set", "kafka.linger_ms"])
    assert exc.value.code == 2
    assert "expected PATH=VALUE" in capsys.readouterr().err


def test_check_config_set_with_bad_yaml_exits_78(capsys):
    """--set whose VALUE is not YAML: exit 78, naming the flag."""
    code, _, err = check(capsys, "--set", "mqtt.subscriptions=[a/#")
    assert code == EX_CONFIG
    assert err.startswith("edge-agent: mqtt.subscriptions: VALUE is not valid YAML (line 1")
    assert "(from flag --set mqtt.subscriptions)" in err


def test_run_with_invalid_config_exits_78_before_starting(capsys, write_config):
    """`run` refuses an invalid configuration the same way, before building the agent."""
    code = main(["run", "--config", str(write_config("mqtt:\n  hots: x\n"))])
    assert code == EX_CONFIG
    assert "mqtt.hots: unknown option" in capsys.readouterr().err


# ---------------------------------------------------------------- the shipped example
def test_check_config_accepts_systemd_example(capsys):
    """systemd/agent.yaml.example passes check-config; its values are attributed to it."""
    example = ROOT / "systemd" / "agent.yaml.example"
    code, out, err = check(capsys, example)
    assert (code, err) == (0, "")
    assert f"  host: 127.0.0.1  # from file {example}, line " in out
    assert yaml.safe_load(out)["spool"]["directory"] == "/var/lib/edge-agent/spool"
