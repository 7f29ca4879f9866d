"""The value a remote configuration source hands over, and the contract of a source."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """The whole content of the remote configuration at one moment.

    Attributes:
        data: ConfigMap key (for a directory: file name) -> text. Read-only.
        content_hash: :func:`content_hash` of ``data``: sha256, hex.
        source: Where it was read, e.g. ``directory:/etc/edge-agent`` or
            ``configmap:edge/edge-agent@12345`` (the ConfigMap's resourceVersion).
        observed_at_ms: Wall-clock time it was read, in epoch milliseconds.
    """

    data: Mapping[str, str]
    content_hash: str
    source: str
    observed_at_ms: int

    @classmethod
    def of(cls, data: Mapping[str, str], source: str, observed_at_ms: int) -> ConfigSnapshot:
        """A snapshot of ``data`` (copied, read-only) with its hash computed."""
        frozen = MappingProxyType(dict(sorted(data.items())))
        return cls(frozen, content_hash(frozen), source, observed_at_ms)


def content_hash(data: Mapping[str, str]) -> str:
    """sha256 (hex) over the keys in sorted order, each followed by its value.

    Every key and value is UTF-8 encoded and prefixed by its length in bytes (8 bytes, big
    endian), so no two different mappings hash the same input.
    """
    digest = hashlib.sha256()
    for key in sorted(data):
        for text in (key, data[key]):
            raw = text.encode("utf-8", errors="surrogateescape")
            digest.update(len(raw).to_bytes(8, "big"))
            digest.update(raw)
    return digest.hexdigest()


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class RemoteConfigSource(Protocol):
    """Something that notices new remote configuration and hands it over.

    Lifecycle: ``run`` is awaited once, as a task owned by the caller's TaskGroup, and returns
    only by being cancelled (it re-raises the ``CancelledError``). Transient failures (the
    directory is missing, the API server is unreachable) are logged and retried inside ``run``;
    it raises :class:`~agent.errors.ConfigError` only when it cannot work at all in this
    environment (e.g. mode 'api' outside a pod with no namespace configured).
    """

    async def run(self, publish: Callable[[ConfigSnapshot], Awaitable[None]]) -> None:
        """Watch until cancelled; await ``publish`` with each new content.

        ``publish`` is awaited with the first snapshot read, then only with snapshots whose
        ``content_hash`` differs from the last one published, one call at a time.
        """
        ...


class ChangeFilter:
    """Passes a snapshot on only when its content differs from the last one passed on."""

    def __init__(self, publish: Callable[[ConfigSnapshot], Awaitable[None]]) -> None:
        """Wrap ``publish``."""
        self._publish = publish
        self._last_hash: str | None = None

    @property
    def last_hash(self) -> str | None:
        """``content_hash`` of the last snapshot published, None before the first."""
        return self._last_hash

    async def offer(self, snapshot: ConfigSnapshot) -> bool:
        """Publish ``snapshot`` if its content changed; True if it was published."""
        if snapshot.content_hash == self._last_hash:
            return False
        await self._publish(snapshot)
        self._last_hash = snapshot.content_hash
        return True
