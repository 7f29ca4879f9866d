"""A file of pre-allocated bytes the spool gives back to the file system when the disk is full.

On a full disk SQLite needs space even to delete (write-ahead log frames, the moved pages of
``auto_vacuum``), and diskcache writes its ``Settings`` table on every open. Without a little
free space the spool could neither remove delivered blocks nor open again. So the spool keeps
``<directory>/reserve`` (``reserve_bytes``, allocated with ``posix_fallocate`` so the blocks are
really taken): when a remove, an expiry or the open fails for want of space, the file is deleted
and the operation retried once. The file is created again, after later removes, once the disk
has at least twice its size free, so it never takes the last free space from SQLite.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_log = logging.getLogger(__name__)

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values that mean the file system has no room left for this process."""


class Reserve:
    """The reserve file: created when there is room, released when space is needed."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        """Describe the reserve at ``path``; nothing touches the disk yet."""
        self._path = path
        self._size_bytes = size_bytes
        self._present = False
        self._warned = False

    @property
    def present(self) -> bool:
        """Whether the reserve file is known to exist at its full size."""
        return self._present

    def adopt(self) -> None:
        """At open: keep an existing reserve of the right size, delete any other."""
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            self._present = False
            return
        if self._size_bytes > 0 and size == self._size_bytes:
            self._present = True
            return
        self._path.unlink(missing_ok=True)
        self._present = False

    def release(self) -> bool:
        """Delete the reserve file.

        Returns:
            True when a reserve was deleted (so there is now more free space).
        """
        if not self._present:
            return False
        self._present = False
        try:
            self._path.unlink()
        except FileNotFoundError:
            return False
        return True

    def restore(self) -> bool:
        """Create the reserve if it is missing and the disk has twice its size free.

        Never raises: a reserve that cannot be created now is tried again later.

        Returns:
            True when the reserve exists afterwards.
        """
        if self._present or self._size_bytes <= 0 or self.short_of_space():
            return self._present
        try:
            self._allocate()
        except OSError as exc:
            if exc.errno not in OUT_OF_SPACE and not self._warned:
                self._warned = True
                _log.warning(
                    "Could not create the spool's disk-full reserve; the spool works without it "
                    "but may not open or delete on a full disk.",
                    extra={"path": str(self._path), "error": str(exc)},
                )
            return False
        self._present = True
        return True

    def short_of_space(self) -> bool:
        """Whether the file system has less than twice the reserve free (False if unknown)."""
        try:
            stats = os.statvfs(self._path.parent)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < 2 * self._size_bytes

    def _allocate(self) -> None:
        partial = self._path.with_name(self._path.name + ".new")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self._size_bytes)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        os.close(fd)
        partial.replace(self._path)
