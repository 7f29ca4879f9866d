"""The agent's configuration: one frozen pydantic-settings model.

Precedence, lowest to highest: defaults < YAML file < environment (``EDGE_AGENT_`` prefix, ``__``
between nesting levels, e.g. ``EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS``) < explicit overrides (CLI
flags). Unknown keys are rejected; a bad value fails at load with its field path.
"""

from __future__ import annotations

import contextvars
import socket
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from agent.errors import ConfigError
from agent.forwarder import ForwarderSettings
from agent.ingest import IngestSettings
from agent.lifecycle.settings import LifecycleSettings
from agent.pipeline import PipelineSettings
from agent.remote import RemoteConfigSettings
from agent.sink import KafkaSettings
from agent.source import MqttSettings
from agent.spool import SpoolSettings
from agent.telemetry.settings import HttpSettings

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "edge_agent_config_file", default=None
)


class AgentSettings(BaseSettings):
    """Everything the agent reads at start; see ``docs/reference/configuration.md``."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    gateway_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=256,
        description="Identifies this gateway in every record header and lifecycle event.",
    )
    drain_timeout_secs: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM, how long to keep forwarding the spool before exiting.",
    )
    report_interval_secs: float = Field(
        default=10.0,
        gt=0,
        description="How often a progress line (counts, spool depth, uplink) is logged.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged."
    )
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="The local broker.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Central Kafka.")
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings, description="Device ids, validation and topics."
    )
    spool: SpoolSettings = Field(default_factory=SpoolSettings, description="The disk spool.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Group commit.")
    forwarder: ForwarderSettings = Field(
        default_factory=ForwarderSettings, description="Spool to Kafka."
    )
    lifecycle: LifecycleSettings = Field(
        default_factory=LifecycleSettings, description="Lifecycle events and device presence."
    )
    http: HttpSettings = Field(default_factory=HttpSettings, description="Metrics and health.")
    remote_config: RemoteConfigSettings = Field(
        default_factory=RemoteConfigSettings,
        description="Configuration updates from a mounted ConfigMap or the Kubernetes API.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides > environment > YAML file > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> AgentSettings:
    """Load and validate the configuration.

    Args:
        path: A YAML file, or None for environment and defaults only.
        overrides: Values that win over every other source (CLI flags).

    Raises:
        ConfigError: The file is missing or unreadable, or a value is invalid; the message lists
            every bad field as ``path.to.field: what is wrong``.
    """
    if path is not None:
        _check_file(path)
    token = _config_file.set(path)
    try:
        return AgentSettings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    except (SettingsError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read the configuration {path}: {exc}") from exc
    finally:
        _config_file.reset(token)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"Configuration file {path} does not exist or is not a file.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read the configuration {path}: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"Configuration {path} must be a YAML mapping at the top level.")


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path} or the environment" if path is not None else ""
    lines = [f"Invalid configuration{where}:"]
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {loc}: {error['msg']}")
    return "\n".join(lines)
