"""Where a value came from, and what is wrong with the configuration, in words an operator reads.

Every problem names the option's path, the value (secrets masked), the source it came from
(file and line, environment variable, or flag) and what is wrong, e.g.::

    kafka.linger_ms = -5 (from env EDGE_AGENT_KAFKA__LINGER_MS): Input should be ...
    mqtt.hots: unknown option (from file /etc/edge-agent/agent.yaml, line 12); did you mean 'host'?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent._config.schema import (
    ENV_DELIMITER,
    ENV_PREFIX,
    MASK,
    env_name,
    option_map,
    section_model,
    section_paths,
    show,
)
from agent.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from pydantic import BaseModel, ValidationError

SourceKind = Literal["default", "file", "env", "flag"]
_KIND_ORDER: dict[SourceKind, int] = {"default": 0, "file": 1, "env": 2, "flag": 3}
_MIN_SCRUBBED_SECRET_CHARS = 4


@dataclass(frozen=True, slots=True)
class Source:
    """Where one value came from.

    Attributes:
        kind: ``default``, ``file``, ``env`` or ``flag`` (lowest to highest precedence).
        name: The file path (or remote origin), the environment variable, or the flag as given
            (``--set kafka.linger_ms``, ``--gateway-id``); never the value.
        line: For a file: the 1-based line of the option's key, when known.
    """

    kind: SourceKind
    name: str = ""
    line: int | None = None

    @property
    def where(self) -> str:
        """``file /etc/edge-agent/agent.yaml``, ``env EDGE_AGENT_X``, ``flag --set a.b``."""
        return self.kind if self.kind == "default" else f"{self.kind} {self.name}"

    @property
    def label(self) -> str:
        """:attr:`where` plus the line, when known."""
        return self.where if self.line is None else f"{self.where}, line {self.line}"

    def __str__(self) -> str:
        """The :attr:`label`."""
        return self.label


DEFAULT = Source("default")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration; ``str()`` gives the line shown to operators.

    Attributes:
        message: What is wrong (for a problem without a path: the whole sentence).
        path: The option or section path (``kafka.linger_ms``), or None for a problem of a whole
            source (file missing, not YAML).
        value: The offending value as shown (secrets masked), or None when not shown.
        source: Where the value came from (``env EDGE_AGENT_KAFKA__LINGER_MS``), or None.
        hint: What to do, e.g. ``did you mean 'host'?``.
    """

    message: str
    path: str | None = None
    value: str | None = None
    source: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        """``path = value (from source): message; hint`` and its shorter forms."""
        where = f" (from {self.source})" if self.source else ""
        hint = f"; {self.hint}" if self.hint else ""
        if self.path is None:
            return f"{self.message}{hint}"
        if self.value is not None:
            return f"{self.path} = {self.value}{where}: {self.message}{hint}"
        return f"{self.path}: {self.message}{where}{hint}"

    def as_dict(self) -> dict[str, str | None]:
        """The problem as JSON-ready fields, plus ``text``: the line ``str()`` gives."""
        return {
            "path": self.path,
            "value": self.value,
            "source": self.source,
            "message": self.message,
            "hint": self.hint,
            "text": str(self),
        }


class InvalidConfigError(ConfigError):
    """The configuration cannot be used; :attr:`problems` lists everything wrong with it.

    The message is one line per problem. No secret value is part of it, and the exception
    carries no cause that could print one (pydantic's errors include the input values).
    """

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        """Wrap the problems; there is at least one."""
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def suggestion(key: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt key, or None."""
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_option(
    model: type[BaseModel], prefix: str, key: str, source: Source, *, from_env_name: bool = False
) -> ConfigProblem:
    """An unknown key in the section ``model`` at ``prefix``, with a did-you-mean hint.

    Args:
        model: The section the key was found in.
        prefix: The section's path with a trailing dot, or "" at the top level.
        key: The unknown key.
        source: Where it came from.
        from_env_name: The key is part of an environment variable's name (not of JSON inside
            one): suggest a variable name rather than a key.
    """
    close = suggestion(key, model.model_fields)
    hint = None
    if close is not None:
        shown = env_name(prefix + close) if from_env_name else repr(close)
        hint = f"did you mean {shown}?"
    return ConfigProblem("unknown option", path=prefix + key, source=source.label, hint=hint)


def unknown_env_var(model: type[BaseModel], name: str) -> ConfigProblem:
    """An ``EDGE_AGENT_*`` variable that names no option or section, with a did-you-mean hint."""
    every = [env_name(path) for path in (*option_map(model), *section_paths(model))]
    stripped = {candidate.removeprefix(ENV_PREFIX): candidate for candidate in every}
    rest = name.upper().removeprefix(ENV_PREFIX)
    close = suggestion(rest, stripped)
    return ConfigProblem(
        "unknown option",
        path=rest.lower().replace(ENV_DELIMITER, "."),
        source=Source("env", name).label,
        hint=f"did you mean {stripped[close]}?" if close else None,
    )


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _locate(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[str, str | None, bool]:
    """(display path, option path or None, whether the error is about a whole section)."""
    current: type[BaseModel] | None = model
    walked: list[str] = []
    for index, part in enumerate(loc):
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            break
        walked.append(str(part))
        sub = section_model(field)
        if sub is None:
            option = ".".join(walked)
            rest = [str(p) for p in loc[index + 1 :] if str(p) != "[key]"]
            return option + "".join(f"[{p}]" for p in rest), option, False
        current = sub
    path = ".".join(walked) or "(top level)"
    return path, None, True


def validation_problems(
    model: type[BaseModel],
    exc: ValidationError,
    sources: Mapping[str, Source],
    secrets: Iterable[str],
) -> list[ConfigProblem]:
    """Pydantic's errors as problems naming path, masked value, source and reason.

    Args:
        model: The model that was validated.
        exc: Its validation error.
        sources: Option path -> where its value came from (absent: default).
        secrets: Every secret value that was given, scrubbed from the text as a last line of
            defence (a validator message could quote one).
    """
    known = option_map(model)
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False, include_context=False):
        path, option, whole_section = _locate(model, error["loc"])
        message = _clean_message(error["msg"])
        if error["type"] == "extra_forbidden":
            message = "unknown option"
        if option is not None:
            source = sources.get(option, DEFAULT)
            secret = known[option].secret
            problems.append(
                ConfigProblem(
                    message,
                    path=path,
                    value=show(error["input"], secret=secret),
                    source=source.label,
                )
            )
        elif whole_section:
            prefix = "" if path == "(top level)" else path + "."
            given = sorted(
                {s.where: s for p, s in sources.items() if p.startswith(prefix)}.values(),
                key=lambda s: (_KIND_ORDER[s.kind], s.name),
            )
            where = ", ".join(s.where for s in given) or "defaults"
            problems.append(ConfigProblem(message, path=path, source=where))
    return [scrub(problem, secrets) for problem in problems]


def scrub(problem: ConfigProblem, secrets: Iterable[str]) -> ConfigProblem:
    """The problem with every occurrence of a (not too short) secret value masked."""
    fields = {"message": problem.message, "value": problem.value, "hint": problem.hint}
    for secret in secrets:
        if len(secret) < _MIN_SCRUBBED_SECRET_CHARS:
            continue
        for name, text in fields.items():
            if text is not None and secret in text:
                fields[name] = text.replace(secret, MASK)
    return ConfigProblem(
        fields["message"] or problem.message,
        path=problem.path,
        value=fields["value"],
        source=problem.source,
        hint=fields["hint"],
    )
