"""Configuration changes while running: validate-or-keep, live fields applied atomically.

A new configuration arrives as text (a ConfigMap snapshot from :mod:`agent.remote`, or the
config file re-read on SIGHUP). It is loaded with the same precedence as at start — the file's
text < environment < CLI flags — and validated completely before anything changes:

- invalid → the running configuration stays, a ``config_rejected`` event says why;
- valid and different → the live fields are applied (see ``docs/reference/configuration.md``
  for which are live), a ``config_applied`` event lists what changed and which changes wait for
  a restart; with ``remote_config.restart_on_restart_only_change`` such changes make the agent
  drain and exit with :data:`EXIT_RESTART` so its supervisor starts it with the new config.

Applying is atomic for the data path: ingest takes the new pipeline between two groups, so
every message is processed by exactly one configuration and acknowledged exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from agent.config import config_hash, diff_settings, load_config
from agent.errors import ConfigError
from agent.lifecycle import events as ev

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
    from typing import Any

    from agent.config import AgentSettings, Override, SettingsDiff
    from agent.lifecycle.emitter import Lifecycle
    from agent.remote import ConfigSnapshot
    from agent.telemetry import Metrics

_log = logging.getLogger(__name__)

EXIT_RESTART: Final = 75
"""Exit code after draining for a restart-only change (EX_TEMPFAIL): "start me again"."""


class LiveTarget(Protocol):
    """What the agent exposes to have live fields applied."""

    async def apply_live(self, new: AgentSettings, diff: SettingsDiff) -> None:
        """Swap in the live parts of ``new``."""
        ...

    def request_restart(self) -> None:
        """Drain and exit with :data:`EXIT_RESTART`."""
        ...


class Reloader:
    """Validates incoming configurations and applies them; see the module docstring."""

    def __init__(
        self,
        current: AgentSettings,
        target: LiveTarget,
        lifecycle: Lifecycle,
        metrics: Metrics,
        *,
        overrides: Mapping[str, Any] | Iterable[Override] | None = None,
    ) -> None:
        """Start from the configuration the agent was started with (generation 1)."""
        self.current = current
        self.generation = 1
        self._target = target
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._overrides: Mapping[str, Any] | list[Override] = (
            dict(overrides) if isinstance(overrides, Mapping) else list(overrides or ())
        )
        self._lock = asyncio.Lock()

    async def on_snapshot(self, snapshot: ConfigSnapshot) -> None:
        """A remote source saw new content (the publish callback of agent.remote)."""
        key = self.current.remote_config.config_key
        text = snapshot.data.get(key)
        if text is None:
            self._reject(
                snapshot.source,
                snapshot.content_hash,
                f"the configuration has no key {key!r} (keys: {sorted(snapshot.data)})",
            )
            return
        await self.apply_text(text, snapshot.source)

    async def reload_file(self, path: Path) -> None:
        """Re-read the config file (SIGHUP)."""
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._reject(str(path), "", f"cannot read {path}: {exc}")
            return
        await self.apply_text(text, str(path))

    async def apply_text(self, text: str, source: str) -> bool:
        """Validate ``text`` and apply it; returns whether a new configuration was applied."""
        async with self._lock:
            content_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
            try:
                new = load_config(text=text, origin=source, overrides=self._overrides).settings
            except ConfigError as exc:
                self._reject(source, content_hash, str(exc))
                return False
            diff = diff_settings(self.current, new)
            if not diff:
                return False
            previous_hash = config_hash(self.current)
            await self._target.apply_live(new, diff)
            self.current = new
            self.generation += 1
            self._metrics.config_applied(self.generation)
            self._lifecycle.emit(
                ev.ConfigApplied(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    source=source,
                    config_hash=config_hash(new)[:16],
                    previous_hash=previous_hash[:16],
                    changed_fields=sorted(diff.changed),
                    restart_required_fields=sorted(diff.restart),
                    generation=self.generation,
                ),
                force=True,
            )
            if diff.needs_restart:
                self._restart_only(diff)
            return True

    def _restart_only(self, diff: SettingsDiff) -> None:
        fields = sorted(diff.restart)
        if self.current.remote_config.restart_on_restart_only_change:
            _log.warning(
                "Configuration changes need a restart: draining and exiting to be restarted.",
                extra={"fields": fields, "exit_code": EXIT_RESTART},
            )
            self._target.request_restart()
        else:
            _log.warning(
                "Configuration changes take effect at the next restart.", extra={"fields": fields}
            )

    def _reject(self, source: str, content_hash: str, error: str) -> None:
        self._metrics.config_rejected()
        self._lifecycle.emit(
            ev.ConfigRejected(
                gateway_id=self._lifecycle.gateway_id,
                at_ms=self._lifecycle.now_ms(),
                source=source,
                content_hash=content_hash,
                error=error,
            ),
            force=True,
        )
