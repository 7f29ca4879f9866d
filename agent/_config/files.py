"""The files a valid configuration names: do they exist, can they be read, are they usable?

``check-config`` and ``run`` both check them, so a missing ``mqtt.password_file`` or
``kafka.ssl_ca_file`` stops the systemd unit's start gate (``ExecStartPre=... check-config``)
instead of surfacing later as a connection that never succeeds. Checked:

- every option typed as a file path (``*_file``): it exists, is a regular file (or resolves to
  one, like a Kubernetes Secret's symlinks) and can be read by this user;
- CA bundles (``ca_file``, ``ssl_ca_file``): they hold at least one PEM certificate;
- client certificates with their keys (``cert_file`` + ``key_file``): they load as a pair, and
  the key is not encrypted (the agent has no passphrase to give);
- ``remote_config.directory`` when ``remote_config.mode`` is ``directory``: it is a directory
  this user can list.

``spool.directory`` is not checked here: the agent creates it, as the user it runs as (see
:mod:`agent._config.preflight`).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from agent._config.problems import DEFAULT, ConfigProblem
from agent._config.schema import options, value_at

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import BaseModel

    from agent._config.problems import Source

_CA_FILES = ("mqtt.ca_file", "kafka.ssl_ca_file")
_CERT_KEY_PAIRS = (
    ("mqtt.cert_file", "mqtt.key_file"),
    ("kafka.ssl_cert_file", "kafka.ssl_key_file"),
)
_DIRECTORIES = ("spool.directory", "remote_config.directory")


def _is_path_type(annotation: object) -> bool:
    return annotation is Path or Path in get_args(annotation)


def file_options(model: type[BaseModel]) -> tuple[str, ...]:
    """Dotted paths of every option that names a file (not a directory)."""
    return tuple(
        option.path
        for option in options(model)
        if _is_path_type(option.field.annotation) and option.path not in _DIRECTORIES
    )


def file_problems(
    settings: BaseModel, sources: Mapping[str, Source] | None = None
) -> list[ConfigProblem]:
    """Every named file that is missing, unreadable or unusable, one problem per option.

    Args:
        settings: Valid settings (an :class:`~agent.config.AgentSettings`).
        sources: Option path -> where its value came from, for the messages.
    """
    check = _Checker(settings, sources or {})
    for path in file_options(type(settings)):
        check.readable_file(path)
    for path in _CA_FILES:
        check.ca_bundle(path)
    for cert, key in _CERT_KEY_PAIRS:
        check.cert_pair(cert, key)
    if _remote_directory_used(settings):
        check.directory("remote_config.directory")
    return check.problems


@dataclass(slots=True)
class _Checker:
    settings: BaseModel
    sources: Mapping[str, Source]
    problems: list[ConfigProblem] = field(default_factory=list)
    readable: set[str] = field(default_factory=set)

    def value(self, path: str) -> Path | None:
        value = value_at(self.settings, path)
        return None if value is None else Path(value)

    def problem(self, path: str, why: tuple[str, str | None]) -> None:
        self.problems.append(
            ConfigProblem(
                why[0],
                path=path,
                value=str(self.value(path)),
                source=self.sources.get(path, DEFAULT).label,
                hint=why[1],
            )
        )

    def readable_file(self, path: str) -> None:
        value = self.value(path)
        if value is None:
            return
        why = _unreadable(value)
        if why is None:
            self.readable.add(path)
        else:
            self.problem(path, why)

    def ca_bundle(self, path: str) -> None:
        value = self.value(path)
        if value is not None and path in self.readable and (why := _not_ca_bundle(value)):
            hint = "give a PEM file with the CA certificates that signed the server's"
            self.problem(path, (why, hint))

    def cert_pair(self, cert: str, key: str) -> None:
        cert_value, key_value = self.value(cert), self.value(key)
        if cert_value is None or cert not in self.readable:
            return
        if key_value is not None and key not in self.readable:
            return
        # Without a key the certificate's file holds it (the model requires both for Kafka).
        if (why := _not_cert_pair(cert_value, key_value)) is not None:
            self.problem(cert, (why, f"give a PEM certificate and its unencrypted key ({key})"))

    def directory(self, path: str) -> None:
        value = self.value(path)
        if value is not None and (why := _unlistable(value)) is not None:
            self.problem(path, why)


def _remote_directory_used(settings: BaseModel) -> bool:
    try:
        return bool(value_at(settings, "remote_config.mode") == "directory")
    except AttributeError:
        return False


def _unreadable(path: Path) -> tuple[str, str] | None:
    """(what is wrong, what to do) when ``path`` is not a readable regular file."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        return "does not exist", "check the path, or create the file"
    except IsADirectoryError:
        return "is a directory, not a file", "name the file in it"
    except PermissionError:
        return (
            f"cannot be read by user id {os.geteuid()} (permission denied)",
            "make it readable by the user the agent runs as",
        )
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", "check the file"
    if not path.resolve().is_file():
        return "is not a regular file", "name a regular file"
    return None


def _unlistable(path: Path) -> tuple[str, str] | None:
    try:
        os.listdir(path)  # noqa: PTH208 - one call that raises the precise reason
    except FileNotFoundError:
        return "does not exist", "mount the ConfigMap there, or set remote_config.directory"
    except NotADirectoryError:
        return "is not a directory", "name the directory the ConfigMap is mounted on"
    except PermissionError:
        return (
            f"cannot be listed by user id {os.geteuid()} (permission denied)",
            "make it readable by the user the agent runs as",
        )
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})", "check the directory"
    return None


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")


def _not_ca_bundle(path: Path) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        return f"is not a PEM CA bundle ({_ssl_reason(exc)})"
    if not context.get_ca_certs() and not _has_pem_certificate(path):
        return "holds no certificate"
    return None


def _has_pem_certificate(path: Path) -> bool:
    return b"-----BEGIN CERTIFICATE-----" in path.read_bytes()


def _no_password() -> Any:  # noqa: ANN401 - ssl's password callback
    """Called when the key is encrypted: the agent has no passphrase to give."""
    raise ValueError("the key is encrypted")


def _not_cert_pair(cert: Path, key: Path | None) -> str | None:
    """Why the certificate and its key (None: in the certificate's file) do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(str(cert), None if key is None else str(key), password=_no_password)
    except ValueError:
        return "has an encrypted key; the agent needs it unencrypted (protect it by file mode)"
    except ssl.SSLError as exc:
        return f"does not load with its key ({_ssl_reason(exc)})"
    return None
