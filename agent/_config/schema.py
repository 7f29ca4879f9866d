"""What the settings models declare: sections, options, secrets, reload class, env var names.

A *section* is a field whose type is a pydantic model (``mqtt``, ``pipeline.topics``); an
*option* is any other field, addressed by its dotted path (``mqtt.port``). Every option says
in ``json_schema_extra={"reload": ...}`` whether a change applies ``"live"`` or needs a
``"restart"``; unmarked options count as restart.
"""

from __future__ import annotations

import functools
import json
import types
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

Reload = Literal["live", "restart"]
"""``live``: a changed value is applied while the agent runs; ``restart``: only at start."""

ENV_PREFIX: Final = "EDGE_AGENT_"
ENV_DELIMITER: Final = "__"
MASK: Final = "**********"
"""What a secret looks like wherever it is shown (pydantic's own ``SecretStr`` mask)."""
_SHOW_MAX_CHARS = 80


@dataclass(frozen=True, slots=True)
class Option:
    """One option of the configuration: a field that is not a section."""

    path: str
    field: FieldInfo

    @property
    def name(self) -> str:
        """The last component of the path."""
        return self.path.rpartition(".")[2]

    @property
    def env_name(self) -> str:
        """The environment variable that sets it, e.g. ``EDGE_AGENT_KAFKA__LINGER_MS``."""
        return env_name(self.path)

    @property
    def secret(self) -> bool:
        """Whether the value is a secret (never shown, masked in every output)."""
        return contains_secret(self.field.annotation)

    @property
    def reload(self) -> Reload:
        """``live`` or ``restart``, from the field's ``json_schema_extra``."""
        return reload_of(self.field)


def env_name(path: str) -> str:
    """The environment variable for a dotted path."""
    return ENV_PREFIX + path.upper().replace(".", ENV_DELIMITER)


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a section field, or None for an option."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def marked_reload(field: FieldInfo) -> Reload | None:
    """The field's explicit ``reload`` marker, or None when it has none."""
    extra = field.json_schema_extra
    if isinstance(extra, dict):
        value = extra.get("reload")
        if value == "live":
            return "live"
        if value == "restart":
            return "restart"
    return None


def reload_of(field: FieldInfo) -> Reload:
    """``live`` only when marked so; everything else needs a restart."""
    return marked_reload(field) or "restart"


def contains_secret(annotation: object) -> bool:
    """Whether a type is, or contains, ``SecretStr``/``SecretBytes``."""
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(contains_secret(arg) for arg in get_args(annotation))


@functools.cache
def options(model: type[BaseModel], prefix: str = "") -> tuple[Option, ...]:
    """Every option of ``model`` and its sections, depth first, in declaration order."""
    found: list[Option] = []
    for name, field in model.model_fields.items():
        sub = section_model(field)
        if sub is None:
            found.append(Option(f"{prefix}{name}", field))
        else:
            found.extend(options(sub, f"{prefix}{name}."))
    return tuple(found)


@functools.cache
def option_map(model: type[BaseModel]) -> dict[str, Option]:
    """Dotted path -> option."""
    return {option.path: option for option in options(model)}


@functools.cache
def section_paths(model: type[BaseModel], prefix: str = "") -> tuple[str, ...]:
    """Every section's dotted path, depth first."""
    found: list[str] = []
    for name, field in model.model_fields.items():
        sub = section_model(field)
        if sub is not None:
            found.append(f"{prefix}{name}")
            found.extend(section_paths(sub, f"{prefix}{name}."))
    return tuple(found)


def value_at(obj: object, path: str) -> Any:  # noqa: ANN401 - any option's value
    """The value of a dotted path on a model instance."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def plain(value: object) -> object:
    """A secret's real value; anything else unchanged."""
    if isinstance(value, SecretStr | SecretBytes):
        return value.get_secret_value()
    return value


def show(value: object, *, secret: bool = False) -> str:
    """A short, one-line rendering of a value for messages; secrets masked."""
    if secret and value is not None:
        return MASK
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str) and value and value.strip() == value and value.isprintable():
        text = value
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > _SHOW_MAX_CHARS:
        text = text[: _SHOW_MAX_CHARS - 1] + "…"
    return text


def literal_values(annotation: object) -> tuple[object, ...]:
    """The values of every ``Literal`` in a type (through ``Optional`` and ``Annotated``)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)
    if origin is Annotated:
        return literal_values(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(v for arg in get_args(annotation) for v in literal_values(arg))
    return ()
