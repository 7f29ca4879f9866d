"""Fixtures of the command-line tests: the CLI as a process, a clean environment, TLS files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

from tests.infra._mosquitto import TlsFiles, make_tls_files

ROOT = Path(__file__).resolve().parents[3]
KAFKA = "kafka.test:9092"


class Cli(Protocol):
    """Run ``python -m agent ARGS`` with only the given EDGE_AGENT_* variables."""

    def __call__(
        self, *args: object, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGE_AGENT_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cli() -> Cli:
    """The CLI as a subprocess, the way systemd and scripts run it (exit code, stderr)."""

    def run(
        *args: object, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_AGENT_")}
        return subprocess.run(
            [sys.executable, "-m", "agent", *[str(a) for a in args]],
            env={**clean, "PYTHONDEVMODE": "1", **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=ROOT,
        )

    return run


@pytest.fixture
def config_file(tmp_path: Path):
    """Write a minimal valid configuration (spool under tmp_path, Kafka named) plus overrides."""

    def write(**sections: Any) -> Path:
        base: dict[str, Any] = {
            "gateway_id": "gw-cli",
            "kafka": {"bootstrap_servers": KAFKA},
            "spool": {"directory": str(tmp_path / "spool")},
            "http": {"enabled": False},
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(base.get(name), dict):
                base[name] = {**base[name], **value}
            else:
                base[name] = value
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(base), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and client certificate made with openssl."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
