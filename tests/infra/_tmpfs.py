"""A small real filesystem (tmpfs) for tests that fill a disk: ``mount -t tmpfs -o size=...``.

Needs root (CI runs as root). Each mount is registered in ``.cache/infra-mounts`` with the pid of
the run that made it, so :func:`tests.infra._process.reap_stale` unmounts what a killed run left
behind, and only that.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.infra._process import HARNESS_MARKER, MOUNT_DIR, ServiceError


def _registry_entry(mount_point: Path) -> Path:
    return MOUNT_DIR / mount_point.name


def mount_tmpfs(size_bytes: int) -> Path:
    """Mount a fresh tmpfs of ``size_bytes`` (rounded up to pages) and return its mount point."""
    if os.geteuid() != 0:
        raise ServiceError("mounting a tmpfs needs root (CI runs the integration tests as root).")
    mount_point = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-tmpfs-"))
    MOUNT_DIR.mkdir(parents=True, exist_ok=True)
    _registry_entry(mount_point).write_text(f"{mount_point} {os.getpid()}")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        _registry_entry(mount_point).unlink(missing_ok=True)
        mount_point.rmdir()
        raise ServiceError(f"mount -t tmpfs failed: {result.stderr.strip()}")
    return mount_point


def is_mounted(mount_point: Path) -> bool:
    """Whether ``mount_point`` is a mount point right now (from /proc/self/mounts)."""
    target = str(mount_point)
    with Path("/proc/self/mounts").open() as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(mount_point: Path) -> None:
    """Unmount (lazily if something still holds a file open) and remove the mount point."""
    if is_mounted(mount_point):
        result = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], capture_output=True, check=True)
    with contextlib.suppress(OSError):
        mount_point.rmdir()
    _registry_entry(mount_point).unlink(missing_ok=True)


@contextlib.contextmanager
def tmpfs(size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` for the ``with`` block; always unmounted after it."""
    mount_point = mount_tmpfs(size_bytes)
    try:
        yield mount_point
    finally:
        unmount(mount_point)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer could still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
