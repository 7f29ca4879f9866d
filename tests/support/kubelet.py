"""A ConfigMap volume laid out and updated exactly as kubelet does it (for tests)."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


class KubeletVolume:
    """A ConfigMap volume laid out and updated exactly as kubelet's AtomicWriter does.

    ``<dir>/..<UTC timestamp>.<nanoseconds>/`` holds the real files, ``<dir>/..data`` is a
    relative symlink to it, and each key is a relative symlink ``<dir>/<key> -> ..data/<key>``.
    An update writes a new timestamped directory, creates ``..data_tmp`` pointing at it, renames
    ``..data_tmp`` over ``..data`` (atomic), adjusts the per-key symlinks, and removes the old
    timestamped directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._clock = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
        self._serial = 123_456_789
        self.version_dirs: list[str] = []

    def _next_version_name(self) -> str:
        name = f"..{self._clock:%Y_%m_%d_%H_%M_%S}.{self._serial}"
        self._clock += timedelta(seconds=1)
        self._serial += 1
        return name

    def write(self, data: Mapping[str, str]) -> None:
        """Create the volume (first call) or publish a new version of it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        version = self._next_version_name()
        version_dir = self.directory / version
        version_dir.mkdir(mode=0o755)
        for key, value in data.items():
            (version_dir / key).write_text(value, encoding="utf-8")
            (version_dir / key).chmod(0o644)
        tmp_link = self.directory / "..data_tmp"
        tmp_link.symlink_to(version)
        old_target = (self.directory / "..data").readlink() if self.version_dirs else None
        os.rename(tmp_link, self.directory / "..data")  # noqa: PTH104 - rename(2), as kubelet
        for key in data:
            key_link = self.directory / key
            if not key_link.is_symlink():
                key_link.symlink_to(f"..data/{key}")
        for entry in self.directory.iterdir():
            if entry.is_symlink() and not entry.name.startswith(".") and entry.name not in data:
                entry.unlink()
        if old_target is not None:
            shutil.rmtree(self.directory / old_target)
        self.version_dirs.append(version)
