"""Linux inotify through ctypes: change notification for one directory, on the event loop.

No extra dependency: ``inotify_init1`` and ``inotify_add_watch`` come from the C library the
interpreter already loaded, and the events are read with :func:`os.read` on the non-blocking
descriptor, which the event loop polls with ``add_reader``. Where any of that is missing (not
Linux, a C library without inotify, the per-user instance limit reached) :func:`open_inotify`
returns None and the caller polls instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterator
    from pathlib import Path

_log = logging.getLogger(__name__)

# <sys/inotify.h>; the same values on every Linux architecture.
IN_CLOSE_WRITE: Final = 0x0000_0008
IN_MOVED_FROM: Final = 0x0000_0040
IN_MOVED_TO: Final = 0x0000_0080
IN_CREATE: Final = 0x0000_0100
IN_DELETE: Final = 0x0000_0200
IN_DELETE_SELF: Final = 0x0000_0400
IN_MOVE_SELF: Final = 0x0000_0800
IN_Q_OVERFLOW: Final = 0x0000_4000
IN_IGNORED: Final = 0x0000_8000
IN_ONLYDIR: Final = 0x0100_0000

_EVENT_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len
_READ_SIZE: Final = 64 * 1024

DATA_LINK: Final = "..data"
"""The symlink kubelet swaps atomically to publish a new version of a ConfigMap volume."""

# What the watch asks for: the kubelet swap (a rename onto ..data), plain files written, moved or
# deleted in place (a directory that is not a ConfigMap volume), and the directory itself going.
_WATCH_MASK: Final = (
    IN_CREATE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_DELETE
    | IN_CLOSE_WRITE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
_DATA_LINK_CHANGED: Final = IN_CREATE | IN_MOVED_TO
_PLAIN_FILE_CHANGED: Final = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CLOSE_WRITE
_WATCH_GONE: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One ``struct inotify_event``."""

    wd: int
    mask: int
    name: str


def parse_events(buffer: bytes) -> Iterator[InotifyEvent]:
    """The events packed in what one ``read`` of an inotify descriptor returned."""
    offset = 0
    while offset + _EVENT_HEADER.size <= len(buffer):
        wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
        offset += _EVENT_HEADER.size
        raw_name = buffer[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        yield InotifyEvent(wd, mask, os.fsdecode(raw_name))


def is_relevant(event: InotifyEvent) -> bool:
    """Whether ``event`` may mean the directory's content changed.

    The ``..data`` symlink created or renamed into place (kubelet's atomic swap), a top-level
    file that does not start with a dot written, created, moved or deleted, the directory itself
    deleted or moved, or the kernel's queue overflowed (events were lost).
    """
    if event.mask & (IN_Q_OVERFLOW | _WATCH_GONE):
        return True
    if event.name == DATA_LINK:
        return bool(event.mask & _DATA_LINK_CHANGED)
    if event.name and not event.name.startswith("."):
        return bool(event.mask & _PLAIN_FILE_CHANGED)
    return False


class _Libc:
    """The two inotify calls, bound once."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


class DirectoryNotifier:
    """An inotify watch on one directory that calls ``on_change`` for relevant events.

    The watch survives kubelet's swaps (the directory stays; only entries in it change). It is
    lost when the directory itself is removed or moved; :meth:`ensure_watch` adds it again once
    the directory exists, so callers call it before every read.
    """

    def __init__(
        self,
        libc: _Libc,
        fd: int,
        directory: Path,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[], None],
    ) -> None:
        """Use an open inotify descriptor; see :func:`open_inotify`."""
        self._libc = libc
        self._fd = fd
        self._path = os.fsencode(directory)
        self._loop = loop
        self._on_change = on_change
        self._wd: int | None = None
        self.events_total = 0
        """Relevant events received so far."""
        loop.add_reader(fd, self._on_readable)

    @property
    def watching(self) -> bool:
        """Whether the directory currently has a watch."""
        return self._wd is not None

    def ensure_watch(self) -> bool:
        """Add the watch if the directory has none; False if it cannot (e.g. it is missing)."""
        if self._wd is not None:
            return True
        wd = self._libc.add_watch(self._fd, self._path, _WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            _log.debug(
                "Cannot watch the directory yet; polling.",
                extra={"directory": os.fsdecode(self._path), "error": os.strerror(code)},
            )
            return False
        self._wd = wd
        return True

    def close(self) -> None:
        """Stop watching and close the descriptor."""
        self._loop.remove_reader(self._fd)
        os.close(self._fd)

    def _on_readable(self) -> None:
        relevant = False
        while True:
            try:
                buffer = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                _log.warning("Cannot read inotify events; polling.", extra={"error": str(exc)})
                relevant = True
                break
            if not buffer:
                break
            for event in parse_events(buffer):
                relevant = self._handle(event) or relevant
        if relevant:
            self.events_total += 1
            self._on_change()

    def _handle(self, event: InotifyEvent) -> bool:
        if event.mask & IN_Q_OVERFLOW:
            return True
        if event.wd != self._wd:
            return False  # a watch removed earlier
        if event.mask & _WATCH_GONE:
            if not event.mask & IN_IGNORED:
                self._libc.rm_watch(self._fd, event.wd)
            self._wd = None
        return is_relevant(event)


def open_inotify(
    directory: Path, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]
) -> DirectoryNotifier | None:
    """A notifier on ``directory`` registered with ``loop``, or None where inotify is missing.

    The directory need not exist yet: the watch is added by
    :meth:`DirectoryNotifier.ensure_watch`.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = _Libc()
    except (OSError, AttributeError) as exc:
        _log.info("Inotify is not available; polling only.", extra={"error": str(exc)})
        return None
    fd = libc.init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        code = ctypes.get_errno()
        level = logging.WARNING if code in {errno.EMFILE, errno.ENFILE} else logging.INFO
        _log.log(level, "Cannot start inotify; polling only.", extra={"error": os.strerror(code)})
        return None
    try:
        return DirectoryNotifier(libc, fd, directory, loop, on_change)
    except (NotImplementedError, OSError) as exc:  # an event loop without add_reader
        os.close(fd)
        _log.info(
            "Cannot poll inotify on this event loop; polling only.", extra={"error": str(exc)}
        )
        return None
