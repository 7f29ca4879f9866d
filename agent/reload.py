"""Configuration changes while running: validate-or-keep, live fields applied atomically.

A new configuration arrives as text (a ConfigMap snapshot from :mod:`agent.remote`, or the
config file re-read on SIGHUP). It is loaded with the same precedence as at start — the file's
text < environment < CLI flags — and validated completely before anything changes:

- invalid → the running configuration stays, a ``config_rejected`` event says why;
- valid and different → the live fields are applied (see ``docs/reference/configuration.md``
  for which are live), a ``config_applied`` event lists what changed and which changes wait for
  a restart; with ``remote_config.restart_on_restart_only_change`` such changes make the agent
  drain and exit with :data:`EXIT_RESTART` so its supervisor starts it with the new config.

One rule decides what is applied, option by option, from the ``reload`` marker of each field
(:func:`agent.config.merge_live`): the components get the *running* settings with only the
changed live options replaced, never a whole new section. Changing ``lifecycle.rate_limit_burst``
and ``lifecycle.topic`` together applies the burst and reports the topic as pending a restart;
the topic the agent writes to stays the old one until then. :attr:`Reloader.running` is what
the components run with, :attr:`Reloader.current` the last configuration accepted.

Applying is atomic for the data path: ingest takes the new pipeline between two groups, so
every message is processed by exactly one configuration and acknowledged exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

from agent.config import REQUIRED_OPTIONS, config_hash, diff_settings, load_config, merge_live
from agent.errors import AgentError, ConfigError
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

    async def apply_live(self, effective: AgentSettings, diff: SettingsDiff) -> None:
        """Run with ``effective`` from now on; ``diff.live`` lists the options that changed.

        ``effective`` differs from the running settings only in live options
        (``diff.restart`` is empty): a component may take a whole section from it. Raise an
        :class:`~agent.errors.AgentError` only before anything was applied: the reload is then
        rejected and the running configuration kept.
        """
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
        self.running = current
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
                new = load_config(
                    text=text, origin=source, overrides=self._overrides, required=REQUIRED_OPTIONS
                ).settings
            except ConfigError as exc:
                self._reject(source, content_hash, str(exc))
                return False
            if not diff_settings(self.current, new):
                return False
            wanted = diff_settings(self.running, new)
            effective = self._effective(new, wanted)
            applied = diff_settings(self.running, effective)
            pending = sorted(wanted.changed - applied.live)
            previous_hash = config_hash(self.current)
            if applied:
                try:
                    await self._target.apply_live(effective, applied)
                except AgentError as exc:  # e.g. the disk refused; nothing was applied
                    self._reject(source, content_hash, f"it could not be applied: {exc}")
                    return False
            self.current = new
            self.running = effective
            self.generation += 1
            self._metrics.config_applied(self.generation)
            self._lifecycle.emit(
                ev.ConfigApplied(
                    gateway_id=self._lifecycle.gateway_id,
                    at_ms=self._lifecycle.now_ms(),
                    source=source,
                    config_hash=config_hash(new)[:16],
                    previous_hash=previous_hash[:16],
                    changed_fields=sorted(wanted.changed),
                    restart_required_fields=pending,
                    generation=self.generation,
                ),
                force=True,
            )
            if pending:
                self._restart_only(pending)
            return True

    def _effective(self, new: AgentSettings, wanted: SettingsDiff) -> AgentSettings:
        """The running settings with the live changes of ``new``, or unchanged if they clash."""
        try:
            return merge_live(self.running, new, wanted.live)
        except ConfigError as exc:
            _log.warning(
                "The live changes do not go with the running values of the restart-only "
                "options; all changes wait for a restart.",
                extra={"fields": sorted(wanted.live), "error": str(exc)},
            )
            return self.running

    def _restart_only(self, fields: list[str]) -> None:
        if self.running.remote_config.restart_on_restart_only_change:
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
