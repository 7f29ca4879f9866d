"""Run the real agent as a child process (``python -m agent run``) against the harness services."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import HARNESS_MARKER, PID_DIR
from tests.support.faketime import faketime_env
from tests.support.metrics import MetricsPage

READY_MARKER = "MQTT subscribed"


@dataclass
class AgentTopics:
    """The per-test Kafka topics the agent writes."""

    normalized: str
    raw: str
    dlq: str
    lifecycle: str


@dataclass
class AgentProcess:
    """One agent configuration and, while running, its process.

    The same instance can be started again after a kill or stop: it keeps the client id and
    the spool directory, exactly like a restarted service.
    """

    workdir: Path
    mosquitto: Mosquitto
    kafka: KafkaCluster
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    config_path_override: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    faketime: str | None = None
    """Run under libfaketime with the wall clock this far off, e.g. ``"+2h"`` (monotonic real)."""

    @property
    def topic_prefix(self) -> str:
        """MQTT topics of this test: ``<prefix>/<device_id>/<metric>``."""
        return f"t/{self.name}"

    @property
    def topics(self) -> AgentTopics:
        return AgentTopics(
            normalized=f"norm-{self.name}",
            raw=f"raw-{self.name}",
            dlq=f"dlq-{self.name}",
            lifecycle=f"life-{self.name}",
        )

    @property
    def spool_dir(self) -> Path:
        return self.workdir / "spool"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"agent-{self.starts}.log"

    def config(self) -> dict[str, Any]:
        topics = self.topics
        base: dict[str, Any] = {
            "gateway_id": "gw-test",
            "log_format": "text",
            "log_level": "INFO",
            "drain_timeout_secs": 30,
            "report_interval_secs": 1,
            "mqtt": {
                "host": "127.0.0.1",
                "port": self.mosquitto.port,
                "client_id": f"agent-{self.name}",
                "subscriptions": [f"{self.topic_prefix}/#"],
            },
            "kafka": {
                "bootstrap_servers": self.kafka.bootstrap_servers,
                "ack_timeout_secs": 3,
                "probe_interval_secs": 1,
                "request_timeout_secs": 5,
            },
            "pipeline": {
                "device_id": {"topic_template": f"{self.topic_prefix}/{{device_id}}/{{metric}}"},
                "topics": {"normalized": topics.normalized, "raw": topics.raw, "dlq": topics.dlq},
                "forward_raw": True,
            },
            "spool": {"directory": str(self.spool_dir)},
            "lifecycle": {"topic": topics.lifecycle},
            "http": {"listen_host": "127.0.0.1", "port": 0},
        }
        return _merge(base, self.overrides)

    def start(self, *, wait_ready: bool = True, timeout_s: float = 60.0) -> None:
        """Start the agent; by default wait until it subscribed to MQTT."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.config_path_override
        if config is None:
            config = self.workdir / "agent.yaml"
            config.write_text(yaml.safe_dump(self.config()))
        self.starts += 1
        log = self.log_path.open("wb")
        self._forget()
        # ``-X <marker>`` is inert for Python but lets tests/infra reap an agent that a killed
        # test run left behind (its own session, registered like the services).
        self.proc = subprocess.Popen(
            [sys.executable, "-X", HARNESS_MARKER, "-m", "agent", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self._clock_env(), **self.env},
            start_new_session=True,
        )
        log.close()
        PID_DIR.mkdir(parents=True, exist_ok=True)
        (PID_DIR / str(self.proc.pid)).write_text(f"agent {os.getpid()}")
        if wait_ready:
            self.wait_for_log(READY_MARKER, timeout_s)

    def _clock_env(self) -> dict[str, str]:
        return {} if self.faketime is None else faketime_env(self.faketime)

    @property
    def running(self) -> bool:
        """Whether the current run's process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> MetricsPage:
        """One scrape of the current run's ``/metrics``."""
        status, body = self.http_get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return MetricsPage(body.decode())

    def wait_for_log(self, text: str, timeout_s: float = 60.0) -> None:
        """Wait until the current run's log contains ``text``, or fail with the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"agent log never showed {text!r}:\n{self.log_tail()}")

    def http_port(self, timeout_s: float = 30.0) -> int:
        """The port the current run's HTTP endpoint listens on (the tests use port 0)."""
        self.wait_for_log("HTTP endpoint listening.", timeout_s)
        line = next(
            ln for ln in self.log_path.read_text().splitlines() if "HTTP endpoint listening." in ln
        )
        return int(line.rsplit("port=", 1)[1].split()[0])

    def http_get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the agent's HTTP endpoint: (status, body)."""
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        url = f"http://127.0.0.1:{self.http_port()}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_text(self) -> str:
        """Every run's log, oldest first."""
        runs = sorted(self.workdir.glob("agent-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        return "\n".join(p.read_text(errors="replace") for p in runs)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the agent can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
        self._forget()

    def _forget(self) -> None:
        """Drop the pid registration of a run that has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            (PID_DIR / str(self.proc.pid)).unlink(missing_ok=True)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
