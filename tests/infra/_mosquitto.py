"""Mosquitto from Debian's package, on loopback, with a project config.

Listeners (all on 127.0.0.1, ports chosen at start):

- ``port``       anonymous, plain TCP;
- ``auth_port``  username/password (``USERNAME``/``PASSWORD``), plain TCP;
- ``tls_port``   TLS with username/password, server cert signed by a throw-away CA;
- ``mtls_port``  TLS that requires a client certificate signed by the same CA.

Persistence is on (so a restart keeps persistent sessions and queued QoS1 messages), and the
inflight/queue limits are sized for tests that push thousands of messages per second.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.infra._process import (
    HARNESS_MARKER,
    ManagedProcess,
    ServiceError,
    free_port,
    port_open,
    wait_until,
)

USERNAME = "edge"
PASSWORD = "edge-secret"  # noqa: S105 - a test credential for a loopback broker
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TlsFiles:
    """Certificates for the TLS listeners; the client files are for mTLS tests."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def mosquitto_binary() -> str:
    """Path of the mosquitto broker, or a clear error saying how to get it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ServiceError(
        "mosquitto is not installed; run `apt-get install mosquitto mosquitto-clients` "
        "(scripts/test does this for you)."
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA, a server cert for 127.0.0.1/localhost and a client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    days = "2"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", days, "-subj", "/CN=edge-agent test CA", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server.ext"), ("client", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", days, "-extfile", ext,
                 cwd=directory)  # fmt: skip
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class Mosquitto:
    """A Mosquitto broker owned by the test run."""

    def __init__(self, base_dir: Path | None = None, *, max_inflight_messages: int = 1000) -> None:
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-mosquitto-"))
        self.max_inflight_messages = max_inflight_messages
        self.port = free_port()
        self.auth_port = free_port()
        self.tls_port = free_port()
        self.mtls_port = free_port()
        self.username = USERNAME
        self.password = PASSWORD
        self.tls: TlsFiles | None = None
        self.log = self.base_dir / "mosquitto.log"
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` of the anonymous listener."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def _write_config(self) -> Path:
        data = self.base_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        passwd = self.base_dir / "passwd"
        passwd.write_text("")
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )
        self.tls = make_tls_files(self.base_dir / "tls")
        tls = self.tls
        conf = self.base_dir / "mosquitto.conf"
        conf.write_text(
            f"""# written by tests/infra for one test run
user {getpass.getuser()}
per_listener_settings true
persistence true
persistence_location {data}/
autosave_interval 1
max_inflight_messages {self.max_inflight_messages}
max_queued_messages 200000
max_queued_bytes 0
set_tcp_nodelay true
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S

listener {self.port} 127.0.0.1
allow_anonymous true

listener {self.auth_port} 127.0.0.1
allow_anonymous false
password_file {passwd}

listener {self.tls_port} 127.0.0.1
allow_anonymous false
password_file {passwd}
cafile {tls.ca}
certfile {tls.server_cert}
keyfile {tls.server_key}

listener {self.mtls_port} 127.0.0.1
allow_anonymous true
cafile {tls.ca}
certfile {tls.server_cert}
keyfile {tls.server_key}
require_certificate true
use_identity_as_username true
"""
        )
        passwd.chmod(0o600)
        return conf

    def start(self) -> None:
        """Start (or restart after stop/kill) and wait until every listener accepts."""
        if self._proc is None:
            conf = self._write_config()
            self._proc = ManagedProcess(
                "mosquitto", [mosquitto_binary(), "-c", str(conf)], self.log
            )
        self._proc.start()
        ports = (self.port, self.auth_port, self.tls_port, self.mtls_port)
        wait_until(
            lambda: self._check_alive() and all(port_open(p) for p in ports),
            START_TIMEOUT_S,
            "mosquitto",
            self.log,
        )

    def _check_alive(self) -> bool:
        if self._proc is None or not self._proc.running:
            raise ServiceError(f"mosquitto exited during start-up.\n{self.log.read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        """Graceful stop: Mosquitto writes its persistence file on SIGTERM."""
        if self._proc is not None:
            self._proc.stop()

    def kill(self) -> None:
        """SIGKILL: what was not yet autosaved is lost, as on a real crash."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> None:
        """Graceful stop, then start again with the same data and ports."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
