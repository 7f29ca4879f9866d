"""The configuration's sources and their merge: defaults < YAML file < environment < flags.

Each source is cut into *pieces* (the whole file; one piece per environment variable; one per
flag) so every value keeps the name of the place it came from. Pieces are merged in precedence
order. Sections merge key by key (an environment variable for ``kafka.linger_ms`` keeps the
file's other ``kafka`` options); an option's value is replaced whole, lists and mappings
included. Unknown keys are reported with a did-you-mean hint instead of being merged.

Environment variables are decoded by pydantic-settings' own ``EnvSettingsSource`` (prefix
``EDGE_AGENT_``, ``__`` between levels, JSON for lists and mappings), one variable at a time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from pydantic_settings import EnvSettingsSource, SettingsError

from agent._config.problems import (
    ConfigProblem,
    InvalidConfigError,
    Source,
    unknown_env_var,
    unknown_option,
)
from agent._config.schema import (
    ENV_DELIMITER,
    ENV_PREFIX,
    literal_values,
    option_map,
    section_model,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from pydantic import BaseModel
    from pydantic_settings import BaseSettings

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# Variables Kubernetes injects for every Service in the namespace ("service links"): a Service
# named edge-agent[-...] yields EDGE_AGENT_SERVICE_HOST=10.0.0.7, EDGE_AGENT_SERVICE_PORT=9810,
# EDGE_AGENT_SERVICE_PORT_<NAME>=9810, EDGE_AGENT_PORT=tcp://10.0.0.7:9810 and
# EDGE_AGENT_PORT_9810_TCP[_PROTO|_PORT|_ADDR]. They are not options and must not stop the agent.
# A bare ..._PORT is one only when its value is a URL like Kubernetes writes: EDGE_AGENT_MQTT_PORT
# =8883 is a misspelt EDGE_AGENT_MQTT__PORT, not the link of a Service named edge-agent-mqtt.
_SERVICE_LINK = re.compile(
    r"EDGE_AGENT_(?:[A-Z0-9_]+_)?"
    r"(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)"
)
_SERVICE_LINK_URL = re.compile(r"EDGE_AGENT_(?:[A-Z0-9_]+_)?PORT")
_SERVICE_URL_VALUE = re.compile(r"(?:tcp|udp|sctp)://\S+", re.IGNORECASE)


def is_service_link(name: str, value: str) -> bool:
    """Whether an ``EDGE_AGENT_*`` variable looks like one Kubernetes adds for a Service."""
    upper = name.upper()
    if _SERVICE_LINK.fullmatch(upper):
        return True
    return bool(_SERVICE_LINK_URL.fullmatch(upper) and _SERVICE_URL_VALUE.fullmatch(value))


@dataclass(frozen=True, slots=True)
class Override:
    """One value given on the command line; overrides win over every other source.

    Attributes:
        path: Dotted option path (``kafka.linger_ms``) or section path (``kafka``, with a
            mapping value that is merged into the section).
        value: The value, as it would be written in the YAML file.
        flag: How it was given, for messages (``--set kafka.linger_ms``, ``--gateway-id``);
            never contains the value. Default: ``--set <path>``.
    """

    path: str
    value: object
    flag: str = ""

    @classmethod
    def parse(cls, text: str) -> Override:
        """``PATH=VALUE`` (``--set``) with VALUE read as YAML, as if written in the file.

        ``kafka.linger_ms=20`` gives 20, ``mqtt.subscriptions=[a/#, b/#]`` a list, ``x=`` null,
        ``gateway_id="007"`` the string 007.

        Raises:
            ValueError: Not ``PATH=VALUE`` with a dotted path of names.
            InvalidConfigError: VALUE is not YAML (the message does not repeat VALUE, which may
                be a secret).
        """
        path = split_set_flag(text)[0]
        raw = text.partition("=")[2]
        flag = f"--set {path}"
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problem = ConfigProblem(
                f"VALUE is not valid YAML ({_yaml_reason(exc)})",
                path=path,
                source=f"flag {flag}",
                hint="close brackets and quotes; quote text with ': ' or ' #' in it",
            )
            raise InvalidConfigError([problem]) from None
        return cls(path, value, flag)


def split_set_flag(text: str) -> tuple[str, str]:
    """``PATH=VALUE`` split in two.

    Raises:
        ValueError: There is no ``=`` or PATH is not a dotted path of names.
    """
    path, sep, raw = text.partition("=")
    if not sep or not _PATH.fullmatch(path.strip()):
        raise ValueError(f"expected PATH=VALUE such as kafka.linger_ms=20, got {path.strip()!r}")
    return path.strip(), raw


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of one source: nested data and where it came from.

    Attributes:
        data: Nested mapping of section and option names to values.
        source: The source of every value in it (for a file: without the line).
        lines: For a file: dotted path -> 1-based line of its key.
        own_path: For an environment variable: the dotted path its name spells.
    """

    data: Mapping[Any, Any]
    source: Source
    lines: Mapping[str, int] = field(default_factory=dict)
    own_path: str | None = None

    def source_at(self, path: str) -> Source:
        """Where the value at ``path`` came from, with its line when known."""
        probe = path
        while probe:
            if probe in self.lines:
                return Source(self.source.kind, self.source.name, self.lines[probe])
            probe = probe.rpartition(".")[0]
        return self.source


# ---------------------------------------------------------------- YAML file
def _yaml_reason(exc: yaml.YAMLError) -> str:
    """Line, column and reason of a YAML error, without quoting the text (it may be a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem and exc.context_mark is not None:
            start = exc.context_mark
            reason += f", {exc.context} at line {start.line + 1}, column {start.column + 1}"
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {reason}"
        return reason
    if isinstance(exc, yaml.reader.ReaderError):
        return f"position {exc.position}: {exc.reason}"
    return type(exc).__name__


def read_file(path: Path) -> Piece:
    """The YAML file as a piece; an empty file is an empty mapping (all defaults).

    Raises:
        InvalidConfigError: Missing, a directory, unreadable, not UTF-8, not YAML, not a mapping
            at the top level, or a key given twice.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        message = f"Configuration file {path} does not exist; check the path"
    except IsADirectoryError:
        message = f"Configuration file {path} is a directory, not a file; name the YAML file in it"
    except PermissionError:
        message = (
            f"Configuration file {path} cannot be read (permission denied); make it readable "
            "by the user the agent runs as"
        )
    except OSError as exc:
        message = f"Configuration file {path} cannot be read ({exc.strerror or exc})"
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = (
                f"Configuration file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            )
        else:
            return parse_yaml(text, str(path), what="Configuration file")
    raise InvalidConfigError([ConfigProblem(message + ".")])


def parse_yaml(text: str, name: str, *, what: str = "Configuration") -> Piece:
    """A YAML document as a piece whose values say they came from ``file <name>``.

    Raises:
        InvalidConfigError: Not YAML, not a mapping at the top level, or a key given twice.
    """
    try:
        # The constructor already reads the text: a control character fails here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        message = f"{what} {name} is not valid YAML: {_yaml_reason(exc)}."
        raise InvalidConfigError([ConfigProblem(message)]) from None
    try:
        node = loader.get_single_node()
        index = _YamlIndex(name)
        if node is not None:
            index.walk(node)
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        message = f"{what} {name} is not valid YAML: {_yaml_reason(exc)}."
        raise InvalidConfigError([ConfigProblem(message)]) from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        message = f"{what} {name} must be a mapping of options at the top level, not {kind}."
        raise InvalidConfigError([ConfigProblem(message)])
    if index.duplicates:
        raise InvalidConfigError(index.duplicates)
    return Piece(data, Source("file", name), index.lines)


@dataclass(slots=True)
class _YamlIndex:
    """The line of every mapping key, and keys given twice in one mapping."""

    name: str
    lines: dict[str, int] = field(default_factory=dict)
    duplicates: list[ConfigProblem] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def walk(self, node: yaml.Node, prefix: str = "") -> None:
        if id(node) in self.seen:  # an alias: indexed where its anchor is
            return
        self.seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self.walk(item, prefix)
        elif isinstance(node, yaml.MappingNode):
            self._mapping(node, prefix)

    def _mapping(self, node: yaml.MappingNode, prefix: str) -> None:
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in first:
                self.duplicates.append(
                    ConfigProblem(
                        f"given twice (first at line {first[key]}); the second would silently win",
                        path=prefix + key,
                        source=f"file {self.name}, line {line}",
                        hint="remove one of them",
                    )
                )
                continue
            first[key] = line
            self.lines.setdefault(prefix + key, line)
            self.walk(value_node, f"{prefix}{key}.")


# ---------------------------------------------------------------- environment
class _GivenEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given.items()}


def env_pieces(
    settings_cls: type[BaseSettings], environ: Mapping[str, str]
) -> tuple[list[Piece], list[ConfigProblem]]:
    """One piece per ``EDGE_AGENT_*`` variable, whole-section JSON before nested variables."""
    pieces: list[Piece] = []
    problems: list[ConfigProblem] = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().replace(ENV_DELIMITER, ".")
        source = Source("env", name)
        try:
            data = _GivenEnvSource(settings_cls, {name: environ[name]})()
        except SettingsError as exc:
            problems.append(_bad_json(path, source, exc))
            continue
        if not data:
            if not is_service_link(name, environ[name]):
                problems.append(unknown_env_var(settings_cls, name))
            continue
        pieces.append(Piece(_coerce_literals(settings_cls, data), source, own_path=path))
    pieces.sort(key=lambda piece: (piece.own_path or "").count("."))
    return pieces, problems


def _bad_json(path: str, source: Source, exc: SettingsError) -> ConfigProblem:
    cause = exc.__cause__
    detail = ""
    if isinstance(cause, json.JSONDecodeError):
        detail = f" ({cause.msg} at line {cause.lineno}, column {cause.colno})"
    return ConfigProblem(
        f"not valid JSON{detail}",
        path=path,
        source=source.label,
        hint='a list or mapping takes JSON in the environment, e.g. ["plant/#"] or {"value": "v"}',
    )


def _coerce_literals(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Environment values are text: turn "1" into 1 where the option is a number literal."""
    options = option_map(model)

    def walk(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            option = options.get(path)
            if isinstance(value, dict) and option is None:
                result[key] = walk(value, path + ".")
            elif option is not None and isinstance(value, str):
                result[key] = _literal_from_text(literal_values(option.field.annotation), value)
            else:
                result[key] = value
        return result

    return walk(data, "")


def _literal_from_text(allowed: Sequence[object], text: str) -> object:
    if text in allowed or all(isinstance(v, str) for v in allowed):
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if decoded in allowed else text


# ---------------------------------------------------------------- flags
def flag_pieces(overrides: Iterable[Override]) -> list[Piece]:
    """One piece per override, in the order given (a later one wins)."""
    pieces: list[Piece] = []
    for override in overrides:
        data: Any = override.value
        for part in reversed(override.path.split(".")):
            data = {part: data}
        pieces.append(Piece(data, Source("flag", override.flag or f"--set {override.path}")))
    return pieces


# ---------------------------------------------------------------- merge
@dataclass(slots=True)
class Merged:
    """The pieces merged: data to validate, where each option came from, what was wrong."""

    data: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def add(self, model: type[BaseModel], piece: Piece) -> None:
        """Merge one piece over what is there."""
        self._into(self.data, piece.data, model, prefix="", piece=piece)

    def _into(
        self,
        target: dict[str, Any],
        data: Mapping[Any, Any],
        model: type[BaseModel],
        *,
        prefix: str,
        piece: Piece,
    ) -> None:
        for raw_key, value in data.items():
            key = str(raw_key)
            path = prefix + key
            field_info = model.model_fields.get(key) if isinstance(raw_key, str) else None
            if field_info is None:
                own = piece.own_path == path
                self.problems.append(
                    unknown_option(model, prefix, key, piece.source_at(path), from_env_name=own)
                )
                continue
            sub = section_model(field_info)
            if sub is None:
                target[key] = value
                self.sources[path] = piece.source_at(path)
            elif isinstance(value, dict):
                node = target.setdefault(key, {})
                self._into(node, value, sub, prefix=path + ".", piece=piece)
            elif value is not None:  # a section left empty (`mqtt:` with nothing under it) is fine
                self.problems.append(
                    ConfigProblem(
                        "is a section: expected a mapping of its options, "
                        f"not {type(value).__name__}",
                        path=path,
                        source=piece.source_at(path).label,
                    )
                )


def merge(model: type[BaseModel], pieces: Iterable[Piece]) -> Merged:
    """Merge pieces (lowest precedence first) section by section, recording every source."""
    merged = Merged()
    for piece in pieces:
        merged.add(model, piece)
    return merged


def secret_values(model: type[BaseModel], data: Mapping[str, Any]) -> list[str]:
    """Every secret option's value present in merged ``data``, as text."""
    found: list[str] = []
    for path, option in option_map(model).items():
        if not option.secret:
            continue
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            found.append(str(node))
    return found
