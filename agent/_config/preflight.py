"""Start-up checks ``edge-agent run`` makes before it starts anything, each with its exit code.

A failure here is a :class:`StartupFailure`: one line for the operator (what failed, the path or
port, what to do) and the ``sysexits.h`` code of its class, so a supervisor or a script can tell
them apart (see :mod:`agent.cli` for the table). Only conditions that waiting will not fix stop
the start: a spool directory on a full disk or locked by another process is left to the
agent, which retries opening it with back-off.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

EX_NOINPUT: Final = 66
"""A file the configuration names is missing, unreadable or unusable (sysexits EX_NOINPUT)."""
EX_UNAVAILABLE: Final = 69
"""The HTTP endpoint cannot listen: port in use, address not on this host (EX_UNAVAILABLE)."""
EX_CANTCREAT: Final = 73
"""The spool directory cannot be created or written (EX_CANTCREAT)."""
EX_CONFIG: Final = 78
"""The configuration is invalid (EX_CONFIG)."""

# What waiting will not fix. ENOSPC, EDQUOT, EIO and the like are transient: the agent retries.
_PERMANENT_DIR_ERRORS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.EEXIST, errno.ELOOP}
)


class StartupFailure(Exception):  # noqa: N818 - not an error of the agent's, a verdict
    """The agent cannot start; :attr:`exit_code` says why, ``str()`` is the one line to print."""

    def __init__(self, message: str, exit_code: int) -> None:
        """One sentence naming what failed and what to do; a ``sysexits.h`` code."""
        super().__init__(message)
        self.exit_code = exit_code


def check_spool_directory(directory: Path) -> None:
    """Create the spool directory (mode 0700) if needed and make sure this user can write it.

    Raises:
        StartupFailure: It cannot be created or is not writable (EX_CANTCREAT).
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in _PERMANENT_DIR_ERRORS:
            return  # e.g. a full disk: the agent retries opening the spool
        raise StartupFailure(_spool_message(directory, exc), EX_CANTCREAT) from exc
    if not directory.is_dir():
        raise StartupFailure(
            f"The spool directory {directory} is not a directory; set spool.directory to a "
            "directory the agent may create or write.",
            EX_CANTCREAT,
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupFailure(
            f"The spool directory {directory} is not writable by user id {os.geteuid()}; "
            "give that user the directory (chown) or set spool.directory to one it owns.",
            EX_CANTCREAT,
        )


def _spool_message(directory: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    where = f" at {exc.filename}" if exc.filename and str(exc.filename) != str(directory) else ""
    if exc.errno in {errno.EACCES, errno.EPERM}:
        fix = (
            f"create it for user id {os.geteuid()} (systemd: StateDirectory=) or set "
            "spool.directory to a directory that user owns"
        )
    elif exc.errno == errno.EROFS:
        fix = "set spool.directory to a writable file system (the spool must survive reboots)"
    else:
        fix = "set spool.directory to a path whose parents are directories"
    return f"Cannot create the spool directory {directory} ({reason}{where}); {fix}."


def check_listen(host: str, port: int) -> None:
    """Bind the HTTP endpoint's address once, as the agent will (``SO_REUSEADDR``).

    Raises:
        StartupFailure: The address cannot be bound (EX_UNAVAILABLE).
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupFailure(
            f"Cannot listen on {host}:{port} for /metrics and health ({exc.strerror}); set "
            "http.listen_host to an address of this host, e.g. 127.0.0.1.",
            EX_UNAVAILABLE,
        ) from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupFailure(listen_message(host, port, exc), EX_UNAVAILABLE) from exc


def listen_message(host: str, port: int, exc: OSError) -> str:
    """The one line for an HTTP endpoint that cannot listen."""
    if exc.errno == errno.EADDRINUSE:
        fix = (
            "stop the other process (`ss -ltnp 'sport = :"
            f"{port}'` shows it) or set http.port to a free port"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        fix = "set http.listen_host to an address of this host, e.g. 127.0.0.1"
    elif exc.errno == errno.EACCES:
        fix = "use a port above 1023 in http.port"
    else:
        fix = "change http.listen_host or http.port"
    return f"Cannot listen on {host}:{port} for /metrics and health ({exc.strerror}); {fix}."
