"""Fixtures of the configuration tests: a clean environment and a config file writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import pytest


class WriteConfig(Protocol):
    """Write YAML text to a fresh agent.yaml and return its path."""

    def __call__(self, text: str, name: str = "agent.yaml") -> Path: ...


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGE_AGENT_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a configuration file under tmp_path."""

    def write(text: str, name: str = "agent.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
