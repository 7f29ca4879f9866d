"""Fixtures of the remote configuration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kubelet import KubeletVolume
from tests.unit.remote._support import Recorder


@pytest.fixture
def volume(tmp_path: Path) -> KubeletVolume:
    """A ConfigMap volume directory, not created yet."""
    return KubeletVolume(tmp_path / "edge-agent")


@pytest.fixture
def recorder() -> Recorder:
    """The publish callback, recording every snapshot."""
    return Recorder()
