"""Process plumbing shared by the service launchers: free ports, pid registry, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache"
PID_DIR = CACHE_DIR / "infra-pids"
MOUNT_DIR = CACHE_DIR / "infra-mounts"
HARNESS_MARKER = "edgeagent-harness"


class ServiceError(RuntimeError):
    """A service failed to start or stop; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on the port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(predicate, timeout_s: float, what: str, log: Path | None = None) -> None:
    """Poll ``predicate`` until it is true or raise ServiceError with the log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f} s.{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 40) -> str:
    """The last lines of a log file, formatted for an error message."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {log} ---\n" + "\n".join(text)


class ManagedProcess:
    """One child process in its own session, registered in the pid directory."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        PID_DIR.mkdir(parents=True, exist_ok=True)
        # "<name> <owner pid>": a later run reaps the process only once its owner is gone.
        (PID_DIR / f"{self.proc.pid}").write_text(f"{self.name} {os.getpid()}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL at once (a crash, as far as the service can tell)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        (PID_DIR / f"{proc.pid}").unlink(missing_ok=True)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.proc = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Kill harness processes left behind by an earlier run that did not clean up.

    A process is stale when the run that started it (its owner) is no longer alive; services
    of a run that is still going (another terminal, a parallel test session) are left alone.
    """
    killed: list[str] = []
    killed += _unmount_stale()
    if not PID_DIR.exists():
        return killed
    for pidfile in PID_DIR.iterdir():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.name)
            name, _, owner = pidfile.read_text().partition(" ")
            if owner and _alive(int(owner)):
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if HARNESS_MARKER.encode() in cmdline:
                os.killpg(pid, signal.SIGKILL)
                killed.append(f"{name} (pid {pid})")
        pidfile.unlink(missing_ok=True)
    return killed


def _unmount_stale() -> list[str]:
    """Unmount the tmpfs mounts (tests/infra/_tmpfs.py) of runs that are no longer alive."""
    done: list[str] = []
    if not MOUNT_DIR.exists():
        return done
    for entry in MOUNT_DIR.iterdir():
        with contextlib.suppress(ValueError, OSError):
            path, _, owner = entry.read_text().partition(" ")
            if owner and _alive(int(owner)):
                continue
            if HARNESS_MARKER in path:
                subprocess.run(["umount", "--lazy", path], capture_output=True, check=False)
                with contextlib.suppress(OSError):
                    Path(path).rmdir()
                done.append(f"tmpfs mount {path}")
        entry.unlink(missing_ok=True)
    return done
