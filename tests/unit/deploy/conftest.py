"""Fixtures of the deployment tests: ``edge-agent check-config`` as a unit or a pod runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml


class CheckConfig(Protocol):
    """Run ``edge-agent check-config`` on a file, or a mapping written to one, with env vars."""

    def __call__(
        self, config: Path | dict[str, Any], env: dict[str, str] | None = None
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]: ...


@pytest.fixture
def check_config(tmp_path: Path) -> CheckConfig:
    """``check-config`` as a subprocess; returns the process and the effective settings.

    The effective settings are its default output, commented YAML, read back.
    """

    def run(
        config: Path | dict[str, Any], env: dict[str, str] | None = None
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        if not isinstance(config, Path):
            path = tmp_path / "agent.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            config = path
        # Only the variables given: an EDGE_AGENT_* variable of the developer must not leak in.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
        proc = subprocess.run(
            # The secret files and the ConfigMap directory exist in the pod, not here.
            [sys.executable, "-m", "agent", "check-config", "--no-check-files", str(config)],
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        effective = yaml.safe_load(proc.stdout) if proc.returncode == 0 else {}
        return proc, effective

    return run
