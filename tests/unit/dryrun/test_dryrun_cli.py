"""``edge-agent dry-run``: run as a subprocess, it prints what the agent would produce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.device_payloads import CASES, PROFILES

RECEIVED_AT_MS = 1_700_000_000_000


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration file with schema version 2 and the corpus profiles."""
    path = tmp_path / "config.yaml"
    settings = {"gateway_id": "gw-dry", "pipeline": {"schema_version": 2, "profiles": PROFILES}}
    path.write_text(yaml.safe_dump(settings))
    return path


def dry_run(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``edge-agent dry-run`` with ``args`` in a clean environment (no EDGE_AGENT_ vars)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    command = [sys.executable, "-m", "agent", "dry-run", "--received-at-ms", str(RECEIVED_AT_MS)]
    return subprocess.run(
        [*command, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [pytest.param(t, p, e, id=name) for name, t, p, e in CASES[::3]],
)
def test_dryrun_prints_every_reading_of_the_corpus(config, tmp_path, topic, payload, expected):
    """dry-run --format json lists one normalized record per expected reading, with headers."""
    payload_file = tmp_path / "payload"
    payload_file.write_bytes(payload)
    result = dry_run(
        "--topic", topic, "--payload-file", payload_file, "--config", config, "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    out = as_json(result)
    assert out["outcome"] == "valid"
    got = [json.loads(r["value"]) for r in out["records"]]
    assert [(r["device_id"], r["metric"], r["value"]) for r in got] == expected
    for record in out["records"]:
        assert record["topic"] == "iot.telemetry.normalized"
        assert record["headers"]["gateway-id"] == "gw-dry"
        assert record["headers"]["schema-version"] == "2"
        assert record["key"] == json.loads(record["value"])["device_id"]


def test_dryrun_text_output_names_profile_records_and_headers(config):
    """The text output names the profile, the outcome and each record's topic, headers, value."""
    result = dry_run(
        "--topic", "zigbee2mqtt/kitchen", "--payload", '{"temperature":21.5}', "--config", config
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "profile: zigbee2mqtt" in text
    assert "outcome: valid, 1 record" in text
    assert "record 1 -> iot.telemetry.normalized" in text
    assert "message-id: 00000000000000000000000000000000" in text
    assert '"metric":"temperature"' in text


def test_dryrun_default_config_shows_the_dlq_reason_and_exits_1():
    """Without a configuration a non-reading goes to the DLQ: reason, detail, exit code 1."""
    result = dry_run(
        "--topic", "plant/x", "--payload", '{"temp": 21, "hum": 40}', "--format", "json"
    )
    assert result.returncode == 1
    out = as_json(result)
    assert (out["outcome"], out["reason"]) == ("rejected", "no_device_id")
    (record,) = out["records"]
    assert record["topic"] == "iot.dlq"
    assert record["headers"]["dlq-reason"] == "no_device_id"
    assert record["headers"]["schema-version"] == "1"
    assert record["value"] == '{"temp": 21, "hum": 40}'


def test_dryrun_ids_are_the_same_on_every_run(config):
    """The same message gives the same message ids each run (fixed message id)."""
    args = (
        "--topic",
        "zigbee2mqtt/k",
        "--payload",
        '{"a":1,"b":2}',
        "--config",
        config,
        "--format",
        "json",
    )
    first, second = as_json(dry_run(*args)), as_json(dry_run(*args))
    assert first == second
    ids = [r["headers"]["message-id"] for r in first["records"]]
    assert len(set(ids)) == 2


def test_dryrun_reads_the_payload_from_stdin(config):
    """--payload-file - reads the payload bytes from standard input."""
    result = dry_run(
        "--topic",
        "plant/berlin/valve-1/position",
        "--payload-file",
        "-",
        "--config",
        config,
        "--format",
        "json",
        stdin=b"OPEN",
    )
    assert result.returncode == 0, result.stderr
    (record,) = as_json(result)["records"]
    assert json.loads(record["value"])["value"] == "OPEN"


def test_dryrun_bad_config_exits_78_with_the_problem(tmp_path):
    """An invalid configuration is reported with its field path and exit code 78."""
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline:\n  profiles:\n    - {name: s, format: scalar, topic_filters: [x]}\n")
    result = dry_run("--topic", "x", "--payload", "1", "--config", path)
    assert result.returncode == 78
    assert b"profiles need schema_version 2" in result.stderr


def test_dryrun_requires_a_topic_and_one_payload():
    """--topic and exactly one of --payload/--payload-file are required (usage error 2)."""
    assert dry_run("--payload", "1").returncode == 2
    assert dry_run("--topic", "x").returncode == 2
    assert dry_run("--topic", "x", "--payload", "1", "--payload-file", "f").returncode == 2


def test_dryrun_set_flags_try_a_profile_without_a_file():
    """--set builds the configuration on the command line, as for `run`: a profile can be tried
    before it is written into the file, and --gateway-id wins over --set gateway_id."""
    result = dry_run(
        "--topic",
        "tele/plug-7/SENSOR",
        "--payload",
        '{"ENERGY": {"Power": 12.5}}',
        "--set",
        "pipeline.schema_version=2",
        "--set",
        "pipeline.profiles=[{name: tasmota, format: json_fields, topic_filters: ['tele/+/SENSOR'],"
        " device_id: {topic_template: 'tele/{device_id}/SENSOR'}}]",
        "--set",
        "gateway_id=gw-set",
        "--gateway-id",
        "gw-flag",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    out = as_json(result)
    assert out["profile"] == "tasmota"
    (record,) = out["records"]
    reading = json.loads(record["value"])
    assert (reading["device_id"], reading["metric"], reading["value"]) == (
        "plug-7",
        "ENERGY.Power",
        12.5,
    )
    assert record["headers"]["gateway-id"] == "gw-flag"


def test_dryrun_bad_set_value_exits_78_naming_the_flag():
    """A --set that makes the configuration invalid is reported with the flag and exit 78."""
    result = dry_run("--topic", "x", "--payload", "1", "--set", "pipeline.schema_version=7")
    assert result.returncode == 78
    assert b"--set pipeline.schema_version" in result.stderr
    assert dry_run("--topic", "x", "--payload", "1", "--set", "no-equals-sign").returncode == 2
