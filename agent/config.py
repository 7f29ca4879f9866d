"""The agent's configuration: one frozen pydantic-settings model, and how it is loaded.

Sources, lowest to highest precedence:

1. defaults, declared in the models;
2. one YAML file (``edge-agent run --config FILE``, ``edge-agent check-config FILE``);
3. the environment: ``EDGE_AGENT_`` and the upper-case path with ``__`` between levels, e.g.
   ``EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS``; lists and mappings as JSON;
4. command-line flags: ``--set path.to.option=VALUE`` (VALUE read as YAML, as if written in the
   file) and the shortcuts ``--gateway-id``, ``--log-level``, ``--log-format``.

Sections merge option by option (an environment variable for ``kafka.linger_ms`` keeps the
file's other ``kafka`` options); an option's value is replaced whole. Unknown keys are refused in
every source and at every level, with a did-you-mean hint. Every problem names the option's
path, its value (secrets masked), the source it came from and what is wrong; all problems are
reported at once (:class:`InvalidConfigError`).

Every option declares whether a change applies live or needs a restart
(``json_schema_extra={"reload": "live" | "restart"}``); :func:`diff_settings` splits a change
along that line. Secrets (``SecretStr``) are masked in ``repr``/``str``, ``model_dump_json``,
``check-config`` output and every error; prefer the ``*_file`` options (a mounted Secret).

Every option is described in ``docs/reference/configuration.md``, generated from these models by
``scripts/gen_config_docs.py``.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent._config.checks import control_character, is_host
from agent._config.problems import (
    DEFAULT,
    ConfigProblem,
    InvalidConfigError,
    Source,
    validation_problems,
)
from agent._config.schema import (
    MASK,
    Reload,
    env_name,
    option_map,
    options,
    plain,
    show,
    value_at,
)
from agent._config.sources import (
    Override,
    Piece,
    env_pieces,
    flag_pieces,
    merge,
    parse_yaml,
    read_file,
    secret_values,
)
from agent.alerts.settings import AlertSettings
from agent.commands.settings import CommandsSettings
from agent.forwarder import ForwarderSettings
from agent.ingest import IngestSettings
from agent.lifecycle.settings import LifecycleSettings
from agent.pipeline import PipelineSettings
from agent.pipeline._text import MAX_NAME_BYTES, text_problem
from agent.remote import RemoteConfigSettings
from agent.sink import KafkaSettings
from agent.source import MqttSettings
from agent.spool import SpoolSettings
from agent.telemetry.settings import HttpSettings

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "MASK",
    "REQUIRED_OPTIONS",
    "AgentSettings",
    "ConfigProblem",
    "InvalidConfigError",
    "LoadedConfig",
    "Override",
    "Reload",
    "SettingChange",
    "SettingsDiff",
    "Source",
    "config_hash",
    "diff_settings",
    "load_config",
    "load_settings",
    "merge_live",
]

_ModelT = TypeVar("_ModelT", bound=BaseModel)

REQUIRED_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"kafka.bootstrap_servers": "the Kafka brokers, HOST:PORT[,HOST:PORT...]"}
)
"""Option path -> what to give: what a configuration the agent runs with must set (file,
environment or flag), see ``required`` of :func:`load_config`. Without Kafka's address the agent
would spool forever against the model's placeholder default."""

_validating_merged: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "edge_agent_validating_merged", default=False
)


def _gateway_id(value: str) -> str:
    """A gateway id usable everywhere it goes: Kafka key and header, MQTT client id, logs."""
    problem = text_problem(value, MAX_NAME_BYTES)
    if problem is None and value.strip() != value:
        problem = "starts or ends with white space"
    if problem is None and not value.isprintable():
        problem = "contains a character that cannot be printed"
    if problem is not None:
        raise ValueError(
            f"the gateway id {problem}; it goes into every record header, the MQTT client id "
            "and every log line: use a short printable name such as the host name"
        )
    return value


GatewayId = Annotated[str, AfterValidator(_gateway_id)]


class AgentSettings(BaseSettings):
    """Everything the agent reads at start; see ``docs/reference/configuration.md``.

    Load it with :func:`load_settings` or :func:`load_config` (file, environment and flags).
    ``AgentSettings()`` alone reads the environment only.
    """

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    gateway_id: GatewayId = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=256,
        description=(
            "Identifies this gateway in every record header and lifecycle event, and names "
            "the MQTT client (edge-agent-<gateway_id>). Printable characters only, no white "
            "space at either end. Default: the host name."
        ),
        json_schema_extra={"reload": "restart"},
    )
    drain_timeout_secs: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="On SIGTERM, how long to keep forwarding the spool before exiting.",
        json_schema_extra={"reload": "restart"},
    )
    report_interval_secs: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="How often a progress line (counts, spool depth, uplink) is logged.",
        json_schema_extra={"reload": "restart"},
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged.", json_schema_extra={"reload": "live"}
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log line format: json (one object per line) or text.",
        json_schema_extra={"reload": "restart"},
    )
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
    commands: CommandsSettings = Field(
        default_factory=CommandsSettings,
        description="Device-bound commands from Kafka to MQTT (off by default).",
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="Edge alert rules to alerts.topic (no rules by default).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments > environment; only the arguments while :func:`load_config` runs.

        :func:`load_config` merges file, environment and flags itself (so it knows where every
        value came from) and validates the result as keyword arguments.
        """
        if _validating_merged.get():
            return (init_settings,)
        return (init_settings, env_settings)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Valid settings and where each value came from.

    Attributes:
        settings: The effective settings.
        sources: Option path -> where its value came from; options at their default are absent.
    """

    settings: AgentSettings
    sources: Mapping[str, Source]

    def source_of(self, path: str) -> Source:
        """Where the option at ``path`` came from (:data:`DEFAULT` when it was not given)."""
        return self.sources.get(path, DEFAULT)


def load_config(  # noqa: PLR0913 - keyword-only options, each with a default
    path: Path | None = None,
    overrides: Mapping[str, Any] | Iterable[Override] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    text: str | None = None,
    origin: str | None = None,
    required: Iterable[str] = (),
) -> LoadedConfig:
    """Load, merge and validate the configuration; report every problem at once.

    Args:
        path: The YAML file, or None for environment and defaults only. An empty file means
            all defaults.
        overrides: Values that win over every other source: :class:`Override` objects (the
            CLI flags), or a mapping of dotted path -> value (a mapping value for a section
            merges into it).
        environ: The environment to read; default ``os.environ``.
        text: YAML text to use instead of ``path`` (e.g. a ConfigMap's ``agent.yaml``).
        origin: How ``text`` is named in messages, e.g. ``configmap:edge/edge-agent@123``.
        required: Option paths some source must set (their model default is refused); the
            agent passes :data:`REQUIRED_OPTIONS` for what it runs with (``run``,
            ``check-config``, a reload), tests and tools building partial settings pass none.

    Raises:
        InvalidConfigError: Anything wrong; ``problems`` has one entry per problem, and the
            message one line per problem. No secret value appears in either.
    """
    pieces: list[Piece] = []
    unusable: list[ConfigProblem] = []
    try:
        if text is not None:
            pieces.append(parse_yaml(text, origin or "<text>"))
        elif path is not None:
            pieces.append(read_file(path))
    except InvalidConfigError as exc:
        unusable.extend(exc.problems)
    env, problems = env_pieces(AgentSettings, os.environ if environ is None else environ)
    if unusable:  # without the file, validating the rest would only report spurious problems
        raise InvalidConfigError([*unusable, *problems])
    pieces.extend(env)
    pieces.extend(flag_pieces(_as_overrides(overrides)))

    merged = merge(AgentSettings, pieces)
    problems.extend(merged.problems)
    token = _validating_merged.set(True)
    try:
        settings = AgentSettings(**merged.data)
    except ValidationError as exc:
        secrets = secret_values(AgentSettings, merged.data)
        problems.extend(validation_problems(AgentSettings, exc, merged.sources, secrets))
    else:
        problems.extend(usability_problems(settings, merged.sources))
    finally:
        _validating_merged.reset(token)
    problems.extend(_missing_required(required, merged.sources, merged.problems))
    if problems:
        # Raised outside the `except`: pydantic's error quotes every input value, secrets
        # included, and must not travel along as the cause.
        raise InvalidConfigError(problems)
    return LoadedConfig(settings, MappingProxyType(dict(merged.sources)))


def usability_problems(
    settings: AgentSettings, sources: Mapping[str, Source] | None = None
) -> list[ConfigProblem]:
    """What passes each option's own check but would break the agent at run time.

    - A number that is infinite or NaN: durations and rates become sleeps, timers and
      millisecond integers, where infinity crashes or hangs (``int(inf)``), so none is allowed.
    - A control character in any text or path option (secrets aside): a NUL in a path makes
      every start fail, brokers refuse them in client ids, user names and topic filters.
    - ``mqtt.host`` that is neither an IP address nor a host name: it never resolves.
    - ``lifecycle.topic`` equal to one of ``pipeline.topics``: lifecycle events would be mixed
      into telemetry (and counted as telemetry in the metrics).
    - ``alerts.topic`` equal to one of ``pipeline.topics`` or ``lifecycle.topic``: the same.

    Args:
        settings: Settings that passed validation.
        sources: Option path -> where its value came from, for the messages.
    """
    sources = sources or {}
    problems: list[ConfigProblem] = []

    def problem(path: str, message: str) -> None:
        value = value_at(settings, path)
        problems.append(
            ConfigProblem(
                message, path=path, value=show(value), source=sources.get(path, DEFAULT).label
            )
        )

    for option in options(AgentSettings):
        value = value_at(settings, option.path)
        if isinstance(value, float) and not math.isfinite(value):
            problem(option.path, "must be a finite number (infinity and NaN are not allowed)")
        elif not option.secret and (char := control_character(value)) is not None:
            problem(
                option.path,
                f"contains the control character {char!r}; names, topics, filters and paths "
                "must be printable (a NUL in a path fails every start, a broker refuses them "
                "in client ids and topic filters)",
            )
    if not is_host(settings.mqtt.host):
        problem("mqtt.host", "is neither an IP address nor a host name")
    topics = settings.pipeline.topics
    if settings.lifecycle.topic in {topics.normalized, topics.raw, topics.dlq}:
        problem(
            "lifecycle.topic",
            "is also one of pipeline.topics; give lifecycle events a topic of their own",
        )
    if settings.alerts.topic in {
        topics.normalized,
        topics.raw,
        topics.dlq,
        settings.lifecycle.topic,
    }:
        problem(
            "alerts.topic",
            "is also one of pipeline.topics or lifecycle.topic; give alerts a topic of their own",
        )
    return problems


def _missing_required(
    required: Iterable[str], sources: Mapping[str, Source], earlier: Iterable[ConfigProblem]
) -> list[ConfigProblem]:
    """A problem for every required option no source gave (nor tried to give)."""
    tried = {problem.path for problem in earlier}
    return [
        ConfigProblem(
            f"is required and not set: give {REQUIRED_OPTIONS.get(path, 'a value')}",
            path=path,
            hint=f"set it in the configuration file, in {env_name(path)} or with --set {path}=...",
        )
        for path in required
        if path not in sources and path not in tried
    ]


def load_settings(
    path: Path | None = None,
    overrides: Mapping[str, Any] | Iterable[Override] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> AgentSettings:
    """Load and validate the configuration: :func:`load_config` without the sources.

    Args:
        path: A YAML file, or None for environment and defaults only.
        overrides: Values that win over every other source (CLI flags): :class:`Override`
            objects, or a mapping of dotted path -> value.
        environ: The environment to read; default ``os.environ``.

    Raises:
        InvalidConfigError: A :class:`~agent.errors.ConfigError` listing every problem, one
            line each: ``path = value (from source): what is wrong``.
    """
    return load_config(path, overrides, environ=environ).settings


def _as_overrides(overrides: Mapping[str, Any] | Iterable[Override] | None) -> list[Override]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [Override(str(key), value) for key, value in overrides.items()]
    return list(overrides)


# ---------------------------------------------------------------- changes
@dataclass(frozen=True, slots=True)
class SettingChange:
    """One option whose value differs.

    Attributes:
        path: The option's dotted path.
        reload: ``live`` or ``restart``.
        old: The old value as shown (a secret as ``**********``).
        new: The new value as shown (a secret as ``**********``).
    """

    path: str
    reload: Reload
    old: str
    new: str

    def __str__(self) -> str:
        """``path: old -> new (reload)``."""
        return f"{self.path}: {self.old} -> {self.new} ({self.reload})"


@dataclass(frozen=True, slots=True)
class SettingsDiff:
    """What changed between two configurations, split by when a change can take effect.

    Attributes:
        live: Paths of changed options that apply while the agent runs.
        restart: Paths of changed options that take effect only at the next start.
        changes: Every change, in declaration order, secrets masked.
    """

    live: frozenset[str]
    restart: frozenset[str]
    changes: tuple[SettingChange, ...]

    @property
    def changed(self) -> frozenset[str]:
        """Every changed path."""
        return self.live | self.restart

    @property
    def needs_restart(self) -> bool:
        """Whether any change takes effect only after a restart."""
        return bool(self.restart)

    def __bool__(self) -> bool:
        """Whether anything changed."""
        return bool(self.changes)


def diff_settings(old: AgentSettings, new: AgentSettings) -> SettingsDiff:
    """The options whose values differ, split into live and restart-only.

    Secrets are compared by their real values and shown masked.
    """
    changes: list[SettingChange] = []
    for option in options(AgentSettings):
        before, after = value_at(old, option.path), value_at(new, option.path)
        if plain(before) == plain(after):
            continue
        changes.append(
            SettingChange(
                option.path,
                option.reload,
                show(before, secret=option.secret),
                show(after, secret=option.secret),
            )
        )
    return SettingsDiff(
        live=frozenset(c.path for c in changes if c.reload == "live"),
        restart=frozenset(c.path for c in changes if c.reload == "restart"),
        changes=tuple(changes),
    )


def merge_live(running: AgentSettings, new: AgentSettings, paths: Iterable[str]) -> AgentSettings:
    """The settings to run with after a reload: ``running`` with only ``paths`` taken from ``new``.

    This is the one rule of a live reload: pass the live paths of
    ``diff_settings(running, new)``. Every other option, restart-only ones included, keeps its
    running value even when it sits in the same section as a live one (changing
    ``lifecycle.rate_limit_burst`` and ``lifecycle.topic`` together applies the burst only).
    Each rebuilt section is validated again, so a mix that breaks a rule spanning several
    options is refused rather than run.

    Raises:
        InvalidConfigError: The running values and the live ones from ``new`` do not go
            together (a rule spanning several options).
    """
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        *parents, name = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = None
    if not tree:
        return running
    try:
        merged = _replaced(running, new, tree)
    except ValidationError as exc:
        problems = validation_problems(AgentSettings, exc, {}, ())
        raise InvalidConfigError(problems) from None
    problems = usability_problems(merged)
    if problems:
        raise InvalidConfigError(problems)
    return merged


def _replaced(running: _ModelT, new: _ModelT, tree: Mapping[str, Any]) -> _ModelT:
    values = {name: getattr(running, name) for name in type(running).model_fields}
    for name, below in tree.items():
        if below is None:
            values[name] = getattr(new, name)
        else:
            values[name] = _replaced(getattr(running, name), getattr(new, name), below)
    # model_validate, not the constructor: for the settings class the constructor would read
    # the environment again. Sections given as instances are taken as they are.
    return type(running).model_validate(values)


def config_hash(settings: AgentSettings) -> str:
    """sha256 (hex) of the canonical JSON of the settings, secrets' real values included.

    Equal settings give equal hashes, a changed secret a different one; the JSON itself is
    never shown. Canonical: sorted keys, no spaces, UTF-8.
    """
    data = settings.model_dump(mode="json")
    for path, option in option_map(AgentSettings).items():
        if option.secret:
            *parents, name = path.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[name] = plain(value_at(settings, path))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
