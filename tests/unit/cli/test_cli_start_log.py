"""What `run` logs at start: one summary line, not the effective configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from agent.telemetry.settings import HttpSettings
from tests.support.wait import wait_until
from tests.unit.cli.conftest import KAFKA, ROOT


def test_metrics_endpoint_listens_on_loopback_by_default():
    """A bare gateway does not expose the unauthenticated /metrics to its networks."""
    assert HttpSettings().listen_host == "127.0.0.1"


def test_run_logs_one_start_line_with_version_source_and_endpoints(config_file, tmp_path):
    """At start: one `Starting.` line naming the version, the file, MQTT and Kafka; no dump."""
    path = config_file(mqtt={"host": "127.0.0.1", "port": 1}, drain_timeout_secs=1)
    log = tmp_path / "agent.log"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_AGENT_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(path)],
            stdout=out, stderr=subprocess.STDOUT, env=clean, cwd=ROOT,
        )  # fmt: skip
    try:

        def started() -> bool:
            assert proc.poll() is None, log.read_text()
            return "Agent started." in log.read_text()

        wait_until(started, 30, "the agent's start")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    starting = [r for r in records if r["msg"] == "Starting."]
    assert len(starting) == 1
    assert records[0] is starting[0]
    assert starting[0]["config"] == str(path)
    assert starting[0]["mqtt"] == "127.0.0.1:1"
    assert starting[0]["kafka"] == KAFKA
    assert starting[0]["version"]
    text = log.read_text()
    assert "bootstrap_servers" not in text
    assert "max_size_bytes" not in text
